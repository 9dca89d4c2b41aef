"""Lowering a network with convolutions to the engine's conv mode: maps, kernels and walks.

In conv mode (``EngineConfig.conv``, set by the compiler only for a network with a
convolution) every layer is a walk over output positions, each a sparse matrix-vector product
of the layer's kernel matrix (stored once, in the interleaved CSC of any layer) with the
*patch* of input activations under the kernel at that position, which the engine's broadcast
unit reads from the activation buffer through an address generator (im2col in hardware).  A
Linear layer is the walk of one position whose patch is its whole input.

**Maps** (:class:`MapLayout`).  A feature map lives in the activation buffer pixel by pixel,
row-major, each pixel's channels together (HWC): channel ``c`` of pixel ``(y, x)`` is
activation ``base * N + (y * width + x) * stride + c``.  ``stride`` (activations per pixel) is
the channel count rounded up to the scan's group of ``G = scan_lanes`` activations for the
network's input (the host writes it), and to whole words (``rows * N``) for a layer's output,
since the write-back writes a PE row, ``N`` channels, per word.  Channels past the real ones
hold zeros or anything: no kernel column reads them.  Padding is not stored: the address
generator knows the map's bounds and skips a pixel outside them (its group of activations is
never offered to a PE).  The maps alternate between two regions, so a layer never overwrites
its own input: the network's input map in region A (word 0, where the input stream and the
host write it), layer ``l``'s output in region B for even ``l`` and A for odd ``l``; the
last layer's output at word 0 of A, where the host reads it (with an odd number of layers,
three or more, the map before it sits in A right after it).

**Kernels.**  A convolution's kernel matrix (``out_channels x in_channels * kh * kw``,
PyTorch's column order (channel, kernel row, kernel column)) is stored with its columns in the
order the walk reads the patch: kernel row, kernel column, channel, each pixel's channels
rounded up to ``G`` (the extra columns are empty, and cost no entry).  A Linear layer's
columns follow its input map's layout (a Linear after a flattened map reads it pixel by
pixel).  Permuting and padding columns changes no column's entries, so a layer's entries in
the image are its kernel's encoded entries, whatever the number of positions.

**Walks** (:class:`Walk`, the engine's geometry word per layer, ``isa.geometry_layout``).
Output positions are walked window by window of the layer's max pooling (pooled row, pooled
column, then the window's rows and columns; without pooling a window is one position), and
each patch kernel row by kernel row, kernel column, channel group.  Addresses are counted in
groups of ``G`` activations, from strides the compiler works out (no multiplier in the
engine): :meth:`Walk.positions` and :meth:`Walk.patch` give the positions and addresses the
hardware visits, which the golden model uses too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ir import QuantizedConv2d, QuantizedLinear, QuantizedNetwork, RowRequant
from .numerics import ceil_div

__all__ = ["EngineNetwork", "Lowering", "MapLayout", "Walk", "has_convolutions", "lower"]


def has_convolutions(network) -> bool:
    """Whether a network needs the engine's conv mode."""
    return any(isinstance(layer, QuantizedConv2d) for layer in network.layers)


@dataclass(frozen=True)
class MapLayout:
    """A feature map (or a vector: one pixel) in the activation buffer (module docstring)."""
    base: int               # its first word
    channels: int
    height: int
    width: int
    stride: int             # activations per pixel

    @property
    def size(self) -> int:
        """Activations the map spans (padding channels included)."""
        return self.height * self.width * self.stride

    def words(self, pes: int) -> int:
        return ceil_div(self.size, pes)

    def index(self) -> np.ndarray:
        """For each value of the map in PyTorch's order (channel, row, column), its
        activation's offset from the map's first activation."""
        c, y, x = np.meshgrid(np.arange(self.channels), np.arange(self.height),
                              np.arange(self.width), indexing="ij")
        return ((y * self.width + x) * self.stride + c).reshape(-1)


