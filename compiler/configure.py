"""The engine configuration a model needs, and whether it fits an engine or a board.

:func:`derive_config` sizes every memory and width from the encoded model; :func:`fit` checks
a model against an existing engine (to load it at run time without new Verilog) and names each
field that is too small; :func:`estimate_resources` predicts the LUT / block RAM / DSP use of
an engine, and :func:`check_board` refuses a model that does not fit a board's part, with the
numbers.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from sparseforge.hw.config import EngineConfig

from .ir import QuantizedNetwork
from .numerics import accumulator_bits, accumulator_bound

__all__ = ["ModelNeeds", "needs_of", "derive_config", "fit", "DoesNotFit", "Resources",
           "estimate_resources", "check_board"]


class DoesNotFit(ValueError):
    """A model needs more than an engine or a part has; the message lists each shortfall."""


@dataclass(frozen=True)
class ModelNeeds:
    """What a compiled model requires of an engine, field by field (see EngineConfig)."""
    pes: int
    act_bits: int
    code_bits: int
    coef_bits: int
    acc_bits: int
    bias_bits: int
    max_layers: int
    max_features: int
    max_rows: int
    entry_depth: int
    pointer_depth: int
    bias_depth: int
    occupancy_depth: int
    max_column_entries: int
    max_shift: int


def needs_of(network: QuantizedNetwork, pes: int, scan_lanes: int,
             entries_per_pe: list[int], max_column_entries: int) -> ModelNeeds:
    layers = network.layers
    bound = max(accumulator_bound(layer.weights, layer.bias, layer.output_format.bits)
                + (1 << max(0, layer.shift - 1)) for layer in layers)
    return ModelNeeds(
        pes=pes,
        act_bits=network.act_bits,
        code_bits=max(layer.code_bits for layer in layers),
        coef_bits=max(layer.weight_format.bits for layer in layers),
        acc_bits=accumulator_bits(bound),
        bias_bits=max(layer.bias_bits for layer in layers),
        max_layers=len(layers),
        max_features=max(max(layer.in_features, layer.out_features) for layer in layers),
        max_rows=max(-(-layer.out_features // pes) for layer in layers),
        entry_depth=max(1, max(entries_per_pe)),
        pointer_depth=sum(layer.in_features + 1 for layer in layers),
        bias_depth=sum(-(-layer.out_features // pes) for layer in layers),
        occupancy_depth=sum(-(-layer.in_features // scan_lanes) for layer in layers),
        max_column_entries=max(1, max_column_entries),
        max_shift=max(layer.shift for layer in layers),
    )


def default_scan_lanes(pes: int) -> int:
    """The largest power of two that divides ``pes``, at most 4."""
    lanes = 1
    while lanes < 4 and pes % (lanes * 2) == 0:
        lanes *= 2
    return lanes


def derive_config(needs: ModelNeeds, *, scan_lanes: int, fifo_depth: int = 8,
                  acc_memory_bits: int = 0) -> EngineConfig:
    """The smallest engine that runs a model with these needs."""
    if needs.acc_bits > 48:
        raise DoesNotFit(f"the model's accumulators need {needs.acc_bits} bits; the engine "
                         f"supports at most 48 (use narrower activations or codebook values)")
    return EngineConfig(
        pes=needs.pes, act_bits=needs.act_bits, code_bits=needs.code_bits, idx_bits=4,
        coef_bits=needs.coef_bits, acc_bits=needs.acc_bits,
        bias_bits=min(needs.bias_bits, needs.acc_bits), scan_lanes=scan_lanes,
        max_layers=needs.max_layers,
        max_features=-(-needs.max_features // needs.pes) * needs.pes,
        max_rows=needs.max_rows, entry_depth=needs.entry_depth,
        pointer_depth=needs.pointer_depth, bias_depth=needs.bias_depth,
        occupancy_depth=needs.occupancy_depth, fifo_depth=fifo_depth,
        shift_bits=max(1, needs.max_shift.bit_length()),
        max_column_entries=needs.max_column_entries,
        acc_memory_bits=acc_memory_bits if 0 < acc_memory_bits < needs.acc_bits else 0)


def fit(needs: ModelNeeds, config: EngineConfig) -> None:
    """Raise :class:`DoesNotFit` naming every field where ``config`` is short of ``needs``."""
    problems = []
    exact = {"pes": config.pes, "act_bits": config.act_bits}
    for name, have in exact.items():
        if getattr(needs, name) != have:
            problems.append(f"{name}: the model needs {getattr(needs, name)}, the engine has "
                            f"{have}")
    at_least = ["code_bits", "coef_bits", "acc_bits", "bias_bits", "max_layers",
                "max_features", "max_rows", "entry_depth", "pointer_depth", "bias_depth",
                "occupancy_depth", "max_column_entries"]
    for name in at_least:
        if getattr(needs, name) > getattr(config, name):
            problems.append(f"{name}: needs {getattr(needs, name)}, the engine has "
                            f"{getattr(config, name)}")
    if needs.max_shift >= 1 << config.shift_bits:
        problems.append(f"shift: a layer shifts by {needs.max_shift}, the engine's "
                        f"{config.shift_bits}-bit shift reaches {(1 << config.shift_bits) - 1}")
    if problems:
        raise DoesNotFit("the model does not fit this engine:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class Resources:
    """An estimate of an engine's use of a part (LUT4s, block RAMs, DSPs)."""
    lut: int
    bram: int
    dsp: int
    bram_bits: int

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _brams(depth: int, width: int, family: str) -> int:
    """Block RAMs for one memory: iCE40 EBRs are 4 kbit (up to 16 wide), ECP5 DP16KD 18 kbit
    (up to 36 wide); memories smaller than a quarter block go to registers or LUT RAM."""
    if family == "ice40":
        shapes = [(256, 16), (512, 8), (1024, 4), (2048, 2)]
        if depth * width < 256:
            return 0
    else:
        shapes = [(512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1)]
        if depth * width < 1024:
            return 0
    return min(math.ceil(width / w) * math.ceil(depth / d) for d, w in shapes)


