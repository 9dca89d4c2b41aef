"""Simulate the whole board link: the host runtime against ``LinkedEngine`` under cocotb."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from amaranth.back import verilog

from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig
from sparseforge.sim.runner import run_cocotb

from .gateware.core import LinkedEngine

__all__ = ["simulate_board", "fault_campaign"]

TOPLEVEL = "board"


def simulate_board(config: EngineConfig, image, inputs, *, out_features: int, build_dir: Path,
                   clocks_per_bit: int = 8, load_over_link: bool = False,
                   fault_rate: float = 0.0, seed: int = 1, simulator: str = "verilator",
                   retries: int = 8) -> dict:
    """Run ``inputs`` (integers) through the simulated board with the host's ``Device``.

    With ``load_over_link`` the board starts empty and the host loads the image over the UART;
    otherwise the image is in the "bitstream" (memory initial values).  ``fault_rate`` injects
    line faults.  Returns what the host saw: outputs, cycles, failures, retries, and the
    engine's own count of runs.
    """
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    design = LinkedEngine(config, None if load_over_link else image,
                          clocks_per_bit=clocks_per_bit)
    np.save(build_dir / "inputs.npy", np.asarray(inputs, dtype=np.int64))
    plan = {
        "clocks_per_bit": clocks_per_bit, "inputs": str(build_dir / "inputs.npy"),
        "out_features": int(out_features), "layers": int(image.layer_count),
        "fault_rate": fault_rate, "seed": seed, "retries": retries,
        "results": str(build_dir / "results.json"),
    }
    if load_over_link:
        np.save(build_dir / "writes.npy", isa.image_bus_writes(config, image))
        plan["writes"] = str(build_dir / "writes.npy")
    return _run(build_dir, design, plan, simulator)


def fault_campaign(config: EngineConfig, image, inputs, expected, *, other_image,
                   other_expected, out_features: int, build_dir: Path,
                   per_scenario: int = 8, clocks_per_bit: int = 8, seed: int = 1,
                   simulator: str = "verilator", retries: int = 10) -> dict:
    """The link's fault campaign (``benches/link_faults.py``) on the real gateware: the board
    starts with ``image``; ``other_image`` (same engine) is the model whose load is cut
    halfway, then loaded whole.  ``expected`` / ``other_expected`` are the golden outputs of
    ``inputs`` for each.  Returns the counts per scenario and in total."""
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    design = LinkedEngine(config, image, clocks_per_bit=clocks_per_bit)
    arrays = {"inputs": inputs, "expected": expected, "expected_b": other_expected,
              "writes": isa.image_bus_writes(config, image),
              "writes_b": isa.image_bus_writes(config, other_image)}
    plan = {"campaign": True, "clocks_per_bit": clocks_per_bit,
            "out_features": int(out_features), "layers": int(image.layer_count),
            "per_scenario": per_scenario, "seed": seed, "retries": retries,
            "results": str(build_dir / "results.json")}
    for name, array in arrays.items():
        np.save(build_dir / f"{name}.npy", np.asarray(array))
        plan[name] = str(build_dir / f"{name}.npy")
    return _run(build_dir, design, plan, simulator)


def _run(build_dir: Path, design, plan: dict, simulator: str) -> dict:
    source = build_dir / "board.v"
    source.write_text(verilog.convert(design, name=TOPLEVEL, emit_src=False))
    (build_dir / "plan.json").write_text(json.dumps(plan))
    run_cocotb([source], TOPLEVEL, "sparseforge.boards.benches.board_bench",
               build_dir=build_dir / f"{simulator}_build", simulator=simulator,
               bench_file=build_dir / "plan.json", rebuild=True)
    return json.loads((build_dir / "results.json").read_text())
