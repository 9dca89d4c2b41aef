"""hw/pingpong_fifo.py: the same answers as Amaranth's SyncFIFOBuffered, cycle for cycle, its
next head foretold for both outcomes of a read, and a depth it cannot hold refused."""

import random

import pytest
from amaranth import Elaboratable, Module
from amaranth.lib import fifo
from amaranth.sim import Simulator

from sparseforge.hw.pingpong_fifo import PingPongFIFO


class SideBySide(Elaboratable):
    """Both FIFOs, written and read by the same signals."""

    def __init__(self, *, width, depth):
        self.reference = fifo.SyncFIFOBuffered(width=width, depth=depth)
        self.dut = PingPongFIFO(width=width, depth=depth)

    def elaborate(self, platform):
        m = Module()
        m.submodules.reference = self.reference
        m.submodules.dut = self.dut
        return m


@pytest.mark.parametrize("depth", [2, 3, 7, 8])
@pytest.mark.parametrize("write_rate,read_rate", [(0.9, 0.9), (0.3, 0.9), (0.9, 0.3),
                                                  (0.5, 0.5)])
def test_times_like_sync_fifo_buffered(depth, write_rate, read_rate):
    """Random writes (while the reference has room) and reads (also while the head is empty,
    as the broadcast unit asks): r_rdy, the head and the level match every cycle."""
    top = SideBySide(width=12, depth=depth)
    reference, dut = top.reference, top.dut
    rng = random.Random(depth * 1000 + int(write_rate * 10) * 10 + int(read_rate * 10))
    compared = []

    async def testbench(ctx):
        reads = 0
        foretold = None                         # next_if_read / next_if_kept, last cycle
        for cycle in range(600):
            # Writes only while the reference takes them, so that both hold the same words.
            w_en = rng.random() < write_rate and ctx.get(reference.w_rdy)
            r_en = rng.random() < read_rate
            for port in (reference, dut):
                ctx.set(port.w_en, w_en)
                ctx.set(port.w_data, cycle % 4096)
                ctx.set(port.r_en, r_en)
            if foretold is not None:
                assert ctx.get(dut.r_data) == foretold, f"foretold head at cycle {cycle}"
            expected_rdy = ctx.get(reference.r_rdy)
            assert ctx.get(dut.r_rdy) == expected_rdy, f"r_rdy at cycle {cycle}"
            if expected_rdy:
                assert ctx.get(dut.r_data) == ctx.get(reference.r_data), f"head at cycle {cycle}"
                reads += r_en
            assert ctx.get(dut.level) == ctx.get(reference.level), f"level at cycle {cycle}"
            # The reference refuses a write while its head is still on its way out of its
            # memory; this one has room whenever it holds fewer than `depth` words.
            assert ctx.get(dut.w_rdy) == (ctx.get(dut.level) != depth), f"w_rdy at cycle {cycle}"
            read = r_en and expected_rdy
            foretold = ctx.get(dut.next_if_read if read else dut.next_if_kept)
            await ctx.tick()
        compared.append(reads)

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    assert compared and compared[0] > 50          # words went through, not an idle FIFO


def test_depth_below_two_is_refused():
    with pytest.raises(ValueError, match="at least 2"):
        PingPongFIFO(width=8, depth=1)
