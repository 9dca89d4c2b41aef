"""``sparseforge report DIR``: the run report (HTML + Markdown + PNG plots) next to the build.

Reads the compiled program in DIR and, when present, what the later stages left there:

* the RTL simulation: ``--sim FILE``, else ``DIR/sim.json`` (what ``sparseforge sim DIR --json``
  prints; save it with ``sparseforge sim DIR --json > DIR/sim.json``), or run it now with
  ``--simulate`` (and the figures are saved to ``DIR/sim.json``);
* the bitstream build: ``--build FILE``, else ``DIR/bitstream/build.json`` (where
  ``sparseforge build DIR`` writes it);
* the compressed model: ``--model M.sfm`` (weights before and after sharing, compression ratio,
  float and compressed accuracy).

The per-PE work ``E_k`` is counted for ``--inputs X.npy`` (default: the digits test split when
the program takes 64 inputs, cut to as many inputs as the simulation ran).  The report goes to
``-o OUT`` (default ``DIR/report``).
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from .common import (add_json_flag, check_labels, check_targets, console_for, emit_json, fail,
                     load_npy, positive_int)


def register(verbs) -> None:
    parser = verbs.add_parser("report", help="write the HTML/Markdown report with plots",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("program", help="a compiled program directory")
    parser.add_argument("--model", help="the .sfm the program was compiled from")
    parser.add_argument("-o", "--output", help="report directory (default: DIR/report)")
    parser.add_argument("--sim", help="saved 'sparseforge sim --json' output "
                                      "(default: DIR/sim.json if present)")
    parser.add_argument("--build", help="build.json of a bitstream build "
                                        "(default: DIR/bitstream/build.json if present)")
    parser.add_argument("--simulate", action="store_true",
                        help="run the RTL simulation now and save DIR/sim.json")
    parser.add_argument("--simulator", default="verilator", choices=("verilator", "icarus"))
    parser.add_argument("--inputs", help=".npy of float inputs (batch x features), or a "
                                         ".csv/.tsv table of them (and their labels)")
    parser.add_argument("--labels", help=".npy of labels of the --inputs (for --simulate's "
                                         "accuracy)")
    parser.add_argument("--label-column", metavar="NAME",
                        help="with a .csv --inputs: the labels' column (as compress --data)")
    parser.add_argument("--count", type=positive_int, help="use only the first COUNT inputs")
    add_json_flag(parser)
    parser.set_defaults(run=run)


def _read_json(path: Path, what: str) -> dict:
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read the {what}: {error}") from error
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: the {what} must be a JSON object")
    return payload


def _inputs(args, program):
    """(float inputs, labels) for the report, or (None, None) when there are none; labels
    only for a simulation run now (``--simulate``).  A file's faults are named with its
    path."""
    from sparseforge.compiler.errors import InputError
    from sparseforge.compiler.ir import check_inputs

    from .table import inputs_of_table, is_table

    if args.labels and not args.inputs:
        raise InputError(f"--labels {args.labels}: labels go with the inputs they label; pass "
                         f"those with --inputs (without it the report takes the digits test "
                         f"split, with its own labels)")
    if args.inputs and is_table(Path(args.inputs)):
        x, labels = inputs_of_table(args.inputs, args.label_column, args.labels, program)
        labels = labels if args.simulate else None
    elif args.label_column is not None:
        raise InputError("--label-column chooses a column of a .csv --inputs")
    elif args.inputs:
        x = load_npy(args.inputs)
        labels = load_npy(args.labels, "labels") if args.labels and args.simulate else None
    elif program.model_in_features == 64:
        from .sim import default_inputs

        x, labels = default_inputs(program)
    else:
        return None, None
    source = args.inputs or "the digits test split"
    try:
        check_inputs(x, program.model_in_features, program.network.input_map_shape)
    except InputError as error:
        raise InputError(f"{source}: {error}") from None
    # The labels go with the inputs given, all of them: --count cuts both.
    if labels is not None and args.simulate and program.task == "regression":
        labels = check_targets(labels, len(x), program.network.layers[-1].out_features,
                               args.labels or args.inputs)
    elif labels is not None and args.simulate:
        labels = check_labels(labels, len(x), program.network.layers[-1].out_features,
                              args.labels or args.inputs or "the digits labels")
    if args.count:
        x = x[:args.count]
        labels = None if labels is None else labels[:args.count]
    return x, labels


def _named(parse, payload: dict, path: Path) -> None:
    """``parse(payload)`` (the report's reading of a JSON file), its faults named with the
    file's path."""
    try:
        parse(payload)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: {error}") from None


def _check_simulation_of(program, simulation: dict, path: Path) -> None:
    """Refuse the figures of another program's simulation (they would be reported as this
    one's): by the program's digest where the file names it, and by the layer count (all a
    file written before it named its program can tell)."""
    from sparseforge.compiler.errors import InputError

    named = simulation.get("program") if isinstance(simulation, dict) else None
    layers = (simulation.get("cycles") or {}).get("per_layer_mean") if isinstance(
        simulation, dict) else None
    if named and named != program.digest():
        raise InputError(f"{path} holds the figures of another program (digest {named}, this "
                         f"program's is {program.digest()}); simulate this one (--simulate)")
    if isinstance(layers, list) and len(layers) != program.layer_count:
        raise InputError(f"{path} holds the figures of a program of {len(layers)} layers, "
                         f"this one has {program.layer_count}; simulate this one (--simulate)")


def run(args) -> int:
    import sparseforge as sf
    from sparseforge.boards.build import check_record_of
    from sparseforge.compiler.compress.model import CompressedModelError
    from sparseforge.compiler.program import ProgramError
    from sparseforge.compiler.errors import InputWarning
    from sparseforge.run_report import (NotTheSimulatedInputs, build_figures, sim_figures,
                                        write_report)

    console = console_for(args)
    directory = Path(args.program)
    sources = {}
    try:
        program = sf.load_program(directory)
        compressed = sf.load_compressed(args.model) if args.model else None
        x, labels = _inputs(args, program)
        simulation = None
        sim_path = Path(args.sim) if args.sim else directory / "sim.json"
        if args.labels and not args.simulate:
            accuracy = (f"without it the hardware accuracy is {sim_path}'s"
                        if args.sim or sim_path.is_file() else "and none runs")
            warnings.warn(f"--labels {args.labels} is not used: labels give the accuracy of a "
                          f"simulation run now (--simulate), {accuracy}", InputWarning,
                          stacklevel=2)
        if args.simulate:
            if x is None:
                return fail("--simulate needs --inputs: the program does not take the "
                            "digits data's 64 features")
            with console.status(f"simulating {len(x)} inputs on {args.simulator}..."):
                result = sf.simulate(program, x, labels=labels, simulator=args.simulator,
                                     build_dir=directory / "sim")
            simulation = result.to_json()
            sim_path = directory / "sim.json"
            sim_path.write_text(json.dumps(simulation, indent=2) + "\n")
            sources["simulation"] = str(sim_path)
        elif args.sim or sim_path.is_file():
            simulation = _read_json(sim_path, "simulation figures")
            _check_simulation_of(program, simulation, sim_path)
            _named(sim_figures, simulation, sim_path)
            sources["simulation"] = str(sim_path)
        source = args.inputs or "the digits test split"
        if simulation is not None and x is not None:
            count = int(simulation.get("inputs", len(x)))
            if count > len(x):
                given = f"--count {args.count} of {source}" if args.count else source
                return fail(f"{sim_path}: the simulation ran {count} inputs but only {len(x)} "
                            f"are given ({given}); pass the simulated ones with --inputs")
            x = x[:count]           # 'sparseforge sim --count N' ran the first N
        build_path = Path(args.build) if args.build else directory / "bitstream" / "build.json"
        build = None
        if args.build or build_path.is_file():
            build = _read_json(build_path, "build figures")
            _named(build_figures, build, build_path)
            check_record_of(program, build, build_path)
            sources["build"] = str(build_path)
        out = Path(args.output) if args.output else directory / "report"
        with console.status("drawing the plots..."):
            try:
                html = write_report(out, compressed=compressed, program=program,
                                    simulation=simulation, build=build, inputs=x)
            except NotTheSimulatedInputs as error:
                return fail(f"{source}: not the inputs {sim_path} was simulated on "
                            f"({error.detail}); pass those with --inputs (the first "
                            f"{len(x)} are used), or simulate these with --simulate")
    except (ProgramError, CompressedModelError, ValueError, OSError) as error:
        return fail(str(error))
    summary = json.loads((out / "summary.json").read_text())
    render(console, summary, html)
    emit_json(args, {"html": str(html), "markdown": str(out / "report.md"),
                     "plots": [str(out / name) for name in summary["plots"]],
                     "sources": sources, **{k: v for k, v in summary.items()
                                            if k not in ("plots", "layers")}})
    return 0


def render(console, summary: dict, html: Path) -> None:
    from rich import box
    from rich.table import Table

    table = Table(title="Report summary", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("figure", "value", "source"):
        table.add_column(column)
    for row in summary["summary"]:
        table.add_row(row["label"], row["value"], row["source"])
    console.print(table)
    console.print(f"wrote {html} and {html.with_name('report.md')} with "
                  f"{len(summary['plots'])} plots")
