"""``sparseforge flash DIR --board B``: write the built bitstream to the board
(openFPGALoader, or the family's own programmer)."""

from __future__ import annotations

from pathlib import Path

from .common import add_json_flag, console_for, emit_json, fail


def register(verbs) -> None:
    parser = verbs.add_parser("flash", help="flash a built bitstream to a board")
    parser.add_argument("program", help="a compiled program directory (built with `build`)")
    parser.add_argument("--board", help="the board (default: the one it was built for)")
    parser.add_argument("--bitstream", help="the bitstream (default: from DIR's last build)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the programmer command instead of running it")
    add_json_flag(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from sparseforge.boards.build import check_record_of, load_record
    from sparseforge.compiler.program import load_program
    from sparseforge.boards.flash import check_bitstream, flash, programmer_command
    from sparseforge.hw.toolchain import ToolNotFoundError

    console = console_for(args)
    directory = Path(args.program)
    if directory.is_file():
        return fail(f"{directory} is a file: flash takes a program folder (sparseforge "
                    f"compile MODEL -o DIR, then sparseforge build DIR), or --bitstream FILE "
                    f"with --board")
    record = directory / "bitstream" / "build.json"
    try:
        built = load_record(record) if record.is_file() else {}
        if built and not args.bitstream and (directory / "program.json").is_file():
            check_record_of(load_program(directory), built, record)
    except ValueError as error:
        return fail(str(error))
    board = args.board or built.get("board")
    bitstream = args.bitstream or built.get("bitstream")
    if not board or not bitstream:
        compiled_for = _board_of(directory)
        return fail(f"{directory}: no build found; run `sparseforge build {directory}"
                    + ("" if compiled_for else " --board B") + "` first, or pass --board "
                    f"and --bitstream")
    try:
        bitstream = check_bitstream(board, Path(bitstream))
        command = programmer_command(board, bitstream)
        if args.dry_run:
            console.print(" ".join(command))
            emit_json(args, {"command": command, "flashed": False})
            return 0
        output = flash(board, bitstream)
    except (ToolNotFoundError, FileNotFoundError, RuntimeError, ValueError) as error:
        return fail(str(error))
    console.print(output.strip())
    console.print(f"flashed {bitstream} to the {board}")
    emit_json(args, {"command": command, "flashed": True})
    return 0


def _board_of(directory: Path) -> str | None:
    """The board the program in ``directory`` was compiled for, if it says (without loading
    the program)."""
    import json

    try:
        board = json.loads((directory / "program.json").read_text()).get("board")
    except (OSError, ValueError, AttributeError):
        return None
    return board if isinstance(board, str) else None
