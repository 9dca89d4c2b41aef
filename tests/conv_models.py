"""Random convolutional integer networks for the conv-mode tests (seeded): the shapes the
issue's acceptance names (kernels 1..5, strides 1..2, padding 0..2, 1..16 channels, inputs up
to 16x16, pooling on or off), sparse kernels, any codebook, and an optional final Linear."""

from __future__ import annotations

import numpy as np

from sparseforge.compiler.conv import ConvGeometry, Pool
from sparseforge.compiler.ir import QuantizedConv2d, QuantizedLinear, QuantizedNetwork
from sparseforge.compiler.numerics import FixedFormat

ACT = FixedFormat(8, 0)


def random_layer_parts(rng, rows: int, columns: int, density: float):
    code_bits = int(rng.integers(1, 5))
    codes = np.where(rng.random((rows, columns)) < density,
                     rng.integers(1, 1 << code_bits, (rows, columns)), 0).astype(np.uint8)
    codebook = np.concatenate(([0], rng.integers(-64, 64, (1 << code_bits) - 1)))
    # Shifts that keep most outputs off the saturation limits for patches of tens of inputs.
    frac = int(rng.integers(5, 11)) + int(np.log2(max(1.0, columns * density)) // 2)
    return dict(codes=codes, codebook=codebook.astype(np.int64),
                bias=rng.integers(-200, 200, rows).astype(np.int64), code_bits=code_bits,
                input_format=ACT, weight_format=FixedFormat(8, frac), output_format=ACT,
                bias_bits=12)


def random_geometry(rng, channels: int, height: int, width: int, *, max_channels: int = 16):
    """A convolution that fits a ``channels x height x width`` map, and pools when it can."""
    for _ in range(100):
        kernel = (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
        stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        padding = tuple(int(rng.integers(0, min(3, k))) for k in kernel)
        out = int(rng.integers(1, max_channels + 1))
        try:
            geometry = ConvGeometry(channels, height, width, out, kernel, stride, padding)
        except ValueError:
            continue
        if rng.random() < 0.5:
            window = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
            step = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
            try:
                geometry = ConvGeometry(channels, height, width, out, kernel, stride, padding,
                                        Pool(window, step))
            except ValueError:
                pass
        return geometry
    raise AssertionError("no convolution fits")


def random_conv_network(rng, *, max_size: int = 16, max_layers: int = 3,
                        linear: bool | None = None) -> QuantizedNetwork:
    channels = int(rng.integers(1, 17))
    height, width = (int(rng.integers(3, max_size + 1)) for _ in range(2))
    layers = []
    for index in range(int(rng.integers(1, max_layers + 1))):
        if index and min(height, width) < 2:
            break
        geometry = random_geometry(rng, channels, height, width)
        parts = random_layer_parts(rng, geometry.out_channels, geometry.patch_size,
                                   float(rng.uniform(0.1, 0.9)))
        layers.append(QuantizedConv2d(name=f"conv{index}", relu=bool(rng.random() < 0.7),
                                      geometry=geometry, **parts))
        channels, height, width = geometry.out_shape
    if linear if linear is not None else rng.random() < 0.5:
        features = channels * height * width
        parts = random_layer_parts(rng, int(rng.integers(1, 12)), features, 0.3)
        layers.append(QuantizedLinear(name="fc", relu=False, **parts))
    return QuantizedNetwork(tuple(layers))


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
