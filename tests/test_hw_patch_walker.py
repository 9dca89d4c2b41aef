"""hw/patch_walker.py: from a position's origin the walker shows each group of the patch,
its address and whether it is inside the map, as ``lowering.Walk.patch`` lists them."""

import pytest
from amaranth.sim import Simulator

from sparseforge.hw.patch_walker import PatchWalker
from tests.conv_walks import geometry_value, walks_and_configs


@pytest.mark.parametrize("seed", range(4))
def test_every_patch_is_the_compilers(seed):
    for config, walk in walks_and_configs(700 + seed, 5):
        dut = PatchWalker(config)
        wrap = 1 << config.group_address_bits
        positions = walk.positions()[::max(1, len(walk.positions()) // 7)]

        async def testbench(ctx):
            ctx.set(dut.geometry, geometry_value(config, walk))
            for row, col, addr, _, _ in positions:
                groups, inside = walk.patch(row, col, addr)
                ctx.set(dut.origin.row, row)
                ctx.set(dut.origin.col, col)
                ctx.set(dut.origin.addr, addr % wrap)
                ctx.set(dut.start, 1)
                await ctx.tick()
                ctx.set(dut.start, 0)
                for group, valid in zip(groups, inside):
                    assert (ctx.get(dut.addr), ctx.get(dut.inside)) == (group % wrap, valid)
                    ctx.set(dut.next, 1)
                    await ctx.tick()
                    ctx.set(dut.next, 0)

        simulator = Simulator(dut)
        simulator.add_clock(1e-8)
        simulator.add_testbench(testbench)
        simulator.run()