@dataclass(frozen=True)
class Walk:
    """A layer's walk over its input map, as the engine's geometry word holds it.

    Addresses are in groups of ``scan_lanes`` activations.  ``origin`` is the group address
    of the first position's patch origin (padding included: it may lie before the map, and
    is taken modulo the address width), ``out_base`` the word of the layer's first output."""
    origin: int
    out_base: int
    height: int             # the input map, for the bounds
    width: int
    pad_rows: int
    pad_cols: int
    kernel_rows: int
    kernel_cols: int
    channel_groups: int     # groups of a pixel the patch reads
    pixel_groups: int       # groups from one pixel to the next
    row_groups: int         # groups from one map row to the next
    stride_rows: int
    stride_cols: int
    step_rows: int          # address step from one position to the next below: stride rows
    step_cols: int
    pool_rows: int          # output positions (pooled) of the layer
    pool_cols: int
    window_rows: int        # positions of a pooling window (1 x 1 without pooling)
    window_cols: int
    window_step_rows: int   # input rows from one window to the next (pool stride x stride)
    window_step_cols: int
    window_addr_rows: int   # address step from one window to the next below
    window_addr_cols: int

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return tuple(cls.__dataclass_fields__)

    @property
    def groups(self) -> int:
        """Groups of a patch (the scan's length per position)."""
        return self.kernel_rows * self.kernel_cols * self.channel_groups

    @property
    def positions_count(self) -> int:
        return self.pool_rows * self.pool_cols * self.window_rows * self.window_cols

    def positions(self) -> list[tuple[int, int, int, bool, bool]]:
        """``(row, column, address, window_first, window_last)`` of each position in walk
        order: the patch origin's input row and column (``-pad`` for the top-left one) and
        group address (unbounded: the engine takes it modulo its address width)."""
        out = []
        for py in range(self.pool_rows):
            for px in range(self.pool_cols):
                for dy in range(self.window_rows):
                    for dx in range(self.window_cols):
                        row = py * self.window_step_rows + dy * self.stride_rows - self.pad_rows
                        col = px * self.window_step_cols + dx * self.stride_cols - self.pad_cols
                        addr = (self.origin + py * self.window_addr_rows
                                + px * self.window_addr_cols + dy * self.step_rows
                                + dx * self.step_cols)
                        first = dy == 0 and dx == 0
                        last = dy == self.window_rows - 1 and dx == self.window_cols - 1
                        out.append((row, col, addr, first, last))
        return out

    def patch(self, row: int, col: int, addr: int) -> tuple[np.ndarray, np.ndarray]:
        """The group addresses of a patch in scan order (kernel row, kernel column, channel
        group) and whether each lies inside the map (else it is padding)."""
        ky, kx, cg = np.meshgrid(np.arange(self.kernel_rows), np.arange(self.kernel_cols),
                                 np.arange(self.channel_groups), indexing="ij")
        addresses = addr + ky * self.row_groups + kx * self.pixel_groups + cg
        rows, cols = row + ky, col + kx
        inside = (rows >= 0) & (rows < self.height) & (cols >= 0) & (cols < self.width)
        return addresses.reshape(-1), inside.reshape(-1)


class EngineNetwork(QuantizedNetwork):
    """A network's layers as the engine stores them (kernel columns in the walk's order):
    each a QuantizedLinear whose ``codes`` are the stored matrix, ``out_features`` its rows
    (output channels).  They do not chain as a network's layers do (a convolution's output is
    a map); the walks say how they connect."""

    def __post_init__(self):
        if not self.layers:
            raise ValueError("a quantized network needs at least one layer")


@dataclass(frozen=True, eq=False)
class Lowering:
    """A network lowered for conv mode: the engine's layers, the maps between them, the
    walks, each layer's output count as its descriptor states it, and the activation buffer
    size (words)."""
    network: QuantizedNetwork
    engine: EngineNetwork
    maps: tuple[MapLayout, ...]          # the input map, then every layer's output
    walks: tuple[Walk, ...]
    out_counts: tuple[int, ...]          # activations of each layer's output region
    buffer_words: int
    pes: int
    scan_lanes: int

    @property
    def input_size(self) -> int:
        """Activations of the engine's input (the input map, channel padding included)."""
        return self.maps[0].size

    @property
    def output_size(self) -> int:
        return self.out_counts[-1]

    def engine_input(self, x_int) -> np.ndarray:
        """Integer inputs in the network's order (batch x features) as the engine's input
        map (batch x ``input_size``; padding channels 0)."""
        x = np.asarray(x_int, dtype=np.int64).reshape(len(x_int), -1)
        layout = self.maps[0]
        out = np.zeros((len(x), layout.size), dtype=np.int64)
        out[:, layout.index()] = x
        return out

    def network_output(self, y) -> np.ndarray:
        """The engine's outputs (batch x ``output_size``, the last layer's output region) in
        the network's order (batch x out_features)."""
        y = np.asarray(y, dtype=np.int64)
        return y[:, self.maps[-1].index()]


