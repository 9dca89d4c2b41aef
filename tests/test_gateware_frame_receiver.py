"""The link's frame receiver in Amaranth's simulator, with a testbench in the command
executor's place: good frames land in the buffer with their sequence number, opcode flag,
payload length, CRC field and session check; a bad CRC, a bad escape, an over-long frame and
a byte dropped while a complete frame waits are flagged, short noise is forgotten; a frame
that ends while the executor holds one waits in the other half of the buffer; the
payload-length check follows docs/protocol.md."""

import random
import struct
from dataclasses import dataclass

import pytest
from amaranth.sim import Simulator

from sparseforge.boards import protocol
from sparseforge.boards.gateware.frame_receiver import FrameReceiver
from sparseforge.compiler.config import EngineConfig

Op = protocol.Opcode
MAX_FEATURES = 6
SESSION = 0xDBC0            # escaped on the wire, both bytes


@dataclass
class Held:
    """What the receiver hands the executor."""
    good: bool
    overflow: bool
    payload_length: int


def config():
    return EngineConfig(pes=2, max_features=MAX_FEATURES, max_layers=2)


def simulate(max_payload, testbench):
    """Runs ``testbench(ctx, link)``; ``link`` drives the receiver as the executor does."""
    receiver = FrameReceiver(config(), max_payload)

    async def bench(ctx):
        ctx.set(receiver.frame.session, SESSION)
        await testbench(ctx, Link(receiver))

    simulator = Simulator(receiver)
    simulator.add_clock(1e-8)
    simulator.add_testbench(bench)
    simulator.run()


class Link:
    """The receiver driven as the command executor drives it."""

    def __init__(self, receiver):
        self.receiver = receiver
        self.frame = receiver.frame

    async def send(self, ctx, wire: bytes):
        """Offers ``wire`` a byte a cycle (the receiver is never back-pressured)."""
        for byte in wire:
            ctx.set(self.receiver.rx.payload, byte)
            ctx.set(self.receiver.rx.valid, 1)
            await ctx.tick()
        ctx.set(self.receiver.rx.valid, 0)
        await ctx.tick()                      # the frame is handed over the cycle after its END

    async def receive(self, ctx, wire: bytes) -> Held | None:
        """Sends ``wire`` with no frame held; returns the frame it handed over (still held)."""
        assert not ctx.get(self.frame.valid)
        await self.send(ctx, wire)
        return self.held(ctx)

    def held(self, ctx):
        if not ctx.get(self.frame.valid):
            return None
        return Held(bool(ctx.get(self.frame.good)), bool(ctx.get(self.frame.overflow)),
                    ctx.get(self.frame.payload_length))

    async def buffer(self, ctx, length: int) -> bytes:
        """The held frame's payload and CRC field, from the buffer's read port."""
        data = []
        for address in range(length):
            ctx.set(self.frame.read_addr, address)
            await ctx.tick()
            data.append(ctx.get(self.frame.read_data))
        return bytes(data)

    async def release(self, ctx):
        """The reply's closing END: the executor is done with the frame."""
        assert ctx.get(self.frame.valid)
        ctx.set(self.frame.release, 1)
        await ctx.tick()
        ctx.set(self.frame.release, 0)


def opcode_flags(ctx, frame):
    return {op for op in Op if ctx.get(getattr(frame.opcode, op.name.lower()))}


def random_payload(rng, length):
    # END and ESC often, so that escapes are exercised.
    return bytes(rng.choice([protocol.END, protocol.ESC, rng.randrange(256)])
                 for _ in range(length))


@pytest.mark.parametrize("max_payload", [8, 20])
def test_good_frames_land_in_the_buffer(max_payload):
    rng = random.Random(max_payload)
    requests = [(rng.randrange(256), rng.choice(list(Op) + [0x00, 0xC0]),
                 random_payload(rng, rng.randint(0, max_payload))) for _ in range(12)]
    # Some start with the session, some with one byte of it.
    requests += [(1, Op.RUN, struct.pack("<H", SESSION)), (2, Op.RUN, bytes([0xC0, 0xC0])),
                 (3, Op.WRITE, struct.pack("<H", SESSION) + bytes(4)), (4, Op.RUN, b"\xc0")]

    async def testbench(ctx, link):
        for seq, code, payload in requests:
            held = await link.receive(ctx, protocol.encode_frame(seq, code, payload))
            body = bytes([seq, code]) + payload
            crc = protocol.crc16(body)
            assert held == Held(True, False, len(payload))
            assert ctx.get(link.frame.seq) == seq
            assert opcode_flags(ctx, link.frame) == ({Op(code)} if code in set(Op) else set())
            assert ctx.get(link.frame.crc_field) == crc
            assert ctx.get(link.frame.session_ok) == (
                len(payload) >= 2 and payload[:2] == struct.pack("<H", SESSION))
            assert await link.buffer(ctx, len(payload) + 2) == payload + struct.pack(">H", crc)
            await link.release(ctx)
            assert not ctx.get(link.frame.valid)

    simulate(max_payload, testbench)


