"""The golden model: executes a program image exactly as the engine does, in NumPy.

It reads only what the engine reads -- the layer descriptors, each PE's column pointers and
(zero run, code) entries with their padding, the codebooks and the biases -- never the
network the image was compiled from.  Per layer it decodes the weights (every PE's entries
walked as the PE walks them: an entry lands ``zero_run + 1`` rows after the previous one of
its column, code 0 adds nothing), checks that no input can drive an accumulator past
``acc_bits`` (every partial sum is bounded by ``sum_j |a_j| |w_ij|``, whatever order the PEs
accumulate in), accumulates exactly in int64, and requantizes with ``compiler/numerics.py``
(``requantize_rows``: bias, the row's multiplier and rounding, the shift, the layer's output
range; on an engine without ``multiplier_bits`` the power-of-two case of the descriptor's
shift and ReLU).  Batch-vectorised: a layer's weights are decoded
once, then one integer matrix product serves every input.

In conv mode (``config.conv``) the model keeps the engine's activation buffer: the input map
at word 0, then every layer walks its output positions as its geometry word says
(``lowering.Walk``: the positions window by window, each patch's group addresses, padding
outside the map's bounds reading nothing), multiplies each patch with the decoded kernel,
requantizes, takes the largest of each pooling window and writes the pooled pixels' channels
to the layer's output map.  The outputs are the last layer's output region.

Inputs: :func:`reference` takes real-valued inputs and quantizes them with the program's input
format (``Program.quantize_input``: round half up, saturate) -- whatever their dtype, since
pixel values are real values -- or, with ``integer=True``, integer activations as the engine
receives them (``act_bits`` signed integers, refused when out of range or not integral).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig
from sparseforge.compiler.errors import InputWarning
from sparseforge.compiler.ir import RowRequant
from sparseforge.compiler.lowering import Walk

__all__ = [
    "AccumulatorOverflow",
    "DecodedLayer",
    "check_program",
    "decode_image",
    "engine_integers",
    "real_inputs",
    "reference",
    "run_image",
    "run_layer",
]


class AccumulatorOverflow(ArithmeticError):
    """An input drove an accumulator past ``acc_bits``: the engine would not match."""


@dataclass(frozen=True, eq=False)
class DecodedLayer:
    """One layer as the engine sees it, decoded from the image."""
    index: int
    weights: np.ndarray          # out x in, integer codebook values
    bias: np.ndarray             # out
    shift: int
    relu: bool
    requant: RowRequant          # per row: the scale words, or the power-of-two case

    @property
    def in_features(self) -> int:
        return self.weights.shape[1]

    @property
    def out_features(self) -> int:
        return self.weights.shape[0]


def decode_image(config: EngineConfig, image) -> list[DecodedLayer]:
    """Every layer's weights, biases and requantize parameters, from the image alone."""
    count = int(image.layer_count)
    if not 0 < count <= min(config.max_layers, len(image.descriptors)):
        raise ValueError(f"layer_count {count} is not within the image's "
                         f"{len(image.descriptors)} descriptors (engine: {config.max_layers})")
    descriptors = isa.unpack(isa.descriptor_layout(config),
                             np.array([int(d) for d in image.descriptors], dtype=object))
    entry = isa.entry_layout(config)
    codebook = np.asarray(image.codebook, dtype=np.int64).reshape(-1, config.codebook_size)
    pes = config.pes
    layers = []
    for index in range(count):
        field = {name: int(values[index]) for name, values in descriptors.items()}
        in_features, out_features, rows = (field["in_features"], field["out_features"],
                                           field["rows"])
        if config.conv:
            # A convolution's descriptor counts its output map; its kernel has rows * N rows.
            out_features = min(out_features, rows * pes)
        if rows * pes < out_features:
            raise ValueError(f"layer {index}: descriptor gives {rows} rows per PE for "
                             f"{out_features} outputs on {pes} PEs")
        weights = np.zeros((rows * pes, in_features), dtype=np.int64)
        bias = np.zeros(rows * pes, dtype=np.int64)
        scale = {name: np.zeros(rows * pes, dtype=np.int64)
                 for name in ("multiplier", "rounding", "shift", "half_even")}
        base = field["pointer_base"]
        for k in range(pes):            # per PE; vectorised over its entries
            p = np.asarray(image.pointers[k][base:base + in_features + 1], dtype=np.int64)
            fields = isa.unpack(entry, np.asarray(image.entries[k][p[0]:p[-1]],
                                                  dtype=np.uint64))
            counts = np.diff(p)
            columns = np.repeat(np.arange(in_features), counts)
            running = np.cumsum(fields["zero_run"] + 1)       # rows advanced, entry by entry
            before = np.concatenate(([0], running))[p[:-1] - p[0]]
            local_rows = running - np.repeat(before, counts) - 1
            real = fields["code"] != 0                         # padding adds nothing
            if np.any(local_rows[real] >= rows):
                raise ValueError(f"layer {index}, PE {k}: an entry lands on local row "
                                 f"{int(local_rows[real].max())}, beyond {rows} rows")
            weights[local_rows[real] * pes + k, columns[real]] = \
                codebook[index, fields["code"][real]]
            bias[k::pes] = image.biases[k][field["bias_base"]:field["bias_base"] + rows]
            if config.row_scales:
                words = image.scales[k][field["bias_base"]:field["bias_base"] + rows]
                for name, values in isa.unpack(isa.scale_layout(config),
                                               np.asarray(words, dtype=object)).items():
                    scale[name][k::pes] = values
        if config.row_scales:
            requant = RowRequant(scale["multiplier"][:out_features],
                                 scale["shift"][:out_features], scale["rounding"][:out_features],
                                 scale["half_even"][:out_features].astype(bool),
                                 field["low"], field["high"])
        elif config.table_slots and field["table"]:
            top = (1 << (config.act_bits - 1)) - 1
            requant = RowRequant.power_of_two(out_features, field["shift"], -top - 1, top,
                                              table=image.tables[field["table_slot"]])
        elif config.layer_activation:
            requant = RowRequant.power_of_two(out_features, field["shift"], field["low"],
                                              field["high"], leak=field["leak"])
        else:
            top = (1 << (config.act_bits - 1)) - 1
            requant = RowRequant.power_of_two(out_features, field["shift"],
                                              0 if field["relu"] else -top - 1, top)
        layers.append(DecodedLayer(index, weights[:out_features], bias[:out_features],
                                   field["shift"], bool(field["relu"]), requant))
    return layers


