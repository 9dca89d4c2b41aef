"""The write-back arithmetic in gates equals numerics.requantize, bit for bit."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig
from sparseforge.compiler.numerics import requantize, requantize_rows
from sparseforge.hw.requantize import ChannelRequantizer, Requantizer, latency


def rtl_requantize(config, acc, bias, shift, relu, activation=None):
    """Push (acc, bias) pairs through the Requantizer, one per cycle; return its outputs.
    ``activation``: ``(low, high, leak)`` with ``config.layer_activation``."""
    dut = Requantizer(config)
    outputs = []

    async def testbench(ctx):
        ctx.set(dut.shift, shift)
        ctx.set(dut.relu, relu)
        if activation is not None:
            low, high, leak = activation
            ctx.set(dut.low, low)
            ctx.set(dut.high, high)
            ctx.set(dut.negative_shift, shift + leak)
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


def rtl_requantize_rows(config, acc, bias, slots, words, low, high):
    """Push (acc, bias, slot) through a ChannelRequantizer whose scale memory holds
    ``words``, one per cycle; return its outputs."""
    dut = ChannelRequantizer(config, scales=words)
    outputs = []

    async def testbench(ctx):
        ctx.set(dut.low, low)
        ctx.set(dut.high, high)
        await ctx.tick()
        for cycle in range(len(acc) + latency(config)):
            if cycle < len(acc):
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"acc": int(acc[cycle]), "bias": int(bias[cycle])})
                ctx.set(dut.slot, int(slots[cycle]))
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


@pytest.mark.parametrize("act_bits,acc_bits,bias_bits,multiplier_bits,rounding_bits",
                         [(8, 24, 16, 17, 16), (5, 16, 12, 2, 1), (9, 20, 20, 25, 24)])
@pytest.mark.parametrize("readout_register,link_registers",
                         [(False, False), (True, False), (True, True)])
def test_channel_requantizer_matches_numerics(act_bits, acc_bits, bias_bits, multiplier_bits,
                                              rounding_bits, readout_register, link_registers):
    """Every row its own multiplier, rounding term, shift and tie rule, ties and extremes
    included: the gates equal numerics.requantize_rows."""
    config = EngineConfig(pes=1, act_bits=act_bits, acc_bits=acc_bits, bias_bits=bias_bits,
                          bias_depth=16, multiplier_bits=multiplier_bits,
                          rounding_bits=rounding_bits, readout_register=readout_register,
                          link_registers=link_registers)
    rng = np.random.default_rng(acc_bits + multiplier_bits + 7 * link_registers)
    rows = config.scale_depth
    multiplier = rng.integers(-(1 << (multiplier_bits - 1)), 1 << (multiplier_bits - 1), rows)
    multiplier[:3] = [1, -1, (1 << (multiplier_bits - 1)) - 1]
    shift = rng.integers(0, 40, rows)
    shift[:4] = [0, 1, 3, 63]
    rounding = rng.integers(0, 1 << rounding_bits, rows)
    rounding[2:4] = [(1 << min(rounding_bits, int(s) - 1)) - 1 if s else 0 for s in shift[2:4]]
    half_even = rng.random(rows) < 0.5
    words = isa.pack(isa.scale_layout(config), multiplier=multiplier, rounding=rounding,
                     shift=shift, half_even=half_even)
    count = 300
    slots = rng.integers(0, rows, count)
    half = 1 << (acc_bits - 2)
    acc = rng.integers(-half, half, count)
    bias = rng.integers(-(1 << (bias_bits - 2)), 1 << (bias_bits - 2), count)
    # Ties: the product lands exactly halfway for these rows.
    for index in range(0, count, 7):
        slots[index] = 2                    # shift 3, multiplier at its widest
        bias[index] = 0
        acc[index] = 4 * int(rng.integers(-100, 100)) + int(rng.integers(0, 4))
    low, high = -(1 << (act_bits - 1)) + 1, (1 << (act_bits - 1)) - 3
    expected = requantize_rows(acc, bias, multiplier[slots], shift[slots], low, high,
                               rounding=rounding[slots], half_even=half_even[slots])
    np.testing.assert_array_equal(
        rtl_requantize_rows(config, acc, bias, slots, words, low, high), expected)


@pytest.mark.parametrize("a_bits,b_bits", [(9, 4), (8, 8), (5, 2), (17, 17)])
def test_multiplier_in_logic_matches_the_product(a_bits, b_bits):
    """Partial products in logic (``lut_products``) give ``a * b`` at the same latency."""
    from sparseforge.hw.multiply import LATENCY, RegisteredMultiplier

    dut = RegisteredMultiplier(a_bits, b_bits, in_logic=True)
    rng = np.random.default_rng(a_bits * b_bits)
    a = rng.integers(-(1 << (a_bits - 1)), 1 << (a_bits - 1), 200)
    b = rng.integers(-(1 << (b_bits - 1)), 1 << (b_bits - 1), 200)
    a[:4], b[:4] = [-(1 << (a_bits - 1))] * 2 + [(1 << (a_bits - 1)) - 1] * 2, \
        [-(1 << (b_bits - 1)), (1 << (b_bits - 1)) - 1] * 2
    products = []

    async def testbench(ctx):
        for cycle in range(len(a) + LATENCY):
            if cycle < len(a):
                ctx.set(dut.a, int(a[cycle]))
                ctx.set(dut.b, int(b[cycle]))
            await ctx.tick()
            if cycle >= LATENCY - 1 and len(products) < len(a):
                products.append(ctx.get(dut.product))

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    np.testing.assert_array_equal(products, a * b)


@pytest.mark.parametrize("link_registers", [False, True])
@pytest.mark.parametrize("shift, low, high, leak", [
    (4, 0, 96, 0),          # ReLU6 at frac 4
    (3, -64, 64, 0),        # Hardtanh(-1, 1) at frac 6
    (5, -128, 127, 3),      # LeakyReLU(0.125)
    (0, -128, 127, 7),      # no shift, a leak of 7
    (6, -20, 50, 2),        # a range and a leak
])
def test_a_layers_range_and_leak_match_numerics(link_registers, shift, low, high, leak):
    config = EngineConfig(pes=1, act_bits=8, acc_bits=20, bias_bits=12,
                          readout_register=link_registers, link_registers=link_registers,
                          layer_activation=True)
    rng = np.random.default_rng(shift + leak)
    acc = rng.integers(-(1 << 19), 1 << 19, 300) >> rng.integers(0, 12, 300)
    acc[:6] = [0, -1, -(1 << (shift + leak)), (1 << 19) - 1, -(1 << 19), 1]
    bias = rng.integers(-(1 << 11), 1 << 11, 300)
    bias[:6] = 0
    expected = requantize_rows(acc, bias, 1, shift, low, high, leak=leak)
    assert len(np.unique(expected)) > 20            # the cases reach both bounds and between
    np.testing.assert_array_equal(
        rtl_requantize(config, acc, bias, shift, low == 0, (low, high, leak)), expected)
