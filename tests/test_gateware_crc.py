"""The link's CRC unit in Amaranth's simulator, against the host's ``protocol.crc16``: the check
value, random byte strings with idle cycles between bytes, a whole frame that checks to 0, and
``clear`` taking precedence over ``step``."""

import random

import pytest
from amaranth.sim import Simulator

from sparseforge.boards import protocol
from sparseforge.boards.gateware.crc import CRC16


def crc_of(chunks, *, idle=0.0, seed=0):
    """The unit's value after each chunk of bytes, with ``clear`` between chunks."""
    dut = CRC16()
    rng = random.Random(seed)
    values = []

    async def testbench(ctx):
        for chunk in chunks:
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            assert ctx.get(dut.value) == 0xFFFF
            for byte in chunk:
                while rng.random() < idle:
                    ctx.set(dut.step, 0)
                    ctx.set(dut.byte, rng.randrange(256))        # ignored without step
                    await ctx.tick()
                ctx.set(dut.byte, byte)
                ctx.set(dut.step, 1)
                await ctx.tick()
            ctx.set(dut.step, 0)
            values.append(ctx.get(dut.value))

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    return values


def test_check_value():
    assert crc_of([b"123456789"]) == [0x29B1] == [protocol.crc16(b"123456789")]


@pytest.mark.parametrize("length", [1, 2, 7, 64])
def test_random_bytes_match_the_host(length):
    rng = random.Random(length)
    chunks = [bytes(rng.randrange(256) for _ in range(length)) for _ in range(4)]
    assert crc_of(chunks, idle=0.3, seed=length) == [protocol.crc16(c) for c in chunks]


def test_a_whole_frame_checks_to_zero():
    body = protocol.encode_frame(0x42, protocol.Opcode.READ, b"\x03\x00\x00\x00\x01\x00")
    # Unescaped content between the END delimiters: seq, code, payload, CRC high, CRC low.
    (frame,) = protocol.SlipDecoder().feed(body)
    assert crc_of([frame]) == [0]


def test_clear_wins_over_step():
    dut = CRC16()

    async def testbench(ctx):
        ctx.set(dut.byte, 0x5A)
        ctx.set(dut.step, 1)
        await ctx.tick()
        assert ctx.get(dut.value) == protocol.crc16(b"\x5a")
        ctx.set(dut.clear, 1)
        await ctx.tick()
        assert ctx.get(dut.value) == 0xFFFF

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