def run_layer(config: EngineConfig, layer: DecodedLayer, x: np.ndarray) -> np.ndarray:
    """One layer for a batch of integer activations (batch x in): accumulate exactly (after
    checking the accumulator bound against ``acc_bits``), then requantize each row (bias,
    multiplier, rounding shift, the layer's output range)."""
    if x.shape[1] != layer.in_features:
        raise ValueError(f"layer {layer.index} takes {layer.in_features} inputs, got "
                         f"{x.shape[1]}")
    # Whatever the order, every partial sum lies in [-sum (a w)^-, sum (a w)^+].
    x_pos, x_neg = np.maximum(x, 0), np.maximum(-x, 0)
    w_pos, w_neg = np.maximum(layer.weights, 0).T, np.maximum(-layer.weights, 0).T
    magnitude = np.maximum(x_pos @ w_pos + x_neg @ w_neg, x_pos @ w_neg + x_neg @ w_pos)
    limit = 1 << (config.acc_bits - 1)
    if magnitude.size and magnitude.max() >= limit:
        b, i = np.unravel_index(int(np.argmax(magnitude)), magnitude.shape)
        raise AccumulatorOverflow(f"layer {layer.index}, input {b}, row {i}: a partial sum "
                                  f"can reach {int(magnitude[b, i])}, beyond the "
                                  f"{config.acc_bits}-bit accumulator")
    acc = x @ layer.weights.T
    return layer.requant.apply(acc, layer.bias)


