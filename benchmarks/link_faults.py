"""Fault injection on the host link against the real gateware: the host's ``Device`` talks to
``LinkedEngine`` (UART, link bridge, engine) in Verilator under cocotb through a line that flips
bits, drops bytes, cuts, duplicates and replays frames and puts garbage between them; a host is
restarted mid-sequence; a model load is cut halfway (``boards/benches/link_faults.py``).

Prints, per scenario and in total: faults injected, commands, inferences, correct results,
LinkErrors (no good reply after every retry), refusals (the board said no, e.g. no complete
image), duplicate executions, silent wrong results and hangs.  The last three must be 0.

    .venv/bin/python benchmarks/link_faults.py [--per-scenario 12] [--seed 1] [--board B] [--json]

The line runs at the board's baud rate and clocks (``--board``, default the iCEBreaker: 3 Mbaud,
4 cycles of the 12 MHz link clock per bit, the engine at 33 MHz).

The model is a small random two-layer network (12 inputs, 16 hidden, 6 outputs, 4 PEs), so that
a frame is short enough to get through a line with 3% of its bytes damaged.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COLUMNS = ("faults", "commands", "inferences", "correct", "link_errors", "refusals",
           "silent_wrong", "hangs")


def models(seed: int):
    """Model A (the bitstream's) and model B (loaded over the link), same engine."""
    from tests.oracle import build_image, config_for, random_layers
    from tests.test_hw_engine import golden

    rng = np.random.default_rng(seed)
    shapes = [(16, 12), (6, 16)]
    a = random_layers(rng, shapes, density=0.4)
    config = config_for(a, 4, 2)
    while True:
        b = random_layers(rng, shapes, density=0.3)
        image_b = build_image(config, b)
        if max(len(e) for e in image_b.entries) <= config.entry_depth:
            break
    inputs = rng.integers(-128, 128, (12, 12))
    return (config, build_image(config, a), image_b, inputs, golden(a, inputs)[-1],
            golden(b, inputs)[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-scenario", type=int, default=12, help="inferences per scenario")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--board", default="icebreaker", help="whose clocks and baud rate")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from sparseforge.boards.simulate import LinkTiming, fault_campaign

    timing = LinkTiming.of(args.board)

    config, image, image_b, inputs, expected, expected_b = models(args.seed)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sparseforge-link-faults-") as folder:
        result = fault_campaign(config, image, inputs, expected, other_image=image_b,
                                other_expected=expected_b, out_features=expected.shape[1],
                                build_dir=Path(folder), per_scenario=args.per_scenario,
                                seed=args.seed, timing=timing)
    result["seconds"] = round(time.monotonic() - started, 1)
    result["baud"], result["clocks_per_bit"] = timing.baud, timing.clocks_per_bit
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.board}: {timing.baud} baud, {timing.clocks_per_bit} cycles of the "
          f"{timing.link_hz / 1e6:g} MHz link clock per bit, engine at "
          f"{timing.engine_hz / 1e6:g} MHz")
    width = max(len(name) for name in result["scenarios"]) + 2
    print(f"{'scenario':{width}s}" + "".join(f"{c:>13s}" for c in COLUMNS))
    for name, figures in result["scenarios"].items():
        print(f"{name:{width}s}" + "".join(f"{figures[c]:13d}" for c in COLUMNS))
    total = result["total"]
    print(f"{'total':{width}s}" + "".join(f"{total[c]:13d}" for c in COLUMNS))
    print(f"duplicate executions: {total['duplicates']} (runs the board started: "
          f"{result['runs_seen']}); silent wrong results: {total['silent_wrong']}; hangs: "
          f"{total['hangs']}; retried commands: {total['retried']}")
    print(f"faults by kind: {result['injected']}")
    cut = result["scenarios"]["model load cut halfway"]["run_refused_after_cut"]
    print(f"RUN after a load cut halfway refused: {cut}; {result['seconds']} s")


if __name__ == "__main__":
    main()