def test_a_new_session_voids_the_arriving_frames_check():
    wire = protocol.encode_frame(5, Op.RUN, struct.pack("<H", SESSION))

    async def testbench(ctx, link):
        await link.send(ctx, wire[:-1])                  # all but its END
        ctx.set(link.frame.new_session, 1)               # a CONNECT made another session
        await ctx.tick()
        ctx.set(link.frame.new_session, 0)
        await link.send(ctx, wire[-1:])
        assert link.held(ctx) == Held(True, False, 2)
        assert not ctx.get(link.frame.session_ok)
        await link.release(ctx)
        assert await link.receive(ctx, wire) == Held(True, False, 2)
        assert ctx.get(link.frame.session_ok)

    simulate(8, testbench)


@pytest.mark.parametrize("max_payload", [8, 20])
def test_damaged_frames_are_flagged(max_payload):
    rng = random.Random(max_payload)
    good = protocol.encode_frame(7, Op.WRITE, bytes(range(8)))
    flipped = bytearray(good)
    flipped[4] ^= 0x20
    run = protocol.encode_frame(8, Op.RUN)
    bad_escape = run[:3] + bytes([protocol.ESC, 0x41]) + run[3:]
    too_long = bytes([protocol.END]) + bytes(rng.randrange(0xC0) for _ in range(
        max_payload + 5)) + bytes([protocol.END])

    async def testbench(ctx, link):
        assert await link.receive(ctx, bytes(flipped)) == Held(False, False, 8)   # bad CRC
        await link.release(ctx)
        assert await link.receive(ctx, bad_escape) == Held(False, False, 1)       # bad escape
        await link.release(ctx)
        assert await link.receive(ctx, too_long) == Held(False, True, max_payload)  # overflow
        await link.release(ctx)
        # Short noise is forgotten, not handed over.
        assert await link.receive(ctx, bytes([0x11, 0x22, 0x33, protocol.END])) is None
        # Each damaged frame was dropped: a good one right after is received whole.
        assert await link.receive(ctx, good) == Held(True, False, 8)
        assert ctx.get(link.frame.seq) == 7

    simulate(max_payload, testbench)


def test_a_byte_dropped_while_busy_poisons_the_frame():
    first = protocol.encode_frame(1, Op.RUN, struct.pack("<H", SESSION))
    second = protocol.encode_frame(2, Op.INFO)
    third = protocol.encode_frame(3, Op.RUN, struct.pack("<H", SESSION))

    async def testbench(ctx, link):
        assert await link.receive(ctx, first) == Held(True, False, 2)
        # The next frame ends while the executor holds the first: it waits, complete.
        await link.send(ctx, second)
        assert ctx.get(link.frame.seq) == 1              # the held frame is undisturbed
        body = bytes([1, Op.RUN]) + struct.pack("<H", SESSION)
        assert await link.buffer(ctx, 4) == body[2:] + struct.pack(">H", protocol.crc16(body))
        # Bytes arriving while it waits are dropped: the frame they belong to is lost.
        await link.send(ctx, third[:1] + b"\x55")
        await link.release(ctx)
        assert link.held(ctx) == Held(True, False, 0)    # the waiting frame, handed over
        assert ctx.get(link.frame.seq) == 2
        assert opcode_flags(ctx, link.frame) == {Op.INFO}
        await link.release(ctx)
        # The CRC of the rest is right, the frame is not.
        assert await link.receive(ctx, third[1:]) == Held(False, False, 2)
        await link.release(ctx)
        assert await link.receive(ctx, third) == Held(True, False, 2)
        assert ctx.get(link.frame.seq) == 3

    simulate(8, testbench)


def test_release_leaves_an_escape():
    first = protocol.encode_frame(0x11, Op.INFO)
    payload = bytes([protocol.END, 0x42])
    wire = protocol.encode_frame(0x33, Op.LOAD_INPUT, payload)
    escape = wire.index(protocol.ESC)

    async def testbench(ctx, link):
        assert await link.receive(ctx, first) == Held(True, False, 0)
        # The executor's frame is released in the middle of the next frame's escape.
        await link.send(ctx, wire[:escape + 1])
        await link.release(ctx)
        await link.send(ctx, wire[escape + 1:])
        assert link.held(ctx) == Held(True, False, 2)
        assert ctx.get(link.frame.seq) == 0x33
        assert (await link.buffer(ctx, 2)) == payload

    simulate(8, testbench)


def bad_length(code, length):
    """docs/protocol.md, "Commands": the payload lengths each opcode accepts (a side-effecting
    request's two session bytes included)."""
    if code == Op.INFO:
        return length != 0
    if code in (Op.RUN, Op.RESET, Op.CONNECT, Op.READ_OUTPUT, Op.READ_CYCLES):
        return length != 2
    if code == Op.WRITE:
        return length < 10 or length % 4 != 2
    if code in (Op.READ, Op.SEAL):
        return length != 6
    if code == Op.LOAD_INPUT:
        return length < 4 or length % 2 != 0 or length > 2 + 2 * MAX_FEATURES
    if code == Op.INFER:
        return length < 6 or length % 2 != 0 or length > 4 + 2 * MAX_FEATURES
    return False                                         # unknown: answered as such


def test_payload_length_check():
    max_payload = 18
    cases = [(code, length) for code in list(Op) + [0x7F] for length in range(max_payload + 1)]

    async def testbench(ctx, link):
        for code, length in cases:
            assert await link.receive(ctx, protocol.encode_frame(1, code, bytes(length))) \
                == Held(True, False, length)
            assert ctx.get(link.frame.bad_length) == bad_length(code, length), (code, length)
            await link.release(ctx)

    simulate(max_payload, testbench)
