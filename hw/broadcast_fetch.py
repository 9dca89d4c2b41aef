"""The broadcast unit's fetch stage: asks for a layer's groups of activations, one per cycle.

EIE (Han et al., ISCA 2016, "Distributed Leading Non-Zero Detection") scans a layer's input
activations for the nonzero ones to broadcast.  Here the scan reads ``scan_lanes`` activations, a
group, per cycle: the stage walks the groups ``0 .. groups-1``, asks the activation buffer for the
word that holds each (a word holds ``config.groups_per_word`` groups), and a cycle later the
occupancy memory for the group's occupancy word, so that both land in the mask stage in the same
cycle.

In conv mode (``config.conv``) the groups are a patch's, at the addresses the patch walker
(``patch_walker.py``, im2col in hardware) gives from the position's origin: a group in the
padding is asked for like any (the scan's timing is the same) but not read, and lands marked
``pad``, so no PE sees it.

With ``config.skip_zeros`` (one scan lane) the stage asks only for the nonzero activations:
it reads the nonzero map (``nonzero_map.py``) a word a cycle, through the map's read register
(the slot), into ``flags``, the nonzero lanes of the current word not asked for yet; it asks
for the lowest of them each cycle and takes the next word from the slot as it asks for the
last (a word with none costs a cycle).  The last word's lanes past the layer's inputs are
masked off: the buffer holds older values there.

It asks only when the buffer between the mask and offer stages has room for the group,
counting the groups on their way to it.  That room is a counter in a register, so the decision
to ask is made on registers only: no path runs from the memories' outputs through the PEs'
queues back to the memories' read enables.
"""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig
from sparseforge.compiler.numerics import ceil_div

from .activation_buffer import LATENCY as ACTIVATION_LATENCY
from .lnzd import lowest_set_bit
from .nonzero_map import map_read_signature
from .patch_walker import PatchWalker, patch_origin_signature

__all__ = ["FetchStage", "landing_signature", "scan_members"]


def scan_members(config: EngineConfig) -> dict:
    """The members that start a scan, as the broadcast unit and its fetch stage take them:
    ``start`` and the layer's ``groups``, ``occupancy_base`` and ``pointer_base``; in conv
    mode also the layer's ``geometry`` and the position's patch ``origin``."""
    members = {
        "start": In(1),
        "groups": In(range(ceil_div(config.max_features, config.scan_lanes) + 1)),
        "occupancy_base": In(ceil_log2(max(2, config.occupancy_depth))),
        "pointer_base": In(ceil_log2(max(2, config.pointer_depth))),
    }
    if config.conv:
        members["geometry"] = In(isa.geometry_layout(config))
        members["origin"] = In(patch_origin_signature(config))
    return members


def landing_signature(config: EngineConfig) -> wiring.Signature:
    """The group whose activation word lands this cycle (members are outputs of the fetch).

    valid : a group's words land: the activation word now, the occupancy word now.
    sub : which of the word's ``config.groups_per_word`` groups it is.
    pointer : the pointer index of the group's first column.
    pad : (conv mode) the group lies in the padding: it holds no activation.
    """
    members = {
        "valid": Out(1),
        "sub": Out(range(max(2, config.groups_per_word))),
        "pointer": Out(ceil_log2(max(2, config.pointer_depth))),
    }
    if config.conv:
        members["pad"] = Out(1)
    return wiring.Signature(members)


