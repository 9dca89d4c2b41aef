"""``sparseforge run DIR --input X.npy [--port P]``: inference on the board over its UART link;
prints predictions, on-chip cycles and wall time."""

from __future__ import annotations

import time

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .common import add_json_flag, console_for, emit_json, fail


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


def run(args) -> int:
    import sparseforge as sf
    from sparseforge.boards.device import (
        Device,
        DeviceError,
        LinkError,
        SerialTransport,
        find_serial_port,
    )
    from sparseforge.boards.registry import board as find_board

    console = console_for(args)
    try:
        program = sf.load_program(args.program)
        board = find_board(args.board or program.board or "icebreaker")
        x = np.load(args.input, allow_pickle=False)
        port = args.port or find_serial_port(board.usb_ids)
        device = Device(SerialTransport(port, board.baud))
        info = device.info()
        if info.pes != program.config.pes:
            return fail(f"the board's engine has {info.pes} PEs; the program needs "
                        f"{program.config.pes}: flash its bitstream, or compile for it")
        # Outputs only from this program's image, whole: loaded and sealed now, or already
        # on the board (its identity is checked, so a half-loaded or other model is refused).
        if args.load:
            device.load(program.config, program.image)
        else:
            device.require_image(program.config, program.image)
        rows = program.quantize_input(x)
        started = time.monotonic()
        # Streamed: the next input crosses the link while the board runs the last.
        with Progress(TextColumn("inferences"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=console, transient=True,
                      disable=len(rows) < 32) as bar:
            task = bar.add_task("infer", total=len(rows))
            outputs, cycles = device.infer_many(
                rows, program.out_features,
                progress=lambda done, total: bar.update(task, completed=done))
        seconds = time.monotonic() - started
        layer_cycles = device.read_cycles(program.layer_count)       # the last run's
    except (LinkError, DeviceError, ValueError, OSError) as error:
        return fail(str(error))
    outputs = np.asarray(outputs)
    cycles = np.asarray(cycles)
    predictions = outputs.argmax(axis=1)
    console.print(f"predictions: {predictions.tolist()}")
    console.print(f"on-chip cycles per inference: {cycles.mean():.0f} (the last one's per "
                  f"layer: {list(layer_cycles)}); wall time {seconds:.3f} s for {len(rows)} "
                  f"inputs over {port}, {len(rows) / seconds:.0f} inferences/s")
    emit_json(args, {"predictions": predictions.tolist(), "outputs": outputs.tolist(),
                     "cycles": cycles.tolist(), "layer_cycles": list(layer_cycles),
                     "wall_seconds": seconds, "inferences_per_second": len(rows) / seconds,
                     "port": port})
    return 0
