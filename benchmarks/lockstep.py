"""Run the engine of this tree and the engine of an earlier commit side by side, cycle by cycle.

A refactoring of ``hw/`` that must not change the hardware (splitting a component, renaming
signals) is checked here: both engines, generated for the same configurations, get the same
random stimulus in one Amaranth simulation -- an image loaded over the host bus, inputs
streamed in with idle cycles, outputs taken with back-pressure, host reads of registers, cycle
counters and activations at random moments, and writes refused while a run is busy -- and every
output port of the two is compared in every cycle.  The earlier commit's sources are taken with
``git archive`` and imported under another package name, so both live in one process.

    .venv/bin/python benchmarks/lockstep.py --against 0b7fcb5 [--cases 20] [--seed 1]

Prints, per configuration, the cycles compared and the first difference if there is one; exits
1 when any port differed.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import io
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np
from amaranth import Module
from amaranth.sim import Simulator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sparseforge.compiler import bus, isa  # noqa: E402
from sparseforge.hw.engine import Engine  # noqa: E402
from tests.oracle import build_image, config_for, random_layers  # noqa: E402

BASE_PACKAGE = "sparseforge_base"
OUTPUTS = ("busy", "bus.r_data", "bus.r_valid", "input.ready", "output.valid",
           "output.payload")


def import_base_engine(revision: str, into: Path):
    """The ``Engine`` class of ``revision``, imported as package :data:`BASE_PACKAGE`."""
    archive = subprocess.run(["git", "archive", "--format=tar", revision], cwd=ROOT,
                             check=True, capture_output=True).stdout
    source = into / "source"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(source, filter="data")
    mapping = tomllib.loads((source / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package, folder in mapping["package-dir"].items():
        target = into / "staged" / package.replace("sparseforge", BASE_PACKAGE, 1).replace(
            ".", "/")
        for path in (source / folder).rglob("*.py"):
            destination = target / path.relative_to(source / folder)
            destination.parent.mkdir(parents=True, exist_ok=True)
            text = re.sub(r"\bsparseforge\.", f"{BASE_PACKAGE}.", path.read_text())
            text = re.sub(r"\bfrom sparseforge import\b", f"from {BASE_PACKAGE} import", text)
            # The staged copy is not installed: its version is a name ("_metadata.version(...)"
            # in the package's __init__ since 26712f1, "metadata.version(...)" before).
            destination.write_text(re.sub(r'\b_?metadata\.version\("sparseforge"\)', '"base"',
                                          text))
    sys.path.insert(0, str(into / "staged"))
    return importlib.import_module(f"{BASE_PACKAGE}.hw.engine").Engine, \
        _base_config_class(revision)


def _base_config_class(revision):
    for module in (f"{BASE_PACKAGE}.compiler.config", f"{BASE_PACKAGE}.hw.config"):
        try:
            return importlib.import_module(module).EngineConfig
        except ImportError:
            continue
    raise ImportError(f"no EngineConfig in {revision}")


def port(engine, path):
    value = engine
    for name in path.split("."):
        value = getattr(value, name)
    return value


def lockstep(config, base_engine_class, base_config_class, *, seed, cases):
    """Run both engines on the same stimulus; return the cycles compared, the runs that
    streamed out every output, and the first difference (None if there was none)."""
    rng = np.random.default_rng(seed)
    shapes = [(int(rng.integers(2, config.max_features + 1)), config.max_features)]
    shapes.append((int(rng.integers(2, config.max_features + 1)), shapes[0][0]))
    layers = random_layers(rng, shapes, density=float(rng.uniform(0.1, 0.6)))
    sized = config_for(layers, config.pes, config.scan_lanes, config.fifo_depth)
    config = dataclasses.replace(
        config, **{name: getattr(sized, name) for name in
                   ("max_features", "max_rows", "entry_depth", "pointer_depth", "bias_depth",
                    "occupancy_depth", "max_layers", "acc_bits", "bias_bits")})
    image = build_image(config, layers)
    new = Engine(config)
    old = base_engine_class(base_config_class.from_json(config.to_json()))
    top = Module()
    top.submodules.new, top.submodules.old = new, old
    inputs = ("bus.addr", "bus.w_data", "bus.w_en", "bus.r_en", "input.valid",
              "input.payload", "output.ready")
    for name in inputs:
        top.d.comb += port(old, name).eq(port(new, name))
    writes = isa.image_bus_writes(config, image)
    registers = [bus.bus_address(bus.Region.REGISTERS, r) for r in range(7)]
    cycles_region = [bus.bus_address(bus.Region.CYCLES, layer) for layer in range(2)]
    activations = [bus.bus_address(bus.Region.ACTIVATIONS, isa.activation_index(i, config))
                   for i in range(config.max_features)]
    compared = 0
    difference = None
    runs = []

    async def testbench(ctx):
        nonlocal compared, difference

        async def tick():
            nonlocal compared, difference
            await ctx.tick()
            for name in OUTPUTS:
                a = ctx.get(port(new, name))
                b = ctx.get(port(old, name))
                a = a.as_value().value if hasattr(a, "as_value") else a
                b = b.as_value().value if hasattr(b, "as_value") else b
                if a != b and difference is None:
                    difference = f"cycle {compared}: {name} is {a} here, {b} at the base"
            compared += 1

        while ctx.get(new.busy):               # the accumulators' clear after reset
            await tick()
        for address, value in writes:
            ctx.set(new.bus.addr, int(address))
            ctx.set(new.bus.w_data, int(value))
            ctx.set(new.bus.w_en, 1)
            await tick()
        ctx.set(new.bus.w_en, 0)
        for _ in range(cases):
            x = rng.integers(-128, 128, shapes[0][1])
            x[rng.random(len(x)) < rng.uniform(0, 0.7)] = 0
            sent, taken, last_seen = 0, 0, False
            for _ in range(40 * (config.max_features + 20) * 8):
                ctx.set(new.input.valid, 0)
                ctx.set(new.bus.r_en, 0)
                ctx.set(new.bus.w_en, 0)
                if sent < len(x) and rng.random() > 0.2:
                    ctx.set(new.input.valid, 1)
                    ctx.set(new.input.payload, {"value": int(x[sent]),
                                                "last": sent == len(x) - 1})
                ctx.set(new.output.ready, int(rng.random() > 0.3))
                choice = rng.random()
                if choice < 0.15:
                    pool = registers + cycles_region + activations
                    ctx.set(new.bus.addr, int(pool[rng.integers(len(pool))]))
                    ctx.set(new.bus.r_en, 1)
                elif choice < 0.17:
                    # Refused while busy; while idle it lands in both engines alike.
                    ctx.set(new.bus.addr, int(writes[rng.integers(len(writes)), 0]))
                    ctx.set(new.bus.w_data, int(writes[rng.integers(len(writes)), 1]))
                    ctx.set(new.bus.w_en, int(ctx.get(new.busy)))
                if ctx.get(new.input.valid) and ctx.get(new.input.ready):
                    sent += 1
                if ctx.get(new.output.valid) and ctx.get(new.output.ready):
                    taken += 1
                    last_seen = ctx.get(new.output.payload).last
                await tick()
                if last_seen and not ctx.get(new.busy):
                    break
            runs.append((sent, taken))
            ctx.set(new.input.valid, 0)
        ctx.set(new.bus.r_en, 0)

    simulator = Simulator(top)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    finished = sum(taken == shapes[-1][0] for _, taken in runs)
    return compared, finished, difference


CONFIGS = {
    "N=4, 2 lanes": dict(pes=4, scan_lanes=2),
    "N=3, 1 lane": dict(pes=3, scan_lanes=1),
    "N=8 iCE40 flags": dict(pes=8, scan_lanes=1, fifo_depth=2, acc_memory_bits=16,
                            readout_register=True, decoded_weights=True, writeback_lanes=4),
    "N=8 ECP5 flags": dict(pes=8, scan_lanes=8, column_queue=True, readout_register=True,
                           link_registers=True, decoded_weights=True),
    "N=4 shared requantizers": dict(pes=4, scan_lanes=4, writeback_lanes=1, fifo_depth=3),
    # More PEs than a byte of the offer stage's refusals (its OR over them is a tree).
    "N=20 ECP5 flags": dict(pes=20, scan_lanes=4, column_queue=True, readout_register=True,
                            link_registers=True, decoded_weights=True, fifo_depth=2),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="git revision of the base engine")
    parser.add_argument("--cases", type=int, default=20, help="inputs per configuration")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    from sparseforge.compiler.config import EngineConfig

    failed = False
    with tempfile.TemporaryDirectory() as work:
        base_engine, base_config = import_base_engine(args.against, Path(work))
        for index, (name, fields) in enumerate(CONFIGS.items()):
            config = EngineConfig(max_features=24 if fields["pes"] <= 4 else 40, **fields)
            started = time.perf_counter()
            compared, finished, difference = lockstep(config, base_engine, base_config,
                                                      seed=args.seed + index, cases=args.cases)
            verdict = "identical" if difference is None else f"DIFFERENT: {difference}"
            print(f"{name:<26} {finished:>3} runs, {compared:>6} cycles compared: {verdict}  "
                  f"({time.perf_counter() - started:.0f} s)")
            failed |= difference is not None
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
