"""The link's command executor in Amaranth's simulator, with testbenches in place of the frame
receiver (a checked frame held in its half of the buffer until released), the CRC unit (the host's ``protocol.crc16`` over the
reply bytes) and the engine (a host-bus memory that answers reads after ``READ_LATENCY`` cycles,
or through a crossing's idle gaps).  Every command's bus operations and reply, the reply cache
for retried side-effecting commands, sessions stamped by the board at each CONNECT, the image's
seal, refusals, and replies to damaged frames (noise too short to be a frame is forgotten by
the frame receiver, tested there, and never reaches the executor)."""

import random
import struct

import pytest
from amaranth.sim import Simulator

from sparseforge.boards import protocol
from sparseforge.boards.gateware.command_executor import CommandExecutor
from sparseforge.compiler import bus, isa
from sparseforge.compiler.config import EngineConfig

Op, Status = protocol.Opcode, protocol.Status
MAX_PAYLOAD = 32
CONTROL = bus.bus_address(bus.Region.REGISTERS, bus.Register.CONTROL)
TOTAL_CYCLES = bus.bus_address(bus.Region.REGISTERS, bus.Register.TOTAL_CYCLES)
RUN_CYCLES = 17                     # how long the engine model stays busy after a start
SESSION = 0x5A17


def bad_length(code, length, config):
    """docs/protocol.md, "Commands" (the frame receiver's check, tested on its own)."""
    return {Op.INFO: length != 0, Op.RUN: length != 2, Op.RESET: length != 2,
            Op.CONNECT: length != 2, Op.SEAL: length != 6,
            Op.WRITE: length < 10 or length % 4 != 2, Op.READ: length != 6,
            Op.LOAD_INPUT: length < 4 or length % 2 or length > 2 + 2 * config.max_features,
            Op.READ_OUTPUT: length != 2, Op.READ_CYCLES: length != 2,
            Op.INFER: length < 6 or length % 2 or length > 4 + 2 * config.max_features,
            }.get(code, False)


def sessioned(payload=b"", session=SESSION):
    """A side-effecting request's payload: its session first."""
    return struct.pack("<H", session) + payload


def stamps():
    """The board's stamps, one per CONNECT from power-up (docs/protocol.md, "CONNECT"): 0, then
    the states of a Galois LFSR (x^16 + x^14 + x^13 + x^11 + 1) on ``stamp ^ 0xACE1``."""
    stamp = 0
    while True:
        yield stamp
        state = stamp ^ 0xACE1
        stamp = ((state >> 1) ^ (0xB400 if state & 1 else 0)) ^ 0xACE1


class Engine:
    """The host bus's far side: a memory (a read of an unwritten address returns a pattern of
    the address), a run that keeps ``engine_busy`` up for ``RUN_CYCLES`` cycles, and, behind a
    crossing, ``bus_idle`` low for a few cycles after each operation."""

    def __init__(self, dut, crossing, rng):
        self.dut, self.crossing, self.rng = dut, crossing, rng
        self.memory = {TOTAL_CYCLES: RUN_CYCLES}
        self.writes, self.reads, self.runs, self.resets = [], [], 0, 0
        self.busy = 0

    def read(self, address):
        return self.memory.get(address, (address * 0x9E3779B1) & 0xFFFFFFFF)

    async def process(self, ctx):
        dut = self.dut
        answer, gap = None, 0
        async for _, _, addr, w_en, w_data, r_en, reset, idle in ctx.tick().sample(
                dut.bus.addr, dut.bus.w_en, dut.bus.w_data, dut.bus.r_en, dut.engine_reset,
                dut.bus_idle):
            assert idle or not (w_en or r_en), "an operation while the bus is not idle"
            ctx.set(dut.bus.r_valid, 0)
            self.resets += reset
            self.busy = max(0, self.busy - 1)
            if w_en:
                self.writes.append((addr, w_data))
                self.memory[addr] = w_data
                if addr == CONTROL and w_data == 1:
                    self.runs += 1
                    self.busy = RUN_CYCLES
            if r_en:
                self.reads.append(addr)
                answer = [bus.READ_LATENCY - 1, self.read(addr)]
            if w_en or r_en:
                gap = self.rng.randint(1, 4) if self.crossing else 0
            if answer is not None:
                answer[0] -= 1
                if answer[0] <= 0 and gap <= 1:
                    ctx.set(dut.bus.r_data, answer[1])
                    ctx.set(dut.bus.r_valid, 1)
                    answer = None
            gap = max(0, gap - 1)
            ctx.set(dut.bus_idle, gap == 0 and answer is None)
            ctx.set(dut.engine_busy, self.busy > 0)


