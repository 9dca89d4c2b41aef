"""The engine configuration a model needs, and whether it fits an engine or a board.

* :func:`model_needs` measures what a ``QuantizedNetwork`` encoded for N PEs requires of an
  engine, field by field (:class:`ModelNeeds`).
* :func:`derive_config` turns that into the smallest :class:`EngineConfig` that runs it (with
  optional headroom, so later models of the same shape class load without new Verilog), and
  with a ``board`` refuses an engine that does not fit the board's part.
* :func:`fit` checks a model against an EXISTING engine (to load it at run time) and names every
  field that is short, needed vs available.
* :func:`resolve_part` names the FPGA part of a board (``compiler/parts.py``).

What an engine costs on a part is ``compiler/resources.py``'s estimate.

Every refusal is a :class:`DoesNotFit` (a ValueError) whose message lists each shortfall.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass

import numpy as np

from .config import EngineConfig, check_pes
from .errors import InputWarning
from .encode import encode_layer
from .ir import QuantizedNetwork
from .lowering import has_convolutions, lower
from .numerics import accumulator_bits, ceil_div
from .parts import BOARD_PARTS, Part
from .parts import part as find_part
from .resources import (
    DoesNotFit,
    Memory,
    brams_for,
    check_board,
    engine_dsps,
    estimate_resources,
    fit_margin,
)

__all__ = [
    "MAX_ACC_BITS",
    "SHIFT_BITS",
    "DoesNotFit",
    "ModelNeeds",
    "default_scan_lanes",
    "derive_config",
    "fit",
    "model_needs",
    "resolve_part",
]

MAX_ACC_BITS = 48       # the engine's widest accumulator (EngineConfig allows 8..48)
MAX_MULTIPLIER_BITS = 25    # the widest per-row multiplier (EngineConfig allows 0..25)
SHIFT_BITS = 6          # descriptor shift field: shifts 0..63
MAX_FEATURES = 1 << 16  # activations the buffer can hold (EngineConfig allows 1..65536)
IDX_BITS = 4            # EIE's 4-bit relative row index


@dataclass(frozen=True)
class ModelNeeds:
    """What a model encoded for ``pes`` PEs (with ``idx_bits`` zero runs and ``scan_lanes``
    occupancy lanes) requires of an engine, field by field (see EngineConfig)."""
    pes: int
    idx_bits: int
    scan_lanes: int
    act_bits: int
    code_bits: int
    coef_bits: int
    acc_bits: int
    bias_bits: int              # what the bias values need (not the declared format)
    max_layers: int
    max_features: int           # the widest layer input or output (not rounded)
    max_rows: int
    entry_depth: int            # max over PEs of that PE's entries, all layers
    pointer_depth: int
    bias_depth: int
    occupancy_depth: int
    max_column_entries: int
    max_shift: int
    accumulator_bound: int      # the largest |accumulator| any input can produce
    row_scales: bool = False    # a layer needs per-row requantization
    multiplier_bits: int = 2    # the widest per-row multiplier (signed), were rows scaled
    rounding_bits: int = 0      # the widest per-row rounding term, were rows scaled
    conv: bool = False          # the conv mode (a convolution, or asked for)
    layer_activation: bool = False  # a power-of-two layer has a range or leak of its own
    table_slots: int = 0        # layers with an activation function's table
    pool_rows: int = 0          # conv mode: the most rows a max-pooling layer has (0: none)


def _check_network(qnet) -> QuantizedNetwork:
    network = getattr(qnet, "network", qnet)
    if not isinstance(network, QuantizedNetwork):
        raise TypeError(f"expected a CompressedModel or a QuantizedNetwork, not "
                        f"{type(qnet).__name__}")
    for layer in network.layers:
        if layer.in_features < 1 or layer.out_features < 1:
            raise ValueError(f"layer {layer.name} has shape {layer.codes.shape}; the engine "
                             f"needs at least one input and one output")
    return network


def model_needs(qnet, pes: int, *, scan_lanes: int, idx_bits: int = IDX_BITS,
                encoded=None, conv: bool = False) -> ModelNeeds:
    """Measure a model against the engine fields.  ``encoded`` (each layer's
    ``encode_layer`` slices for these ``pes`` and ``idx_bits``; in conv mode the lowered
    layers', ``lowering.lower``) is computed when not given.  A network with a convolution,
    or any with ``conv``, is measured as conv mode lowers it: its stored kernels, and an
    activation buffer holding its maps."""
    network = _check_network(qnet)
    if conv or has_convolutions(network):
        lowering = lower(network, pes, scan_lanes)
        needs = _needs(lowering.engine, pes, scan_lanes, idx_bits, encoded)
        widest = max(max(lowering.out_counts), lowering.buffer_words * pes,
                     max(layer.in_features for layer in lowering.engine.layers))
        pooled = [ceil_div(layer.out_features, pes)
                  for layer, walk in zip(lowering.engine.layers, lowering.walks)
                  if walk.window_rows * walk.window_cols > 1]
        return dataclasses.replace(needs, max_features=widest, conv=True,
                                   pool_rows=max(pooled, default=0))
    return _needs(network, pes, scan_lanes, idx_bits, encoded)


def _needs(network, pes: int, scan_lanes: int, idx_bits: int, encoded) -> ModelNeeds:
    layers = network.layers
    if encoded is None:
        encoded = [encode_layer(layer.codes, pes, (1 << idx_bits) - 1) for layer in layers]
    per_pe = np.zeros(pes, dtype=np.int64)
    max_column = 0
    for slices in encoded:
        per_pe += [csc.entries for csc in slices]
        max_column = max(max_column, max(int(csc.column_counts.max(initial=0))
                                         for csc in slices))
    # Worst |accumulator| over every input, plus the rounding constant added at write-back
    # (docs/numerics.md: acc_bits holds the bound, the bias and the rounding constant).
    bound = max(network.accumulator_bounds())
    scales = [_row_scale_needs(layer) for layer in layers]
    row_scales = any(layer.activation_form() is None for layer in layers)
    if row_scales and any(layer.row_requant().leak or layer.table is not None
                          for layer in layers):
        raise ValueError("a layer is leaky or has an activation table and another needs "
                         "per-row scales: the per-row write-back has neither")
    # A leaky layer's negative results shift by its shift and leak together.
    leaks = [0 if row_scales else layer.activation_form()[3] for layer in layers]
    return ModelNeeds(
        pes=pes, idx_bits=idx_bits, scan_lanes=scan_lanes,
        act_bits=network.act_bits,
        code_bits=max(layer.code_bits for layer in layers),
        # As wide as the codebook values need, not as their format allows: the codebook mux
        # in every PE and the shared registers are that wide (coarse codebooks, e.g. with
        # 16-bit accumulators, need only a few bits).
        coef_bits=max(_signed_bits(layer.codebook) for layer in layers),
        acc_bits=accumulator_bits(bound),
        bias_bits=max(_signed_bits(layer.bias) for layer in layers),
        max_layers=len(layers),
        max_features=max(max(layer.in_features, layer.out_features) for layer in layers),
        max_rows=max(ceil_div(layer.out_features, pes) for layer in layers),
        entry_depth=int(per_pe.max()),
        pointer_depth=sum(layer.in_features + 1 for layer in layers),
        bias_depth=sum(ceil_div(layer.out_features, pes) for layer in layers),
        occupancy_depth=sum(ceil_div(layer.in_features, scan_lanes) for layer in layers),
        max_column_entries=max_column,
        max_shift=max(shift + leak for (shift, _, _), leak in zip(scales, leaks)),
        accumulator_bound=bound,
        row_scales=row_scales,
        layer_activation=not row_scales and any(layer.power_of_two_form() is None
                                                for layer in layers),
        table_slots=sum(layer.table is not None for layer in layers),
        multiplier_bits=max(bits for _, bits, _ in scales),
        rounding_bits=max(bits for _, _, bits in scales))


def _row_scale_needs(layer) -> tuple[int, int, int]:
    """A layer's largest shift, and its multipliers' and rounding terms' widths were its rows
    scaled (the power-of-two case: a multiplier of 1, a rounding term of ``2**(shift-1)``)."""
    if layer.requant is None:
        return layer.shift, 2, max(0, layer.shift)
    rows = layer.requant
    return (int(rows.shift.max(initial=0)), rows.multiplier_bits,
            int(rows.rounding.max(initial=0)).bit_length())


def _signed_bits(values) -> int:
    """The narrowest signed width (at least 2) that holds every value: what a bias memory
    needs, which can be less than the format the compressor declared."""
    values = np.asarray(values, dtype=np.int64)
    if not values.size:
        return 2
    high, low = max(int(values.max()), 0), min(int(values.min()), 0)
    return max(2, high.bit_length() + 1, (~low).bit_length() + 1)


def default_scan_lanes(pes: int) -> int:
    """The largest divisor of ``pes`` that is at most 8 and a power of two (EngineConfig
    requires a power of two): 1 for odd N, 2 for N = 2 mod 4, 4 for N = 4 mod 8, else 8.

    Eight lanes keep the broadcast unit's scan of ``ceil(in / G)`` groups under ``max_k E_k``
    on small layers (the digits model's 128 x 10 output layer: 16 groups against a bound of
    about 20-33 entries at N = 8..64), which four lanes do not; each lane costs every PE's
    queue ``act_bits`` bits per entry."""
    lanes = 1
    while lanes < 8 and pes % (lanes * 2) == 0:
        lanes *= 2
    return lanes


def _grow(value: int, headroom: float) -> int:
    return max(1, math.ceil(value * (1 + headroom)))


def derive_config(qnet, pes: int = 8, *, board=None, scan_lanes: int | None = None,
                  fifo_depth: int | None = None, headroom: float | None = None,
                  acc_memory_bits: int | None = None, writeback_lanes: int | None = None,
                  encoded=None, fit_check: bool = True,
                  skip_zeros: bool = False, engine_for=None,
                  imported: bool | None = None) -> EngineConfig:
    """The smallest engine that runs ``qnet`` (a QuantizedNetwork or CompressedModel) on
    ``pes`` PEs.

    Widths: ``act_bits`` from the model, ``code_bits`` the maximum over layers, ``coef_bits``
    and ``bias_bits`` the narrowest widths that hold every codebook value and every bias,
    ``acc_bits = numerics.accumulator_bits(max accumulator bound)`` (refused above 48),
    ``idx_bits`` 4, ``shift_bits`` 6 (a shift of 64 or more is refused).
    Depths: ``max_features`` the widest layer rounded up to a multiple of ``pes``;
    ``entry_depth`` the most entries any PE holds; ``pointer_depth = sum(in + 1)``;
    ``bias_depth = sum(ceil(out / pes))``; ``occupancy_depth = sum(ceil(in / scan_lanes))``.
    ``scan_lanes`` defaults to :func:`default_scan_lanes` and ``fifo_depth`` to 8, except on an
    iCE40 part (logic is what it is short of): one scan lane and queues of 2.

    ``headroom`` (a fraction, e.g. 0.5) enlarges every capacity field (layers, features, rows,
    memory depths, column entries) so a later, larger model of the same class still fits.
    ``board`` (a name from ``boards.registry``) sets the accumulator split for the part's
    block RAMs (iCE40: 16 bits in RAM) and refuses an engine that does not fit the part.
    ``writeback_lanes`` (requantizers shared by ``pes / writeback_lanes`` PEs each) defaults
    to one per PE; with a board and no explicit value, the least sharing whose LUT estimate
    fits the part is chosen (write-back then takes ``rows * period`` cycles per layer).
    ``skip_zeros=True`` asks an iCE40 one-lane engine to skip zero activations, taken when
    the block RAM and logic it costs fit.  It is off by default: at 8 PEs it does not fit,
    and at 4 (42.2 MHz, docs/architecture.md) turning it on would change the fit check's
    calibration designs.
    ``fit_check=False`` chooses the engine for the board as usual but does not refuse it when
    the estimate says it does not fit (to calibrate the estimate, or to let nextpnr decide).
    When it does not fit, the advice names the most PEs that do: ``engine_for(pes)`` gives the
    engine for another PE count (``sf.compile`` passes its own, which places the model anew);
    by default this function's for ``qnet`` with the same options.
    ``imported``: the model came in quantized (``sf.load_quantized``), whose fit advice names
    its own export, not ``compress``'s options; by default read from ``qnet``'s provenance
    (a CompressedModel's), else False.
    """
    pes = check_pes(pes)
    if imported is None:
        imported = is_imported(qnet)
    part = resolve_part(board)
    small = part is not None and part.family == "ice40"
    if scan_lanes is None:
        scan_lanes = 1 if small else default_scan_lanes(pes)
    if fifo_depth is None:
        fifo_depth = 2 if small else 8
    lanes = scan_lanes
    if not isinstance(lanes, int) or lanes < 1 or lanes & (lanes - 1) or pes % lanes:
        raise ValueError(f"scan_lanes must be a power of two that divides pes ({pes}), "
                         f"not {lanes!r}")
    if headroom is not None and not (isinstance(headroom, (int, float)) and headroom >= 0):
        raise ValueError(f"headroom must be a fraction >= 0, not {headroom!r}")
    needs = model_needs(qnet, pes, scan_lanes=lanes, encoded=encoded)
    problems = []
    if needs.acc_bits > MAX_ACC_BITS:
        problems.append(f"acc_bits: the model's accumulators need {needs.acc_bits} bits "
                        f"(bound {needs.accumulator_bound}), the engine supports at most "
                        f"{MAX_ACC_BITS}; use narrower activations or codebook values")
    if needs.max_shift >= 1 << SHIFT_BITS:
        problems.append(f"shift: a layer shifts by {needs.max_shift}, the {SHIFT_BITS}-bit "
                        f"shift field reaches {(1 << SHIFT_BITS) - 1}")
    if needs.row_scales and needs.multiplier_bits > MAX_MULTIPLIER_BITS:
        problems.append(f"multiplier_bits: a row's multiplier needs {needs.multiplier_bits} "
                        f"bits, the engine's requantizers take at most {MAX_MULTIPLIER_BITS}")
    if needs.max_features > MAX_FEATURES:
        what = "maps need" if needs.conv else "widest layer needs"
        problems.append(f"activations: the model's {what} {needs.max_features} in the "
                        f"activation buffer, the engine holds at most {MAX_FEATURES}")
    if problems:
        raise DoesNotFit("no engine can run this model:\n  " + "\n  ".join(problems))
    grow = (lambda value: value) if not headroom else (lambda value: _grow(value, headroom))
    if acc_memory_bits is None:
        acc_memory_bits = 16 if part is not None and part.family == "ice40" else 0
    features = grow(needs.max_features)
    try:
        config = EngineConfig(
            pes=pes, act_bits=needs.act_bits, code_bits=needs.code_bits, idx_bits=IDX_BITS,
            coef_bits=needs.coef_bits, acc_bits=needs.acc_bits, bias_bits=needs.bias_bits,
            scan_lanes=lanes, max_layers=grow(needs.max_layers),
            max_features=ceil_div(features, pes) * pes, max_rows=grow(needs.max_rows),
            entry_depth=grow(max(1, needs.entry_depth)),
            pointer_depth=grow(needs.pointer_depth), bias_depth=grow(needs.bias_depth),
            occupancy_depth=grow(needs.occupancy_depth), fifo_depth=fifo_depth,
            shift_bits=SHIFT_BITS, max_column_entries=grow(max(1, needs.max_column_entries)),
            acc_memory_bits=acc_memory_bits if 0 < acc_memory_bits < needs.acc_bits else 0,
            writeback_lanes=writeback_lanes or 0,
            # Only a model that needs them gets multipliers in its requantizers.
            multiplier_bits=needs.multiplier_bits if needs.row_scales else 0,
            rounding_bits=needs.rounding_bits if needs.row_scales else 0, conv=needs.conv,
            layer_activation=needs.layer_activation, table_slots=needs.table_slots,
            # The pooling registers for the layers that pool, when fewer than every row (a
            # Linear layer of LeNet's 120 rows would otherwise size them: flip-flops on iCE40).
            pool_rows=(grow(needs.pool_rows)
                       if 0 < grow(needs.pool_rows) < grow(needs.max_rows) else 0))
    except ValueError as error:
        if headroom:
            raise DoesNotFit(f"headroom {headroom:g} enlarges the engine past what it can "
                             f"be: {error}; ask for less headroom") from None
        raise
    if part is not None and part.family == "ecp5":
        # Logic to spare, block RAMs slow to answer and a die too large for the broadcast unit
        # to sit near every PE: retime the PEs' front ends and the links to them, and keep
        # codebook values in the entry memories (no codebook register file read by every PE
        # across the die, in front of each multiplier).
        config = dataclasses.replace(config, column_queue=True, readout_register=True,
                                     link_registers=True, decoded_weights=True)
    if part is not None and part.family == "ice40":
        # A register in front of each requantizer: without it the multiplexer that picks the
        # PE served and the bias adder behind it are the UP5K's critical path (27 ns); it costs
        # a cycle a layer.
        config = dataclasses.replace(config, readout_register=True)
        # Codebook values in the entry memories, when that costs no block RAM: on an iCE40 the
        # PEs' codebook multiplexers are a fifth of the logic cells.
        decoded = dataclasses.replace(config, decoded_weights=True)
        entries = {c: Memory("entries", c.entry_depth, c.entry_memory_bits, pes)
                   for c in (config, decoded)}
        if brams_for(entries[decoded], part.family) <= brams_for(entries[config], part.family):
            config = decoded
        if part.sprams and estimate_resources(config, part).bram > part.brams:
            # Entries the block RAMs cannot hold go to an UltraPlus's SPRAMs, one a PE, when
            # the ones beside the activation buffer's are enough (an MNIST MLP on 2 PEs).
            try:
                spram = dataclasses.replace(config, spram_entries=True)
            except ValueError:              # entries too wide or too many for an SPRAM
                spram = None
            if spram is not None and estimate_resources(spram, part).spram <= part.sprams:
                config = spram
    if part is not None:
        if writeback_lanes is None:
            # Least sharing first that the fit check accepts: the estimate within its
            # calibrated error of the part's logic (resources.fit_margin).
            budget = math.floor(part.luts * (1 - fit_margin(part, config)))
            for lanes in _writeback_choices(pes):
                candidate = _dsps_for(dataclasses.replace(config, writeback_lanes=lanes), part)
                if estimate_resources(candidate, part).lut <= budget:
                    config = candidate
                    break
            else:
                config = _dsps_for(dataclasses.replace(
                    config, writeback_lanes=_writeback_choices(pes)[-1]), part)
        else:
            config = _dsps_for(config, part)
        if (skip_zeros and small and config.scan_lanes == 1 and not config.conv
                and not pes & (pes - 1)):
            # EIE's zero skipping for the one-lane scan (hw/nonzero_map.py): a block RAM and
            # a few dozen cells, taken when they fit beside the write-back chosen above.
            skipping = dataclasses.replace(config, skip_zeros=True)
            use = estimate_resources(skipping, part)
            limit = math.floor(part.luts * (1 - fit_margin(part, skipping)))
            if use.bram <= part.brams and use.lut <= limit:
                config = skipping
            else:
                _skip_zeros_not_taken(f"with it the engine would need about {use.lut} logic "
                                      f"cells and {use.bram} block RAMs, and the {part.name} "
                                      f"takes {limit} and {part.brams}; fewer PEs leave room")
        elif skip_zeros:
            _skip_zeros_not_taken(
                "it is for an iCE40's one-lane scan" if not small or config.scan_lanes != 1
                else "conv mode does not have it" if config.conv
                else f"it needs a power-of-two PE count, not {pes}")
        if fit_check:
            if engine_for is None:
                def engine_for(count: int) -> EngineConfig | None:
                    return other_engine(lambda: derive_config(
                        qnet, count, board=board, scan_lanes=scan_lanes, fifo_depth=fifo_depth,
                        headroom=headroom, acc_memory_bits=acc_memory_bits,
                        writeback_lanes=writeback_lanes, skip_zeros=skip_zeros,
                        fit_check=False, imported=imported))
            try:
                check_board(config, part, engine_for=engine_for, imported=imported)
            except DoesNotFit as error:
                if not headroom:
                    raise
                refusal = DoesNotFit(f"{error}; less headroom (--headroom {headroom:g} "
                                     f"makes every capacity {1 + headroom:g} times what the "
                                     f"model needs)")
                refusal.most_pes_that_fit = error.most_pes_that_fit
                raise refusal from None
    elif skip_zeros:
        _skip_zeros_not_taken("it is for an iCE40 board's one-lane scan (--board icebreaker); "
                              "other engines look at a word of activations a cycle")
    return config


def is_imported(model) -> bool:
    """Whether ``model`` (a CompressedModel, or anything else) came in quantized through
    ``sf.load_quantized``: its provenance has the import's record."""
    provenance = getattr(model, "provenance", None)
    return isinstance(provenance, dict) and "import" in provenance


def other_engine(make) -> EngineConfig | None:
    """``make()``, an engine for another PE count tried for the fit advice, quietly: None
    where there is none (a count the lanes asked for do not divide, say)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return make()
        except (ValueError, TypeError):
            return None


def _skip_zeros_not_taken(why: str) -> None:
    warnings.warn(f"skip_zeros was asked for and not taken: {why}", InputWarning, stacklevel=4)


def _dsps_for(config: EngineConfig, part: Part) -> EngineConfig:
    """With per-row scales, the PEs' products in logic when the requantizers' multipliers
    need DSP blocks the PEs' products hold (the UP5K's 8 are 8 PEs'): a PE's product is a
    narrow codebook value times an activation, a few adders."""
    if config.row_scales and engine_dsps(config, part.family) > part.dsps:
        return dataclasses.replace(config, lut_products=True)
    return config


def _writeback_choices(pes: int) -> list[int]:
    """Valid ``writeback_lanes`` from one requantizer per PE (0) to the most sharing:
    divisors of ``pes`` that leave a power-of-two period."""
    choices = [0]
    period = 2
    while period <= pes:
        if pes % period == 0:
            choices.append(pes // period)
        period *= 2
    return choices


# Fields a model must match exactly, and fields where the engine must have at least as much.
# (The model is measured for the engine's pes, idx_bits and scan_lanes, so those match.)
_EXACT = ("act_bits",)
_AT_LEAST = ("code_bits", "coef_bits", "acc_bits", "bias_bits", "max_layers", "max_features",
             "max_rows", "entry_depth", "pointer_depth", "bias_depth", "occupancy_depth",
             "max_column_entries")


def widest_capacity(configs) -> dict:
    """The capacity fields of one engine that every engine of ``configs`` fits in: each
    width and depth the largest of them, and pooling registers for the most pooled rows (0,
    every row, when that is ``max_rows``), for ``dataclasses.replace``."""
    configs = list(configs)
    widest = {name: max(getattr(config, name) for config in configs) for name in _AT_LEAST}
    pooled = max(config.pool_rows or config.max_rows for config in configs)
    widest["pool_rows"] = pooled if pooled < widest["max_rows"] else 0
    return widest


def fit(qnet, config: EngineConfig, *, encoded=None) -> ModelNeeds:
    """Check that ``qnet`` runs on an existing engine ``config`` (same PEs and activation
    width; every width and depth at least what the model needs; every shift within
    ``shift_bits``).  Returns the model's needs; raises :class:`DoesNotFit` listing each field
    needed vs available."""
    needs = model_needs(qnet, config.pes, scan_lanes=config.scan_lanes,
                        idx_bits=config.idx_bits, encoded=encoded, conv=config.conv)
    problems = [f"{name}: the model needs {getattr(needs, name)}, the engine has "
                f"{getattr(config, name)}"
                for name in _EXACT if getattr(needs, name) != getattr(config, name)]
    problems += [f"{name}: the model needs {getattr(needs, name)}, the engine has "
                 f"{getattr(config, name)}"
                 for name in _AT_LEAST if getattr(needs, name) > getattr(config, name)]
    if needs.max_shift >= 1 << config.shift_bits:
        problems.append(f"shift_bits: a layer shifts by {needs.max_shift}, the engine's "
                        f"{config.shift_bits}-bit shift reaches {(1 << config.shift_bits) - 1}")
    if needs.conv and not config.conv:
        problems.append("conv: the model has convolutions, the engine runs Linear layers only "
                        "(conv False)")
    if needs.pool_rows > (config.pool_rows or config.max_rows):
        problems.append(f"pool_rows: a max-pooling layer has {needs.pool_rows} rows, the "
                        f"engine's pooling registers keep {config.pool_rows}")
    if needs.table_slots > config.table_slots:
        problems.append(f"table_slots: {needs.table_slots} layers run an activation function "
                        f"as a table, the engine has {config.table_slots} table slots")
    if needs.layer_activation and not config.layer_activation:
        problems.append("layer_activation: a layer has an output range or a leak of its own "
                        "(a clamp such as ReLU6, a leaky ReLU), the engine's write-back has "
                        "ReLU only (layer_activation False)")
    if needs.row_scales and not config.row_scales:
        problems.append(f"multiplier_bits: the model's requantization is per row "
                        f"({needs.multiplier_bits}-bit multipliers), the engine's is a "
                        f"power-of-two shift per layer (multiplier_bits 0)")
    elif config.row_scales:
        problems += [f"{name}: the model needs {getattr(needs, name)}, the engine has "
                     f"{getattr(config, name)}"
                     for name in ("multiplier_bits", "rounding_bits")
                     if getattr(needs, name) > getattr(config, name)]
    if problems:
        raise DoesNotFit("the model does not fit this engine:\n  " + "\n  ".join(problems))
    return needs


def resolve_part(board) -> Part | None:
    """A board name (``compiler/parts.py``'s ``BOARD_PARTS``, which a test keeps in agreement
    with ``boards/registry.py``), a Part, or None."""
    if board is None or isinstance(board, Part):
        return board
    if not isinstance(board, str):
        raise TypeError(f"board must be a board name, not {type(board).__name__}")
    if board not in BOARD_PARTS:
        raise ValueError(f"unknown board {board!r}; supported boards: "
                         f"{', '.join(sorted(BOARD_PARTS))}")
    return find_part(BOARD_PARTS[board])
