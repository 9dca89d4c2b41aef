"""Random convolutional integer networks (seeded), for ``sparseforge verify --networks conv``
and the conv-mode tests: kernels 1..5, strides 1..2, padding 0..2, 1..16 channels, inputs up
to ``max_size`` square, max pooling on or off, sparse kernels with any codebook, and an
optional final Linear."""

from __future__ import annotations

import numpy as np

from sparseforge.compiler.conv import ConvGeometry, Pool
from sparseforge.compiler.ir import QuantizedConv2d, QuantizedLinear, QuantizedNetwork
from sparseforge.compiler.numerics import FixedFormat

__all__ = ["describe", "random_conv_network", "random_geometry", "random_layer_parts"]

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
    raise ValueError(f"no convolution fits a {channels}x{height}x{width} map")


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


def describe(network) -> str:
    """The layers' shapes: ``64x32x10`` for a chain of Linear layers, ``3x8x8k3s1p1o8p2-fc10``
    (input map, kernel, stride, padding, output channels, pooling) with convolutions."""
    if not any(isinstance(layer, QuantizedConv2d) for layer in network.layers):
        widths = [network.layers[0].in_features] + [layer.out_features
                                                    for layer in network.layers]
        return "x".join(map(str, widths))
    parts = []
    for layer in network.layers:
        if isinstance(layer, QuantizedConv2d):
            g = layer.geometry
            pool = f"p{g.pool.kernel[0]}{g.pool.kernel[1]}" if g.pool else ""
            parts.append(f"{g.in_channels}x{g.height}x{g.width}k{g.kernel[0]}{g.kernel[1]}"
                         f"s{g.stride[0]}{g.stride[1]}p{g.padding[0]}{g.padding[1]}"
                         f"o{g.out_channels}{pool}")
        else:
            parts.append(f"fc{layer.out_features}")
    return "-".join(parts)