class Host:
    """The frame receiver's and the CRC unit's side: holds checked frames until the executor
    releases them, keeps the CRC of the reply as the CRC unit would, and collects the reply
    bytes."""

    def __init__(self, dut, config, rng):
        self.dut, self.config, self.rng = dut, config, rng
        self.buffer = b""
        self.wire = []                                  # (byte, raw) taken from the reply
        self.crc = 0xFFFF
        self.new_sessions = 0                           # new_session pulses seen

    async def reply_side(self, ctx):
        dut = self.dut
        async for _, _, valid, payload, address, clear, new_session in ctx.tick().sample(
                dut.reply.valid, dut.reply.payload, dut.frame.read_addr, dut.crc_clear,
                dut.frame.new_session):
            self.new_sessions += new_session
            ready = ctx.get(dut.reply.ready)            # set by us before this edge
            if valid and ready:
                self.wire.append((payload.byte, payload.raw))
            if clear:
                self.crc = 0xFFFF
            elif valid and ready and not payload.raw:
                self.crc = protocol.crc16(bytes([payload.byte]), self.crc)
            ctx.set(dut.crc, self.crc)
            ctx.set(dut.frame.read_data, self.buffer[address] if address < len(self.buffer)
                    else 0)
            ctx.set(dut.reply.ready, self.rng.random() < 0.6)

    async def request(self, ctx, seq, code, payload=b"", *, good=True, overflow=False):
        """One frame held for the executor, then the reply frames until it releases it."""
        frame = self.dut.frame
        body = bytes([seq, code]) + payload
        # The half of the buffer the frame is in: its payload, then its CRC field.
        self.buffer = payload + struct.pack(">H", protocol.crc16(body))
        ctx.set(frame.seq, seq)
        for op in Op:
            ctx.set(getattr(frame.opcode, op.name.lower()), code == op)
        ctx.set(frame.payload_length, len(payload))
        ctx.set(frame.bad_length, bad_length(code, len(payload), self.config))
        ctx.set(frame.crc_field, protocol.crc16(body))
        ctx.set(frame.session_ok, len(payload) >= 2
                and struct.unpack("<H", payload[:2])[0] == ctx.get(frame.session))
        ctx.set(frame.overflow, overflow)
        ctx.set(frame.good, good)
        ctx.set(frame.valid, 1)
        start = len(self.wire)
        async for _, _, release in ctx.tick().sample(frame.release):
            if release:
                break
        ctx.set(frame.valid, 0)
        return replies(self.wire[start:])


def replies(wire):
    """The reply frames in ``(byte, raw)`` items, each between two raw ENDs, CRC checked."""
    frames, current = [], None
    for byte, raw in wire:
        if raw:
            assert byte == protocol.END
            if current is not None:
                frames.append(protocol.decode_frame(bytes(current)))
                current = None
            else:
                current = []
        else:
            current.append(byte)
    assert current is None
    return frames


def simulate(config, testbench, *, crossing=False, seed=0, image_identity=0):
    dut = CommandExecutor(config, MAX_PAYLOAD, image_identity)
    rng = random.Random(seed)
    engine, host = Engine(dut, crossing, rng), Host(dut, config, rng)

    async def bench(ctx):
        await testbench(ctx, host, engine)

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(engine.process, background=True)
    simulator.add_testbench(host.reply_side, background=True)
    simulator.add_testbench(bench)
    simulator.run()


def one(frames, seq, status=Status.OK):
    (frame,) = frames
    assert (frame.seq, frame.code) == (seq, status)
    return frame.payload


