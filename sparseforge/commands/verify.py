"""``sparseforge verify --cases N``: random networks on the generated Verilog, across Ray workers.

Each case is a random sparse network with random inputs (1-3 layers, 1-50% weight density,
tall layers with zero runs that need padding, 0-90% zero inputs), determined by the seed, its
PE count and its index.  There is one engine per PE count, compiled once per node; the cases
are loaded into it over the host bus in batches, one Ray task each, half of them with stalls
on the streams.  Every output must equal the golden model's bit for bit and every layer's
cycle counter the cycle model's prediction.

``--networks conv`` makes each case a random convolutional network (one or two convolutions,
pooling or not, a Linear after them or not) with one input map, on conv-mode engines (4 and 8
PEs by default, the 8-PE one of the iCEBreaker's shape), each sized for the campaign's cases.

Prints the cases per second and every mismatch; each is saved in OUT/mismatches/<case>/ with
its program, inputs, expected and actual outputs, and case.json holding the seed and the
command that runs it again (``--pes N --seed S --case I``).
"""

from __future__ import annotations

import argparse

from .common import add_json_flag, console_for, emit_json, fail, positive_int


def register(verbs) -> None:
    parser = verbs.add_parser("verify", help="random networks on the Verilog, bit- and "
                                             "cycle-exact, on Ray",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=positive_int, default=1000,
                        help="random cases, shared out over the engines (default 1000)")
    parser.add_argument("--networks", choices=("linear", "conv"), default="linear",
                        help="random chains of Linear layers (the default) or convolutional "
                             "networks on conv-mode engines")
    parser.add_argument("--pes", type=_ints, default=None,
                        help="PE counts of the engines, e.g. 1,2,4,8,16 (the default; 4,8 "
                             "for conv networks)")
    parser.add_argument("--simulator", default="verilator", choices=("verilator", "icarus"))
    parser.add_argument("--seed", type=int, default=0, help="campaign seed (default 0)")
    parser.add_argument("--case", type=int, action="append", metavar="I",
                        help="run only case I (repeatable; needs a single --pes), e.g. to "
                             "reproduce a mismatch")
    parser.add_argument("--batch", type=positive_int, default=100,
                        help="cases per Ray task, i.e. per simulator start (default 100)")
    parser.add_argument("--workers", type=positive_int, help="CPUs of the local Ray session (default: "
                                                    "all of this machine's)")
    parser.add_argument("--address", help="a running Ray cluster's address (HOST:PORT, or "
                                          "auto); default: Ray on this machine")
    parser.add_argument("--out", default="build/verify",
                        help="output folder: simulators, mismatches, verify.json (default "
                             "build/verify)")
    add_json_flag(parser)
    parser.set_defaults(run=run)


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(item) for item in text.split(",") if item.strip())
    except ValueError:
        values = ()
    if not values:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of integers, not "
                                         f"{text!r}")
    return values


def run(args) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from sparseforge.cluster import RayMissing
    from sparseforge.hw.toolchain import ToolNotFoundError, require
    from sparseforge.verify import verify

    console = console_for(args)
    pes = args.pes
    try:
        require({"verilator": "verilator", "icarus": "iverilog"}[args.simulator])
    except ToolNotFoundError as error:
        return fail(str(error))
    progress = Progress(TextColumn("[bold]cases"), BarColumn(),
                        TextColumn("{task.completed}/{task.total}"),
                        TextColumn("{task.fields[rate]}"),
                        TextColumn("mismatches {task.fields[mismatches]}"), TimeElapsedColumn(),
                        console=console)
    task = progress.add_task("verify", total=None, rate="", mismatches=0)
    clock = {}

    def update(done, total, mismatches):
        import time

        clock.setdefault("start", time.perf_counter())
        elapsed = time.perf_counter() - clock["start"]
        rate = f"{done / elapsed:.1f} cases/s" if done and elapsed else ""
        progress.update(task, completed=done, total=total, rate=rate, mismatches=mismatches)

    try:
        with progress:
            campaign = verify(args.cases, pes=pes, simulator=args.simulator, seed=args.seed,
                              address=args.address, workers=args.workers, out=args.out,
                              batch=args.batch, only=args.case, networks=args.networks,
                              progress=update)
    except (ValueError, RayMissing, ConnectionError) as error:
        return fail(str(error))
    render(console, campaign)
    emit_json(args, campaign.to_json())
    return 1 if campaign.mismatches else 0


def render(console, campaign) -> None:
    from rich import box
    from rich.table import Table

    kind = "convolutional networks" if campaign.networks == "conv" else "cases"
    table = Table(title=f"{campaign.cases} random {kind} on {campaign.simulator}, seed "
                        f"{campaign.seed}", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("PEs", "cases", "task seconds", "in the simulator", "mismatches"):
        table.add_column(column, justify="right")
    for pes, figures in campaign.per_engine.items():
        table.add_row(str(pes), str(figures["cases"]), f"{figures['seconds']:.1f}",
                      f"{figures['simulated_seconds']:.1f}",
                      str(sum(m.pes == pes for m in campaign.mismatches)))
    console.print(table)
    for mismatch, path in zip(campaign.mismatches, campaign.saved):
        console.print(f"[red]mismatch[/red] {mismatch.name} ({mismatch.kind}): "
                      f"{mismatch.detail.splitlines()[0] if mismatch.detail else ''}")
        console.print(f"  saved in {path}; again: {mismatch.command}")
    verdict = ("[green]0 mismatches[/green]" if not campaign.mismatches
               else f"[red]{len(campaign.mismatches)} mismatches[/red]")
    console.print(f"{campaign.cases} cases in {campaign.seconds:.1f} s: "
                  f"{campaign.cases_per_second:.1f} cases per second on {campaign.nodes} "
                  f"node(s); bit-exact and cycle-exact checks: {verdict}")
    console.print(f"summary: {campaign.out / 'verify.json'}")