def estimate_resources(config: EngineConfig, family: str) -> Resources:
    """Block RAMs from the memories' shapes; DSPs one per PE; LUTs from a linear model fitted
    to Yosys + nextpnr results (docs/engine.md lists the builds it was fitted to)."""
    from sparseforge.hw import isa

    per_pe = [(config.entry_depth, config.entry_bits),
              (config.parameter_depth, isa.parameter_bits(config)),
              (config.max_rows, config.acc_memory_bits or config.acc_bits)]
    shared = [(config.act_words, config.pes * config.act_bits),
              (config.occupancy_depth, config.pes * config.scan_lanes),
              (config.max_layers * config.codebook_size, config.coef_bits)]
    bram = (config.pes * sum(_brams(d, w, family) for d, w in per_pe)
            + sum(_brams(d, w, family) for d, w in shared))
    bits = (config.pes * sum(d * w for d, w in per_pe) + sum(d * w for d, w in shared))
    lut = int(LUT_PER_PE * config.pes + LUT_SHARED
              + LUT_PER_LANE_BIT * config.pes * config.scan_lanes * config.act_bits)
    return Resources(lut=lut, bram=bram, dsp=config.pes, bram_bits=bits)


# Linear LUT model; see docs/engine.md for the builds it comes from.
LUT_PER_PE = 700
LUT_SHARED = 900
LUT_PER_LANE_BIT = 1.5


def check_board(config: EngineConfig, part) -> Resources:
    """Refuse an engine that cannot fit ``part`` (a ``boards.parts.Part``), with the numbers."""
    use = estimate_resources(config, part.family)
    problems = []
    for name, need, have in (("LUT", use.lut, part.luts), ("BRAM", use.bram, part.brams),
                             ("DSP", use.dsp, part.dsps)):
        if need > have:
            problems.append(f"{name}: needs about {need}, the {part.name} has {have}")
    if problems:
        raise DoesNotFit(f"the engine ({config.pes} PEs) does not fit the {part.name}:\n  "
                         + "\n  ".join(problems))
    return use
