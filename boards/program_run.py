"""A compiled program's inferences on a board, over its link: what ``sparseforge run`` does
once it has a :class:`~sparseforge.boards.device.Device`.

It checks that the board's engine is the program's (its PE count, then the loaded image's
identity, or loads the image first), quantizes the float inputs as the program does, streams
them with :meth:`Device.infer_many` and reads the last run's per-layer cycle counters.  The
board simulation (``benches/board_bench.py``) runs it unchanged over the simulated UART.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .device import Device, EngineMismatch

__all__ = ["ProgramRun", "run_program"]


@dataclass(frozen=True, eq=False)
class ProgramRun:
    """What the board answered: ``outputs`` (inputs x the network's outputs, integers, in the
    network's order), ``cycles`` (each inference's on-chip total), ``layer_cycles`` (the last
    inference's per layer) and ``seconds`` (the whole stream, by the run's clock)."""
    outputs: np.ndarray
    cycles: np.ndarray
    layer_cycles: list[int]
    seconds: float

    @property
    def predictions(self) -> np.ndarray:
        return self.outputs.argmax(axis=1)

    @property
    def inferences_per_second(self) -> float:
        return len(self.outputs) / self.seconds if self.seconds > 0 else float("inf")


def run_program(device: Device, program, x, *, load: bool = False,
                progress: Callable[[int, int], None] | None = None,
                clock: Callable[[], float] = time.monotonic) -> ProgramRun:
    """Run the float inputs ``x`` (batch x features, or batch x any shape) of ``program`` on the
    board behind ``device``: the image loaded first with ``load`` (or when the board holds
    none and the engine's entries are in SPRAM, which a bitstream cannot fill), else
    required to be the one the board holds (a half-loaded or other model is refused).
    ``progress(done, total)`` follows the stream; ``clock`` times it (a simulation passes
    its own)."""
    if program.lowering is not None and program.lowering.maps[-1].base != 0:
        # The link's INFER and READ_OUTPUT read the outputs from activation 0; the compiler
        # puts them there for every network of two layers or more.
        raise ValueError("this program's outputs are not at activation 0, where the board's "
                         "link reads them (a network of a single convolution): add a layer "
                         "(a Linear classifier), or run it in simulation (sparseforge sim)")
    info = device.info()
    config = program.config
    # What INFO reports of the engine's structure must be the program's: an image laid out
    # for other widths would load and run, and answer nonsense.
    differ = [f"{what} {have} (the program's: {want})" for what, have, want in (
        ("PEs", info.pes, config.pes), ("activation bits", info.act_bits, config.act_bits),
        ("code bits", info.code_bits, config.code_bits),
        ("scan lanes", info.scan_lanes, config.scan_lanes)) if have != want]
    if differ:
        raise EngineMismatch(f"the board's engine is not the one this program was compiled "
                             f"for: {', '.join(differ)}; flash the program's bitstream "
                             f"(sparseforge build, then flash), or compile for this engine")
    if load or (config.spram_entries and info.image == 0):
        # An engine with its entries in SPRAM starts without its image (the bitstream cannot
        # hold them): every power-up needs the load.
        device.load(program.config, program.image)
    else:
        device.require_image(program.config, program.image)
    rows = program.quantize_input(x)
    started = clock()
    # Streamed: the next input crosses the link while the board runs the last.
    outputs, cycles = device.infer_many(rows, program.out_features, progress=progress)
    seconds = clock() - started
    layer_cycles = device.read_cycles(program.layer_count)
    return ProgramRun(outputs=program.network_output(outputs), cycles=np.asarray(cycles),
                      layer_cycles=[int(c) for c in layer_cycles], seconds=seconds)
