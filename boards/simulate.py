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

__all__ = ["simulate_board"]

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
    source = build_dir / "board.v"
    design = LinkedEngine(config, None if load_over_link else image,
                          clocks_per_bit=clocks_per_bit)
    source.write_text(verilog.convert(design, name=TOPLEVEL, emit_src=False))
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
    (build_dir / "plan.json").write_text(json.dumps(plan))
    run_cocotb([source], TOPLEVEL, "sparseforge.boards.benches.board_bench",
               build_dir=build_dir / f"{simulator}_build", simulator=simulator,
               bench_file=build_dir / "plan.json", rebuild=True)
    return json.loads((build_dir / "results.json").read_text())
