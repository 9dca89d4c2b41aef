"""The broadcast unit's offer stage: the buffer's head goes to the queues of the PEs that want it.

EIE (Han et al., ISCA 2016, "Activation Queue and Load Balancing") broadcasts an activation to
every PE at once and holds the broadcast while any queue is full.  Here a group goes only to the
PEs with work in it, each as soon as its own queue has room: a PE that takes the head early is not
held back by one whose queue is full, and the head leaves the buffer once every PE that wants it
has taken it.  A group no PE has work for is offered to none and leaves at once.

Whether a PE holds the head back (it wants it, has not taken it, has no room) is a register,
worked out a cycle ahead for both outcomes of this cycle's pop from the buffer's next head
either way (``PingPongFIFO.next_if_read`` and ``next_if_kept``): the pop decision is an OR of
registers, and the loop from the pop back to those registers is one multiplexer.
"""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig

from .broadcast_queue import QueueFeed

__all__ = ["OfferStage", "offer_layout"]


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


class OfferStage(wiring.Component):
    """Offer the buffer's head to the PEs that want it; pop it once they all have taken it.

    Parameters
    ----------
    config : EngineConfig

    Members
    -------
    head : In(stream of ``offer_layout``); the buffer's output: ``valid`` (a register) and
        ``payload``, the head; ``ready`` reads it (looked at only while ``valid``).
    next_if_popped, next_if_kept : In(``offer_layout``); the head the buffer will show next
        cycle if this cycle pops it, and if not.
    pop : Out; the head leaves the buffer this cycle (``valid`` and ``ready``).
    queues : Out(stream of ``isa.group_layout``) per PE, each into a queue of
        ``config.fifo_depth`` groups (``QueueFeed``): ``valid`` means a transfer.
    dequeued : In; per PE, a group left its queue this cycle.
    link_valid, far_valid : Out; per PE, with ``config.link_registers``, its link registers
        hold a push (0 without).
    """

    def __init__(self, config: EngineConfig):
        self._config = config
        super().__init__({
            "head": In(stream.Signature(offer_layout(config))),
            "next_if_popped": In(offer_layout(config)),
            "next_if_kept": In(offer_layout(config)),
            "pop": Out(1),
            "queues": Out(stream.Signature(isa.group_layout(config))).array(config.pes),
            "dequeued": In(config.pes),
            "link_valid": Out(config.pes),
            "far_valid": Out(config.pes),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        pes = config.pes
        head = self.head.payload

        taken = Signal(pes)                     # PEs that took the head already
        next_taken = Signal(pes)
        kept_taken = Signal(pes)                # next_taken if the head stays
        # wants & ~taken & ~has_room, a register: loaded with what it will be for the next
        # head in either case, chosen by the pop
        refused = Signal(pes)
        offered = Signal(pes)
        next_full = Signal(pes)
        for pe in range(pes):
            m.submodules[f"feed{pe}"] = feed = QueueFeed(config)
            group = Signal(isa.group_layout(config), name=f"group{pe}")
            m.d.comb += [
                offered[pe].eq(self.head.valid & head.wants[pe] & ~taken[pe]),
                group.pointer.eq(head.pointer),
                group.values.eq(head.values),
            ]
            if config.scan_lanes > 1:
                m.d.comb += [group.first.eq(head.firsts[pe]), group.rest.eq(head.rests[pe]),
                             group.single.eq(head.rests[pe] == 0)]
            m.d.comb += [
                feed.offered.eq(offered[pe]),
                feed.wants.eq(head.wants[pe]),
                feed.group.eq(group),
                feed.dequeued.eq(self.dequeued[pe]),
                self.link_valid[pe].eq(feed.link_valid),
                self.far_valid[pe].eq(feed.far_valid),
            ]
            wiring.connect(m, feed.queue, wiring.flipped(self.queues[pe]))
            m.d.comb += next_full[pe].eq(feed.next_full)

        # Without the head's valid: ready is not looked at while the buffer's output is
        # empty, and a level less in front of the pop, which every flip-flop of the head
        # waits on.
        m.d.comb += [
            self.head.ready.eq(refused == 0),
            self.pop.eq(self.head.valid & (refused == 0)),
            kept_taken.eq(taken | (offered & ~refused)),
            next_taken.eq(Mux(self.pop, 0, kept_taken)),
        ]
        m.d.sync += [
            taken.eq(next_taken),
            refused.eq(Mux(self.pop, self.next_if_popped.wants & next_full,
                           self.next_if_kept.wants & ~kept_taken & next_full)),
        ]
        return m
