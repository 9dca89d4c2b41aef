"""A processing element of the EIE-style sparse engine.

Follows EIE (Han et al., ISCA 2016, section III-B and III-C): each PE owns the rows ``i`` with
``i mod N == k`` of every layer, keeps its slice of the sparse matrix in CSC form (relative
zero-run indices, 4-bit codebook indices), and for each nonzero input activation ``a_j`` reads
the column pointers ``p[j]`` and ``p[j+1]`` in one cycle, walks the column's entries one per
cycle, decodes each through the layer's codebook, multiplies and accumulates into its
accumulator file.  A write-back pass reads each row out for a requantizer (``requantize.py``:
bias, rescale, saturate, ReLU) that the engine shares among a few PEs.

Where this differs from EIE, and why (docs/architecture.md; each part's module says more):

* The activation queue holds *groups* of ``G = scan_lanes`` activations with the lanes this PE
  has work for (the broadcast unit knows from the occupancy bits, and names the first of them);
  the front end picks the others with a leading-nonzero detector, one column per cycle.  So a
  column the PE has no entry in costs it nothing, and the queue is filled ``G`` activations at
  a time (``pe_front_end.py``).
* ``p[j]`` and ``p[j+1]`` come from one *column word* ``(start, count)`` instead of two banks,
  and the biases share that memory (they are read only at write-back): one block RAM instead
  of three on parts whose RAMs are small (the iCE40UP5K has 30) (``pe_memories.py``).
* The column word's memory output register buffers one column between the pointer read and the
  entry walk, and the walker reads the next column's first entry in the cycle after the
  previous column's last: columns cost no bubbles, so a PE's busy cycles approach its entry
  count ``E_k``, with no queue of registers to pay for (``pe_front_end.py``,
  ``pe_walker.py``; optionally a two-entry queue between them, ``pe_column_queue.py``).
* Optionally (``acc_memory_bits``) the accumulators' high bits live in registers, so a 24-bit
  accumulator file fits one 16-bit-wide iCE40 block RAM (``pe_accumulators.py``).
* Optionally (``decoded_weights``, the compiler's choice on an iCE40) the entry memory holds
  each entry's codebook value, looked up when the image is loaded, instead of its code: the
  codebook multiplexer is the largest block of a PE in LUT4s, and an iCE40 block RAM holding
  at most 256 entries is 16 bits wide anyway (``pe_memories.py``, ``pe_mac.py``).
* The accumulator read port is transparent to its write port: a product for row ``r`` that
  follows one for the same row in the next cycle sees the freshly written sum.  That is EIE's
  "bypass" for back-to-back writes to one row, done by the memory's transparency logic
  (``pe_accumulators.py``).

Pipeline (one column per cycle at the front, one entry per cycle after the column queue), and
the component of each part::

    queue -> front end (LNZD) -> column word (held in the memory's output) -> walker -> entries
          -> decode (row, codebook) -> multiply -> accumulate (read-modify-write)

    FrontEnd       pe_front_end.py     the activation queue, the lane picked, its column read
    ColumnQueue    pe_column_queue.py  (config.column_queue) two column words for the walker
    EntryWalker    pe_walker.py        a column's entries, one per cycle
    MultiplyAccumulate  pe_mac.py      decode, multiply, accumulate (AccumulatorFile,
                                       pe_accumulators.py); rows read out and cleared
    PEMemories     pe_memories.py      the entry and parameter memories, and host writes
    Readout        pe_readout.py       each row's accumulator and bias at write-back
"""

from amaranth import Const, Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig

from .link_registers import link_domain
from .pe_column_queue import COLUMN_QUEUE_DEPTH, ColumnQueue
from .pe_front_end import FrontEnd
from .pe_mac import MultiplyAccumulate
from .pe_memories import PEMemories, Target, write_signature
from .pe_readout import Readout, readout_layout
from .pe_walker import EntryWalker
from .writeback import schedule_signature

__all__ = ["ProcessingElement", "Target", "readout_layout", "COLUMN_QUEUE_DEPTH"]