@pytest.mark.parametrize("pes", [4, 3])
@pytest.mark.parametrize("crossing", [False, True])
def test_commands_on_the_bus(pes, crossing):
    config = EngineConfig(pes=pes, max_features=12, max_layers=3)
    rng = random.Random(pes)
    base = bus.bus_address(bus.Region.CODEBOOK, 0x1FFFFE)    # the index wraps, the region stays
    words = [rng.randrange(1 << 32) for _ in range(5)]
    inputs = [rng.randrange(-32768, 32768) for _ in range(7)]
    activations = [bus.bus_address(bus.Region.ACTIVATIONS, isa.activation_index(i, config))
                   for i in range(7)]

    async def testbench(ctx, host, engine):
        payload = one(await host.request(ctx, 0, Op.CONNECT, struct.pack("<H", SESSION)), 0)
        assert payload == struct.pack("<H", SESSION)
        payload = one(await host.request(ctx, 1, Op.WRITE, sessioned(
            struct.pack(f"<I{len(words)}I", base, *words))), 1)
        expected = [(base & ~0x1FFFFF) | ((base + i) & 0x1FFFFF) for i in range(len(words))]
        assert payload == b"" and engine.writes == list(zip(expected, words))

        payload = one(await host.request(ctx, 2, Op.READ, struct.pack("<IH", base, 3)), 2)
        assert struct.unpack("<3I", payload) == tuple(words[:3])

        engine.writes.clear()
        one(await host.request(ctx, 3, Op.LOAD_INPUT, sessioned(struct.pack("<7h", *inputs))), 3)
        assert engine.writes == [(a, v & 0xFFFF) for a, v in zip(activations, inputs)]

        engine.reads.clear()
        payload = one(await host.request(ctx, 4, Op.READ_OUTPUT, struct.pack("<H", 7)), 4)
        assert engine.reads == activations
        assert struct.unpack("<7H", payload) == tuple(v & 0xFFFF for v in inputs)

        engine.reads.clear()
        payload = one(await host.request(ctx, 5, Op.READ_CYCLES, struct.pack("<H", 2)), 5)
        cycles = [bus.bus_address(bus.Region.CYCLES, i) for i in range(2)]
        assert engine.reads == cycles
        assert struct.unpack("<2I", payload) == tuple(engine.read(a) for a in cycles)

        one(await host.request(ctx, 6, Op.SEAL, sessioned(struct.pack("<I", 0xC0FFEE))), 6)
        engine.reads.clear()
        payload = one(await host.request(ctx, 7, Op.INFO), 7)
        registers = [bus.bus_address(bus.Region.REGISTERS, i) for i in range(4)]
        assert engine.reads == registers
        assert struct.unpack(protocol.INFO_LAYOUT, payload) == (
            *(engine.read(a) for a in registers), MAX_PAYLOAD, SESSION, 0xC0FFEE)

        payload = one(await host.request(ctx, 8, Op.RUN, sessioned()), 8)
        assert engine.runs == 1 and engine.busy == 0
        assert struct.unpack("<I", payload) == (RUN_CYCLES,)

        # INFER: the input (as LOAD_INPUT's), a run, the cycles and the first outputs.
        engine.writes.clear()
        engine.reads.clear()
        x = inputs[::-1]
        payload = one(await host.request(ctx, 9, Op.INFER, sessioned(
            struct.pack("<H7h", 5, *x))), 9)
        assert engine.writes == [(a, v & 0xFFFF) for a, v in zip(activations, x)] + [(CONTROL, 1)]
        assert engine.runs == 2 and engine.reads == [TOTAL_CYCLES] + activations[:5]
        assert struct.unpack("<I5h", payload) == (RUN_CYCLES, *x[:5])

        one(await host.request(ctx, 10, Op.RESET, sessioned()), 10)
        assert engine.resets == 1

    simulate(config, testbench, crossing=crossing, seed=pes)


