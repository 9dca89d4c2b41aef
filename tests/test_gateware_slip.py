"""The link's SLIP encoder in Amaranth's simulator: END and ESC inside a frame are escaped, the
raw delimiters are not, and nothing is lost or repeated under random back-pressure; the wire
bytes decode with the host's ``protocol.SlipDecoder``."""

import random

import pytest
from amaranth.sim import Simulator

from sparseforge.boards import protocol
from sparseforge.boards.gateware.slip import SlipEncoder


def encode(items, *, ready=1.0, valid=1.0, seed=0):
    """The wire bytes for ``items``, each ``(byte, raw)``, offered with probability ``valid``
    and taken with probability ``ready`` per cycle."""
    dut = SlipEncoder()
    rng = random.Random(seed)
    wire = []
    done = []

    async def producer(ctx):
        for byte, raw in items:
            while rng.random() >= valid:
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
            ctx.set(dut.i.payload, {"byte": byte, "raw": raw})
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)
        done.append(True)

    async def consumer(ctx):
        idle = 0
        while idle < 8:
            taken = rng.random() < ready
            ctx.set(dut.o.ready, taken)
            _, _, o_valid, o_payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if o_valid and taken:
                wire.append(o_payload)
                idle = 0
            elif done:
                idle += 1

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(producer)
    simulator.add_testbench(consumer, background=True)
    simulator.run()
    return bytes(wire)


def framed(body: bytes):
    return ([(protocol.END, 1)] + [(byte, 0) for byte in body] + [(protocol.END, 1)])


def test_escapes_end_and_esc_only_inside_a_frame():
    body = bytes([0x01, protocol.END, 0x02, protocol.ESC, protocol.ESC_END, protocol.ESC_ESC])
    assert encode(framed(body)) == protocol.slip_encode(body) == bytes([
        protocol.END, 0x01, protocol.ESC, protocol.ESC_END, 0x02, protocol.ESC,
        protocol.ESC_ESC, protocol.ESC_END, protocol.ESC_ESC, protocol.END])


@pytest.mark.parametrize("length", [1, 5, 40])
def test_random_frames_under_back_pressure(length):
    rng = random.Random(length)
    bodies = [bytes(rng.choice([protocol.END, protocol.ESC, rng.randrange(256)])
                    for _ in range(length)) for _ in range(3)]
    items = [item for body in bodies for item in framed(body)]
    wire = encode(items, ready=0.5, valid=0.7, seed=length)
    assert wire == b"".join(protocol.slip_encode(body) for body in bodies)
    assert protocol.SlipDecoder().feed(wire) == bodies
