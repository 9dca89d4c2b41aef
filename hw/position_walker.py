"""The position walker (conv mode): the output positions of a layer, window by window.

A convolution lowered for the engine (``compiler/lowering.py``) is one sparse matrix-vector
product per output position.  The sequencer steps through the positions with this walker, in
the order the max pooling wants them: pooled row, pooled column, then the pooling window's rows
and columns (without pooling a window is one position).  For each position it gives the patch's
origin -- its top-left input row and column, ``-padding`` at the first, and its group address
-- which the broadcast unit's patch walker (``patch_walker.py``) starts from, and whether the
position opens or closes its window (the pooling registers start over, or the pooled pixel is
written).  Every step is an addition of a stride the compiler worked out (the geometry word's
``step_*`` and ``window_*`` fields): no multiplier, and nothing wider than an address.
"""

from amaranth import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig

__all__ = ["PositionWalker", "coordinate_shape"]


def coordinate_shape() -> signed:
    """A patch's input row or column: from ``-padding`` to past the map's last row."""
    return signed(isa.MAP_BITS + 2)


class PositionWalker(wiring.Component):
    """Walk a layer's output positions.

    Parameters
    ----------
    config : EngineConfig (with ``conv``)

    Members
    -------
    geometry : In(``isa.geometry_layout``); the running layer's walk (stable while it runs).
    rows : In; the layer's accumulator rows per PE: the output words of a pooled pixel.
    restart : In; a pulse: go to the layer's first position.
    advance : In; a pulse: go to the next position.
    row, col : Out; the position's patch origin (input row and column of its top-left).
    addr : Out; the patch origin's group address (modulo the address width).
    first, last : Out; the position opens, closes its pooling window.
    final : Out; the position is the layer's last.
    out_word : Out; the word of the window's pooled pixel in the output map.
    """

    def __init__(self, config: EngineConfig):
        self._config = config
        super().__init__({
            "geometry": In(isa.geometry_layout(config)),
            "rows": In(config.row_bits),
            "restart": In(1),
            "advance": In(1),
            "row": Out(coordinate_shape()),
            "col": Out(coordinate_shape()),
            "addr": Out(config.group_address_bits),
            "first": Out(1),
            "last": Out(1),
            "final": Out(1),
            "out_word": Out(ceil_log2(max(2, config.act_words))),
        })

    def elaborate(self, platform):
        m = Module()
        g = self.geometry
        # Counters of the walk (pooled row and column, window row and column).
        py, px = Signal(isa.MAP_BITS), Signal(isa.MAP_BITS)
        dy, dx = Signal(isa.KERNEL_BITS), Signal(isa.KERNEL_BITS)
        # The patch origin at the start of the pooled row (`row_py`, `addr_py`), of the window
        # (`col_px`, `addr_px`) and of the window's row (`addr_dy`); `row`, `col`, `addr` are
        # the position's.
        row_py = Signal(coordinate_shape())
        col_px = Signal(coordinate_shape())
        addr_py, addr_px, addr_dy = (Signal.like(self.addr, name=n)
                                     for n in ("addr_py", "addr_px", "addr_dy"))
        row, col, addr = self.row, self.col, self.addr
        last_col = Signal()
        last_row = Signal()
        last_px = Signal()
        last_py = Signal()
        m.d.comb += [
            last_col.eq(dx == g.window_cols - 1), last_row.eq(dy == g.window_rows - 1),
            last_px.eq(px == g.pool_cols - 1), last_py.eq(py == g.pool_rows - 1),
            self.first.eq((dx == 0) & (dy == 0)),
            self.last.eq(last_col & last_row),
            self.final.eq(last_col & last_row & last_px & last_py),
        ]
        with m.If(self.restart):
            start_row = -g.pad_rows
            m.d.sync += [py.eq(0), px.eq(0), dy.eq(0), dx.eq(0),
                         row_py.eq(start_row), row.eq(start_row),
                         col_px.eq(-g.pad_cols), col.eq(-g.pad_cols),
                         addr_py.eq(g.origin), addr_px.eq(g.origin), addr_dy.eq(g.origin),
                         addr.eq(g.origin), self.out_word.eq(g.out_base)]
        with m.Elif(self.advance):
            with m.If(self.last):
                m.d.sync += self.out_word.eq(self.out_word + self.rows)
            with m.If(~last_col):
                m.d.sync += [dx.eq(dx + 1), col.eq(col + g.stride_cols),
                             addr.eq(addr + g.step_cols)]
            with m.Elif(~last_row):
                below = addr_dy + g.step_rows
                m.d.sync += [dx.eq(0), dy.eq(dy + 1), row.eq(row + g.stride_rows),
                             col.eq(col_px), addr_dy.eq(below), addr.eq(below)]
            with m.Elif(~last_px):
                right = addr_px + g.window_addr_cols
                right_col = col_px + g.window_step_cols
                m.d.sync += [dx.eq(0), dy.eq(0), px.eq(px + 1), row.eq(row_py),
                             col_px.eq(right_col), col.eq(right_col),
                             addr_px.eq(right), addr_dy.eq(right), addr.eq(right)]
            with m.Else():
                down = addr_py + g.window_addr_rows
                down_row = row_py + g.window_step_rows
                m.d.sync += [dx.eq(0), dy.eq(0), px.eq(0), py.eq(py + 1),
                             row_py.eq(down_row), row.eq(down_row),
                             col_px.eq(-g.pad_cols), col.eq(-g.pad_cols),
                             addr_py.eq(down), addr_px.eq(down), addr_dy.eq(down),
                             addr.eq(down)]
        return m
