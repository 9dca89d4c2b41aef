"""The link's frame receiver in Amaranth's simulator, with the CRC unit and a testbench in the
command executor's place: good frames land in the buffer with their sequence number, opcode
flag and payload length; a bad CRC, a bad escape, an over-long frame, short noise and a byte
lost while busy are flagged; the payload-length check follows docs/protocol.md; ``discard`` and
``restart`` start afresh."""

import random
import struct
from dataclasses import dataclass

import pytest
from amaranth import Module, Signal
from amaranth.sim import Simulator

from sparseforge.boards import protocol
from sparseforge.boards.gateware.crc import CRC16
from sparseforge.boards.gateware.frame_receiver import FrameReceiver
from sparseforge.compiler.config import EngineConfig

Op = protocol.Opcode
MAX_FEATURES = 6
SESSION = 0xDBC0            # escaped on the wire, both bytes


@dataclass
class End:
    """What the receiver says at a frame's END."""
    good: bool
    overflow: bool
    length: int


def config():
    return EngineConfig(pes=2, max_features=MAX_FEATURES, max_layers=2)


def simulate(max_payload, testbench):
    """Runs ``testbench(ctx, link)``; ``link`` has the receiver and the executor's controls."""
    m = Module()
    m.submodules.receiver = receiver = FrameReceiver(config(), max_payload)
    m.submodules.crc = crc = CRC16()
    crc_clear = Signal()
    m.d.comb += [crc.byte.eq(receiver.crc_byte), crc.step.eq(receiver.crc_step),
                 crc.clear.eq(crc_clear), receiver.crc.eq(crc.value)]
    link = Link(receiver, crc_clear)

    async def bench(ctx):
        ctx.set(receiver.frame.receiving, 1)
        ctx.set(receiver.frame.session, SESSION)
        await testbench(ctx, link)

    simulator = Simulator(m)
    simulator.add_clock(1e-8)
    simulator.add_testbench(bench)
    simulator.run()


class Link:
    """The receiver driven as the command executor drives it."""

    def __init__(self, receiver, crc_clear):
        self.receiver = receiver
        self.frame = receiver.frame
        self.crc_clear = crc_clear

    async def send(self, ctx, wire: bytes, *, stop_at_good=True) -> list[End]:
        """Offers ``wire`` a byte a cycle; returns what the receiver said at the END of each
        frame that is not empty.  A bad frame is discarded at its END, as the executor does,
        and a good one stops the sending (the executor goes on to check it)."""
        ends = []
        for byte in wire:
            ctx.set(self.receiver.rx.payload, byte)
            ctx.set(self.receiver.rx.valid, 1)
            good = False
            if ctx.get(self.frame.end):
                good = bool(ctx.get(self.frame.good))
                if ctx.get(self.frame.length):
                    ends.append(End(good, bool(ctx.get(self.frame.overflow)),
                                    ctx.get(self.frame.length)))
                if not good:
                    ctx.set(self.frame.discard, 1)
                    ctx.set(self.crc_clear, 1)
            await ctx.tick()
            ctx.set(self.frame.discard, 0)
            ctx.set(self.crc_clear, 0)
            if good and stop_at_good:
                ctx.set(self.frame.receiving, 0)
                break
        ctx.set(self.receiver.rx.valid, 0)
        await ctx.tick()                      # payload_length follows length a cycle later
        return ends

    async def buffer(self, ctx, length: int) -> bytes:
        data = []
        for address in range(length):
            ctx.set(self.frame.read_addr, address)
            await ctx.tick()
            data.append(ctx.get(self.frame.read_data))
        return bytes(data)

    async def restart(self, ctx):
        """The reply's closing END: forget the frame and take the next one."""
        ctx.set(self.frame.receiving, 0)
        ctx.set(self.frame.restart, 1)
        ctx.set(self.crc_clear, 1)
        await ctx.tick()
        ctx.set(self.frame.restart, 0)
        ctx.set(self.crc_clear, 0)
        ctx.set(self.frame.receiving, 1)


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
            ends = await link.send(ctx, protocol.encode_frame(seq, code, payload))
            body = bytes([seq, code]) + payload
            assert ends == [End(True, False, len(body) + 2)]
            assert ctx.get(link.frame.seq) == seq
            assert opcode_flags(ctx, link.frame) == ({Op(code)} if code in set(Op) else set())
            assert ctx.get(link.frame.payload_length) == len(payload)
            assert ctx.get(link.frame.crc_field) == protocol.crc16(body)
            session = ctx.get(link.frame.session)
            assert ctx.get(link.frame.session_ok) == (
                len(payload) >= 2 and payload[:2] == struct.pack("<H", session))
            assert (await link.buffer(ctx, len(body) + 2))[:len(body)] == body
            await link.restart(ctx)

    simulate(max_payload, testbench)


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
        ends = await link.send(ctx, bytes(flipped))
        assert ends == [End(False, False, len(good) - 2)]              # bad CRC
        ends = await link.send(ctx, bad_escape)
        assert ends == [End(False, False, len(run) - 1)]                # bad escape
        ends = await link.send(ctx, too_long)
        assert ends == [End(False, True, max_payload + 4)]              # overflow
        ends = await link.send(ctx, bytes([0x11, 0x22, protocol.END]))
        assert ends == [End(False, False, 2)]                           # short noise
        # Each damaged frame was discarded: a good one right after is received whole.
        ends = await link.send(ctx, good)
        assert ends == [End(True, False, len(good) - 2)]

    simulate(max_payload, testbench)


def test_a_byte_dropped_while_busy_poisons_the_frame():
    wire = protocol.encode_frame(3, Op.RUN)

    async def testbench(ctx, link):
        await link.send(ctx, wire[:3])
        ctx.set(link.frame.receiving, 0)                 # busy: this byte is dropped
        await link.send(ctx, b"\x55")
        ctx.set(link.frame.receiving, 1)
        ends = await link.send(ctx, wire[3:])            # the CRC is right, the frame is not
        assert ends == [End(False, False, len(wire) - 2)]
        ends = await link.send(ctx, wire)
        assert ends == [End(True, False, len(wire) - 2)]

    simulate(8, testbench)


def test_restart_leaves_an_escape():
    wire = protocol.encode_frame(0x33, Op.INFO)

    async def testbench(ctx, link):
        await link.send(ctx, bytes([protocol.END, 0x01, protocol.ESC]))
        await link.restart(ctx)
        # Without the restart the 0x33 would end the escape (and poison the frame).
        ends = await link.send(ctx, wire[1:])
        assert ends == [End(True, False, 4)]
        assert ctx.get(link.frame.seq) == 0x33

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
    return False                                         # unknown: answered as such


def test_payload_length_check():
    max_payload = 16
    cases = [(code, length) for code in list(Op) + [0x7F] for length in range(max_payload + 1)]

    async def testbench(ctx, link):
        for code, length in cases:
            await link.send(ctx, protocol.encode_frame(1, code, bytes(length)))
            assert ctx.get(link.frame.bad_length) == bad_length(code, length), (code, length)
            await link.restart(ctx)

    simulate(max_payload, testbench)