def test_retries_are_answered_from_the_cache():
    config = EngineConfig(pes=4, max_features=12, max_layers=3)
    layer_count = bus.bus_address(bus.Region.REGISTERS, bus.Register.LAYER_COUNT)
    write = sessioned(struct.pack("<II", layer_count, 2))
    run = sessioned()

    async def testbench(ctx, host, engine):
        one(await host.request(ctx, 1, Op.CONNECT, struct.pack("<H", SESSION)), 1)
        # A retried CONNECT (its answer lost) keeps the session it made.
        assert one(await host.request(ctx, 1, Op.CONNECT, struct.pack("<H", SESSION)), 1) \
            == struct.pack("<H", SESSION)
        assert host.new_sessions == 1
        one(await host.request(ctx, 10, Op.WRITE, write), 10)
        one(await host.request(ctx, 10, Op.WRITE, write), 10)      # a retry: not written again
        assert len(engine.writes) == 1
        one(await host.request(ctx, 11, Op.SEAL, sessioned(struct.pack("<I", 7))), 11)
        first = one(await host.request(ctx, 12, Op.RUN, run), 12)
        again = one(await host.request(ctx, 12, Op.RUN, run), 12)  # not run again, same cycles
        assert engine.runs == 1 and first == again
        # The last sequence number with another opcode, or an older number: a replayed frame,
        # refused unexecuted (item 1: a LOAD_INPUT was answered from a RUN's cached reply).
        engine.writes.clear()
        one(await host.request(ctx, 12, Op.LOAD_INPUT, sessioned(struct.pack("<h", 5))), 12,
            Status.STALE)
        one(await host.request(ctx, 10, Op.WRITE, write), 10, Status.STALE)
        one(await host.request(ctx, 140, Op.RUN, run), 140, Status.STALE)   # half a ring on
        assert engine.writes == [] and engine.runs == 1
        engine.reads.clear()
        one(await host.request(ctx, 13, Op.READ, struct.pack("<IH", layer_count, 1)), 13)
        one(await host.request(ctx, 13, Op.READ, struct.pack("<IH", layer_count, 1)), 13)
        assert engine.reads == [layer_count] * 2                    # reads run every time
        # A refusal is cached too: the retry of a refused RUN is refused, even when idle.
        engine.busy = 1000
        one(await host.request(ctx, 14, Op.RUN, run), 14, Status.BUSY)
        engine.busy = 0
        one(await host.request(ctx, 14, Op.RUN, run), 14, Status.BUSY)
        assert engine.runs == 1
        one(await host.request(ctx, 15, Op.RUN, run), 15)
        assert engine.runs == 2
        one(await host.request(ctx, 16, Op.RESET, run), 16)
        one(await host.request(ctx, 16, Op.RESET, run), 16)
        assert engine.resets == 1
        # Newer numbers run, across the ring's wrap.
        for seq in (130, 250, 3):
            one(await host.request(ctx, seq, Op.RUN, run), seq)
        assert engine.runs == 5
        # INFER: the input written, a run, its cycle count and outputs in one reply; its retry
        # is answered from the engine (cycles and outputs read again), not run again.
        inputs = struct.pack("<3h", 4, -5, 6)
        infer = sessioned(struct.pack("<H", 2) + inputs)
        engine.writes.clear()
        first = one(await host.request(ctx, 4, Op.INFER, infer), 4)
        assert engine.runs == 6 and len(engine.writes) == 4       # three values and the start
        assert struct.unpack("<I2h", first) == (RUN_CYCLES, 4, -5)
        again = one(await host.request(ctx, 4, Op.INFER, infer), 4)
        assert engine.runs == 6 and len(engine.writes) == 4 and again == first
        # A replayed CONNECT is not the last one: it makes another session (the board's stamp
        # has moved), and the old session's frames stay refused.
        session = struct.unpack("<H", one(await host.request(
            ctx, 1, Op.CONNECT, struct.pack("<H", SESSION)), 1))[0]
        assert session != SESSION and host.new_sessions == 2
        one(await host.request(ctx, 5, Op.RUN, run), 5, Status.STALE)
        one(await host.request(ctx, 6, Op.RUN, sessioned(session=session)), 6)
        assert engine.runs == 7

    simulate(config, testbench)


