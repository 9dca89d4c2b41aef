"""``sparseforge sim DIR``: run inputs on the generated Verilog under cocotb, bit-exact against
the golden model, with cycles beside the cycle model and the cost model.

Inputs: ``--inputs X.npy`` (floats, quantized with the program's input format) and optionally
``--labels y.npy``; by default the digits test split when the program takes 64 inputs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import (add_json_flag, check_labels, check_targets, console_for, emit_json, fail,
                     load_npy, positive_int, stderr_console)


def register(verbs) -> None:
    parser = verbs.add_parser("sim", help="verify a program on the generated Verilog (cocotb)",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("program", help="a compiled program directory")
    parser.add_argument("--simulator", default="verilator", choices=("verilator", "icarus"))
    parser.add_argument("--inputs", help=".npy of float inputs (batch x features), or a "
                                         ".csv/.tsv table of them (and their labels)")
    parser.add_argument("--labels", help=".npy of labels, for the accuracy")
    parser.add_argument("--label-column", metavar="NAME",
                        help="with a .csv --inputs: the labels' column (as compress --data)")
    parser.add_argument("--count", type=positive_int, help="use only the first COUNT inputs")
    parser.add_argument("--waves", action="store_true", help="write an FST/VCD waveform")
    parser.add_argument("--build-dir", help="where to build the simulator (default: DIR/sim)")
    add_json_flag(parser)
    parser.set_defaults(run=run)


def default_inputs(program):
    # The model's input (a convolutional network's map flattened), not the engine's.
    features = program.model_in_features
    if features != 64:
        raise ValueError("pass --inputs: the default data (digits) has 64 features, the "
                         f"program takes {features}")
    from sparseforge.compiler.compress.digits import load_digits_split

    _, _, test = load_digits_split()
    return test.x, test.y


def run(args) -> int:
    import sparseforge as sf
    from sparseforge.compiler.errors import InputError
    from sparseforge.compiler.ir import check_inputs
    from sparseforge.compiler.program import ProgramError

    from .table import inputs_of_table, is_table

    console = console_for(args)
    try:
        program = sf.load_program(args.program)
        if args.inputs and is_table(Path(args.inputs)):
            x, labels = inputs_of_table(args.inputs, args.label_column, args.labels, program)
        elif args.label_column is not None:
            raise InputError("--label-column chooses a column of a .csv --inputs")
        elif args.inputs:
            x = load_npy(args.inputs)
            labels = load_npy(args.labels, "labels") if args.labels else None
        elif args.labels:
            raise InputError(f"--labels {args.labels} needs --inputs: without --inputs the "
                             f"simulation runs the bundled digits test split, with its own "
                             f"labels")
        else:
            x, labels = default_inputs(program)
            # Said, so that a 64-input model of other data is not scored on the digits quietly.
            stderr_console().print(f"no --inputs: the bundled digits test split ({len(x)} "
                                   f"images) and its labels", highlight=False)
        try:
            x = check_inputs(x, program.model_in_features, program.network.input_map_shape)
        except InputError as error:
            raise InputError(f"{args.inputs or 'the digits test split'}: {error}") from None
        # The labels go with the inputs given, all of them: --count cuts both.
        if labels is not None and program.task == "regression":
            labels = check_targets(labels, len(x), program.network.layers[-1].out_features,
                                   args.labels or args.inputs)[:args.count]
        elif labels is not None:
            labels = check_labels(labels, len(x), program.network.layers[-1].out_features,
                                  args.labels or args.inputs or "the digits labels")[:args.count]
        x = x[:args.count]
    except (ProgramError, ValueError, OSError) as error:
        return fail(str(error))
    build_dir = Path(args.build_dir) if args.build_dir else Path(args.program) / "sim"
    if build_dir.exists() and not build_dir.is_dir():
        return fail(f"{build_dir} is a file, not a folder for the simulator's build")
    from sparseforge.hw.toolchain import ToolNotFoundError

    if not console.is_terminal:
        # The status line below shows on a terminal only; a log would see nothing during the
        # simulator's build (a minute or more for a new engine).
        built = any(build_dir.glob(f"{args.simulator}_*"))
        stderr_console().print(f"simulating {len(x)} inputs on {args.simulator}"
                               + ("" if built else " (the first run of an engine builds it "
                                  "first, a minute or more)") + "...", highlight=False)
    try:
        with console.status(f"simulating {len(x)} inputs on {args.simulator}..."):
            result = sf.simulate(program, x, labels=labels, simulator=args.simulator,
                                 waves=args.waves, build_dir=build_dir)
    except (ToolNotFoundError, RuntimeError) as error:
        return fail(f"the {args.simulator} simulation did not run: {error}")
    render(console, result)
    emit_json(args, result.to_json() | {"waves": str(result.waves) if result.waves else None})
    return 0 if result.mismatches == 0 else 1


def render(console, result) -> None:
    from rich import box
    from rich.table import Table

    plural = "s" if result.pes > 1 else ""
    table = Table(title=f"{len(result.outputs)} inputs on {result.simulator}, "
                        f"{result.pes} PE{plural} (mean cycles per inference)", title_justify="left",
                  box=box.SIMPLE_HEAD)
    for column in ("layer", "measured", "cycle model", "limit", "bound", "overhead",
                   "efficiency"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for layer in range(result.cycles.shape[1]):
        measured = result.cycles[:, layer].mean()
        work = result.work[:, layer].mean() / result.pes
        table.add_row(str(layer), f"{measured:.1f}", f"{result.predicted[:, layer].mean():.1f}",
                      f"{result.limit[:, layer].mean():.1f}",
                      f"{result.bound[:, layer].mean():.1f}", str(result.overhead[layer]),
                      f"{100 * work / measured:.1f}%")
    table.add_row("total", f"{result.total_cycles.mean():.1f}",
                  f"{result.predicted.sum(axis=1).mean():.1f}",
                  f"{result.limit.sum(axis=1).mean():.1f}",
                  f"{result.bound.sum(axis=1).mean():.1f}", str(result.overhead.sum()),
                  f"{100 * result.efficiency:.1f}%", style="bold")
    console.print(table)
    verdict = ("[green]bit-exact[/green]" if result.mismatches == 0
               else f"[red]{result.mismatches} mismatches[/red]")
    accuracy = ("" if result.accuracy is None else
                f"; R² {result.accuracy:.4f}" if result.metric == "r2" else
                f"; accuracy {100 * result.accuracy:.2f}%")
    console.print(f"outputs vs golden model: {verdict}{accuracy}; cycle model off by at most "
                  f"{100 * result.model_error:.1f}%; {result.seconds:.1f} s simulating "
                  f"({result.cycles.sum() / result.seconds:,.0f} cycles/s), "
                  f"{result.build_seconds:.1f} s building")
    if result.waves:
        console.print(f"waveform: {result.waves}")
