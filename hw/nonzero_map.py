"""The nonzero map: a bit per activation, set when it is nonzero, beside the activation buffer.

With one scan lane the broadcast unit examines one activation per cycle, so a layer's scan
takes ``in_features`` cycles however many of its inputs are zero (after a ReLU about half
are).  EIE's leading-nonzero detector looks at a word of activations at once and skips the
zeros; here the map keeps, for every word of the activation buffer, which of its ``pes``
activations are nonzero, and the fetch stage (``broadcast_fetch.py``) reads it a word a cycle
and asks only for the nonzero activations.  The map costs a block RAM (bit-masked writes) and
a zero test per lane, not a wider queue word in every PE.

Every write into the activation buffer (the write-back's results, the input stream's and the
host's activations) writes the same lanes of the map, a cycle later (registered), with
whether each value is nonzero, so the two agree on every lane that was ever written.  Nothing
reads a word in the cycle it is written or the one after (the scan runs after the writes of
the layer before it), so the read port has no collision logic (``ram.registered_read_port``).
"""

from amaranth import Cat, Module, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from sparseforge.compiler.config import EngineConfig

from . import ram

__all__ = ["NonzeroMap", "map_read_signature", "map_write_signature"]


def map_write_signature(config: EngineConfig) -> wiring.Signature:
    """A write into the activation buffer, as the map sees it (members are the writer's
    outputs): ``data``'s lanes ``w_en`` into word ``addr``."""
    return wiring.Signature({
        "addr": Out(ceil_log2(max(2, config.act_words))),
        "w_en": Out(config.pes),
        "w_data": Out(data.ArrayLayout(signed(config.act_bits), config.pes)),
    })


def map_read_signature(config: EngineConfig) -> wiring.Signature:
    """A reader of the map: ``data`` (a bit per lane) is word ``addr`` from the clock edge
    where ``en`` was high until the next read."""
    return wiring.Signature({
        "addr": Out(ceil_log2(max(2, config.act_words))),
        "en": Out(1),
        "data": In(config.pes),
    })


class NonzeroMap(wiring.Component):
    """``config.act_words`` words of ``config.pes`` bits: which activations are nonzero.

    Parameters
    ----------
    config : EngineConfig

    Members
    -------
    write : In(``map_write_signature``); every write into the activation buffer.
    read : In(``map_read_signature``); the fetch stage's reads.
    """

    def __init__(self, config: EngineConfig):
        self._config = config
        super().__init__({
            "write": In(map_write_signature(config)),
            "read": In(map_read_signature(config)),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        m.submodules.storage = storage = memory.Memory(
            shape=config.pes, depth=config.act_words, init=[], attrs=ram.ATTRIBUTES)
        write_port = storage.write_port(granularity=1)
        read_port = ram.registered_read_port(m, storage, "read")
        # The write is registered, as the activation buffer's is: the writer's lane decode
        # and the zero tests end at flip-flops, not at the block RAM's bit mask (the 4-PE
        # engine's critical path, 26.7 ns, ran from the host's start to that mask).  It lands
        # a cycle after the buffer's, long before a scan reads it (the sequencer's steps
        # between a layer's last write and the next layer's first read).
        m.d.sync += [
            write_port.addr.eq(self.write.addr),
            write_port.en.eq(self.write.w_en),
            write_port.data.eq(Cat(value != 0 for value in self.write.w_data)),
        ]
        m.d.comb += [
            read_port.addr.eq(self.read.addr),
            read_port.en.eq(self.read.en),
            self.read.data.eq(read_port.data),
        ]
        return m
