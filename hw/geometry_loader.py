"""The geometry loader (conv mode): copies a layer's geometry word into registers.

A layer's walk over its input map (``compiler/lowering.py``: ``Walk``; ``isa.geometry_layout``)
is wider than the bus and than an iCE40 block RAM, so the geometry memory holds it as 32-bit
chunks, each its own word (chunk ``c`` of layer ``l`` at ``l << chunk_bits | c``, as the host
writes them, ``bus.chunk_index``), and this loader reads the running layer's chunks one a
cycle into a register as wide as the word: one block RAM on an iCE40 instead of a
descriptor memory a dozen block RAMs wide.  It loads from the sequencer's FETCH, as the
codebook loader (``codebook_loader.py``) loads a codebook, in ``chunks + 1`` cycles.
"""

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from sparseforge.compiler import bus, isa
from sparseforge.compiler.config import EngineConfig

__all__ = ["GeometryLoader", "geometry_depth", "geometry_read_signature"]


def geometry_depth(config: EngineConfig) -> int:
    """Words of the geometry memory: every layer's chunks at ``chunk_index``."""
    return config.max_layers << bus.chunk_bits(isa.geometry_layout(config).size)


def geometry_read_signature(config: EngineConfig) -> wiring.Signature:
    """A read port of the geometry memory (``data`` a cycle after ``addr``), seen from its
    reader."""
    return wiring.Signature({
        "addr": Out(ceil_log2(max(2, geometry_depth(config)))),
        "data": In(bus.BUS_DATA_BITS),
    })


class GeometryLoader(wiring.Component):
    """Copy a layer's geometry word from the geometry memory into ``geometry``, a chunk a
    cycle.

    Parameters
    ----------
    config : EngineConfig (with ``conv``)

    Members
    -------
    start : In; load the geometry of layer ``layer`` (a pulse; it restarts a load under way).
    layer : In; the layer, while ``start``.
    loading : Out; a load is under way (a register).
    loaded : Out; the register holds a whole word, since the cycle after the last chunk
        arrived, until the next ``start`` (a register).
    memory : Out(``geometry_read_signature``); the geometry memory's read port.
    geometry : Out(``isa.geometry_layout``); the loaded word (a register).
    """

    def __init__(self, config: EngineConfig):
        self._config = config
        super().__init__({
            "start": In(1),
            "layer": In(ceil_log2(max(2, config.max_layers))),
            "loading": Out(1),
            "loaded": Out(1),
            "memory": Out(geometry_read_signature(config)),
            "geometry": Out(isa.geometry_layout(config)),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        width = isa.geometry_layout(config).size
        chunks = bus.chunks_of(width)
        chunk_bits = bus.chunk_bits(width)
        loading = self.loading
        layer = Signal.like(self.layer)
        # `chunk` runs a chunk ahead of the one written: the memory answers a cycle later.
        chunk = Signal(range(chunks + 1))
        word = Signal(chunks * bus.BUS_DATA_BITS)
        with m.If(self.start):
            m.d.sync += [loading.eq(1), self.loaded.eq(0), chunk.eq(0), layer.eq(self.layer)]
        with m.Elif(loading):
            m.d.sync += chunk.eq(chunk + 1)
            with m.Switch(chunk):
                for c in range(1, chunks + 1):
                    with m.Case(c):
                        m.d.sync += word[(c - 1) * 32:c * 32].eq(self.memory.data)
            with m.If(chunk == chunks):
                m.d.sync += [loading.eq(0), self.loaded.eq(1)]
        m.d.comb += [
            self.memory.addr.eq((layer << chunk_bits) | chunk[:max(1, chunk_bits)]
                                if chunk_bits else layer),
            self.geometry.eq(word[:width]),
        ]
        return m