def lower(network: QuantizedNetwork, pes: int, scan_lanes: int) -> Lowering:
    """Lower a network with convolutions for ``pes`` PEs and ``scan_lanes`` lanes (module
    docstring).  ``pes`` must be a power of two (a group address splits into word and lane
    bits); a convolution's requantization must be the power-of-two one."""
    if pes & (pes - 1):
        raise ValueError(f"a network with convolutions runs on a power-of-two number of PEs, "
                         f"not {pes}")
    lanes = scan_lanes
    first = network.layers[0]
    shape = (first.geometry.in_shape if isinstance(first, QuantizedConv2d)
             else (first.in_features, 1, 1))
    # The maps' shapes and strides: the input's channels in whole groups, the outputs' in
    # whole words (a PE row per word).
    shapes = [(*shape, ceil_div(shape[0], lanes) * lanes)]
    for layer in network.layers:
        if layer.activation_form() is None:
            raise ValueError(f"layer {layer.name}: conv mode runs the power-of-two "
                             f"requantization only, not per-row scales")
        out = (layer.geometry.out_shape if isinstance(layer, QuantizedConv2d)
               else (layer.out_features, 1, 1))
        shapes.append((*out, ceil_div(layer.codes.shape[0], pes) * pes))
    # Two regions: map m in A (word 0) for even m, in B (after the largest of A) for odd m.
    # The output must end in A too, at word 0, where the host reads it (the link's INFER and
    # READ_OUTPUT, as an MLP leaves it): with an odd number of layers (3 or more) the last
    # map is at word 0 and the one before it in A right after it.
    words = [ceil_div(h * w * s, pes) for _, h, w, s in shapes]
    last = len(shapes) - 1
    in_a = [m for m in range(len(shapes)) if m % 2 == 0]
    bases_in_a = {m: 0 for m in in_a}
    if last % 2 and last >= 3:
        in_a.append(last)
        bases_in_a.update({last: 0, last - 1: words[last]})
    region_a = max(bases_in_a[m] + words[m] for m in in_a)
    region_b = max((words[m] for m in range(len(shapes)) if m not in bases_in_a), default=0)
    maps = tuple(MapLayout(bases_in_a.get(m, region_a), *shapes[m]) for m in range(len(shapes)))
    engine_layers, walks, out_counts = [], [], []
    for index, layer in enumerate(network.layers):
        codes, walk = _lowered(layer, maps[index], maps[index + 1], pes, lanes)
        engine_layers.append(_engine_layer(layer, codes))
        walks.append(walk)
        out_counts.append(maps[index + 1].size if isinstance(layer, QuantizedConv2d)
                          else layer.out_features)
    return Lowering(network, EngineNetwork(tuple(engine_layers)), maps, tuple(walks),
                    tuple(out_counts), region_a + region_b, pes, lanes)


def _lowered(layer: QuantizedLinear, source: MapLayout, target: MapLayout, pes: int,
             lanes: int) -> tuple[np.ndarray, Walk]:
    """A layer's stored code matrix (columns in walk order) and its walk."""
    pixel_groups = source.stride // lanes
    in_base = source.base * (pes // lanes)
    if isinstance(layer, QuantizedConv2d):
        g = layer.geometry
        channel_groups = ceil_div(g.in_channels, lanes)
        (kh, kw), (sh, sw), (ph, pw) = g.kernel, g.stride, g.padding
        ky, kx, c = np.meshgrid(np.arange(kh), np.arange(kw), np.arange(g.in_channels),
                                indexing="ij")
        stored = ((ky * kw + kx) * channel_groups * lanes + c).reshape(-1)
        torch_column = (c * kh * kw + ky * kw + kx).reshape(-1)
        codes = np.zeros((layer.codes.shape[0], kh * kw * channel_groups * lanes), np.uint8)
        codes[:, stored] = layer.codes[:, torch_column]
        row_groups = source.width * pixel_groups
        pool = g.pool
        (wr, wc), (psh, psw) = ((1, 1), (1, 1)) if pool is None else (pool.kernel, pool.stride)
        step_rows, step_cols = sh * row_groups, sw * pixel_groups
        walk = Walk(origin=in_base - ph * row_groups - pw * pixel_groups,
                    out_base=target.base, height=g.height, width=g.width,
                    pad_rows=ph, pad_cols=pw, kernel_rows=kh, kernel_cols=kw,
                    channel_groups=channel_groups, pixel_groups=pixel_groups,
                    row_groups=row_groups, stride_rows=sh, stride_cols=sw,
                    step_rows=step_rows, step_cols=step_cols,
                    pool_rows=g.out_height, pool_cols=g.out_width,
                    window_rows=wr, window_cols=wc,
                    window_step_rows=psh * sh, window_step_cols=psw * sw,
                    window_addr_rows=psh * step_rows, window_addr_cols=psw * step_cols)
        return codes, walk
    # A Linear reads its whole input map as one patch, pixel by pixel.
    codes = np.zeros((layer.codes.shape[0], source.size), np.uint8)
    codes[:, source.index()] = layer.codes
    groups = source.size // lanes
    walk = Walk(origin=in_base, out_base=target.base, height=1, width=1, pad_rows=0,
                pad_cols=0, kernel_rows=1, kernel_cols=1, channel_groups=groups,
                pixel_groups=groups, row_groups=groups, stride_rows=1, stride_cols=1,
                step_rows=groups, step_cols=groups, pool_rows=1, pool_cols=1, window_rows=1,
                window_cols=1, window_step_rows=1, window_step_cols=1,
                window_addr_rows=groups, window_addr_cols=groups)
    return codes, walk


def _engine_layer(layer: QuantizedLinear, codes: np.ndarray) -> QuantizedLinear:
    requant = layer.requant
    if requant is not None:
        # The layer's range and leak (its rows all alike) for the stored kernel's rows.
        shift, low, high, leak = layer.activation_form()
        requant = RowRequant.power_of_two(len(codes), shift, low, high, leak=leak,
                                          table=layer.table)
    return QuantizedLinear(
        name=layer.name, codes=codes, codebook=layer.codebook, bias=layer.bias,
        code_bits=layer.code_bits, input_format=layer.input_format,
        weight_format=layer.weight_format, output_format=layer.output_format,
        bias_bits=layer.bias_bits, relu=layer.relu, requant=requant)