def test_sessions_and_the_image_seal():
    config = EngineConfig(pes=4, max_features=12, max_layers=3)
    layer_count = bus.bus_address(bus.Region.REGISTERS, bus.Register.LAYER_COUNT)
    nonce = SESSION ^ 0x0101                # session B's

    async def testbench(ctx, host, engine):
        # A board built with an image runs it from the start; a session is needed all the same.
        info = one(await host.request(ctx, 1, Op.INFO), 1)
        assert struct.unpack(protocol.INFO_LAYOUT, info)[-2:] == (0, 0xABCD1234)
        one(await host.request(ctx, 2, Op.RUN, sessioned()), 2, Status.STALE)
        one(await host.request(ctx, 3, Op.CONNECT, struct.pack("<H", SESSION)), 3)
        one(await host.request(ctx, 4, Op.RUN, sessioned()), 4)
        assert engine.runs == 1
        # Session A loads an input and stops before its RUN (item 1).
        x0 = struct.pack("<2h", 11, -3)
        one(await host.request(ctx, 5, Op.LOAD_INPUT, sessioned(x0)), 5)
        # Session B connects (a host that restarted its numbering): the session is its nonce
        # mixed with the board's stamp, which moved at the first CONNECT.  A's requests, a
        # retry of its last too, are refused unexecuted.
        stamp = stamps()
        next(stamp)
        other = struct.unpack("<H", one(await host.request(
            ctx, 4, Op.CONNECT, struct.pack("<H", nonce)), 4))[0]
        assert other == nonce ^ next(stamp) != nonce
        writes = len(engine.writes)
        one(await host.request(ctx, 5, Op.LOAD_INPUT, sessioned(x0)), 5, Status.STALE)
        one(await host.request(ctx, 6, Op.RUN, sessioned()), 6, Status.STALE)
        assert len(engine.writes) == writes and engine.runs == 1
        # B's command with A's last sequence number is executed, not answered from A's cache.
        x1 = struct.pack("<2h", 7, 9)
        one(await host.request(ctx, 5, Op.LOAD_INPUT, sessioned(x1, session=other)), 5)
        assert [v for _, v in engine.writes[writes:]] == [7, 9]
        # Half an image: the identity is gone and RUN is refused (item 2).
        one(await host.request(ctx, 6, Op.WRITE, sessioned(
            struct.pack("<II", layer_count, 2), session=other)), 6)
        info = one(await host.request(ctx, 7, Op.INFO), 7)
        assert struct.unpack(protocol.INFO_LAYOUT, info)[-2:] == (other, 0)
        one(await host.request(ctx, 8, Op.RUN, sessioned(session=other)), 8, Status.NO_IMAGE)
        assert engine.runs == 1
        one(await host.request(ctx, 9, Op.SEAL,
                               sessioned(struct.pack("<I", 0x5EA1), session=other)), 9)
        info = one(await host.request(ctx, 10, Op.INFO), 10)
        assert struct.unpack(protocol.INFO_LAYOUT, info)[-2:] == (other, 0x5EA1)
        one(await host.request(ctx, 11, Op.RUN, sessioned(session=other)), 11)
        assert engine.runs == 2
        # A's CONNECT replayed makes neither A's session nor B's: A's frames stay refused.
        replayed = struct.unpack("<H", one(await host.request(
            ctx, 3, Op.CONNECT, struct.pack("<H", SESSION)), 3))[0]
        assert replayed == SESSION ^ next(stamp) and replayed not in (SESSION, other)
        one(await host.request(ctx, 12, Op.RUN, sessioned()), 12, Status.STALE)
        one(await host.request(ctx, 13, Op.RUN, sessioned(session=other)), 13, Status.STALE)
        assert engine.runs == 2

    simulate(config, testbench, image_identity=0xABCD1234)


def test_refusals_and_damaged_frames():
    config = EngineConfig(pes=4, max_features=12, max_layers=3)

    async def testbench(ctx, host, engine):
        one(await host.request(ctx, 0, Op.CONNECT, struct.pack("<H", SESSION)), 0)
        one(await host.request(ctx, 1, Op.RUN, b"\x00"), 1, Status.BAD_LENGTH)
        one(await host.request(ctx, 2, Op.RUN, sessioned()), 2, Status.NO_IMAGE)
        one(await host.request(ctx, 3, Op.WRITE, sessioned(bytes(6))), 3, Status.BAD_LENGTH)
        one(await host.request(ctx, 4, 0x7F), 4, Status.UNKNOWN)
        for count in (0, MAX_PAYLOAD // 4 + 1):
            one(await host.request(ctx, 5, Op.READ, struct.pack("<IH", 0, count)), 5,
                Status.BAD_LENGTH)
        for count in (0, config.max_layers + 1):
            one(await host.request(ctx, 6, Op.READ_CYCLES, struct.pack("<H", count)), 6,
                Status.BAD_LENGTH)
        for count in (0, min(config.max_features, MAX_PAYLOAD // 2) + 1):
            one(await host.request(ctx, 6, Op.READ_OUTPUT, struct.pack("<H", count)), 6,
                Status.BAD_LENGTH)
        engine.busy = 1000
        one(await host.request(ctx, 7, Op.LOAD_INPUT, sessioned(bytes(4))), 7, Status.BUSY)
        engine.busy = 0
        one(await host.request(ctx, 8, Op.INFER, sessioned(struct.pack("<Hh", 1, 3))), 8,
            Status.NO_IMAGE)
        # Damaged frames (4 bytes or more; shorter noise never reaches the executor): an
        # overflow, a bad CRC; neither executed, even with a good-looking payload.
        one(await host.request(ctx, 9, Op.INFO, good=False, overflow=True), 9,
            Status.BAD_LENGTH)
        one(await host.request(ctx, 10, Op.INFO, good=False), 10, Status.BAD_CRC)
        one(await host.request(ctx, 11, Op.RUN, sessioned(), good=False), 11, Status.BAD_CRC)
        assert engine.writes == [] and engine.runs == 0

    simulate(config, testbench)
