"""hw/geometry_loader.py: a layer's geometry word comes whole into the register, ``chunks +
1`` cycles after the start, from the chunk words the host wrote; a start restarts a load."""

import random

import pytest
from amaranth.sim import Simulator

from sparseforge.compiler import bus, isa
from sparseforge.compiler.config import EngineConfig
from sparseforge.hw.geometry_loader import GeometryLoader, geometry_depth


@pytest.mark.parametrize("act_words", [16, 4096])
def test_the_word_loads_in_chunks_plus_one_cycles(act_words):
    config = EngineConfig(pes=4, scan_lanes=2, max_layers=5, max_features=act_words * 4,
                          conv=True)
    width = isa.geometry_layout(config).size
    chunks = bus.chunks_of(width)
    rng = random.Random(act_words)
    words = [rng.getrandbits(width) for _ in range(config.max_layers)]
    memory = [0] * geometry_depth(config)
    for layer, word in enumerate(words):
        for c in range(chunks):
            memory[bus.chunk_index(layer, c, width)] = (word >> (32 * c)) & 0xFFFFFFFF
    dut = GeometryLoader(config)

    async def memory_model(ctx):
        # The memory answers a read a cycle after its address.
        async for _, _, addr in ctx.tick().sample(dut.memory.addr):
            ctx.set(dut.memory.data, memory[addr])

    async def testbench(ctx):
        for layer in [3, 0, 4, 4, 1]:
            ctx.set(dut.layer, layer)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            waited = 1
            while not ctx.get(dut.loaded):
                assert ctx.get(dut.loading)
                await ctx.tick()
                waited += 1
            assert waited == chunks + 2         # visible the cycle after chunks + 1 cycles
            assert ctx.get(dut.geometry.as_value()) == words[layer]
            for _ in range(rng.randrange(3)):
                await ctx.tick()
            assert ctx.get(dut.loaded) and ctx.get(dut.geometry.as_value()) == words[layer]
        # A start in the middle of a load restarts it with the new layer.
        ctx.set(dut.layer, 2)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.layer, 4)
        await ctx.tick()
        ctx.set(dut.start, 0)
        await ctx.tick().repeat(chunks + 1)
        assert ctx.get(dut.loaded) and ctx.get(dut.geometry.as_value()) == words[4]

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_process(memory_model)
    simulator.add_testbench(testbench)
    simulator.run()
