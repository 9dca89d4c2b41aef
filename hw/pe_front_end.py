"""A PE's activation queue and front end: the next lane with work, and its column word's read.

EIE (Han et al., ISCA 2016, section III-B, "activation queue and load balancing") queues the
broadcast nonzero activations in front of each PE, and each PE reads the pointers of the
activation at the queue's head.  Here the queue holds *groups* of ``G = scan_lanes``
activations with the lanes this PE has work for (the broadcast unit knows from the occupancy
bits, and names the first of them); the front end picks the others with EIE's leading-nonzero
detector (``lnzd.py``), one column per cycle.  So a column the PE has no entry in costs it
nothing, and the queue is filled ``G`` activations at a time.

For each lane the front end reads the column word (``pe_memories.py``: ``p[j]`` and
``p[j+1]`` as one word) at the lane's pointer index.  The parameter memory's output register is
the one-deep buffer between the front end and the walker: it holds a column word until the
walker (or the column queue) takes it, and the next word is read in the cycle it is taken, so
the walker can start a column every cycle and, while it walks a long one, the next word
already waits.
"""

from amaranth import Cat, Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig

from .flagged_fifo import FlaggedFIFO
from .lnzd import lowest_set_bit
from .pe_memories import parameter_read_signature
from .pe_walker import column_layout

__all__ = ["FrontEnd"]


