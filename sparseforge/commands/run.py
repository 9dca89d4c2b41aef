"""``sparseforge run DIR --input X.npy [--port P]``: inference on the board over its UART link;
prints predictions, on-chip cycles and wall time."""

from __future__ import annotations

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .common import add_json_flag, console_for, emit_json, fail, load_npy


def register(verbs) -> None:
    parser = verbs.add_parser("run", help="run inputs on a flashed board over its UART")
    parser.add_argument("program", help="the compiled program directory (for scales, shapes)")
    parser.add_argument("--input", required=True, help=".npy of float inputs (batch x features)")
    parser.add_argument("--port", help="serial port (default: found by the board's USB id)")
    parser.add_argument("--board", help="the board (for its USB id and baud rate)")
    parser.add_argument("--load", action="store_true",
                        help="write the program's image over the link first (a new model in "
                             "an already-flashed engine)")
    add_json_flag(parser)
    parser.set_defaults(run=run)


# INFO tells the engine's PEs, widths and lanes, not its memories' depths: a program larger
# than the flashed engine loads (its words wrap) and then fails.
_LOADED_LARGER = ("; with --load, a program whose memories are larger than the flashed "
                  "engine's (entries, features, accumulator width, which the board does not "
                  "report) loads and then fails: compile it for the flashed engine "
                  "(sf.compile(model, config=...)) or flash its own bitstream")


def run(args) -> int:
    import sparseforge as sf
    from sparseforge.boards.device import (
        Device,
        DeviceError,
        LinkError,
        SerialTransport,
        find_serial_port,
    )
    from sparseforge.boards.program_run import run_program
    from sparseforge.boards.registry import board as find_board

    console = console_for(args)
    port = None
    try:
        program = sf.load_program(args.program)
        board = find_board(args.board or program.board or "icebreaker")
        x = load_npy(args.input)
        count = len(program.quantize_input(x))      # bad inputs refused before the port opens
        port = args.port or find_serial_port(board.usb_ids, board.usb_interface)
        device = Device(SerialTransport(port, board.baud))
        with Progress(TextColumn("inferences"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=console, transient=True,
                      disable=count < 32) as bar:
            task = bar.add_task("infer", total=count)
            result = run_program(device, program, x, load=args.load,
                                 progress=lambda done, total: bar.update(task, completed=done))
    except LinkError as error:
        if args.load and port is not None:
            return fail(f"{error}{_LOADED_LARGER}")
        if port is None or "no reply" not in str(error):
            return fail(str(error))
        # Nothing answered on the port: say which, and what usually causes it.
        return fail(f"{error} on {port}: is the board flashed with the program's bitstream "
                    f"(sparseforge flash), and is {port} its link"
                    + (" (the FT2232H's channel B, the second of its two ports)"
                       if board.usb_interface else "")
                    + "? pass --port to choose another")
    except DeviceError as error:
        return fail(f"{error}{_LOADED_LARGER if args.load else ''}")
    except (ValueError, OSError) as error:
        return fail(str(error))
    # A regression's outputs are values (read from their fixed point); a classifier's answer
    # is the class of its largest output.
    values = program.dequantize(result.outputs) if program.task == "regression" else None
    if values is not None:
        console.print(f"outputs: {np.round(values, 6).tolist()}")
    elif program.class_names:
        console.print(f"predictions: {[program.class_names[c] for c in result.predictions]}")
    else:
        console.print(f"predictions: {result.predictions.tolist()}")
    console.print(f"on-chip cycles per inference: {result.cycles.mean():.0f} (the last one's "
                  f"per layer: {result.layer_cycles}); wall time {result.seconds:.3f} s for "
                  f"{count} inputs over {port}, {result.inferences_per_second:.0f} "
                  f"inferences/s")
    emit_json(args, {**({"values": values.tolist()} if values is not None else
                        {"predictions": result.predictions.tolist()}),
                     **({"class_names": list(program.class_names)} if program.class_names
                        else {}),
                     "outputs": result.outputs.tolist(), "cycles": result.cycles.tolist(),
                     "layer_cycles": result.layer_cycles, "wall_seconds": result.seconds,
                     "inferences_per_second": result.inferences_per_second, "port": port})
    return 0
