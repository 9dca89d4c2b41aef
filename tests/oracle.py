"""A slow, obviously-correct EIE image builder: the test oracle for the vectorised encoder and
for engine tests that must not depend on the code they check.  Plain loops, straight from the
text of docs/architecture.md."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig
from sparseforge.compiler.numerics import ceil_div, requantize


@dataclass
class OracleLayer:
    codes: np.ndarray       # out x in, 0 = zero weight
    codebook: np.ndarray    # 2**code_bits integers, [0] == 0
    bias: np.ndarray        # out
    shift: int
    relu: bool

    def forward(self, x, act_bits):
        acc = np.asarray(x, np.int64) @ self.codebook.astype(np.int64)[self.codes].T
        return requantize(acc, self.bias, self.shift, act_bits, self.relu)


@dataclass
class OracleImage:
    entries: list
    pointers: list
    biases: list
    codebook: np.ndarray
    occupancy: list
    descriptors: list
    layer_count: int


def build_image(config: EngineConfig, layers: list[OracleLayer]) -> OracleImage:
    n, lanes = config.pes, config.scan_lanes
    max_run = config.max_zero_run
    entry = isa.entry_layout(config)
    entries = [[] for _ in range(n)]
    pointers = [[] for _ in range(n)]
    biases = [[] for _ in range(n)]
    occupancy, descriptors = [], []
    codebook = np.zeros((config.max_layers, config.codebook_size), dtype=np.int64)
    for index, layer in enumerate(layers):
        out_features, in_features = layer.codes.shape
        rows = ceil_div(out_features, n)
        groups = ceil_div(in_features, lanes)
        pointer_base, bias_base, occupancy_base = len(pointers[0]), len(biases[0]), len(occupancy)
        for k in range(n):
            for j in range(in_features):
                pointers[k].append(len(entries[k]))
                previous = -1
                for r in range(rows):
                    i = r * n + k
                    if i >= out_features or layer.codes[i, j] == 0:
                        continue
                    while r - previous - 1 > max_run:
                        entries[k].append(entry.const({"zero_run": max_run, "code": 0}).as_bits())
                        previous += max_run + 1
                    entries[k].append(entry.const(
                        {"zero_run": r - previous - 1, "code": int(layer.codes[i, j])}).as_bits())
                    previous = r
            pointers[k].append(len(entries[k]))
            for r in range(rows):
                i = r * n + k
                biases[k].append(int(layer.bias[i]) if i < out_features else 0)
        for g in range(groups):
            word = 0
            for lane in range(lanes):
                j = g * lanes + lane
                for k in range(n):
                    base = pointer_base + j
                    if j < in_features and pointers[k][base + 1] > pointers[k][base]:
                        word |= 1 << (lane * n + k)
            occupancy.append(word)
        descriptors.append(isa.descriptor_layout(config).const({
            "in_features": in_features, "out_features": out_features, "rows": rows,
            "groups": groups, "pointer_base": pointer_base, "bias_base": bias_base,
            "occupancy_base": occupancy_base, "shift": layer.shift, "relu": int(layer.relu),
        }).as_bits())
        codebook[index] = layer.codebook
    return OracleImage(entries, pointers, biases, codebook, occupancy, descriptors, len(layers))


def random_layers(rng, shapes, *, density, code_bits=4, coef_bits=8, act_bits=8, relu_last=False):
    """Random integer layers with the given (out, in) shapes and weight density."""
    layers = []
    for position, (out_features, in_features) in enumerate(shapes):
        codes = rng.integers(1, 1 << code_bits, (out_features, in_features))
        codes[rng.random((out_features, in_features)) >= density] = 0
        codebook = rng.integers(-(1 << (coef_bits - 1)), 1 << (coef_bits - 1), 1 << code_bits)
        codebook[0] = 0
        last = position == len(shapes) - 1
        layers.append(OracleLayer(codes.astype(np.uint8), codebook,
                                  rng.integers(-2000, 2000, out_features), shift=7,
                                  relu=relu_last or not last))
    return layers


def config_for(layers, pes, scan_lanes=1, fifo_depth=8, act_bits=8, coef_bits=8) -> EngineConfig:
    """The smallest configuration that holds ``layers`` (what the compiler's derivation does)."""
    widths = [max(layer.codes.shape) for layer in layers]
    probe = EngineConfig(pes=pes, scan_lanes=scan_lanes, max_layers=len(layers),
                         max_features=max(widths), entry_depth=1 << 20, act_bits=act_bits,
                         coef_bits=coef_bits)
    image = build_image(probe, layers)
    return EngineConfig(
        pes=pes, scan_lanes=scan_lanes, act_bits=act_bits, coef_bits=coef_bits, acc_bits=32,
        bias_bits=16, max_layers=len(layers),
        max_features=ceil_div(max(widths), pes) * pes,
        max_rows=max(ceil_div(layer.codes.shape[0], pes) for layer in layers),
        entry_depth=max(1, max(len(e) for e in image.entries)),
        pointer_depth=sum(layer.codes.shape[1] + 1 for layer in layers),
        bias_depth=sum(ceil_div(layer.codes.shape[0], pes) for layer in layers),
        occupancy_depth=sum(ceil_div(layer.codes.shape[1], scan_lanes) for layer in layers),
        fifo_depth=fifo_depth)
