"""Every register input slower than a period, not only the worst path nextpnr prints.

nextpnr's log names one critical path per clock; fixing it shows the next only after another
place and route (15-30 minutes for the ECP5-85F engine).  A run with ``--report report.json
--detailed-timing-report`` writes, for every net that ends at a register input (flip-flop data,
clock enable and reset, LUT-RAM writes, DSP and block-RAM ports), the earliest and latest
arrival of a signal there.  This script lists the register inputs whose latest arrival is past
the period of its clock, grouped by clock, design unit and register, with the net that reaches
the worst of each group.  Each clock's period is its constraint in the report (the engine's
``sync`` clock and the slower clock of the UART link), unless ``--period`` gives one for all.
(The report holds no combinational arcs, so where a path starts is not in it; nextpnr's log has
the start of the worst one.  Setup times are not in it either; nextpnr's ECP5 figures for
flip-flops are zero.)

    python benchmarks/timing_paths.py REPORT.json [--period NS] [--top 40]

To get a report, run nextpnr on a build's ``top.json`` as the build script does, adding
``--report report.json --detailed-timing-report``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict


def register_inputs(report: dict) -> list[tuple[float, str, str, str, str]]:
    """(latest arrival ns, cell, port, net, clock) for every register input in the report."""
    found = []
    for net in report["detailed_net_timings"]:
        for end in net["endpoints"]:
            delay = end["delay"]
            latest = max(delay) if isinstance(delay, list) else delay
            clock = end.get("event", "").split(" ")[-1]
            found.append((latest, end["cell"], end["port"], net["net"], clock))
    return found


def clock_periods(report: dict) -> dict[str, float]:
    """Each constrained clock's period in ns, by net name."""
    return {clock: 1000 / figures["constraint"]
            for clock, figures in report.get("fmax", {}).items() if figures.get("constraint")}


def unit_of(cell: str) -> str:
    """The design unit of a cell, numbers of repeated units folded (pe17 -> pe*)."""
    parts = cell.split("$")[0].split(".")[:-1]
    parts = [re.sub(r"\d+$", "*", p) if re.match(r"(pe|requantizer|writeback)\d+$", p) else p
             for p in parts]
    return ".".join(parts[:4])


def signal_of(cell: str) -> str:
    base = cell.split("$")[0].split(".")[-1]
    return re.sub(r"_(TRELLIS|LUT4|CCU2C|PFUMX|L6MUX|DPR16X4|MULT18X18D|DP16KD)\w*$", "", base)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report")
    parser.add_argument("--period", type=float, default=None,
                        help="ns, for every clock (default: each clock's constraint)")
    parser.add_argument("--top", type=int, default=40, help="groups to list per clock")
    args = parser.parse_args(argv)
    with open(args.report) as f:
        report = json.load(f)
    periods = clock_periods(report)
    by_clock = defaultdict(list)
    for end in register_inputs(report):
        by_clock[end[4]].append(end)
    for clock, ends in sorted(by_clock.items(), key=lambda kv: periods.get(kv[0], 1e9)):
        period = args.period or periods.get(clock)
        if period is None:
            continue                    # unconstrained (asynchronous inputs)
        failing = [e for e in ends if e[0] > period]
        worst = max(e[0] for e in ends)
        print(f"clock {clock}: {len(ends)} register inputs; latest arrival {worst:.2f} ns "
              f"({1000 / worst:.1f} MHz); {len(failing)} later than {period:.2f} ns")
        groups = defaultdict(list)
        for end in failing:
            groups[(unit_of(end[1]), signal_of(end[1]), re.sub(r"\d+$", "*", end[2]))].append(end)
        rows = sorted(groups.items(), key=lambda kv: -max(kv[1])[0])
        for (unit, signal, port), items in rows[:args.top]:
            latest, _cell, _port, net, _clock = max(items)
            print(f"{latest:6.2f} ns  x{len(items):<5} {unit}.{signal}.{port}  <- {net}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
