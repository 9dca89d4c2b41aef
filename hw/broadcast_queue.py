"""The broadcast unit's end of one PE's activation queue: credits, and the link to the PE.

EIE (Han et al., ISCA 2016, "Activation Queue and Load Balancing") gives each PE a queue of
activations, so that a PE with little work in a column does not hold the others back, and stops the
broadcast when any queue is full.  Here the broadcast unit counts each queue's free entries itself
(credits): one fewer for a group it queues, one more for a group the PE takes out (``dequeued``).
Whether the queue has room is then a register beside the offer stage, equal to what the queue's
level says, and the decision to pop the buffer waits on no PE's queue across the die.  The unit
offers a group only when the queue has room, so the queue's ``valid`` means a transfer and its
``ready`` is not looked at.

With ``config.link_registers`` the push goes to the PE through two registers (the credits
count it when it is decided), and ``dequeued`` comes back through two: one in the PE and one
here, so that the credit count's inputs all sit beside the offer stage (with only the PE's,
the count was placed halfway to a far PE and its loop through the offer decision was the
ECP5-85F's critical path at 32 PEs, 89-91 MHz; with both, 100.8 MHz).
"""

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig

__all__ = ["QueueFeed"]


class QueueFeed(wiring.Component):
    """Push the groups offered to one PE into its queue of ``config.fifo_depth`` entries.

    Parameters
    ----------
    config : EngineConfig

    Members
    -------
    offered : In; the buffer's head is for this PE and not yet taken by it.
    wants : In; the buffer's head is for this PE (taken or not): with link registers, the
        first one loads ``group`` whenever it is high.
    group : In(``isa.group_layout``); the head as this PE's group.
    dequeued : In; a group left the PE's queue this cycle.
    next_full : Out; the queue has no free entry from the next cycle on (combinational).
    queue : Out(stream of ``isa.group_layout``); into the PE's queue: ``valid`` means a
        transfer (``ready`` is not looked at).
    link_valid, far_valid : Out; with ``config.link_registers``, the register by the offer
        stage, and the one by the PE, hold a push (registers; 0 without).
    """

    def __init__(self, config: EngineConfig):
        self._config = config
        group = isa.group_layout(config)
        super().__init__({
            "offered": In(1),
            "wants": In(1),
            "group": In(group),
            "dequeued": In(1),
            "next_full": Out(1),
            "queue": Out(stream.Signature(group)),
            "link_valid": Out(1),
            "far_valid": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config

        credits = Signal(range(config.fifo_depth + 1), init=config.fifo_depth)
        next_credits = Signal.like(credits)
        has_room = Signal(init=1)               # credits != 0, a register
        pushed = Signal()
        dequeued = self.dequeued
        if config.link_registers:
            returned = Signal()             # the PE's dequeue, registered again on arrival
            m.d.sync += returned.eq(self.dequeued)
            dequeued = returned
        m.d.comb += pushed.eq(self.offered & has_room)
        with m.If(pushed & ~dequeued):
            m.d.comb += next_credits.eq(credits - 1)
        with m.Elif(dequeued & ~pushed):
            m.d.comb += next_credits.eq(credits + 1)
        with m.Else():
            m.d.comb += next_credits.eq(credits)
        m.d.sync += [credits.eq(next_credits), has_room.eq(next_credits != 0)]
        m.d.comb += self.next_full.eq(next_credits == 0)

        # The queue is ready whenever it has credits: valid means taken.
        if config.link_registers:
            # Loaded whenever the head is for this PE (so with every push, and the copy it
            # sends is the one it loaded the cycle before): each PE's copy has an enable of its
            # own, a flip-flop, so that Yosys keeps the copies (identical flip-flops would be
            # merged into one that drives every PE's queue across the die), and the enable
            # reaches them through wiring alone.
            # Two registers: the first next to the offer stage, so that the head (whose load
            # enable is the pop decision, reaching every one of its flip-flops) stays compact;
            # the second next to the PE.
            link_group = Signal.like(self.group, reset_less=True)
            far_group = Signal.like(self.group, reset_less=True)
            m.d.sync += [self.link_valid.eq(pushed), self.far_valid.eq(self.link_valid)]
            with m.If(self.wants):
                m.d.sync += link_group.eq(self.group)
            with m.If(self.link_valid):
                m.d.sync += far_group.eq(link_group)
            m.d.comb += [self.queue.valid.eq(self.far_valid), self.queue.payload.eq(far_group)]
        else:
            m.d.comb += [self.queue.valid.eq(pushed), self.queue.payload.eq(self.group)]
        return m
