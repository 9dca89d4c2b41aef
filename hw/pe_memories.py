"""A PE's host-written memories: its slice of the sparse matrix, its column words and biases.

EIE (Han et al., ISCA 2016, section III-C) gives each PE a sparse-matrix SRAM of entries and two
pointer banks, so that ``p[j]`` and ``p[j+1]`` are read in one cycle.  Here the two pointers
come from one *column word* ``(start, count)`` per pointer index (``isa.column_layout``), and the
PE's biases share that memory, after the column words: they are read only at write-back, when
no column word is.  One block RAM instead of three on parts whose RAMs are small (the
iCE40UP5K has 30).

With ``config.decoded_weights`` (the compiler's choice on an iCE40) the entry memory holds each
entry's codebook value, looked up when the image is loaded, instead of its code
(``isa.entry_memory_layout``): the codebook multiplexer is the largest block of a PE in LUT4s,
and an iCE40 block RAM holding at most 256 entries is 16 bits wide anyway.

Only the host writes these memories, and never while the engine runs, so their read ports are
``hw/ram.py``'s, without collision logic.  With ``config.spram_entries`` on an iCE40 UltraPlus
the entry memory is one SB_SPRAM256KA (a single port: the host's write address while it
writes, the walker's read address otherwise); SPRAMs have no initial contents, so such a
board starts without an image and the host loads it (``boards/gateware/core.py``).
"""

from types import SimpleNamespace

from amaranth import ClockSignal, Instance, Module, Mux, Signal
from amaranth.lib import data, enum, memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from sparseforge.compiler import bus, isa
from sparseforge.compiler.config import SPRAM_ENTRY_BITS, SPRAM_ENTRY_DEPTH, EngineConfig
from sparseforge.compiler.resources import entries_in_spram

from . import ram

__all__ = ["PEMemories", "Target", "write_signature", "entry_read_signature",
           "parameter_read_signature"]


class Target(enum.Enum, shape=2):
    """The ``write.target`` field: which PE memory a host write goes to."""
    ENTRIES = 0
    POINTERS = 1
    BIASES = 2


def write_signature() -> wiring.Signature:
    """A host write into a PE's memories (members are outputs of the writer).

    en : write this cycle.
    target : ``Target``; the entry memory, or the parameter memory's column words (``addr`` is
        a global pointer index) or biases (``addr`` counts from the first bias).
    addr, data : where and what.
    """
    return wiring.Signature({
        "en": Out(1),
        "target": Out(Target),
        "addr": Out(bus.INDEX_BITS),
        "data": Out(bus.BUS_DATA_BITS),
    })


def entry_read_signature(config: EngineConfig) -> wiring.Signature:
    """The entry memory's read port (members are outputs of the reader): ``addr`` is read at
    every clock edge, and ``data`` (``isa.entry_memory_layout``) holds that entry from the edge
    on."""
    return wiring.Signature({
        "addr": Out(ceil_log2(config.entry_depth)),
        "data": In(isa.entry_memory_layout(config)),
    })


def parameter_read_signature(config: EngineConfig) -> wiring.Signature:
    """The parameter memory's read port (members are outputs of the reader): ``addr`` is read
    at a clock edge when ``en`` is high, and ``data`` holds that word until the next read."""
    return wiring.Signature({
        "addr": Out(ceil_log2(config.parameter_depth)),
        "en": Out(1),
        "data": In(isa.parameter_bits(config)),
    })