def image_walks(config: EngineConfig, image) -> list[Walk]:
    """Each layer's walk, from its geometry word (conv engines)."""
    fields = isa.unpack(isa.geometry_layout(config), image.geometry)
    return [Walk(**{name: int(fields[name][layer]) for name in Walk.fields()})
            for layer in range(int(image.layer_count))]


def walk_indices(config: EngineConfig, walk: Walk) -> tuple[np.ndarray, np.ndarray]:
    """Every position's patch as activation indices into the buffer (positions x patch
    columns, in the stored kernel's column order) and which are inside the map (the others
    are padding: never read, zero)."""
    lanes, wrap = config.scan_lanes, 1 << config.group_address_bits
    indices, inside = [], []
    for row, col, addr, _, _ in walk.positions():
        groups, valid = walk.patch(row, col, addr)
        groups = groups % wrap
        indices.append((groups[:, None] * lanes + np.arange(lanes)).reshape(-1))
        inside.append(np.repeat(valid, lanes))
    return np.array(indices), np.array(inside)


def run_conv_image(config: EngineConfig, image, x, *, return_layers: bool = False,
                   return_patches: bool = False):
    """:func:`run_image` in conv mode: the activation buffer, walked layer by layer.  With
    ``return_patches`` also, per layer, which activations of each position's patch the
    engine offers the PEs (batch x positions x columns: nonzero and inside the map)."""
    pes = config.pes
    layers = decode_image(config, image)
    counts = isa.unpack(isa.descriptor_layout(config),
                        np.array([int(d) for d in image.descriptors],
                                 dtype=object))["out_features"]
    buffer = np.zeros((len(x), config.act_words * pes), dtype=np.int64)
    if x.shape[1] > buffer.shape[1]:
        raise ValueError(f"the input has {x.shape[1]} activations, the buffer holds "
                         f"{buffer.shape[1]}")
    buffer[:, :x.shape[1]] = x
    activations, active = [x], []
    for layer, walk in zip(layers, image_walks(config, image)):
        indices, inside = walk_indices(config, walk)
        # Padding reads nothing (its address may lie past the buffer).
        patches = np.where(inside[None], buffer[:, np.where(inside, indices, 0)], 0)
        batch, positions, columns = patches.shape
        if return_patches:
            active.append(patches != 0)
        out = run_layer(config, layer, patches.reshape(-1, columns))
        channels = out.shape[1]
        out = out.reshape(batch, walk.pool_rows * walk.pool_cols,
                          walk.window_rows * walk.window_cols, channels).max(axis=2)
        start = walk.out_base * pes
        region = out.reshape(batch, -1)           # pixel by pixel, its channels together
        buffer[:, start:start + region.shape[1]] = region
        activations.append(buffer[:, start:start + int(counts[layer.index])].copy())
    result = activations if return_layers else activations[-1]
    return (result, active) if return_patches else result


def run_image(config: EngineConfig, image, x_int, *, return_layers: bool = False):
    """Integer inputs (batch x in, or one input) through the image: the outputs (batch x
    out), or with ``return_layers`` a list of ``layer_count + 1`` arrays (the input, then
    every layer's output)."""
    x = _integers(x_int, config.act_bits)
    if config.conv:
        return run_conv_image(config, image, x, return_layers=return_layers)
    activations = [x]
    for layer in decode_image(config, image):
        activations.append(run_layer(config, layer, activations[-1]))
    return activations if return_layers else activations[-1]


def check_program(program, batch: int = 8, seed: int = 0) -> None:
    """The golden model, reading only ``program``'s image, agrees with the network it was
    compiled from (``QuantizedNetwork.forward``) on a seeded random batch of integer inputs:
    the check ``sf.compile`` runs after the compiler's own."""
    fmt = program.network.input_format
    x = np.random.default_rng(seed).integers(fmt.min, fmt.max + 1,
                                             (batch, program.network.layers[0].in_features))
    outputs = run_image(program.config, program.image, program.engine_input(x))
    if not np.array_equal(program.network_output(outputs), program.network.forward(x)):
        raise AssertionError("internal error: the golden model disagrees with the network")


