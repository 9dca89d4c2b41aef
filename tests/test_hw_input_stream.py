"""hw/input_stream.py: activation ``n`` of a run goes into word ``n // pes``, lane ``n % pes``;
``last`` asks for the start and sends the next run back to word 0; nothing is taken while busy."""

import random

import pytest
from amaranth.sim import Simulator

from sparseforge.compiler.config import EngineConfig
from sparseforge.hw.input_stream import InputStream


@pytest.mark.parametrize("pes", [1, 3, 4, 8])
def test_counts_and_wraps_lanes(pes):
    config = EngineConfig(pes=pes, scan_lanes=1, max_features=24)
    dut = InputStream(config)
    rng = random.Random(pes)
    runs = [[rng.randrange(-128, 128) for _ in range(rng.randrange(1, 25))] for _ in range(6)]
    taken = []

    async def testbench(ctx):
        for values in runs:
            n = 0
            while n < len(values):
                valid, busy = rng.random() < 0.7, rng.random() < 0.3
                last = n == len(values) - 1
                ctx.set(dut.input.valid, valid)
                ctx.set(dut.input.payload, {"value": values[n], "last": last})
                ctx.set(dut.busy, busy)
                assert ctx.get(dut.input.ready) == (not busy)
                assert ctx.get(dut.write.offered) == valid
                assert ctx.get(dut.write.en) == (valid and not busy)
                assert ctx.get(dut.start) == (valid and not busy and last)
                if valid:
                    assert ctx.get(dut.write.value) == values[n]
                if valid and not busy:
                    assert ctx.get(dut.write.addr) == n // pes, f"word of activation {n}"
                    assert ctx.get(dut.write.lane) == n % pes, f"lane of activation {n}"
                    taken.append(values[n])
                    n += 1
                await ctx.tick()
                assert ctx.get(dut.count) == (0 if n == len(values) else n)
        ctx.set(dut.input.valid, 0)

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    assert taken == [value for values in runs for value in values]