class FetchStage(wiring.Component):
    """Walk a layer's groups and ask for their words while the buffer behind has room.

    Parameters
    ----------
    config : EngineConfig
    buffer_depth : int
        Groups the buffer between the mask and offer stages holds: the room counter's start.

    Members
    -------
    start : In; one-cycle pulse that starts a scan with the current ``groups``,
        ``occupancy_base`` and ``pointer_base`` (held stable until the scan ends).
    groups, occupancy_base, pointer_base : In; the layer's group count, the address of its
        first occupancy word and the pointer index of its first column.
    pop : In; the buffer's head left it this cycle (its room is counted a cycle later).
    activations : Out; ``addr``, ``en``: the activation buffer's read request, answered
        ``ACTIVATION_LATENCY`` = 2 cycles after ``en``.
    occupancy : Out; ``addr``, ``en``: the occupancy memory's read request, a cycle after the
        activations' (the memory answers a cycle after ``en``).
    landing : Out(``landing_signature``); the group whose words land this cycle.
    running : Out; a scan is on (a register).
    asked : Out; the activation buffer took a request last cycle (a register).
    nonzero : Out(``nonzero_map.map_read_signature``); with ``config.skip_zeros``, the
        nonzero map's reads.
    """

    def __init__(self, config: EngineConfig, *, buffer_depth: int):
        self._config = config
        self._buffer_depth = buffer_depth
        super().__init__({
            **scan_members(config),
            "pop": In(1),
            "activations": Out(wiring.Signature({
                "addr": Out(ceil_log2(max(2, config.act_words))),
                "en": Out(1),
            })),
            "occupancy": Out(wiring.Signature({
                "addr": Out(ceil_log2(max(2, config.occupancy_depth))),
                "en": Out(1),
            })),
            "landing": Out(landing_signature(config)),
            "running": Out(1),
            "asked": Out(1),
            **({"nonzero": Out(map_read_signature(config))} if config.skip_zeros else {}),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        depth = self._buffer_depth
        assert ACTIVATION_LATENCY == 2

        running = self.running
        next_group = Signal.like(self.groups)
        # Whether every group has been asked for, a register, and worked out from a count of the
        # groups left rather than by comparing `next_group + 1` with `groups`: the layer's group
        # count is the descriptor memory's output, and an incrementer and a comparator behind it
        # would sit in front of the register (the UP5K's critical path).  At start only
        # `groups == 0` is decided on it.
        scanned = Signal()
        remaining = Signal.like(self.groups)    # groups not asked for yet
        next_word = Signal.like(self.activations.addr)
        next_sub = Signal(range(max(2, config.groups_per_word)))
        next_pointer = Signal.like(self.pointer_base)
        ask = Signal()                          # ask for the next group this cycle
        asked = self.asked                      # the activation buffer took a request
        asked_group = Signal.like(self.groups)
        asked_sub = Signal.like(next_sub)
        asked_pointer = Signal.like(self.pointer_base)
        landing = self.landing                  # a group's words land this cycle

        # Room in the buffer for groups not asked for yet: its depth less the groups in it and
        # on their way to it (asked, landing, landed, and with link registers masked), counted
        # in a register so that the decision to ask has no adder in it.
        # A pop is counted a cycle after it (`popped` is a register): the pop decision, an OR
        # over the PEs, then ends in a flip-flop instead of going on through the counter.
        room = Signal(range(depth + 1), init=depth)
        popped = Signal()
        m.d.sync += popped.eq(self.pop)
        with m.If(ask & ~popped):
            m.d.sync += room.eq(room - 1)
        with m.Elif(popped & ~ask):
            m.d.sync += room.eq(room + 1)

        m.d.comb += [
            self.activations.addr.eq(next_word),
            self.activations.en.eq(ask),
            self.occupancy.addr.eq(self.occupancy_base + asked_group),
            self.occupancy.en.eq(asked),
        ]
        m.d.sync += [
            asked.eq(ask), asked_group.eq(next_group), asked_sub.eq(next_sub),
            asked_pointer.eq(next_pointer),
            landing.valid.eq(asked), landing.sub.eq(asked_sub),
            landing.pointer.eq(asked_pointer),
        ]

        walk = (next_group, next_word, next_sub, next_pointer)
        if config.skip_zeros:
            self._skip_zeros(m, ask, room, *walk)
            return m
        m.d.comb += ask.eq(running & ~scanned & (room != 0))
        with m.If(self.start):
            m.d.sync += [running.eq(1), next_group.eq(0), next_word.eq(0), next_sub.eq(0),
                         next_pointer.eq(self.pointer_base), remaining.eq(self.groups),
                         scanned.eq(self.groups == 0)]
        with m.Elif(ask):
            m.d.sync += [next_group.eq(next_group + 1),
                         next_pointer.eq(next_pointer + config.scan_lanes),
                         remaining.eq(remaining - 1), scanned.eq(remaining == 1)]
            with m.If(next_sub == config.groups_per_word - 1):
                m.d.sync += [next_sub.eq(0), next_word.eq(next_word + 1)]
            with m.Else():
                m.d.sync += next_sub.eq(next_sub + 1)
        with m.Elif(scanned):
            m.d.sync += running.eq(0)
        if config.conv:
            self._patch(m, ask)
        return m

    def _skip_zeros(self, m, ask, room, next_group, next_word, next_sub, next_pointer):
        """The walk over the nonzero activations only (``config.skip_zeros``): the nonzero
        map's words through its read register (the slot) into ``flags``; the group to ask
        for is the lowest of them (``next_*``, combinational here).

        Whether ``flags`` is empty or holds a single lane, and whether the map has words left
        to read, are registers kept as they change, so that taking the next word and reading
        the one after it are decided on registers (a zero test and a lowest-lane detector in
        front of the reads' enables were the UP5K's critical path, 29.8 ns)."""
        config = self._config
        pes = config.pes
        running, nonzero = self.running, self.nonzero
        map_left = Signal.like(self.groups)         # the layer's groups the map reads leave
        map_done = Signal()                         # map_left == 0
        read_word = Signal.like(nonzero.addr)       # the next word to read
        slot_valid = Signal()                       # a word in the map's read register
        slot_word = Signal.like(nonzero.addr)
        slot_lanes = Signal(pes)                    # its lanes inside the layer
        flags = Signal(pes)                         # the current word's lanes not asked for
        empty = Signal(init=1)                      # flags == 0
        single = Signal()                           # flags holds one lane
        word = Signal.like(nonzero.addr)
        # The lane's index: as many bits as a word has lanes (none for one PE).
        sub = lowest_set_bit(m, flags)[:ceil_log2(pes)]
        # The lanes after the lowest: what is left once it is asked for (no borrow chain).
        above = Cat(flags[lane] & (flags[:lane] != 0) if lane else Const(0, 1)
                    for lane in range(pes))
        loaded = Signal(pes)                        # the slot's lanes inside the layer
        take = Signal()                             # the slot's word into `flags`
        read = Signal()                             # read the next map word
        m.d.comb += [
            ask.eq(running & ~empty & (room != 0)),
            take.eq(slot_valid & (empty | (ask & single))),
            read.eq(running & ~map_done & (~slot_valid | take)),
            loaded.eq(nonzero.data & slot_lanes),
            nonzero.addr.eq(read_word),
            nonzero.en.eq(read),
            next_group.eq(Cat(sub, word)), next_word.eq(word), next_sub.eq(sub),
            next_pointer.eq(self.pointer_base + Cat(sub, word)),
        ]
        with m.If(take):
            m.d.sync += [flags.eq(loaded), word.eq(slot_word), empty.eq(loaded == 0),
                         single.eq(_count(loaded) == 1)]
        with m.Elif(ask):
            m.d.sync += [flags.eq(above), empty.eq(single), single.eq(_count(flags) == 2)]
        with m.If(read):
            m.d.sync += [
                read_word.eq(read_word + 1), slot_valid.eq(1), slot_word.eq(read_word),
                slot_lanes.eq(Cat(map_left > lane for lane in range(pes))),
                map_left.eq(Mux(map_left > pes, map_left - pes, 0)),
                map_done.eq(map_left <= pes),
            ]
        with m.Elif(take):
            m.d.sync += slot_valid.eq(0)
        with m.If(self.start):
            m.d.sync += [running.eq(1), map_left.eq(self.groups), map_done.eq(self.groups == 0),
                         read_word.eq(0), slot_valid.eq(0), flags.eq(0), empty.eq(1),
                         single.eq(0)]
        with m.Elif(~ask & map_done & ~slot_valid & empty):
            m.d.sync += running.eq(0)

    def _patch(self, m, ask):
        """Conv mode: the group asked for is the patch walker's; padding is not read."""
        config = self._config
        m.submodules.patch = patch = PatchWalker(config)
        sub_bits = (config.groups_per_word - 1).bit_length()
        pad = Signal()
        m.d.comb += [
            patch.geometry.eq(self.geometry),
            patch.origin.row.eq(self.origin.row), patch.origin.col.eq(self.origin.col),
            patch.origin.addr.eq(self.origin.addr),
            patch.start.eq(self.start), patch.next.eq(ask),
            self.activations.addr.eq(patch.addr[sub_bits:]),
            self.activations.en.eq(ask & patch.inside),
        ]
        m.d.sync += [pad.eq(~patch.inside), self.landing.pad.eq(pad)]
        if sub_bits:
            asked_sub = Signal(sub_bits)
            m.d.sync += [asked_sub.eq(patch.addr[:sub_bits]), self.landing.sub.eq(asked_sub)]


def _count(bits):
    """How many of ``bits`` are set (an adder tree over a few bits)."""
    return sum(bit for bit in bits)
