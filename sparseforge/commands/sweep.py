"""``sparseforge sweep [SPEC.toml]``: a design-space sweep on Ray, each point through the pipeline.

Every combination of ``--pes``, ``--sparsity``, ``--weight-bits``, ``--board`` and ``--seeds``
is a point: compress (shared between points with the same compression settings), compile for
the board, golden-model accuracy on the test split, the cycle model's latency and the
compiler's resource estimate; with ``--simulate N`` the first N test images on the generated
Verilog, with ``--build`` the bitstream (Fmax, nextpnr's utilisation).  The axes come from
SPEC.toml, from the flags, or both (a flag overrides the file).

Results stream into OUT/results.jsonl keyed by a content hash of the model, the data, the
settings and the tool versions: the same command again skips finished points and resumes an
interrupted sweep.  A point that does not fit or fails to build is recorded with its reason
and the sweep goes on.  The report is OUT/report.md and OUT/pareto.png: the Pareto front of
accuracy, latency and logic cells per board, and every point's figures.

Ray runs on this machine by default (``--workers`` CPUs, default all); ``--address`` sends the
tasks to a running Ray cluster instead (see docs/sweep.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_json_flag, console_for, emit_json, fail


def register(verbs) -> None:
    parser = verbs.add_parser("sweep", help="design-space sweep on Ray: Pareto front per board",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", nargs="?", help="a TOML file with the axes (see docs/sweep.md)")
    parser.add_argument("--model", help="ONNX file or .pt state_dict of the digits MLP "
                                        "(default: the embedded digits MLP, trained per seed)")
    parser.add_argument("--data", help=".npz with x_train, y_train [, x_val, y_val, x_test, "
                                       "y_test] (default: the digits split)")
    parser.add_argument("--pes", type=_list(int), help="PE counts, e.g. 4,8 (default 8)")
    parser.add_argument("--sparsity", type=_list(float),
                        help="overall sparsities, e.g. 0.8,0.9 (default 0.9)")
    parser.add_argument("--weight-bits", type=_list(int),
                        help="code widths, e.g. 3,4 (default 4)")
    parser.add_argument("--board", type=_list(str),
                        help="boards, e.g. icebreaker,ulx3s-85f (default icebreaker)")
    parser.add_argument("--seeds", type=int, help="seeds 0..SEEDS-1 per setting (default 1)")
    parser.add_argument("--build", action="store_true", default=None,
                        help="build every point's bitstream (minutes each)")
    parser.add_argument("--simulate", type=int, metavar="N",
                        help="run the first N test images of every point on the Verilog")
    parser.add_argument("--cycle-inputs", type=int, metavar="N",
                        help="test images the cycle model runs per point (default all)")
    parser.add_argument("--power", action="append", metavar="BOARD=WATTS", default=[],
                        help="a board's power, for inferences per joule (repeatable)")
    parser.add_argument("--workers", type=int, help="CPUs of the local Ray session (default: "
                                                    "all of this machine's)")
    parser.add_argument("--address", help="a running Ray cluster's address (HOST:PORT, or "
                                          "auto); default: Ray on this machine")
    parser.add_argument("--out", default="build/sweep",
                        help="output folder: store, models, report (default build/sweep)")
    parser.add_argument("--retry-failed", action="store_true",
                        help="run failed points again, also those that failed for good")
    add_json_flag(parser)
    parser.set_defaults(run=run)


def _list(kind):
    def parse(text: str):
        try:
            return tuple(kind(item) for item in text.split(",") if item.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {kind.__name__}, not {text!r}") from None
    parse.__name__ = f"{kind.__name__} list"
    return parse


def spec_from(args):
    """The sweep's spec: the TOML file's, with the flags given on top; and the model and data
    paths."""
    from sparseforge.sweeps import SweepSpec, seed_list

    from .compress import not_a_model, npz_keys

    files = {"model": None, "data": None}
    options = {}
    if args.model and not_a_model(Path(args.model), "--model"):
        raise ValueError(not_a_model(Path(args.model), "--model"))
    if args.spec and npz_keys(Path(args.spec)) is not None:
        # The data (or a model) where the TOML spec goes: TOML's reader would only say that
        # the bytes are not UTF-8.
        keys = npz_keys(Path(args.spec))
        given = "data" if "x_train" in keys else "arrays"
        raise ValueError(f"{args.spec}: is an .npz of {given} ({', '.join(keys) or 'none'}), "
                         f"not a sweep spec (a TOML file): pass data as --data {args.spec}, "
                         f"and the axes as flags (--pes, --sparsity, ...) or in a TOML file")
    if args.spec:
        spec, files = SweepSpec.from_toml(args.spec)
        options = {f: getattr(spec, f) for f in spec.__dataclass_fields__}
    flags = {"pes": args.pes, "sparsity": args.sparsity, "weight_bits": args.weight_bits,
             "boards": args.board, "build": args.build, "simulate": args.simulate,
             "cycle_inputs": args.cycle_inputs}
    options |= {name: value for name, value in flags.items() if value is not None}
    if args.seeds is not None:
        options["seeds"] = seed_list(args.seeds)
    if args.power:
        power = dict(options.get("power_w", ()))
        for item in args.power:
            board, _, watts = item.partition("=")
            try:
                power[board] = float(watts)
            except ValueError:
                raise ValueError(f"--power takes BOARD=WATTS, not {item!r}") from None
        options["power_w"] = tuple(power.items())
    for name in ("model", "data"):
        if getattr(args, name):
            files[name] = Path(getattr(args, name))
    return SweepSpec(**options), files


def run(args) -> int:
    from sparseforge.cluster import RayMissing
    from sparseforge.sweeps import sweep

    from .compress import load_data, load_model

    console = console_for(args)
    try:
        spec, files = spec_from(args)
        model = None
        if files["model"] is not None:
            model = load_model(files["model"], progress=False)
        train = val = test = None
        if files["data"] is not None:
            train, val, test = load_data(files["data"])
    except (ValueError, TypeError, RayMissing) as error:
        return fail(str(error))
    total = len(spec.points())
    console.print(f"sweep: {total} points ({len(spec.boards)} boards x {len(spec.pes)} PE "
                  f"counts x {len(spec.sparsity)} sparsities x {len(spec.weight_bits)} weight "
                  f"widths x {len(spec.seeds)} seeds)"
                  + (", with bitstreams" if spec.build else "")
                  + (f", {spec.simulate} images simulated each" if spec.simulate else "")
                  + f"; Ray {'at ' + args.address if args.address else 'on this machine'}")
    try:
        with _Display(console, total) as display:
            result = sweep(model, spec=spec, address=args.address, workers=args.workers,
                           out=args.out, train=train, val=val, test=test,
                           retry_failed=args.retry_failed, progress=display.update)
    except (ValueError, TypeError, RayMissing, ConnectionError) as error:
        return fail(str(error))
    render(console, result)
    emit_json(args, result.to_json())
    mismatched = [p for p in result.points
                  if p["status"] == "ok" and not p.get("simulation", {}).get("bit_exact", True)]
    return 1 if mismatched else 0


class _Display:
    """The progress line: points done of all, running, failed, from the store, time left."""

    def __init__(self, console, total: int):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("[bold]points"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TextColumn("running {task.fields[running]}, failed {task.fields[failed]}, "
                       "from the store {task.fields[cached]}"),
            TimeElapsedColumn(), TextColumn("{task.fields[eta]}"), console=console,
            transient=False)
        self.task = self.progress.add_task("sweep", total=total, running=0, failed=0,
                                           cached=0, eta="")

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def update(self, status) -> None:
        eta = "" if status.eta is None else f"{_duration(status.eta)} left"
        self.progress.update(self.task, completed=status.done, running=status.running,
                             failed=status.failed, cached=status.cached, eta=eta)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


def render(console, result) -> None:
    from rich import box
    from rich.table import Table

    from sparseforge.sweeps import COLUMNS, headline, subject_line, table_row

    if result.subject:
        console.print(subject_line(result.subject), highlight=False)
    for board, front in result.pareto().items():
        count = sum(p["board"] == board and p["status"] == "ok" for p in result.points)
        failed = sum(p["board"] == board and p["status"] != "ok" for p in result.points)
        table = Table(title=f"{board}: Pareto front of {count} points"
                            + (f" ({failed} more failed, below)" if failed else "")
                            + " (accuracy up; latency, logic cells down)",
                      title_justify="left", box=box.SIMPLE_HEAD)
        for column in COLUMNS:
            table.add_column(column, justify="left" if column in ("board", "status")
                             else "right")
        for point in front:
            table.add_row(*table_row(point))
        if front:
            # Wide enough for every column when the output goes to a file or a pipe.
            console.print(table, width=max(console.width, 120))
        else:
            console.print(f"{board}: no point fits")
    for point in result.points:
        if point["status"] != "ok":
            console.print(f"[yellow]failed[/yellow] {_label(point)}: {point['stage']}: "
                          f"{headline(point['reason'])}")
    console.print(f"{len(result.records)} points: {result.computed} computed, {result.cached} "
                  f"from the store, {result.failed} failed; {result.seconds:.1f} s")
    console.print(f"store: {result.store}; report: {result.report}"
                  + (f"; plot: {result.plot}" if result.plot else ""))


def _label(point: dict) -> str:
    from sparseforge.sweeps import Point

    return Point(point["board"], point["pes"], point["sparsity"], point["weight_bits"],
                 point["seed"]).label
