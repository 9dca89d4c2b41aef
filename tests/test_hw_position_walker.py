"""hw/position_walker.py: the walker visits the positions ``lowering.Walk.positions`` lists,
in order, with their patch origins, window flags and pooled pixels' words."""

import pytest
from amaranth.sim import Simulator

from sparseforge.hw.position_walker import PositionWalker
from tests.conv_walks import geometry_value, walks_and_configs


@pytest.mark.parametrize("seed", range(4))
def test_the_walk_is_the_compilers(seed):
    for config, walk in walks_and_configs(600 + seed, 6):
        dut = PositionWalker(config)
        wrap = 1 << config.group_address_bits
        rows = config.max_rows
        expected = walk.positions()

        async def testbench(ctx):
            ctx.set(dut.geometry, geometry_value(config, walk))
            ctx.set(dut.rows, rows)
            ctx.set(dut.restart, 1)
            await ctx.tick()
            ctx.set(dut.restart, 0)
            pixel = 0
            for index, (row, col, addr, first, last) in enumerate(expected):
                got = (ctx.get(dut.row), ctx.get(dut.col), ctx.get(dut.addr),
                       ctx.get(dut.first), ctx.get(dut.last))
                assert got == (row, col, addr % wrap, first, last), (index, got)
                assert ctx.get(dut.final) == (index == len(expected) - 1)
                word = (walk.out_base + pixel * rows) % (1 << len(dut.out_word))
                assert ctx.get(dut.out_word) == word
                pixel += last
                # Idle cycles between advances change nothing.
                await ctx.tick()
                ctx.set(dut.advance, 1)
                await ctx.tick()
                ctx.set(dut.advance, 0)

        simulator = Simulator(dut)
        simulator.add_clock(1e-8)
        simulator.add_testbench(testbench)
        simulator.run()
