"""The shape of a 2-D convolution and its arithmetic on flat feature maps, in NumPy.

Every stage keeps activations as flat vectors: a feature map of ``C`` channels, ``H`` rows and
``W`` columns is the vector of PyTorch's ``flatten`` order (channel, row, column), so a Flatten
between a convolution and a Linear layer changes nothing.  A convolution with ``O`` filters of
``kh x kw`` is a matrix ``O x (C * kh * kw)`` (columns in (channel, kernel row, kernel column)
order, ``weight.reshape(O, -1)``) applied at every output position to the patch of inputs
under the kernel (im2col); zero padding, stride and a max pooling of the results
(:class:`Pool`) belong to its :class:`ConvGeometry`.

The float interpreter (``ir.Graph.run``), the float and integer layers (``ir.Conv2d``,
``ir.QuantizedConv2d``) and the compiler's layout of feature maps in the engine use these
functions, so every stage shares one definition of a patch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ConvGeometry", "Pool", "avg_pool_matrix", "im2col", "max_pool", "pair"]


def pair(value, what: str) -> tuple[int, int]:
    """``value`` (an int or a pair of ints) as ``(rows, columns)``; ``what`` names it in the
    error."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value), int(value)
    if (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                    for v in value)):
        return int(value[0]), int(value[1])
    raise ValueError(f"{what} must be an integer or a pair of integers, not {value!r}")


@dataclass(frozen=True)
class Pool:
    """A max pooling of a convolution's outputs, without padding (window ``kernel``, moved by
    ``stride``; windows that do not fit are dropped, as PyTorch's floor mode does)."""
    kernel: tuple[int, int]
    stride: tuple[int, int]

    def __post_init__(self):
        for name in ("kernel", "stride"):
            value = pair(getattr(self, name), f"pool {name}")
            if min(value) < 1:
                raise ValueError(f"pool {name} must be at least 1, not {value}")
            object.__setattr__(self, name, value)


@dataclass(frozen=True)
class ConvGeometry:
    """The shape of a convolution layer: its input map (``in_channels`` x ``height`` x
    ``width``), ``out_channels`` filters of ``kernel`` (rows, columns), ``stride``,
    symmetric zero ``padding`` (rows, columns: that many zeros on either side) and an optional
    max ``pool`` of its outputs."""
    in_channels: int
    height: int
    width: int
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    pool: Pool | None = None

    def __post_init__(self):
        for name in ("kernel", "stride", "padding"):
            object.__setattr__(self, name, pair(getattr(self, name), name))
        for name in ("in_channels", "height", "width", "out_channels"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"a convolution's {name} must be a positive integer, not "
                                 f"{value!r}")
            object.__setattr__(self, name, int(value))
        if min(self.kernel) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(f"a convolution needs a kernel and stride of at least 1 and a "
                             f"padding of at least 0, not kernel {self.kernel}, stride "
                             f"{self.stride}, padding {self.padding}")
        if self.conv_height < 1 or self.conv_width < 1:
            raise ValueError(f"a {self.kernel[0]}x{self.kernel[1]} kernel with padding "
                             f"{self.padding} does not fit a {self.height}x{self.width} input")
        if self.pool is not None and (self.out_height < 1 or self.out_width < 1):
            raise ValueError(f"a {self.pool.kernel[0]}x{self.pool.kernel[1]} pooling window "
                             f"does not fit the {self.conv_height}x{self.conv_width} output")

    @property
    def conv_height(self) -> int:
        """Rows of the convolution's output, before pooling."""
        return (self.height + 2 * self.padding[0] - self.kernel[0]) // self.stride[0] + 1

    @property
    def conv_width(self) -> int:
        return (self.width + 2 * self.padding[1] - self.kernel[1]) // self.stride[1] + 1

    @property
    def out_height(self) -> int:
        """Rows of the layer's output (after pooling)."""
        if self.pool is None:
            return self.conv_height
        return (self.conv_height - self.pool.kernel[0]) // self.pool.stride[0] + 1

    @property
    def out_width(self) -> int:
        if self.pool is None:
            return self.conv_width
        return (self.conv_width - self.pool.kernel[1]) // self.pool.stride[1] + 1

    @property
    def patch_size(self) -> int:
        """Columns of the kernel matrix: inputs under the kernel at one position."""
        return self.in_channels * self.kernel[0] * self.kernel[1]

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return self.in_channels, self.height, self.width

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return self.out_channels, self.out_height, self.out_width

    @property
    def in_size(self) -> int:
        return self.in_channels * self.height * self.width

    @property
    def out_size(self) -> int:
        return self.out_channels * self.out_height * self.out_width

    @property
    def positions(self) -> int:
        """Output positions the convolution computes (before pooling)."""
        return self.conv_height * self.conv_width

    def to_json(self) -> dict:
        obj = {"in_channels": self.in_channels, "height": self.height, "width": self.width,
               "out_channels": self.out_channels, "kernel": list(self.kernel),
               "stride": list(self.stride), "padding": list(self.padding)}
        if self.pool is not None:
            obj["pool"] = {"kernel": list(self.pool.kernel), "stride": list(self.pool.stride)}
        return obj

    @classmethod
    def from_json(cls, obj) -> ConvGeometry:
        if not isinstance(obj, dict):
            raise ValueError(f"a convolution's geometry must be an object, not {obj!r}")
        known = {"in_channels", "height", "width", "out_channels", "kernel", "stride",
                 "padding", "pool"}
        if set(obj) - known or not {"in_channels", "height", "width", "out_channels",
                                    "kernel"} <= set(obj):
            raise ValueError(f"a convolution's geometry has the fields {sorted(known)}, not "
                             f"{sorted(obj)}")
        pool = obj.get("pool")
        if pool is not None:
            if not isinstance(pool, dict) or set(pool) != {"kernel", "stride"}:
                raise ValueError(f"a pooling must be {{'kernel', 'stride'}}, not {pool!r}")
            pool = Pool(pair(pool["kernel"], "pool kernel"), pair(pool["stride"],
                                                                  "pool stride"))
        return cls(obj["in_channels"], obj["height"], obj["width"], obj["out_channels"],
                   pair(obj["kernel"], "kernel"), pair(obj.get("stride", 1), "stride"),
                   pair(obj.get("padding", 0), "padding"), pool)


