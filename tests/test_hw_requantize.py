"""The write-back arithmetic in gates equals numerics.requantize, bit for bit."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from sparseforge.compiler.config import EngineConfig
from sparseforge.compiler.numerics import requantize
from sparseforge.hw.requantize import Requantizer, latency


def rtl_requantize(config, acc, bias, shift, relu):
    """Push (acc, bias) pairs through the Requantizer, one per cycle; return its outputs."""
    dut = Requantizer(config)
    outputs = []

    async def testbench(ctx):
        ctx.set(dut.shift, shift)
        ctx.set(dut.relu, relu)
        await ctx.tick()                # the parameters settle a cycle before the first input
        for cycle in range(len(acc) + latency(config)):
            if cycle < len(acc):
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"acc": int(acc[cycle]), "bias": int(bias[cycle])})
            else:
                ctx.set(dut.i.valid, 0)
            await ctx.tick()
            if ctx.get(dut.o.valid):
                outputs.append(ctx.get(dut.o.payload))

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    return np.array(outputs)


@pytest.mark.parametrize("act_bits,acc_bits,bias_bits", [(8, 24, 16), (16, 40, 32), (4, 16, 8)])
@pytest.mark.parametrize("shift", [0, 1, 5, 13])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("readout_register,link_registers",
                         [(False, False), (True, False), (True, True)])
def test_requantizer_matches_numerics(act_bits, acc_bits, bias_bits, shift, relu,
                                      readout_register, link_registers):
    # link_registers splits the shift and the saturation into two stages each.
    config = EngineConfig(pes=1, act_bits=act_bits, acc_bits=acc_bits, bias_bits=bias_bits,
                          readout_register=readout_register, link_registers=link_registers)
    rng = np.random.default_rng(shift * 2 + relu + act_bits)
    acc = rng.integers(-(1 << (acc_bits - 1)), 1 << (acc_bits - 1), 200)
    acc[:8] = [0, 1, -1, (1 << shift) >> 1, -((1 << shift) >> 1), (1 << (acc_bits - 1)) - 1,
               -(1 << (acc_bits - 1)), 3 << max(0, shift - 1)]      # ties and extremes
    bias = rng.integers(-(1 << (bias_bits - 1)), 1 << (bias_bits - 1), 200)
    bias[:8] = 0
    expected = requantize(acc, bias, shift, act_bits, relu)
    np.testing.assert_array_equal(rtl_requantize(config, acc, bias, shift, relu), expected)
