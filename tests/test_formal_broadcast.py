"""hw/broadcast.py, proved with SymbiYosys at its ports: credits, and no group lost, duplicated
or reordered.

The harness (``BroadcastContract``) plays the unit's neighbours:

* the host writes occupancy words (``occupancy_write``) at any times before the scan, and the
  harness keeps what it wrote;
* the activation buffer's read port answers ``ACTIVATION_LATENCY`` = 2 cycles after ``en`` with
  the word at the address asked for (the words are any constants); in every other cycle its
  data is any value, so the unit must take the word in its cycle;
* each PE's activation queue is a ``SyncFIFO`` of ``config.fifo_depth`` (the PE's
  hw/flagged_fifo.py times like it, cycle for cycle), read at any times; a read is
  ``dequeued`` (through a register with ``config.link_registers``, as in the PE);
* one scan is started at any time while the unit is idle, of any group count and bases.

It asserts, for any such run:

* no queue receives a group while full (the unit offers only with a credit: valid means a
  transfer), with the link registers on the way and without;
* one PE and one group chosen by the solver: the group reaches that PE if and only if the PE
  has work in it (a nonzero activation in an occupied column), once, with the right pointer
  index, values and lanes, after exactly the groups before it that the PE has work in; as the
  PE and group are any, every PE receives each of its groups once, in order;
* the PE never receives more groups than it has work in, and when ``idle`` rises after the
  scan, it has received all of them (nothing offered is still on its way);
* the unit does not stall while every queue is empty: a credit lost would leave a group
  waiting for room that every queue has.

The unit's credits are not a port; their conservation (queued + on the way + free ==
``fifo_depth``) shows at the ports as its two halves: a credit too many would send a group
into a full queue, a credit too few would (once they run out) stall the unit with every
queue empty.

The unit's state is looked at only through its ports, so k-induction cannot close (a stalled
PE lets an unreachable inner state wait unseen); the proof is bounded, to the cycles from
reset given with each configuration in ``CASES``: the covers show a whole scan of every group
ending within them, also after a full queue.
"""

from types import SimpleNamespace

import pytest
from amaranth import Cat, Elaboratable, Module, Signal
from amaranth.asserts import AnyConst, AnySeq
from amaranth.hdl import Assert, Assume, Cover
from amaranth.lib import data, fifo

from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig
from sparseforge.compiler.numerics import ceil_div
from sparseforge.hw.activation_buffer import LATENCY as ACTIVATION_LATENCY
from sparseforge.hw.broadcast import BroadcastUnit
from tests.formal import FormalFailure, check, sby_available

pytestmark = [pytest.mark.formal,
              pytest.mark.skipif(not sby_available(), reason="yowasp-sby or yices not installed")]


def small_config(*, pes, lanes, fifo_depth, link_registers, features):
    """A configuration small enough to prove in seconds: ``features`` columns (groups of
    ``lanes``), 2-bit activations, eight pointer indices and four occupancy words."""
    return EngineConfig(pes=pes, scan_lanes=lanes, fifo_depth=fifo_depth, max_features=features,
                        act_bits=2, pointer_depth=8, occupancy_depth=4,
                        link_registers=link_registers)


def longest_stall(config):
    """Cycles the unit may go, while every queue is empty and it is not idle, without
    fetching a group or queueing one: from its last fetch to idle when no PE has work in the
    last groups (six cycles; two more through the link registers)."""
    return 6 + 2 * config.link_registers