class FrontEnd(wiring.Component):
    """The activation queue, and the column words of its lanes with work, one per cycle.

    Members
    -------
    queue : In(stream of ``isa.group_layout``); the broadcast unit's groups for this PE.
    dequeued : Out; a group left the queue this cycle.
    parameter_read : Out(``pe_memories.parameter_read_signature``); reads the column word of
        the lane issued, in the cycle it is issued.
    columns : Out(stream of ``pe_walker.column_layout``); the column word in the parameter
        memory's output and its lane's activation value.  A lane is issued when the output
        is free or its word leaves in this cycle.
    busy : Out; a group is queued or held, or a column word waits in the memory's output.
    """

    def __init__(self, config: EngineConfig):
        self._config = config
        super().__init__({
            "queue": In(stream.Signature(isa.group_layout(config))),
            "dequeued": Out(1),
            "parameter_read": Out(parameter_read_signature(config)),
            "columns": Out(stream.Signature(column_layout(config))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config

        queue, head, head_first = self._activation_queue(m)

        # ---- the lane to issue next ----------------------------------------------------------
        issue = Signal()                            # read the next lane's column word now
        if config.scan_lanes == 1:
            can_issue, issue_index, issue_value = self._one_lane(m, queue, head, issue)
        else:
            can_issue, issue_index, issue_value = self._lanes(m, queue, head, head_first, issue)

        # ---- issue: the lane's column word, held in the memory's output ------------------------
        holding = Signal()                          # the memory's output holds a column word
        held_value = Signal(signed(config.act_bits), reset_less=True)
        release = Signal()                          # the memory's output word leaves it
        columns = self.columns
        m.d.comb += [
            self.parameter_read.addr.eq(issue_index),
            self.parameter_read.en.eq(issue),
            columns.valid.eq(holding),
            columns.payload.column.eq(
                self.parameter_read.data[:isa.column_layout(config).size]),
            columns.payload.value.eq(held_value),
            release.eq(columns.valid & columns.ready),
            issue.eq(can_issue & (columns.ready | ~holding)),
        ]
        with m.If(issue):
            m.d.sync += [holding.eq(1), held_value.eq(issue_value)]
        with m.Elif(release):
            m.d.sync += holding.eq(0)

        m.d.comb += self.busy.eq(queue.r_rdy | can_issue | holding)
        return m

    def _activation_queue(self, m):
        """The queue of groups; returns it, its head, and (with several lanes) the head's first
        lane's pointer index and value."""
        # With several lanes the queue also keeps the first lane's pointer index and value, and
        # the second lane, worked out as a group arrives: the queue's output is a LUT RAM read,
        # and the front end takes them from it without an adder, a lane multiplexer or an LNZD
        # behind it.
        config = self._config
        group_bits = len(self.queue.payload.as_value())
        head = Signal(isa.group_layout(config))
        head_first = Signal(_head_first_layout(config))
        if config.scan_lanes > 1:
            arriving = self.queue.payload
            arriving_first = Signal(_head_first_layout(config))
            m.d.comb += [arriving_first.index.eq(arriving.pointer + arriving.first),
                         arriving_first.value.eq(arriving.values[arriving.first]),
                         arriving_first.second.eq(lowest_set_bit(m, arriving.rest))]
            stored = Cat(arriving, arriving_first)
        else:
            stored = self.queue.payload.as_value()
        # Its flags are registers: the front end's take of the head is logic on `r_rdy`, and
        # with SyncFIFO's compare in front of it the take -> level loop was the ECP5 engine's
        # critical path.
        m.submodules.queue = queue = FlaggedFIFO(width=len(stored), depth=config.fifo_depth)
        m.d.comb += [
            queue.w_data.eq(stored),
            queue.w_en.eq(self.queue.valid),
            self.queue.ready.eq(queue.w_rdy),
            head.eq(queue.r_data[:group_bits]),
        ]
        if config.scan_lanes > 1:
            m.d.comb += head_first.eq(queue.r_data[group_bits:])
        m.d.comb += self.dequeued.eq(queue.r_en & queue.r_rdy)
        return queue, head, head_first

    def _one_lane(self, m, queue, head, issue):
        """With one lane: one column per group, issued straight from the queue's head.  Returns
        whether a lane is ready to issue, its pointer index and its value."""
        config = self._config
        can_issue = Signal()
        issue_index = Signal(_index_bits(config))
        issue_value = Signal(signed(config.act_bits))
        m.d.comb += [
            can_issue.eq(queue.r_rdy),
            issue_index.eq(head.pointer),
            issue_value.eq(head.values[0]),
            queue.r_en.eq(issue),
        ]
        return can_issue, issue_index, issue_value

    def _lanes(self, m, queue, head, head_first, issue):
        """With several lanes: hold the head's group and issue its lanes with work in order.
        Returns whether a lane is ready to issue, its pointer index and its value."""
        # The front end holds a group and, worked out a cycle ahead, the lane it issues next
        # (pointer index and value), whether that lane is the group's last, and the lane after
        # it: the issue and the parameter memory's address come from registers, and the next
        # address from an adder on registers, not from an LNZD and an adder in a row.
        config = self._config
        lanes = config.scan_lanes
        can_issue = Signal()
        issue_index = Signal(_index_bits(config))
        issue_value = Signal(signed(config.act_bits))
        front_valid = Signal()
        front_base = Signal.like(issue_index, reset_less=True)
        front_values = Signal(data.ArrayLayout(signed(config.act_bits), lanes), reset_less=True)
        front_index = Signal.like(issue_index, reset_less=True)
        front_value = Signal(signed(config.act_bits), reset_less=True)
        front_last = Signal(reset_less=True)
        front_next = Signal(range(lanes), reset_less=True)  # the lane issued after this one
        front_after = Signal(lanes, reset_less=True)        # the lanes after that
        take_group = Signal()
        m.d.comb += [
            can_issue.eq(front_valid),
            issue_index.eq(front_index),
            issue_value.eq(front_value),
            take_group.eq(queue.r_rdy & (~front_valid | (issue & front_last))),
            queue.r_en.eq(take_group),
        ]
        with m.If(take_group):
            m.d.sync += [
                front_valid.eq(1),
                front_base.eq(head.pointer),
                front_values.eq(head.values),
                front_index.eq(head_first.index),
                front_value.eq(head_first.value),
                front_last.eq(head.single),
                front_next.eq(head_first.second),
                front_after.eq(head.rest & (head.rest - 1)),
            ]
        with m.Elif(issue & front_last):
            m.d.sync += front_valid.eq(0)
        with m.Elif(issue):
            m.d.sync += [
                front_index.eq(front_base + front_next),
                front_value.eq(front_values[front_next]),
                front_last.eq(front_after == 0),
                front_next.eq(lowest_set_bit(m, front_after)),
                front_after.eq(front_after & (front_after - 1)),
            ]
        return can_issue, issue_index, issue_value


def _head_first_layout(config: EngineConfig) -> data.StructLayout:
    # What the queue keeps beside a group with several lanes: its first lane's pointer index
    # and value, and its second lane (the lowest of ``rest``).
    return data.StructLayout({"index": _index_bits(config), "value": signed(config.act_bits),
                              "second": range(max(2, config.scan_lanes))})


def _index_bits(config: EngineConfig) -> int:
    # A pointer index: a group's first column plus a lane.
    return ceil_log2(config.pointer_depth) + 1
