"""The golden model: executes a program image exactly as the engine does, in NumPy.

It reads only what the engine reads: layer descriptors, each PE's column pointers and
(zero run, code) entries with their padding, the codebooks and the biases; it decodes every
layer's weights from them, multiplies and accumulates exactly in int64, checks the accumulator
stays inside ``acc_bits``, and requantizes with ``compiler/numerics.py`` (bias, rounding shift,
saturation, ReLU).  Batch-vectorised: a layer's weights are decoded once, then one integer
matrix product serves every input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparseforge.compiler.numerics import requantize
from sparseforge.hw import isa
from sparseforge.hw.config import EngineConfig

__all__ = ["DecodedLayer", "decode_image", "run_image", "reference", "AccumulatorOverflow"]


class AccumulatorOverflow(ArithmeticError):
    """An input drove an accumulator past ``acc_bits``: the engine would not match."""


@dataclass(frozen=True, eq=False)
class DecodedLayer:
    """One layer as the engine sees it, decoded from the image."""
    weights: np.ndarray          # out x in, integer codebook values
    bias: np.ndarray             # out
    shift: int
    relu: bool

    @property
    def in_features(self) -> int:
        return self.weights.shape[1]


def decode_image(config: EngineConfig, image) -> list[DecodedLayer]:
    """Every layer's weights, biases and requantize parameters, from the image alone."""
    descriptors = isa.unpack(isa.descriptor_layout(config),
                             np.array([int(d) for d in image.descriptors], dtype=object))
    entry = isa.entry_layout(config)
    codebook = np.asarray(image.codebook, dtype=np.int64).reshape(-1, config.codebook_size)
    pes = config.pes
    layers = []
    for index in range(int(image.layer_count)):
        field = {name: int(values[index]) for name, values in descriptors.items()}
        in_features, out_features = field["in_features"], field["out_features"]
        weights = np.zeros((field["rows"] * pes, in_features), dtype=np.int64)
        bias = np.zeros(field["rows"] * pes, dtype=np.int64)
        for k in range(pes):
            p = np.asarray(image.pointers[k][field["pointer_base"]:
                                             field["pointer_base"] + in_features + 1])
            words = np.asarray(image.entries[k][p[0]:p[-1]], dtype=np.uint64)
            fields = isa.unpack(entry, words)
            counts = np.diff(p)
            columns = np.repeat(np.arange(in_features), counts)
            running = np.cumsum(fields["zero_run"] + 1)
            before = np.concatenate(([0], running))[p[:-1] - p[0]]
            local_rows = running - np.repeat(before, counts) - 1
            real = fields["code"] != 0
            weights[local_rows[real] * pes + k, columns[real]] = \
                codebook[index, fields["code"][real]]
            bias[k::pes] = image.biases[k][field["bias_base"]:field["bias_base"] + field["rows"]]
        layers.append(DecodedLayer(weights[:out_features], bias[:out_features],
                                   field["shift"], bool(field["relu"])))
    return layers


def run_image(config: EngineConfig, image, x_int, *, return_layers: bool = False):
    """Integer inputs (batch x in) through the image; the outputs, or every layer's input and
    the outputs (``return_layers``: a list of ``layer_count + 1`` arrays)."""
    x = np.asarray(x_int, dtype=np.int64)
    if x.ndim == 1:
        x = x[None]
    low, high = -(1 << (config.act_bits - 1)), (1 << (config.act_bits - 1)) - 1
    if x.size and (x.min() < low or x.max() > high):
        raise ValueError(f"inputs must be {config.act_bits}-bit integers "
                         f"({low} .. {high}), got {int(x.min())} .. {int(x.max())}")
    activations = [x]
    limit = 1 << (config.acc_bits - 1)
    for index, layer in enumerate(decode_image(config, image)):
        if activations[-1].shape[1] != layer.in_features:
            raise ValueError(f"layer {index} takes {layer.in_features} inputs, got "
                             f"{activations[-1].shape[1]}")
        magnitude = np.abs(activations[-1]) @ np.abs(layer.weights).T
        if magnitude.size and magnitude.max() >= limit:
            raise AccumulatorOverflow(f"layer {index}: a partial sum can reach "
                                      f"{int(magnitude.max())}, beyond {config.acc_bits} bits")
        acc = activations[-1] @ layer.weights.T
        activations.append(requantize(acc, layer.bias, layer.shift, config.act_bits, layer.relu))
    return activations if return_layers else activations[-1]


def reference(program, X, *, integer: bool = False) -> np.ndarray:
    """The golden model's integer outputs (batch x classes) for float inputs ``X`` (quantized
    as the program's input format says) or, with ``integer=True``, for integer activations."""
    x_int = np.asarray(X, dtype=np.int64) if integer else program.quantize_input(X)
    return run_image(program.config, program.image, x_int)
