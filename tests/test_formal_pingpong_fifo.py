"""hw/pingpong_fifo.py, proved with SymbiYosys: a FIFO of its depth, at its ports.

The contract (``FifoContract``), for any words written and read at any times:

* its ``level`` is the words written less the words read (a count the harness keeps), and it
  has room exactly while that count is below ``depth``: no overflow, and no word refused that
  fits;
* ``r_rdy`` only while a word is held: no underflow;
* a word comes out in its turn: the harness follows one word chosen by the solver (any write),
  counts the words ahead of it, and asserts that it is the head when their reads have gone,
  and that it is read once; as the chosen word is any word, every word comes out in the order
  written, exactly once;
* the head is not ready for at most one cycle (a word written into an empty FIFO is at the
  output two cycles later, the next word the cycle after a read, as ``SyncFIFOBuffered``);
* a presented head stays, unchanged, until it is read.

Only the ports are looked at, so k-induction cannot close (a stall of any length lets an
unreachable inner state wait unseen), and the proof is bounded: every run of ``bound`` cycles
from reset (below; the solver's time doubles with each cycle past about ten).  The words are
one bit wide: the FIFO never looks at them, so a word delivered in another's place shows with
two words the solver makes differ, whatever the width (data independence).
"""

import pytest
from amaranth import Elaboratable, Module, Signal
from amaranth.asserts import AnySeq
from amaranth.hdl import Assert

from sparseforge.hw.pingpong_fifo import PingPongFIFO
from tests.formal import FormalFailure, check, sby_available

pytestmark = [pytest.mark.formal,
              pytest.mark.skipif(not sby_available(), reason="yowasp-sby or yices not installed")]

WIDTH = 1


class FifoContract(Elaboratable):
    """The FIFO contract above, about ``fifo`` (``width``, ``depth``, the FIFO ports and
    ``level``), written and read by the solver.

    ``believed_depth`` is the depth the contract holds it to (the FIFO's, unless a test breaks
    the contract on purpose)."""

    def __init__(self, fifo, *, believed_depth=None):
        self.fifo = fifo
        self.depth = fifo.depth if believed_depth is None else believed_depth

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = self.fifo
        depth = self.depth
        m.d.comb += [fifo.w_en.eq(AnySeq(1)), fifo.w_data.eq(AnySeq(fifo.width)),
                     fifo.r_en.eq(AnySeq(1))]
        write = fifo.w_en & fifo.w_rdy
        read = fifo.r_en & fifo.r_rdy

        # ---- the count: writes less reads, never past the depth or below zero ----------------
        held = Signal(range(depth + 2))
        m.d.sync += held.eq(held + write - read)
        m.d.comb += [
            Assert(fifo.level == held, "level is the words written less the words read"),
            Assert(fifo.w_rdy == (held != depth), "room exactly while fewer than depth held"),
            Assert(~fifo.r_rdy | (held != 0), "no head while empty"),
        ]

        # ---- one word, chosen by the solver, comes out in its turn, once ---------------------
        follow = AnySeq(1)                     # the solver's choice of the write to follow
        waiting = Signal()                     # the followed word is in the FIFO
        came_out = Signal()
        word = Signal(fifo.width)
        ahead = Signal(range(depth + 1))       # words written before it, still held
        at_head = waiting & (ahead == 0)
        with m.If(write & follow & ~waiting & ~came_out):
            m.d.sync += [waiting.eq(1), word.eq(fifo.w_data), ahead.eq(held - read)]
        with m.Elif(read & waiting):
            m.d.sync += ahead.eq(ahead - 1)
            with m.If(at_head):
                m.d.sync += [waiting.eq(0), came_out.eq(1)]
        with m.If(at_head & fifo.r_rdy):
            m.d.comb += Assert(fifo.r_data == word, "the followed word is the head in its turn")

        # ---- the head is not ready for at most one cycle -----------------------------------
        head_late = Signal()
        m.d.sync += head_late.eq(at_head & ~fifo.r_rdy)
        m.d.comb += Assert(~(head_late & at_head & ~fifo.r_rdy),
                           "the head is ready by the second cycle of its turn")

        # ---- a presented head stays until it is read ---------------------------------------
        presented = Signal()
        presented_data = Signal(fifo.width)
        m.d.sync += [presented.eq(fifo.r_rdy & ~fifo.r_en), presented_data.eq(fifo.r_data)]
        with m.If(presented):
            m.d.comb += Assert(fifo.r_rdy & (fifo.r_data == presented_data),
                               "an unread head stays")
        return m


@pytest.mark.parametrize("depth,bound", [(2, 14), (3, 13), (7, 11), (8, 11)])
def test_pingpong_fifo_keeps_fifo_contract(depth, bound, tmp_path):
    """Every run of ``bound`` cycles from reset keeps the contract: three fills and drains of
    a 2-deep FIFO, two of a 3-deep one (a depth that is not a power of two), and the broadcast
    unit's 7- and 8-deep buffers filled (11 cycles: 7 or 8 writes and the head's two)."""
    fifo = PingPongFIFO(width=WIDTH, depth=depth)
    check(FifoContract(fifo), tmp_path, mode="bmc", depth=bound)


def test_pingpong_fifo_contract_fails_for_a_wrong_depth(tmp_path):
    """The contract is not vacuous: held to a depth one less than the FIFO's, it fails (the
    FIFO takes a word the contract calls an overflow)."""
    fifo = PingPongFIFO(width=WIDTH, depth=3)
    with pytest.raises(FormalFailure, match="room exactly while"):
        check(FifoContract(fifo, believed_depth=2), tmp_path, mode="bmc", depth=8)
