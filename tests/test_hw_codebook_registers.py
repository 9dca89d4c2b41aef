"""hw/codebook_registers.py: a codebook write lands in its register two cycles after it is
offered (registered first), and no other register changes."""

import random

import pytest
from amaranth.sim import Simulator

from sparseforge.compiler.config import EngineConfig
from sparseforge.hw.codebook_registers import CodebookRegisters


@pytest.mark.parametrize("code_bits,coef_bits", [(2, 8), (4, 8), (4, 16)])
def test_writes_land_two_cycles_later(code_bits, coef_bits):
    config = EngineConfig(pes=2, scan_lanes=1, max_features=8, code_bits=code_bits,
                          coef_bits=coef_bits)
    dut = CodebookRegisters(config)
    rng = random.Random(code_bits * 100 + coef_bits)
    size = config.codebook_size
    low, high = -(1 << (coef_bits - 1)), 1 << (coef_bits - 1)
    written = []

    async def testbench(ctx):
        model = [0] * size
        registered = None                       # the write offered in the previous cycle
        for _ in range(200):
            write = None
            if rng.random() < 0.6:
                write = (rng.randrange(size), rng.randrange(low, high))
            ctx.set(dut.write.en, write is not None)
            if write is not None:
                ctx.set(dut.write.index, write[0])
                ctx.set(dut.write.value, write[1])
            await ctx.tick()
            landed, registered = registered, write
            if landed is not None:
                model[landed[0]] = landed[1]
                written.append(landed)
            assert list(ctx.get(dut.values)) == model

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    assert len(written) > 50
