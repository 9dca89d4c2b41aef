"""hw/pool_unit.py: each result meets the largest of its place in the window so far; a
window's first position starts over; without a result nothing is written."""

import random

import pytest
from amaranth.sim import Simulator

from sparseforge.compiler.config import EngineConfig
from sparseforge.hw.pool_unit import PoolUnit


@pytest.mark.parametrize("pes,writeback_lanes,max_rows", [(4, 0, 2), (8, 2, 3)])
def test_running_maxima_per_place_and_window(pes, writeback_lanes, max_rows):
    config = EngineConfig(pes=pes, scan_lanes=1, max_features=64, max_rows=max_rows,
                          writeback_lanes=writeback_lanes, conv=True)
    groups = pes // config.writeback_period
    places = max_rows * config.writeback_period
    dut = PoolUnit(config)
    rng = random.Random(pes)

    async def testbench(ctx):
        best = [[None] * places for _ in range(groups)]
        checked = 0
        for _ in range(40):                       # windows
            size = rng.randint(1, 4)
            for position in range(size):
                for index in range(places):
                    while rng.random() < 0.3:     # idle cycles: nothing written
                        ctx.set(dut.valid, 0)
                        ctx.set(dut.results, [rng.randint(-128, 127) for _ in range(groups)])
                        await ctx.tick()
                    values = [rng.randint(-128, 127) for _ in range(groups)]
                    ctx.set(dut.valid, 1)
                    ctx.set(dut.index, index)
                    ctx.set(dut.first, position == 0)
                    ctx.set(dut.results, values)
                    for g in range(groups):
                        if position == 0:
                            best[g][index] = values[g]
                        else:
                            best[g][index] = max(best[g][index], values[g])
                    assert list(ctx.get(dut.pooled)) == [best[g][index] for g in range(groups)]
                    checked += 1
                    await ctx.tick()
        assert checked > 100

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