class ProcessingElement(wiring.Component):
    """One PE.

    Parameters
    ----------
    config : EngineConfig
    entries, pointers, biases : initial memory contents (``isa.entry_words`` and the program
        image's pointers and biases), or None.

    Members
    -------
    queue : In(stream of ``isa.group_layout``); the broadcast unit's groups for this PE.
    codebook : In; the running layer's codebook values.  One register file in the engine serves
        every PE (EIE gives each PE its own lookup table; on an FPGA the copies would cost more
        registers than the whole PE datapath, and the PEs only read it).
    writeback : In(``writeback.schedule_signature``); which row to read out and clear, and
        when (``hw/writeback.py``: one schedule serves several PEs).
    readout : Out(stream of {acc, bias}), always ready; each row's accumulator and bias, valid
        for ``period`` cycles in row order, for the engine's shared requantizers (with
        ``config.link_registers``, from registers: a cycle later).
    busy : Out; compute work is queued or in flight (with ``config.link_registers``: was, in
        the previous cycle).
    dequeued : Out; a group left the activation queue this cycle (with
        ``config.link_registers``: in the previous cycle).  The broadcast unit counts the
        queue's free entries from these.
    write : In(``pe_memories.write_signature()``); host writes into the entry, pointer (global
        index) and bias memories.
    """

    def __init__(self, config: EngineConfig, *, entries=None, pointers=None, biases=None):
        self._config = config
        self._init = {"entries": entries, "pointers": pointers, "biases": biases}
        super().__init__({
            "queue": In(stream.Signature(isa.group_layout(config))),
            "codebook": In(data.ArrayLayout(signed(config.coef_bits), config.codebook_size)),
            "writeback": In(schedule_signature(config)),
            "readout": Out(stream.Signature(readout_layout(config), always_ready=True)),
            "busy": Out(1),
            "dequeued": Out(1),
            "write": In(write_signature()),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        m.submodules.memories = memories = PEMemories(config, **self._init)
        m.submodules.front_end = front_end = FrontEnd(config)
        m.submodules.walker = walker = EntryWalker(config)
        m.submodules.mac = mac = MultiplyAccumulate(config)
        m.submodules.readout = readout = Readout(config)

        wiring.connect(m, wiring.flipped(self.write), memories.write)

        # queue -> front end -> (column queue) -> walker -> multiply-accumulate
        wiring.connect(m, wiring.flipped(self.queue), front_end.queue)
        if config.column_queue:
            m.submodules.column_queue = column_queue = ColumnQueue(config)
            wiring.connect(m, front_end.columns, column_queue.i)
            wiring.connect(m, column_queue.o, walker.columns)
            column_queue_busy = column_queue.busy
        else:
            wiring.connect(m, front_end.columns, walker.columns)
            column_queue_busy = Const(0)
        wiring.connect(m, walker.steps, mac.steps)
        m.d.comb += [
            memories.entry_read.addr.eq(walker.entry_addr),
            mac.entry.eq(memories.entry_read.data),
            mac.codebook.eq(self.codebook),
        ]

        # The write-back: the schedule reads out and clears the accumulators, and reads the
        # biases through the parameter memory's port, which otherwise serves the front end.
        wiring.connect(m, wiring.flipped(self.writeback), mac.writeback, readout.writeback)
        wiring.connect(m, front_end.parameter_read, readout.column_read)
        wiring.connect(m, readout.parameter_read, memories.parameter_read)
        m.d.comb += readout.acc.eq(mac.acc)
        wiring.connect(m, readout.readout, wiring.flipped(self.readout))

        # The signals back to the broadcast unit and the sequencer (hw/link_registers.py).
        busy = Signal()
        m.d.comb += busy.eq(front_end.busy | column_queue_busy | walker.busy | mac.busy)
        m.d[link_domain(config)] += [
            self.busy.eq(busy),
            self.dequeued.eq(front_end.dequeued),
        ]
        return m
