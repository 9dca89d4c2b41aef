"""Simulate the whole board link: the host runtime against ``LinkedEngine`` under cocotb, at a
board's clocks and baud rate (``LinkTiming``: the iCEBreaker's unless told otherwise)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from amaranth.back import verilog

from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig
from sparseforge.sim.runner import run_cocotb

from .gateware.core import LinkedEngine
from .registry import board, clocks_per_bit
from .top import clocking_for

__all__ = ["simulate_board", "fault_campaign", "LinkTiming"]

TOPLEVEL = "board"


@dataclass(frozen=True)
class LinkTiming:
    """The clocks and the line of a simulated board: the engine's clock, the link's own clock
    and the baud rate (a whole number of link cycles per bit)."""
    engine_hz: float
    link_hz: float
    baud: int

    @classmethod
    def of(cls, board_name: str = "icebreaker", frequency_mhz: float | None = None):
        """A board's: its engine clock at ``frequency_mhz`` as its PLL makes it (default: the
        board's target), its link clock and baud rate."""
        entry = board(board_name)
        engine = clocking_for(entry, frequency_mhz or entry.target_mhz).frequency_hz
        return cls(engine, entry.link_clock_hz, entry.baud)

    @property
    def clocks_per_bit(self) -> int:
        return clocks_per_bit(self.link_hz, self.baud)

    @property
    def byte_seconds(self) -> float:
        """A character's time on the line (8N1: 10 bits)."""
        return 10 * self.clocks_per_bit / self.link_hz

    def plan(self) -> dict:
        # cocotb's clocks take an even number of the simulator's picoseconds.
        return {"engine_period_ps": 2 * round(0.5e12 / self.engine_hz),
                "link_period_ps": 2 * round(0.5e12 / self.link_hz),
                "clocks_per_bit": self.clocks_per_bit}


def simulate_board(config: EngineConfig, image, inputs, *, out_features: int, build_dir: Path,
                   timing: LinkTiming | None = None, load_over_link: bool = False,
                   fault_rate: float = 0.0, seed: int = 1, simulator: str = "verilator",
                   retries: int = 8, windows=()) -> dict:
    """Run ``inputs`` (integers) through the simulated board with the host's ``Device``, one
    ``infer`` after another; then, for each of ``windows``, all of them again with
    ``infer_many(window=...)``.

    With ``load_over_link`` the board starts empty and the host loads the image over the UART;
    otherwise the image is in the "bitstream" (memory initial values).  ``fault_rate`` injects
    line faults.  ``timing``: the board's clocks and baud rate (default: the iCEBreaker's).
    Returns what the host saw: outputs, cycles, failures, retries, the engine's own count of
    runs, and the simulated seconds the inferences took (``seconds``; ``streamed``: per window,
    the outputs, total cycles and seconds).
    """
    timing = timing or LinkTiming.of()
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    design = LinkedEngine(config, None if load_over_link else image,
                          clocks_per_bit=timing.clocks_per_bit)
    np.save(build_dir / "inputs.npy", np.asarray(inputs, dtype=np.int64))
    plan = {
        **timing.plan(), "inputs": str(build_dir / "inputs.npy"),
        "out_features": int(out_features), "layers": int(image.layer_count),
        "fault_rate": fault_rate, "seed": seed, "retries": retries,
        "results": str(build_dir / "results.json"), "windows": [int(w) for w in windows],
    }
    if load_over_link:
        np.save(build_dir / "writes.npy", isa.image_bus_writes(config, image))
        plan["writes"] = str(build_dir / "writes.npy")
    return _run(build_dir, design, plan, simulator)


def simulate_program_run(program, x, *, build_dir: Path, image_on_board: bool = True,
                         load: bool = False, timing: LinkTiming | None = None,
                         simulator: str = "verilator") -> dict:
    """``sparseforge run``'s work (``program_run.run_program``) on the simulated board: the
    float inputs ``x`` of ``program`` streamed over the UART.  The board starts with the
    program's image with ``image_on_board``, else empty; ``load`` loads it over the link
    first.  Returns what the host saw (outputs, predictions, cycles, the progress calls,
    simulated seconds), or ``{"error": ...}`` when the run was refused."""
    timing = timing or LinkTiming.of()
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    program.save(build_dir / "program")
    np.save(build_dir / "run_inputs.npy", np.asarray(x, dtype=np.float64))
    design = LinkedEngine(program.config, program.image if image_on_board else None,
                          clocks_per_bit=timing.clocks_per_bit)
    plan = {**timing.plan(), "results": str(build_dir / "results.json"),
            "program_run": {"program": str(build_dir / "program"), "load": load,
                            "inputs": str(build_dir / "run_inputs.npy")}}
    return _run(build_dir, design, plan, simulator)


def fault_campaign(config: EngineConfig, image, inputs, expected, *, other_image,
                   other_expected, out_features: int, build_dir: Path,
                   per_scenario: int = 8, timing: LinkTiming | None = None, seed: int = 1,
                   simulator: str = "verilator", retries: int = 10) -> dict:
    """The link's fault campaign (``benches/link_faults.py``) on the real gateware: the board
    starts with ``image``; ``other_image`` (same engine) is the model whose load is cut
    halfway, then loaded whole.  ``expected`` / ``other_expected`` are the golden outputs of
    ``inputs`` for each.  ``timing``: the board's clocks and baud rate (default: the
    iCEBreaker's).  Returns the counts per scenario and in total."""
    timing = timing or LinkTiming.of()
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    design = LinkedEngine(config, image, clocks_per_bit=timing.clocks_per_bit)
    arrays = {"inputs": inputs, "expected": expected, "expected_b": other_expected,
              "writes": isa.image_bus_writes(config, image),
              "writes_b": isa.image_bus_writes(config, other_image)}
    plan = {"campaign": True, **timing.plan(),
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