class PEMemories(wiring.Component):
    """A PE's entry memory and parameter memory (column words, then biases), loaded from the
    program image and written by the host.

    With ``config.link_registers`` a host write is registered here, a cycle later: the
    engine's write request reaches every PE's memories, spread over the die, and the LUT RAMs'
    write ports would otherwise end paths across it.  (Each PE's copy loads under its own
    enable, so they stay copies; nothing reads these memories over the bus.)

    Parameters
    ----------
    config : EngineConfig
    entries, pointers, biases : initial contents (``isa.entry_words``, and the program image's
        pointers and biases of this PE), or None.

    Members
    -------
    write : In(``write_signature()``); the host's writes.
    entry_read : In(``entry_read_signature``); the entry walker's port.
    parameter_read : In(``parameter_read_signature``); the column words' and biases' port.
    """

    def __init__(self, config: EngineConfig, *, entries=None, pointers=None, biases=None):
        self._config = config
        self._init = {"entries": entries, "pointers": pointers, "biases": biases}
        super().__init__({
            "write": In(write_signature()),
            "entry_read": In(entry_read_signature(config)),
            "parameter_read": In(parameter_read_signature(config)),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config

        write = self._write(m)
        if entries_in_spram(config, getattr(platform, "device", "") or ""):
            self._spram_entries(m, write)
        else:
            # Synchronous reads, so it maps to block RAM.
            m.submodules.entries = entries = memory.Memory(
                shape=isa.entry_memory_layout(config).size, depth=config.entry_depth,
                init=_init(self._init["entries"]), attrs=ram.ATTRIBUTES)
            entries_w = entries.write_port()
            entries_r = ram.registered_read_port(m, entries, "entries_read")
            m.d.comb += [
                entries_r.addr.eq(self.entry_read.addr),
                self.entry_read.data.eq(entries_r.data),
                entries_w.addr.eq(write.addr), entries_w.data.eq(write.data),
                entries_w.en.eq(write.en & (write.target == Target.ENTRIES)),
            ]
        m.submodules.parameters = parameters = memory.Memory(
            shape=isa.parameter_bits(config), depth=config.parameter_depth,
            init=self._parameters_init(), attrs=ram.ATTRIBUTES)
        parameters_w = parameters.write_port()
        parameters_r = ram.registered_read_port(m, parameters, "parameters_read")
        m.d.comb += [
            parameters_r.addr.eq(self.parameter_read.addr),
            parameters_r.en.eq(self.parameter_read.en),
            self.parameter_read.data.eq(parameters_r.data),
            parameters_w.addr.eq(Mux(write.target == Target.BIASES,
                                     config.pointer_depth + write.addr, write.addr)),
            parameters_w.data.eq(write.data),
            parameters_w.en.eq(write.en & ((write.target == Target.POINTERS)
                                           | (write.target == Target.BIASES))),
        ]
        return m

    def _spram_entries(self, m, write):
        """The entry memory as an SB_SPRAM256KA: written by the host, read at every other
        clock edge (its output holds the last word read, as a synchronous read port's)."""
        writing = write.en & (write.target == Target.ENTRIES)
        address = Signal(range(SPRAM_ENTRY_DEPTH), name="entries_address")
        data_out = Signal(SPRAM_ENTRY_BITS, name="entries_data_out")
        m.d.comb += address.eq(Mux(writing, write.addr, self.entry_read.addr))
        m.submodules.entries = Instance(
            "SB_SPRAM256KA",
            i_ADDRESS=address, i_DATAIN=write.data[:SPRAM_ENTRY_BITS], i_MASKWREN=0b1111,
            i_WREN=writing, i_CHIPSELECT=1, i_CLOCK=ClockSignal("sync"), i_STANDBY=0,
            i_SLEEP=0, i_POWEROFF=1, o_DATAOUT=data_out)
        m.d.comb += self.entry_read.data.eq(
            data_out[:isa.entry_memory_layout(self._config).size])

    def _parameters_init(self):
        # Column words at pointer indices, then the biases.
        config = self._config
        if self._init["pointers"] is None:
            return []
        words = [int(w) for w in isa.column_words(config, self._init["pointers"])]
        words += [0] * (config.pointer_depth - len(words))
        words += [int(b) & ((1 << config.bias_bits) - 1) for b in self._init["biases"]]
        return words

    def _write(self, m):
        """The write the memories take: the host's, or (``config.link_registers``) the host's
        of the previous cycle."""
        if not self._config.link_registers:
            return self.write
        held = Signal(data.StructLayout({"target": Target, "addr": len(self.write.addr),
                                         "data": len(self.write.data)}),
                      name="write_held", reset_less=True)
        held_en = Signal(name="write_held_en")
        m.d.sync += held_en.eq(self.write.en)
        with m.If(self.write.en):
            m.d.sync += [held.target.eq(self.write.target), held.addr.eq(self.write.addr),
                         held.data.eq(self.write.data)]
        return SimpleNamespace(en=held_en, target=held.target, addr=held.addr, data=held.data)


def _init(values):
    return [] if values is None else [int(v) for v in values]