def im2col(geometry: ConvGeometry, x: np.ndarray) -> np.ndarray:
    """The patches of a batch of flat input maps (batch x ``in_size``): batch x positions x
    ``patch_size``, positions in row-major order, each patch in the kernel matrix's column
    order (channel, kernel row, kernel column); padding reads zeros.  Keeps ``x``'s dtype, so
    integer arithmetic stays exact."""
    g = geometry
    x = np.asarray(x)
    maps = x.reshape(len(x), *g.in_shape)
    (ph, pw), (kh, kw), (sh, sw) = g.padding, g.kernel, g.stride
    padded = np.pad(maps, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(2, 3))
    windows = windows[:, :, ::sh, ::sw][:, :, :g.conv_height, :g.conv_width]
    # batch, channel, row, column, kernel row, kernel column -> batch, row, column, patch
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(len(x), g.positions, g.patch_size)


def max_pool(pool: Pool | None, maps: np.ndarray) -> np.ndarray:
    """Max over each pooling window of batch x channels x rows x columns maps (None: the maps
    as they are)."""
    if pool is None:
        return maps
    (kh, kw), (sh, sw) = pool.kernel, pool.stride
    windows = np.lib.stride_tricks.sliding_window_view(maps, (kh, kw), axis=(2, 3))
    rows = (maps.shape[2] - kh) // sh + 1
    columns = (maps.shape[3] - kw) // sw + 1
    return windows[:, :, ::sh, ::sw][:, :, :rows, :columns].max(axis=(4, 5))


def avg_pool_matrix(shape: tuple[int, int, int], kernel: tuple[int, int],
                    stride: tuple[int, int], padding: tuple[int, int]) -> np.ndarray:
    """Average pooling as a matrix (``out_size x in_size``) over flat maps of ``shape``: zero
    padding counted in the divisor (PyTorch's ``count_include_pad``, ONNX's default)."""
    channels, height, width = shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    rows = (height + 2 * ph - kh) // sh + 1
    columns = (width + 2 * pw - kw) // sw + 1
    matrix = np.zeros((channels, rows, columns, channels, height, width))
    for y in range(rows):
        for x in range(columns):
            top, left = y * sh - ph, x * sw - pw
            ys = slice(max(top, 0), min(top + kh, height))
            xs = slice(max(left, 0), min(left + kw, width))
            for c in range(channels):
                matrix[c, y, x, c, ys, xs] = 1.0 / (kh * kw)
    return matrix.reshape(channels * rows * columns, channels * height * width)