def reference(program, X, *, integer: bool = False) -> np.ndarray:
    """The golden model's integer outputs (batch x classes, in the network's order: see
    ``Program.network_output``).  ``X`` are real inputs, quantized with
    ``program.quantize_input``; with ``integer=True`` they are the engine's integer
    activations already."""
    x_int = engine_integers(program, X) if integer else real_inputs(program, X)
    return program.network_output(run_image(program.config, program.image, x_int))


def real_inputs(program, X) -> np.ndarray:
    """``program.quantize_input(X)``, with a warning when inputs lie far outside the range
    the training data set for them (over twice it): they saturate, and the outputs no longer
    follow the float model (data scaled unlike the training data, most often)."""
    x_int = program.quantize_input(X)
    raw = np.asarray(program.taken_inputs(X), dtype=np.float64).reshape(len(x_int), -1)
    scaling = program.network.input_scaling
    x = raw if scaling is None else scaling.apply(raw)  # what the input format holds
    fmt = program.network.input_format
    limit = fmt.max * fmt.scale
    beyond = np.abs(x) > 2 * limit
    if beyond.any():
        if scaling is None:
            reach = (f"|x| up to {limit:.4g}; these reach {float(np.abs(x).max()):.4g}")
        else:
            # In the user's units: the model's input normalisation maps each feature's range
            # onto the format's, so the range differs from feature to feature.
            sample, feature = np.unravel_index(int(np.argmax(np.abs(x))), x.shape)
            low, high = sorted((np.array([-limit, limit]) - scaling.shift[feature])
                               / scaling.scale[feature])
            column = (feature if program.inputs is None
                      else int(program.inputs.columns[feature]))       # the model's numbering
            reach = (f"input {column} is {raw[sample, feature]:.4g} where the training "
                     f"data's reach about {low:.4g} to {high:.4g}")
        warnings.warn(f"{int(beyond.sum())} of the {x.size} input values lie beyond twice the "
                      f"range the training data set for the inputs ({reach}) and saturate: "
                      f"the outputs will not follow the model's; scale the inputs as the "
                      f"training data were", InputWarning, stacklevel=3)
    return x_int


def engine_integers(program, X) -> np.ndarray:
    """Integer inputs (batch x features, ``act_bits`` wide) checked, as the engine takes
    them: of the model's width they are narrowed to the inputs the program reads
    (``Program.taken_inputs``), of the engine's width they are taken as they are."""
    x = _integers(X, program.config.act_bits)
    if program.inputs is None:
        return x
    if x.shape[1] == program.model_in_features:
        return program.taken_inputs(x)
    if x.shape[1] != program.in_features:
        raise ValueError(f"integer inputs have {x.shape[1]} features per row; the program "
                         f"takes the model's {program.model_in_features} or the "
                         f"{program.in_features} of them it reads")
    return x


def _integers(x, act_bits: int) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"integer inputs must be batch x features, not of shape {x.shape}")
    if x.dtype.kind == "f":
        if not np.all(np.isfinite(x)) or not np.array_equal(x, np.round(x)):
            raise ValueError("integer inputs hold non-integral, NaN or infinite values; pass "
                             "real inputs with integer=False to quantize them")
    elif x.dtype.kind not in "uib":
        raise TypeError(f"integer inputs must be integers, not {x.dtype}")
    x = x.astype(np.int64)
    low, high = -(1 << (act_bits - 1)), (1 << (act_bits - 1)) - 1
    if x.size and (x.min() < low or x.max() > high):
        raise ValueError(f"inputs must be {act_bits}-bit integers ({low} .. {high}), got "
                         f"{int(x.min())} .. {int(x.max())}")
    return x
