"""Random convolutional integer networks for the conv-mode tests (seeded; the generator is
``sparseforge.random_networks``, which ``sparseforge verify --networks conv`` uses too), their
inputs, and a convolution unrolled into one matrix."""

from __future__ import annotations

import numpy as np

from sparseforge.compiler.ir import QuantizedConv2d, QuantizedNetwork
from sparseforge.random_networks import (  # noqa: F401 - the tests' names for them
    ACT,
    random_conv_network,
    random_geometry,
    random_layer_parts,
)


def random_inputs(rng, network: QuantizedNetwork, count: int) -> np.ndarray:
    """Integer inputs, a quarter of them zero (the engine skips zeros)."""
    x = rng.integers(-128, 128, (count, network.layers[0].in_features))
    return np.where(rng.random(x.shape) < 0.25, 0, x)


def toeplitz(layer: QuantizedConv2d) -> np.ndarray:
    """The convolution without its pooling as one unrolled matrix (outputs in the network's
    order, channel, row, column x inputs): what the engine must never store, and a check of
    the golden model that does not use im2col."""
    g = layer.geometry
    kernel = layer.weights.reshape(g.out_channels, g.in_channels, *g.kernel)
    matrix = np.zeros((g.out_channels, g.conv_height, g.conv_width, *g.in_shape), np.int64)
    for oy in range(g.conv_height):
        for ox in range(g.conv_width):
            for ky in range(g.kernel[0]):
                for kx in range(g.kernel[1]):
                    iy = oy * g.stride[0] - g.padding[0] + ky
                    ix = ox * g.stride[1] - g.padding[1] + kx
                    if 0 <= iy < g.height and 0 <= ix < g.width:
                        matrix[:, oy, ox, :, iy, ix] = kernel[:, :, ky, kx]
    return matrix.reshape(g.out_channels * g.positions, g.in_size)
