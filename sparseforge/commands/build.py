"""``sparseforge build DIR --board B``: the program's engine as a bitstream (Yosys + nextpnr),
with Fmax against the engine clock and the part's utilisation."""

from __future__ import annotations

from pathlib import Path

from .common import add_json_flag, console_for, emit_json, fail, positive_int, seeds_option


def register(verbs) -> None:
    parser = verbs.add_parser("build", help="build a bitstream for a board")
    parser.add_argument("program", help="a compiled program directory")
    parser.add_argument("--board", help="the board (default: the one compiled for)")
    parser.add_argument("--frequency", type=float, metavar="MHZ",
                        help="engine clock to ask the PLL for (default: the board's target; "
                             "lowered to what the design meets)")
    parser.add_argument("--seeds", type=positive_int, metavar="N",
                        help="nextpnr placements to try, in parallel where cores allow: its "
                             "default one and --seed 2..N; the best Fmax is kept (default 2, "
                             "sf.build's)")
    parser.add_argument("-o", "--output", help="build directory (default: DIR/bitstream)")
    add_json_flag(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    import sparseforge as sf
    from sparseforge.boards.bitstream import BuildError
    from sparseforge.compiler.program import ProgramError
    from sparseforge.hw.toolchain import ToolNotFoundError

    console = console_for(args)
    try:
        program = sf.load_program(args.program)
        build_dir = Path(args.output) if args.output else Path(args.program) / "bitstream"
        with console.status("synthesis, place and route (the first YoWASP run compiles "
                            "WebAssembly)...") as status:
            result = sf.build(program, args.board, frequency_mhz=args.frequency,
                              build_dir=build_dir, progress=lambda text: status.update(text),
                              **seeds_option(args))
    except (ProgramError, ValueError, BuildError, ToolNotFoundError) as error:
        return fail(str(error))
    render(console, result)
    emit_json(args, result.to_json())
    return 0 if result.timing_met else 1


def render(console, result) -> None:
    from rich import box
    from rich.table import Table

    table = Table(title=f"Bitstream for {result.board}", title_justify="left",
                  box=box.SIMPLE_HEAD)
    for column in ("resource", "used", "available", "use"):
        table.add_column(column, justify="left" if column == "resource" else "right")
    for name, resource in sorted(result.utilisation.items()):
        table.add_row(name, str(resource.used), str(resource.available),
                      f"{resource.percent:.0f}%")
    console.print(table)
    verdict = "[green]met[/green]" if result.timing_met else "[red]missed[/red]"
    console.print(f"Fmax {result.fmax_mhz:.1f} MHz; engine clock {result.target_mhz:.2f} MHz "
                  f"(timing {verdict}); {result.seconds:.0f} s; {result.bitstream}")
    for number, attempt in enumerate(result.attempts, 1):
        if len(attempt.get("seeds", ())) > 1:
            figures = ", ".join(
                f"{s['seed']}: " + (f"{s['fmax_mhz']} MHz" if "fmax_mhz" in s else "failed")
                for s in attempt["seeds"])
            console.print(f"attempt {number}, nextpnr seeds: {figures}; kept "
                          f"{attempt['seed']}")
    if len(result.attempts) > 1:
        for number, attempt in enumerate(result.attempts, 1):
            kept = Path(attempt["build_dir"]) == result.bitstream.parent
            console.print(f"attempt {number}: asked {attempt['asked_mhz']} MHz, reached "
                          f"{attempt['fmax_mhz']} MHz" + (" (kept)" if kept else ""))
