"""hw/flagged_fifo.py: the same answers as Amaranth's SyncFIFO, cycle for cycle, and a depth
it cannot hold refused."""

import random

import pytest
from amaranth import Elaboratable, Module
from amaranth.lib import fifo
from amaranth.sim import Simulator

from sparseforge.hw.flagged_fifo import FlaggedFIFO


class SideBySide(Elaboratable):
    """Both FIFOs, written and read by the same signals."""

    def __init__(self, *, width, depth):
        self.reference = fifo.SyncFIFO(width=width, depth=depth)
        self.dut = FlaggedFIFO(width=width, depth=depth)

    def elaborate(self, platform):
        m = Module()
        m.submodules.reference = self.reference
        m.submodules.dut = self.dut
        return m


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("write_rate,read_rate", [(0.9, 0.9), (0.3, 0.9), (0.9, 0.3),
                                                  (0.5, 0.5)])
def test_times_like_sync_fifo(depth, write_rate, read_rate):
    """Random writes and reads (also into a full FIFO and from an empty one): the flags, the
    head and the level match every cycle."""
    top = SideBySide(width=12, depth=depth)
    reference, dut = top.reference, top.dut
    rng = random.Random(depth * 1000 + int(write_rate * 10) * 10 + int(read_rate * 10))
    seen = {"full": 0, "empty": 0, "reads": 0}

    async def testbench(ctx):
        for cycle in range(600):
            w_en = rng.random() < write_rate
            r_en = rng.random() < read_rate
            for port in (reference, dut):
                ctx.set(port.w_en, w_en)
                ctx.set(port.w_data, cycle % 4096)
                ctx.set(port.r_en, r_en)
            for flag in ("r_rdy", "w_rdy", "level"):
                assert ctx.get(getattr(dut, flag)) == ctx.get(getattr(reference, flag)), (
                    f"{flag} at cycle {cycle}")
            if ctx.get(reference.r_rdy):
                assert ctx.get(dut.r_data) == ctx.get(reference.r_data), f"head at cycle {cycle}"
                seen["reads"] += r_en
            seen["full"] += not ctx.get(reference.w_rdy)
            seen["empty"] += not ctx.get(reference.r_rdy)
            await ctx.tick()

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    # The run reached the ends the rates lead to, so the flags' cases there were compared.
    assert seen["empty"] and seen["reads"] > 100
    if write_rate >= read_rate:
        assert seen["full"]


def test_refuses_depth_zero():
    with pytest.raises(ValueError, match="depth must be at least 1, not 0"):
        FlaggedFIFO(width=4, depth=0)
