"""UART transmitter and receiver in Amaranth's simulator: bytes survive the round trip."""

import pytest
from amaranth import Module
from amaranth.sim import Simulator

from sparseforge.boards.gateware.uart import UARTReceiver, UARTTransmitter


def test_uart_round_trip():
    m = Module()
    m.submodules.tx = tx = UARTTransmitter(6)
    m.submodules.rx = rx = UARTReceiver(6)
    m.d.comb += rx.rx.eq(tx.tx)
    sent = [0x00, 0xFF, 0x55, 0xC0, 0xDB, 0x01, 0x80]
    received = []

    async def sender(ctx):
        for byte in sent:
            ctx.set(tx.data.payload, byte)
            ctx.set(tx.data.valid, 1)
            await ctx.tick().until(tx.data.ready)
            ctx.set(tx.data.valid, 0)

    async def receiver(ctx):
        for _ in range(len(sent) * 6 * 11 + 50):
            await ctx.tick()
            if ctx.get(rx.data.valid):
                received.append(ctx.get(rx.data.payload))

    simulator = Simulator(m)
    simulator.add_clock(1e-8)
    simulator.add_testbench(sender)
    simulator.add_testbench(receiver)
    simulator.run()
    assert received == sent


def test_transmitter_holds_each_bit_for_a_bit_time():
    dut = UARTTransmitter(5)
    line = []

    async def testbench(ctx):
        ctx.set(dut.data.payload, 0b10110010)
        ctx.set(dut.data.valid, 1)
        await ctx.tick().until(dut.data.ready)
        ctx.set(dut.data.valid, 0)
        for _ in range(5 * 10 + 5):
            await ctx.tick()
            line.append(ctx.get(dut.tx))

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    bits = [line[i * 5 + 2] for i in range(10)]          # middle of each bit
    assert bits == [0, 0, 1, 0, 0, 1, 1, 0, 1, 1]        # start, LSB first, stop


@pytest.mark.parametrize("clocks_per_bit", [4, 8, 25])
@pytest.mark.parametrize("rate_error", [-0.02, 0.0, 0.02])
def test_receiver_samples_near_the_middle_at_few_cycles_per_bit(clocks_per_bit, rate_error):
    """4 cycles per bit is the iCEBreaker's 12 MHz at 3 Mbaud: the receiver allows for its
    synchroniser's delay, so a line 2% fast or slow, starting at any phase, still decodes."""
    sent = [0x55, 0xA3, 0x00, 0xFF, 0xC0]
    bit = clocks_per_bit * (1 + rate_error)
    line = []                               # the line's level at each cycle
    for index, byte in enumerate(sent):
        start = len(line) + (index % clocks_per_bit) / clocks_per_bit + 3
        bits = [0] + [(byte >> i) & 1 for i in range(8)] + [1]
        end = start + 10 * bit
        while len(line) < end + 2:
            t = len(line)
            line.append(1 if t < start else bits[min(9, int((t - start) / bit))])
    dut = UARTReceiver(clocks_per_bit)
    received = []

    async def testbench(ctx):
        for level in line + [1] * (2 * clocks_per_bit):
            ctx.set(dut.rx, level)
            await ctx.tick()
            if ctx.get(dut.data.valid):
                received.append(ctx.get(dut.data.payload))

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    assert received == sent
