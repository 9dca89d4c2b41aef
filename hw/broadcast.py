"""The broadcast unit: scans a layer's input activations and queues each PE's work.

EIE (Han et al. 2016, section III-B, "activation queue and load balancing") broadcasts each
nonzero input activation, found by a leading-nonzero detector, to every PE's activation queue,
one per cycle.  Here the unit reads ``G = scan_lanes`` activations per cycle and, from the
layer's occupancy word for those columns (one bit per column and PE: does this PE hold entries
in this column?), computes for every PE the lanes it has work for: nonzero activation AND
occupied column.  It pushes the group into the queues of the PEs with a nonzero mask only; the
PEs pick lanes with their own LNZD.  A group waits only for the queues it goes to, and a PE that
takes it early is not held back by one that is full.  A group no PE has work for is offered
to none and leaves at once.

The unit is a pipeline, so that no path runs from the memories' outputs through the PEs'
queues and back to the memories' read enables (the engine's critical path when it was a single
stage):

1. fetch: ask for the next group's activation word, when the buffer behind has room for it
   counting the reads in flight (a counter of that room: a decision on registers only); the
   activation buffer registers the request and answers two cycles later, so the occupancy word
   is read a cycle after the ask, from a register, to land with it;
2. land and mask: the words land in registers; the next cycle the per-PE masks are computed
   and written into a small buffer;
3. offer: the buffer's head (a register) is offered to the queues of the PEs that want it and
   have not taken it yet; it leaves the buffer once every one of them has.

So the scan costs ``ceil(in / G)`` cycles per layer whatever the activations are (the cycle
model's scan term), and a PE never spends a cycle on a zero activation or on a column it
has no entry in.
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig
from sparseforge.compiler.numerics import ceil_div

from . import ram
from .activation_buffer import LATENCY as ACTIVATION_LATENCY
from .lnzd import lowest_set_bit
from .pingpong_fifo import PingPongFIFO

__all__ = ["BroadcastUnit", "BUFFER_DEPTH", "buffer_depth"]

# Groups between the mask and offer stages.  With the three groups in flight counted against it
# (asked, landing, landed), a cycle more inside the buffer to its output register and a cycle
# before the room counter sees a pop (`popped`, a register), seven entries let the fetch stage
# ask for a group every cycle while the offer stage takes one.  (With six, the scan ran at six
# groups in seven cycles: on short layers the measured cycles drifted past the bound.)
BUFFER_DEPTH = 7


def buffer_depth(config: EngineConfig) -> int:
    """The buffer's depth: one more with ``config.link_registers``, whose masked groups go
    through a register on their way into it (a fourth group in flight)."""
    return BUFFER_DEPTH + config.link_registers


def offer_layout(config: EngineConfig) -> data.StructLayout:
    """A group in the buffer: its pointer index and values, per PE whether it has work in the
    group (``wants``) and, with several lanes, in which lanes (``firsts`` and ``rests``, as
    the PEs' queues take them; ``wants`` is kept beside them so that the offer stage does not
    have to OR the lanes together)."""
    fields = {
        "pointer": ceil_log2(max(2, config.pointer_depth)),
        "values": data.ArrayLayout(signed(config.act_bits), config.scan_lanes),
        "wants": config.pes,
    }
    if config.scan_lanes > 1:
        # Per PE, its first lane with work and the others (isa.group_layout).
        fields["firsts"] = data.ArrayLayout(isa.group_layout(config)["first"].shape, config.pes)
        fields["rests"] = data.ArrayLayout(config.scan_lanes, config.pes)
    return data.StructLayout(fields)


class BroadcastUnit(wiring.Component):
    """Scan groups ``0 .. groups-1`` of the activation buffer and fill the PE queues.

    Parameters
    ----------
    config : EngineConfig
    occupancy : initial occupancy words (from the program image), or None.

    Ports
    -----
    start : In; one-cycle pulse that starts a scan with the current ``groups``,
        ``occupancy_base`` and ``pointer_base`` (held stable until ``idle``).
    idle : Out; no scan is running and nothing is waiting to be queued.
    activations : the activation buffer's read port (``addr``, ``en`` out; ``data`` in,
        ``ACTIVATION_LATENCY`` = 2 cycles after ``en``), one word of ``pes`` activations.
    queues : Out(stream of ``isa.group_layout``) per PE, each into a queue of
        ``config.fifo_depth`` groups: the unit offers a group only when it knows the queue has
        room, so ``valid`` means a transfer.
    dequeued : In; per PE, a group left its queue this cycle (the unit counts free entries).
    occupancy_write : In; host writes of whole occupancy words.
    """

    def __init__(self, config: EngineConfig, *, occupancy=None):
        self._config = config
        self._occupancy_init = [] if occupancy is None else [int(v) for v in occupancy]
        groups = ceil_div(config.max_features, config.scan_lanes)
        super().__init__({
            "start": In(1),
            "groups": In(range(groups + 1)),
            "occupancy_base": In(ceil_log2(max(2, config.occupancy_depth))),
            "pointer_base": In(ceil_log2(max(2, config.pointer_depth))),
            "idle": Out(1),
            "activations": Out(wiring.Signature({
                "addr": Out(ceil_log2(max(2, config.act_words))),
                "en": Out(1),
                "data": In(data.ArrayLayout(signed(config.act_bits), config.pes)),
            })),
            "queues": Out(stream.Signature(isa.group_layout(config))).array(config.pes),
            "dequeued": In(config.pes),
            "occupancy_write": In(wiring.Signature({
                "en": Out(1),
                "addr": Out(ceil_log2(max(2, config.occupancy_depth))),
                "data": Out(isa.occupancy_layout(config).size),
            })),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        pes, lanes = config.pes, config.scan_lanes
        occupancy_shape = isa.occupancy_layout(config)

        m.submodules.occupancy = occupancy = memory.Memory(
            shape=occupancy_shape.size, depth=config.occupancy_depth,
            init=self._occupancy_init, attrs=ram.ATTRIBUTES)      # only the host writes it
        occupancy_w = occupancy.write_port()
        occupancy_r = ram.registered_read_port(m, occupancy, "occupancy_read")
        occupancy_fields = [occupancy_w.en, occupancy_w.addr, occupancy_w.data]
        host_fields = [self.occupancy_write.en, self.occupancy_write.addr,
                       self.occupancy_write.data]
        if config.link_registers:
            # The host's write is registered (a cycle later, unseen: the engine is idle): its
            # decode sits in the engine, the occupancy LUT RAM (a bit per lane and PE) here.
            m.d.sync += [field.eq(host) for field, host in zip(occupancy_fields, host_fields)]
        else:
            m.d.comb += [field.eq(host) for field, host in zip(occupancy_fields, host_fields)]

        entry = offer_layout(config)
        # Its output is a register, so the offer stage starts from flip-flops; two registers
        # taking turns, so that the pop decides a few flip-flops instead of the clock enable of
        # every bit of the head (pingpong_fifo.py; the timing is SyncFIFOBuffered's).
        depth = buffer_depth(config)
        m.submodules.buffer = buffer = PingPongFIFO(width=entry.size, depth=depth)

        # ---- 1. fetch ------------------------------------------------------------------------
        assert ACTIVATION_LATENCY == 2
        running = Signal()
        next_group = Signal.like(self.groups)
        # next_group == groups, a register: the layer's group count is the descriptor memory's
        # output, and the compare would sit in front of the fetch decision.
        scanned = Signal()
        next_word = Signal.like(self.activations.addr)
        next_sub = Signal(range(max(2, config.groups_per_word)))
        next_pointer = Signal.like(self.pointer_base)
        fetch = Signal()
        asked = Signal()                        # the activation buffer took a request
        asked_group = Signal.like(self.groups)
        asked_sub = Signal.like(next_sub)
        asked_pointer = Signal.like(self.pointer_base)
        in_flight = Signal()                    # a group's words land this cycle
        in_flight_sub = Signal.like(next_sub)
        in_flight_pointer = Signal.like(self.pointer_base)
        landed = Signal()                       # a group's words are in the landing registers
        # Room in the buffer for groups not asked for yet: BUFFER_DEPTH less the groups in it
        # and on their way to it (asked, landing, landed), counted in a register so that the
        # fetch decision has no adder in it.
        # A pop is counted a cycle after it (`popped` is a register): the pop decision, an OR
        # over the PEs, then ends in a flip-flop instead of going on through the counter.
        room = Signal(range(depth + 1), init=depth)
        popped = Signal()
        with m.If(fetch & ~popped):
            m.d.sync += room.eq(room - 1)
        with m.Elif(popped & ~fetch):
            m.d.sync += room.eq(room + 1)
        m.d.comb += [
            fetch.eq(running & ~scanned & (room != 0)),
            self.activations.addr.eq(next_word),
            self.activations.en.eq(fetch),
            occupancy_r.addr.eq(self.occupancy_base + asked_group),
            occupancy_r.en.eq(asked),
        ]
        m.d.sync += [
            asked.eq(fetch), asked_group.eq(next_group), asked_sub.eq(next_sub),
            asked_pointer.eq(next_pointer),
            in_flight.eq(asked), in_flight_sub.eq(asked_sub),
            in_flight_pointer.eq(asked_pointer),
        ]
        with m.If(self.start):
            m.d.sync += [running.eq(1), next_group.eq(0), next_word.eq(0), next_sub.eq(0),
                         next_pointer.eq(self.pointer_base), scanned.eq(self.groups == 0)]
        with m.Elif(fetch):
            m.d.sync += [next_group.eq(next_group + 1), next_pointer.eq(next_pointer + lanes),
                         scanned.eq(next_group + 1 == self.groups)]
            with m.If(next_sub == config.groups_per_word - 1):
                m.d.sync += [next_sub.eq(0), next_word.eq(next_word + 1)]
            with m.Else():
                m.d.sync += next_sub.eq(next_sub + 1)
        with m.Elif(scanned):
            m.d.sync += running.eq(0)

        # ---- 2. land, then mask --------------------------------------------------------------
        # The group's values and occupancy word are registered as they land: the activation
        # buffer's SPRAMs sit at the die's corners, and their outputs have no time left for the
        # masks.
        landed_values = Signal(data.ArrayLayout(signed(config.act_bits), lanes),
                               reset_less=True)
        landed_nonzero = Signal(lanes, reset_less=True)
        landed_occupancy = Signal(occupancy_shape, reset_less=True)
        landed_pointer = Signal.like(self.pointer_base, reset_less=True)
        words = self.activations.data
        m.d.sync += [landed.eq(in_flight), landed_occupancy.eq(occupancy_r.data),
                     landed_pointer.eq(in_flight_pointer)]
        with m.Switch(in_flight_sub):
            for sub in range(config.groups_per_word):
                with m.Case(sub):
                    lane_values = [words[sub * lanes + lane] for lane in range(lanes)]
                    m.d.sync += [landed_values.eq(Cat(lane_values)),
                                 landed_nonzero.eq(Cat(v != 0 for v in lane_values))]

        masked = Signal(entry)
        m.d.comb += masked.values.eq(landed_values)
        occupied = landed_occupancy
        nonzero = landed_nonzero
        for pe in range(pes):
            mask = Cat(nonzero[lane] & occupied[lane][pe] for lane in range(lanes))
            m.d.comb += masked.wants[pe].eq(mask != 0)
            if lanes > 1:
                # The lanes after the first: each a function of the mask's bits up to it (no
                # borrow chain, as mask & (mask - 1) would make).
                m.d.comb += [
                    masked.firsts[pe].eq(lowest_set_bit(m, mask)),
                    masked.rests[pe].eq(Cat(mask[lane] & (mask[:lane] != 0) if lane
                                            else Const(0, 1) for lane in range(lanes))),
                ]
        m.d.comb += masked.pointer.eq(landed_pointer)
        # The fetch made room for it.  (A group no PE has work for is offered to none and
        # leaves at once; dropping it here would put the OR of every PE's mask in the path to
        # the buffer's write enable.)
        masked_valid = Signal()
        if config.link_registers:
            # The buffer's LUT RAM is as wide as a PE mask for each PE: spread over many slices,
            # it is written from a register, not from the masks' logic.
            masked_entry = Signal(entry, reset_less=True)
            m.d.sync += [masked_valid.eq(landed), masked_entry.eq(masked)]
            m.d.comb += [buffer.w_data.eq(masked_entry), buffer.w_en.eq(masked_valid)]
        else:
            m.d.comb += [buffer.w_data.eq(masked), buffer.w_en.eq(landed)]

        # ---- 3. offer ------------------------------------------------------------------------
        # The unit counts each PE queue's free entries (credits): one fewer for a group it
        # queues, one more for a group the PE takes out (`dequeued`).  Whether a PE has room is
        # then a register here, equal to what the queue's level says, and the decision to pop
        # the buffer waits on no PE's queue across the die.
        # And whether a PE holds the head back (it wants it, has not taken it, has no room) is
        # an AND of the head's `wants` with a register: the pop is an OR of two-input ANDs.
        head = data.View(entry, buffer.r_data)
        taken = Signal(pes)                     # PEs that took the head already
        next_taken = Signal(pes)
        blocked = Signal(pes)                   # ~taken & ~has_room, a register
        offered = Signal(pes)
        refused = Signal(pes)
        pop = Signal()
        # With config.link_registers the push goes through a register on its way to the PE
        # (the unit's credits count it when it is decided), and `dequeued` comes back through
        # one in the PE.
        link_valid = Signal(pes)                # the first link register holds a push
        far_valid = Signal(pes)                 # the second one does
        for pe, queue in enumerate(self.queues):
            credits = Signal(range(config.fifo_depth + 1), init=config.fifo_depth,
                             name=f"credits{pe}")
            next_credits = Signal.like(credits, name=f"next_credits{pe}")
            has_room = Signal(init=1, name=f"has_room{pe}")     # credits != 0, a register
            pushed = Signal(name=f"pushed{pe}")
            group = Signal(isa.group_layout(config), name=f"group{pe}")
            m.d.comb += [
                offered[pe].eq(buffer.r_rdy & head.wants[pe] & ~taken[pe]),
                pushed.eq(offered[pe] & has_room),
                # Without the head's r_rdy: r_en is not looked at while the buffer's output
                # is empty, and a level less in front of the pop, which every flip-flop of
                # the head waits on.
                refused[pe].eq(head.wants[pe] & blocked[pe]),
                group.pointer.eq(head.pointer),
                group.values.eq(head.values),
            ]
            if lanes > 1:
                m.d.comb += [group.first.eq(head.firsts[pe]), group.rest.eq(head.rests[pe]),
                             group.single.eq(head.rests[pe] == 0)]
            # A PE's queue is ready whenever it has credits: valid means taken.
            if config.link_registers:
                # Loaded whenever the head is for this PE (so with every push, and the copy
                # it sends is the one it loaded the cycle before): each PE's copy has an
                # enable of its own, a flip-flop, so that Yosys keeps the copies (identical
                # flip-flops would be merged into one that drives every PE's queue across the
                # die), and the enable reaches them through wiring alone.
                # Two registers: the first next to the offer stage, so that the head (whose
                # load enable is the pop decision, reaching every one of its flip-flops) stays
                # compact; the second next to the PE.
                link_group = Signal.like(group, name=f"link_group{pe}", reset_less=True)
                far_group = Signal.like(group, name=f"far_group{pe}", reset_less=True)
                m.d.sync += [link_valid[pe].eq(pushed), far_valid[pe].eq(link_valid[pe])]
                with m.If(head.wants[pe]):
                    m.d.sync += link_group.eq(group)
                with m.If(link_valid[pe]):
                    m.d.sync += far_group.eq(link_group)
                m.d.comb += [queue.valid.eq(far_valid[pe]), queue.payload.eq(far_group)]
            else:
                m.d.comb += [queue.valid.eq(pushed), queue.payload.eq(group)]
            with m.If(pushed & ~self.dequeued[pe]):
                m.d.comb += next_credits.eq(credits - 1)
            with m.Elif(self.dequeued[pe] & ~pushed):
                m.d.comb += next_credits.eq(credits + 1)
            with m.Else():
                m.d.comb += next_credits.eq(credits)
            m.d.sync += [credits.eq(next_credits), has_room.eq(next_credits != 0),
                         blocked[pe].eq(~next_taken[pe] & (next_credits == 0))]
        m.d.comb += [
            buffer.r_en.eq(refused == 0),
            pop.eq(buffer.r_rdy & (refused == 0)),
            next_taken.eq(Mux(pop, 0, taken | (offered & ~refused))),
        ]
        m.d.sync += [taken.eq(next_taken), popped.eq(pop)]

        # The buffer's level, not its r_rdy: a group on its way to the output register counts.
        m.d.comb += self.idle.eq(~running & ~asked & ~in_flight & ~landed & ~masked_valid
                                 & (buffer.level == 0) & (link_valid == 0) & (far_valid == 0))
        return m