class BroadcastContract(Elaboratable):
    """The contract above, about a ``BroadcastUnit(config)``.

    ``queue_depth`` is the depth of the harness's PE queues and ``stall_limit`` the longest
    stall allowed with every queue empty (``config.fifo_depth`` and :func:`longest_stall`,
    unless a test breaks the contract on purpose)."""

    def __init__(self, config, *, queue_depth=None, stall_limit=None):
        self.config = config
        self.max_groups = ceil_div(config.max_features, config.scan_lanes)
        self.queue_depth = config.fifo_depth if queue_depth is None else queue_depth
        self.stall_limit = longest_stall(config) if stall_limit is None else stall_limit
        self.chosen_pe = AnyConst(range(config.pes))
        self.unit = BroadcastUnit(config)

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = unit = self.unit
        scan = self.scan(m)
        occupancy = self.host_writes(m, started=scan.started | unit.start)
        words = self.activation_buffer(m)
        all_empty, chosen_full = self.queues(m)
        chosen = self.chosen_groups(m, scan, occupancy, words)

        # ---- when idle rises after the start: everything delivered ------------------------
        with m.If(scan.started & unit.idle):
            m.d.comb += [Assert(chosen.received == chosen.total,
                                "idle with a group not delivered"),
                         Assert(chosen.seen == chosen.wanted,
                                "idle with the chosen group not delivered")]

        # ---- no stall while every queue has room (a lost credit would stall it) ------------
        # Progress is a group fetched or queued.
        stalled = Signal(range(self.stall_limit + 1))
        progress = unit.activations.en | Cat(port.valid for port in unit.queues).any()
        with m.If(scan.started & ~unit.idle & all_empty & ~progress):
            m.d.sync += stalled.eq(stalled + 1)
        with m.Else():
            m.d.sync += stalled.eq(0)
        m.d.comb += Assert(stalled != self.stall_limit, "stalled with room in every queue")

        # ---- reachable within the bound (checked by the cover tests) -----------------------
        every_group = ((scan.groups == self.max_groups) & (chosen.total == self.max_groups)
                       & (chosen.received == chosen.total))
        was_full = Signal()
        with m.If(chosen_full):
            m.d.sync += was_full.eq(1)
        m.d.comb += [
            Cover(scan.started & unit.idle & every_group),
            Cover(scan.started & unit.idle & every_group & was_full),
        ]
        return m

    def scan(self, m):
        """One scan, started at any time while the unit is idle, of any count and bases."""
        unit = self.unit
        scan = SimpleNamespace(
            started=Signal(name="started"),
            groups=AnyConst(range(self.max_groups + 1)),
            occupancy_base=AnyConst(len(unit.occupancy_base)),
            pointer_base=AnyConst(len(unit.pointer_base)))
        m.d.comb += [
            Assume(scan.groups <= self.max_groups),
            unit.start.eq(AnySeq(1) & unit.idle & ~scan.started),
            unit.groups.eq(scan.groups),
            unit.occupancy_base.eq(scan.occupancy_base),
            unit.pointer_base.eq(scan.pointer_base),
        ]
        with m.If(unit.start):
            m.d.sync += scan.started.eq(1)
        return scan

    def host_writes(self, m, *, started):
        """The host writes occupancy words at any times before the scan; they are kept here
        (the memory starts as zeros)."""
        config, write = self.config, self.unit.occupancy_write
        occupancy = [Signal(isa.occupancy_layout(config), name=f"occupancy{index}")
                     for index in range(config.occupancy_depth)]
        m.d.comb += [write.en.eq(AnySeq(1) & ~started),
                     write.addr.eq(AnySeq(len(write.addr))),
                     write.data.eq(AnySeq(len(write.data)))]
        for index, word in enumerate(occupancy):
            with m.If(write.en & (write.addr == index)):
                m.d.sync += word.eq(write.data)
        return occupancy

    def activation_buffer(self, m):
        """The read port: the word asked for (any constants), ACTIVATION_LATENCY cycles after
        ``en``; any value in every other cycle."""
        port = self.unit.activations
        word_size = port.data.shape().size
        words = [AnyConst(word_size) for _ in range(self.config.act_words)]
        asked, asked_addr = port.en, port.addr
        for stage in range(ACTIVATION_LATENCY):
            later, later_addr = Signal(name=f"asked{stage}"), Signal.like(port.addr)
            m.d.sync += [later.eq(asked), later_addr.eq(asked_addr)]
            asked, asked_addr = later, later_addr
        answer = Signal(word_size)
        m.d.comb += answer.eq(AnySeq(word_size))
        with m.If(asked):
            with m.Switch(asked_addr):
                for index, word in enumerate(words):
                    with m.Case(index):
                        m.d.comb += answer.eq(word)
        m.d.comb += port.data.eq(answer)
        return [data.View(port.data.shape(), word) for word in words]

    def queues(self, m):
        """Each PE's queue, a SyncFIFO of ``queue_depth`` read at any times, its reads
        ``dequeued`` (through the PE's register with link registers).  Asserts that no group
        reaches a full queue; returns whether every queue is empty with no read on its way
        back, and whether the chosen PE's queue is full."""
        config, unit = self.config, self.unit
        empties, fulls = [], []
        for pe, port in enumerate(unit.queues):
            queue = fifo.SyncFIFO(width=1, depth=self.queue_depth)   # the room, not the data
            m.submodules[f"queue{pe}"] = queue
            m.d.comb += [queue.w_en.eq(port.valid), queue.w_data.eq(0),
                         queue.r_en.eq(AnySeq(1)),
                         Assert(~port.valid | queue.w_rdy, "a group reaches a full queue")]
            dequeued = queue.r_en & queue.r_rdy
            returning = Signal(name=f"returning{pe}")
            if config.link_registers:
                m.d.sync += returning.eq(dequeued)
                m.d.comb += unit.dequeued[pe].eq(returning)
            else:
                m.d.comb += unit.dequeued[pe].eq(dequeued)
            empties.append((queue.level == 0) & ~returning)
            fulls.append(~queue.w_rdy)
        m.d.comb += Assume(self.chosen_pe < config.pes)
        return Cat(empties).all(), Cat(fulls).bit_select(self.chosen_pe, 1)

    def chosen_groups(self, m, scan, occupancy, words):
        """The chosen PE's groups: the chosen group once, in its place, with its contents;
        never more groups than the PE has work in."""
        config, unit, lanes = self.config, self.unit, self.config.scan_lanes
        layout = isa.group_layout(config)
        payload, valid = Signal(layout), Signal()
        with m.Switch(self.chosen_pe):
            for pe, port in enumerate(unit.queues):
                with m.Case(pe):
                    m.d.comb += [payload.eq(port.payload), valid.eq(port.valid)]

        # What each group holds: its values, and the lanes the chosen PE has work in.
        def values(group):
            word = words[group // config.groups_per_word]
            first = group % config.groups_per_word * lanes
            return [word[first + lane] for lane in range(lanes)]

        masks = []
        for group in range(self.max_groups):
            stored = Signal(isa.occupancy_layout(config), name=f"occupancy_of{group}")
            with m.Switch((scan.occupancy_base + group)[:len(unit.occupancy_base)]):
                for index, word in enumerate(occupancy):
                    with m.Case(index):
                        m.d.comb += stored.eq(word)
            mask = Signal(lanes, name=f"mask{group}")
            m.d.comb += mask.eq(Cat((value != 0) & stored[lane].bit_select(self.chosen_pe, 1)
                                    for lane, value in enumerate(values(group))))
            masks.append(mask)
        wanted = Cat((mask != 0) & (group < scan.groups) for group, mask in enumerate(masks))

        group = AnyConst(range(self.max_groups))
        chosen = SimpleNamespace(total=Signal(range(self.max_groups + 1)),
                                 received=Signal(range(self.max_groups + 2)),
                                 seen=Signal(), wanted=wanted.bit_select(group, 1))
        before = Signal(range(self.max_groups + 1))
        m.d.comb += [
            Assume(group < self.max_groups),
            chosen.total.eq(sum(wanted)),
            before.eq(sum(wanted[other] & (other < group) for other in range(self.max_groups))),
            Assert(chosen.received <= chosen.total, "more groups than the PE has work in"),
        ]
        with m.If(valid):
            m.d.sync += chosen.received.eq(chosen.received + 1)

        pointer = Signal.like(payload.pointer)
        mask = Signal(lanes)
        group_values = Signal.like(payload.values)
        m.d.comb += pointer.eq(scan.pointer_base + group * lanes)
        with m.Switch(group):
            for index in range(self.max_groups):
                with m.Case(index):
                    m.d.comb += [mask.eq(masks[index]), group_values.eq(Cat(values(index)))]
        with m.If(valid & (payload.pointer == pointer)):
            m.d.sync += chosen.seen.eq(1)
            m.d.comb += [
                Assert(chosen.wanted, "a group the PE has no work in"),
                Assert(~chosen.seen, "a group twice"),
                Assert(chosen.received == before, "a group out of order"),
                Assert(payload.values.as_value() == group_values.as_value(), "wrong values"),
            ]
            if lanes > 1:
                first = Signal(range(lanes))
                for lane in reversed(range(lanes)):
                    with m.If(mask[lane]):
                        m.d.comb += first.eq(lane)
                rest = mask & ~(1 << first)[:lanes]
                m.d.comb += Assert((payload.first == first) & (payload.rest == rest)
                                   & (payload.single == (rest == 0)), "wrong lanes")
        return chosen


# (pes, lanes, fifo_depth, link_registers, features) and the BMC bound.  The covers find a whole
# scan of every group for one PE ending at cycle 14, 21, 12 and 15 (one cycle later after a full
# queue); each cycle more doubles the solver's time, about.
CASES = {
    "2pe-1lane-nolink": ((2, 1, 2, False, 4), 19),
    "2pe-1lane-link": ((2, 1, 2, True, 4), 23),
    "4pe-2lane-nolink": ((4, 2, 2, False, 6), 18),
    "4pe-2lane-fifo3-link": ((4, 2, 3, True, 6), 20),
}


def config_of(case):
    (pes, lanes, fifo_depth, link_registers, features), _ = CASES[case]
    return small_config(pes=pes, lanes=lanes, fifo_depth=fifo_depth,
                        link_registers=link_registers, features=features)


@pytest.mark.parametrize("case", CASES)
def test_broadcast_keeps_credits_and_groups(case, tmp_path):
    """Every run of the bound's cycles keeps the contract."""
    check(BroadcastContract(config_of(case)), tmp_path, mode="bmc", depth=CASES[case][1])


@pytest.mark.parametrize("case", CASES)
def test_broadcast_contract_reaches_the_scan_end(case, tmp_path):
    """The bound is not vacuous: a scan of every group, each for the chosen PE, ends within
    it, also after the chosen PE's queue was full (its credits all used)."""
    check(BroadcastContract(config_of(case)), tmp_path, mode="cover", depth=CASES[case][1])


def test_broadcast_contract_fails_for_a_shallower_queue(tmp_path):
    """The credit check is not vacuous: with PE queues one entry shallower than the unit
    counts on, a group reaches a full queue."""
    config = config_of("2pe-1lane-nolink")
    with pytest.raises(FormalFailure, match="a group reaches a full queue"):
        check(BroadcastContract(config, queue_depth=config.fifo_depth - 1), tmp_path,
              mode="bmc", depth=CASES["2pe-1lane-nolink"][1])
