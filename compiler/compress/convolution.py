"""Convolutions in torch for compression: a layer whose weight is the kernel matrix.

The compiler keeps a convolution's kernel as a matrix, ``out_channels x (in_channels * kh *
kw)`` (``compiler/conv.py``), and so does training: :class:`MatrixConv2d` is an ``nn.Linear``
whose ``weight`` is that matrix and whose forward is the convolution (then its max pooling) on
flat input maps.  Every method that prunes, masks, shares or measures a Linear's weight matrix
(magnitude and load-balance-aware pruning, the masks held through fine-tuning, k-means
sharing, the sensitivity scan) so applies to kernels unchanged, and the engine's row-to-PE
interleave is the output channels' (each PE owns whole filters).
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from ..conv import ConvGeometry

__all__ = ["InputScalingModule", "MatrixConv2d", "conv_forward"]


def conv_forward(x, weight, bias, geometry: ConvGeometry):
    """The convolution of ``geometry`` with the kernel matrix ``weight`` on flat maps ``x``
    (batch x in_size), then its max pooling: flat maps (batch x out_size)."""
    g = geometry
    maps = x.reshape(len(x), *g.in_shape)
    kernel = weight.reshape(g.out_channels, g.in_channels, *g.kernel)
    y = F.conv2d(maps, kernel, bias, g.stride, g.padding)
    if g.pool is not None:
        y = F.max_pool2d(y, g.pool.kernel, g.pool.stride)
    return y.flatten(1)


class MatrixConv2d(nn.Linear):
    """A convolution whose ``weight`` is its kernel matrix (out_channels x in_channels * kh *
    kw), on flat input and output maps; ``geometry`` gives the maps, kernel, stride, padding
    and max pooling."""

    def __init__(self, geometry: ConvGeometry):
        super().__init__(geometry.patch_size, geometry.out_channels)
        self.geometry = geometry

    def forward(self, x):
        return conv_forward(x, self.weight, self.bias, self.geometry)


class InputScalingModule(nn.Module):
    """The inputs' scaling (``ir.InputScaling``) in front of a network trained in torch: fixed
    buffers, not parameters (training does not move it, and the pruning and sharing that look
    for weights do not see it)."""

    def __init__(self, scale, shift):
        import torch

        super().__init__()
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))
        self.register_buffer("shift", torch.as_tensor(shift, dtype=torch.float32))

    def forward(self, x):
        return x * self.scale + self.shift
