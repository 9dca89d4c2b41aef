"""A PE's entry walker: reads a column's entries from the entry memory, one per cycle.

EIE (Han et al., ISCA 2016, section III-C, "sparse matrix read unit") reads the pointers
``p[j]`` and ``p[j+1]`` of an activation's column and then the column's entries between them,
one per cycle.  Here a column arrives as its column word ``(start, count)`` with the activation
value it multiplies, and the walker takes the next column in the cycle after it reads the
previous column's last entry, reading the new column's first entry in that same cycle: columns
cost no bubbles, so a PE's busy cycles approach its entry count ``E_k``.  The column word waits
in the parameter memory's output register (``pe_front_end.py``), or in the column queue
(``pe_column_queue.py``), while the walker reads a long column.
"""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig

__all__ = ["EntryWalker", "column_layout", "step_layout"]


def column_layout(config: EngineConfig) -> data.StructLayout:
    """A column for the walker: its column word (``isa.column_layout``: where its entries
    start and how many) and the activation value they multiply."""
    return data.StructLayout({"column": isa.column_layout(config),
                              "value": signed(config.act_bits)})


def step_layout(config: EngineConfig) -> data.StructLayout:
    """An entry read by the walker: the activation value it multiplies, and whether it is its
    column's first (its zero run counts from the column's top, not from the previous row)."""
    return data.StructLayout({"value": signed(config.act_bits), "first": 1})


class EntryWalker(wiring.Component):
    """Walks the entries of one column after another, one entry per cycle.

    The occupancy bits promise a nonempty column; an empty one is taken and skipped.

    Members
    -------
    columns : In(stream of ``column_layout``); ready while no column is being walked, so a
        column is taken in the cycle after the previous one's last entry is read.
    entry_addr : Out(``config.pointer_bits``); the entry memory's read address (its word lands
        at the next clock edge).
    steps : Out(stream of ``step_layout``), always ready; valid in each cycle an entry is read
        at ``entry_addr``.
    busy : Out; a column taken earlier is still being walked.
    """

    def __init__(self, config: EngineConfig):
        self._config = config
        super().__init__({
            "columns": In(stream.Signature(column_layout(config))),
            "entry_addr": Out(config.pointer_bits),
            "steps": Out(stream.Signature(step_layout(config), always_ready=True)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config

        walking = Signal()                          # a column taken earlier is still being read
        walk_addr = Signal(config.pointer_bits, reset_less=True)
        walk_left = Signal(config.count_bits, reset_less=True)       # its entries still to read
        walk_value = Signal(signed(config.act_bits), reset_less=True)
        take = Signal()                             # take a column now
        taken = self.columns.payload
        m.d.comb += [
            self.columns.ready.eq(~walking),
            take.eq(self.columns.valid & self.columns.ready),
        ]

        # The entry read this cycle: the next of the column being walked, or the first of the
        # column taken now.
        address = Signal(config.pointer_bits)
        left = Signal(config.count_bits)
        value = Signal(signed(config.act_bits))
        read_entry = Signal()
        last_entry = Signal()
        m.d.comb += [
            address.eq(Mux(walking, walk_addr, taken.column.start)),
            left.eq(Mux(walking, walk_left, taken.column.count)),
            value.eq(Mux(walking, walk_value, taken.value)),
            read_entry.eq(walking | (take & (taken.column.count != 0))),
            last_entry.eq(left == 1),
        ]
        with m.If(read_entry):
            m.d.sync += [walk_addr.eq(address + 1), walk_left.eq(left - 1),
                         walking.eq(~last_entry), walk_value.eq(value)]

        m.d.comb += [
            self.entry_addr.eq(address),
            self.steps.valid.eq(read_entry),
            self.steps.payload.value.eq(value),
            self.steps.payload.first.eq(~walking),
            self.busy.eq(walking),
        ]
        return m
