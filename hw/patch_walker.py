"""The patch walker (conv mode): the broadcast unit's address generator, im2col in hardware.

At each output position the broadcast unit scans the *patch* of the layer's input map under
the kernel instead of a contiguous input: kernel row by kernel row, kernel column by kernel
column, a pixel's channels a group of ``scan_lanes`` at a time, in the order the kernel's
columns are stored (``compiler/lowering.py``).  This walker gives the group address of each
step, counting from the patch origin the position walker (``position_walker.py``) hands it:
one more group along a pixel's channels, a pixel's stride to the next kernel column, a map
row's to the next kernel row.  It also says whether the step's pixel lies inside the map: a
pixel in the padding is never read as a value, so neither padding nor (as in every layer)
zero activations reach a PE.
"""

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig

from .position_walker import coordinate_shape

__all__ = ["PatchWalker", "patch_origin_signature"]


def patch_origin_signature(config: EngineConfig) -> wiring.Signature:
    """A patch's origin (from the position walker): input row and column of its top-left,
    and its group address."""
    return wiring.Signature({
        "row": Out(coordinate_shape()),
        "col": Out(coordinate_shape()),
        "addr": Out(config.group_address_bits),
    })


class PatchWalker(wiring.Component):
    """Walk a patch's groups.

    Parameters
    ----------
    config : EngineConfig (with ``conv``)

    Members
    -------
    geometry : In(``isa.geometry_layout``); the running layer's walk.
    origin : In(``patch_origin_signature``); the position's patch origin, read at ``start``.
    start : In; a pulse: the patch's first group is shown from the next cycle.
    next : In; a pulse: show the next group from the next cycle.
    addr : Out; the group address shown (a register).
    inside : Out; its pixel lies inside the map (not padding).
    """

    def __init__(self, config: EngineConfig):
        self._config = config
        super().__init__({
            "geometry": In(isa.geometry_layout(config)),
            "origin": In(patch_origin_signature(config)),
            "start": In(1),
            "next": In(1),
            "addr": Out(config.group_address_bits),
            "inside": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        g = self.geometry
        # The patch's length is the fetch stage's count (the descriptor's groups); the walker
        # only needs to know where a pixel and a kernel row end.
        kx = Signal(isa.KERNEL_BITS)
        group = Signal.like(g.channel_groups)
        row, col, first_col = (Signal(coordinate_shape(), name=n)
                               for n in ("row", "col", "first_col"))
        row_addr = Signal.like(self.addr)          # the kernel row's first group
        pixel_addr = Signal.like(self.addr)        # the pixel's first group
        addr = self.addr
        m.d.comb += self.inside.eq((row >= 0) & (row < g.height) & (col >= 0)
                                   & (col < g.width))
        with m.If(self.start):
            m.d.sync += [kx.eq(0), group.eq(0), row.eq(self.origin.row),
                         col.eq(self.origin.col), first_col.eq(self.origin.col),
                         row_addr.eq(self.origin.addr), pixel_addr.eq(self.origin.addr),
                         addr.eq(self.origin.addr)]
        with m.Elif(self.next):
            with m.If(group != g.channel_groups - 1):
                m.d.sync += [group.eq(group + 1), addr.eq(addr + 1)]
            with m.Elif(kx != g.kernel_cols - 1):
                right = pixel_addr + g.pixel_groups
                m.d.sync += [group.eq(0), kx.eq(kx + 1), col.eq(col + 1),
                             pixel_addr.eq(right), addr.eq(right)]
            with m.Else():
                below = row_addr + g.row_groups
                m.d.sync += [group.eq(0), kx.eq(0), row.eq(row + 1),
                             col.eq(first_col), row_addr.eq(below), pixel_addr.eq(below),
                             addr.eq(below)]
        return m
