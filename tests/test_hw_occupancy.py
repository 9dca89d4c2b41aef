"""hw/occupancy.py: host writes land (a cycle later with link registers), a read answers a
cycle after its enable and holds its word until the next read, and the constructor's words
are there from the start."""

import random

import pytest
from amaranth.sim import Simulator

from sparseforge.compiler.config import EngineConfig
from sparseforge.hw.occupancy import OccupancyMemory


@pytest.mark.parametrize("pes,scan_lanes", [(1, 1), (4, 2), (8, 8)])
@pytest.mark.parametrize("link_registers", [False, True])
def test_writes_then_reads(pes, scan_lanes, link_registers):
    config = EngineConfig(pes=pes, scan_lanes=scan_lanes, occupancy_depth=20,
                          link_registers=link_registers)
    rng = random.Random(pes + scan_lanes * 10 + link_registers * 100)
    width = pes * scan_lanes
    init = [rng.getrandbits(width) for _ in range(12)]
    dut = OccupancyMemory(config, init=init)
    reads = []

    async def testbench(ctx):
        contents = init + [0] * (config.occupancy_depth - len(init))
        # The initial words, before any write.
        for address in range(config.occupancy_depth):
            ctx.set(dut.read.addr, address)
            ctx.set(dut.read.en, 1)
            await ctx.tick()
            assert ctx.get(dut.read.data).as_value().value == contents[address]
        ctx.set(dut.read.en, 0)
        # Host writes, then a gap: with link registers the last one lands a cycle later.
        for address in rng.sample(range(config.occupancy_depth), 15):
            contents[address] = rng.getrandbits(width)
            ctx.set(dut.write.en, 1)
            ctx.set(dut.write.addr, address)
            ctx.set(dut.write.data, contents[address])
            await ctx.tick()
        ctx.set(dut.write.en, 0)
        await ctx.tick()
        # Reads at random moments; between them the word holds.
        last = None
        for _ in range(200):
            en = rng.random() < 0.4
            address = rng.randrange(config.occupancy_depth)
            ctx.set(dut.read.en, en)
            ctx.set(dut.read.addr, address)
            await ctx.tick()
            if en:
                last = contents[address]
            if last is not None:
                assert ctx.get(dut.read.data).as_value().value == last
                reads.append(en)

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    assert sum(reads) > 40 and len(reads) - sum(reads) > 40
