"""The occupancy memory: which PEs hold entries in which columns of each group.

One word per group of ``scan_lanes`` columns, all layers together (``isa.occupancy_layout``: bit
``[lane][pe]`` is set when PE ``pe`` holds entries in column ``group * scan_lanes + lane``).
The compiler writes it into the program image and the host loads it over the bus; the
broadcast unit reads the word of each group it scans, so that a PE is sent only the columns it
has work in (EIE, Han et al., ISCA 2016, "Activation Queue and Load Balancing", sends every PE
every nonzero activation).

Only the host writes it, while the engine is idle, so its read port has no collision logic
(``ram.registered_read_port``).
"""

from amaranth import Module
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig

from . import ram

__all__ = ["OccupancyMemory", "write_signature"]


def write_signature(config: EngineConfig) -> wiring.Signature:
    """A host write of a whole occupancy word (members are outputs of the writer)."""
    return wiring.Signature({
        "en": Out(1),
        "addr": Out(ceil_log2(max(2, config.occupancy_depth))),
        "data": Out(isa.occupancy_layout(config).size),
    })


class OccupancyMemory(wiring.Component):
    """``config.occupancy_depth`` occupancy words, written by the host, read by the scan.

    Parameters
    ----------
    config : EngineConfig
    init : initial words (from the program image); the rest are zero.

    Members
    -------
    write : In(``write_signature``); the host's writes.  With ``config.link_registers`` they
        are registered first (a cycle later, unseen: the engine is idle), so that their decode
        sits in the engine and the memory (LUT RAM, a bit per lane and PE) beside the scan.
    read : In; ``addr`` is read at a clock edge when ``en`` is high, and ``data`` (an
        ``isa.occupancy_layout`` word) holds that word from then until the next read.
    """

    def __init__(self, config: EngineConfig, *, init=()):
        self._config = config
        self._init = [int(word) for word in init]
        super().__init__({
            "write": In(write_signature(config)),
            "read": In(wiring.Signature({
                "addr": Out(ceil_log2(max(2, config.occupancy_depth))),
                "en": Out(1),
                "data": In(isa.occupancy_layout(config)),
            })),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        m.submodules.storage = storage = memory.Memory(
            shape=isa.occupancy_layout(config).size, depth=config.occupancy_depth,
            init=self._init, attrs=ram.ATTRIBUTES)
        write_port = storage.write_port()
        read_port = ram.registered_read_port(m, storage, "read")

        written = [write_port.en, write_port.addr, write_port.data]
        host = [self.write.en, self.write.addr, self.write.data]
        domain = m.d.sync if config.link_registers else m.d.comb
        domain += [port.eq(value) for port, value in zip(written, host)]
        m.d.comb += [
            read_port.addr.eq(self.read.addr),
            read_port.en.eq(self.read.en),
            self.read.data.eq(read_port.data),
        ]
        return m
