"""The link bridge and the engine, byte streams in Amaranth's simulator, checked with the host's
protocol module: every command, error replies, and exactly-once execution of retried commands."""

import struct

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from sparseforge.boards import protocol
from sparseforge.boards.gateware.bridge import LinkBridge
from sparseforge.compiler import bus, isa
from sparseforge.hw.engine import Engine
from tests.oracle import build_image, config_for, random_layers
from tests.test_hw_engine import golden

Op, Status = protocol.Opcode, protocol.Status


def run_link(config, image, requests, *, timeout=30000):
    """Send each request's wire bytes and collect the reply frames that come back before the
    next request is sent (none, when the bridge stays silent).  Also returns, per request,
    whether the engine was busy at any time while it was handled (did it run?)."""
    m = Module()
    m.submodules.engine = engine = Engine(config, image, streams=False)
    identity = protocol.image_identity(isa.image_bus_writes(config, image))
    m.submodules.bridge = bridge = LinkBridge(config, image_identity=identity)
    wiring.connect(m, bridge.bus, engine.bus)
    m.d.comb += bridge.engine_busy.eq(engine.busy)
    replies, ran = [], []

    async def testbench(ctx):
        decoder = protocol.SlipDecoder()
        ctx.set(bridge.tx.ready, 1)
        for wire in requests:
            got, busy = [], False
            for byte in wire:
                ctx.set(bridge.rx.payload, byte)
                ctx.set(bridge.rx.valid, 1)
                await ctx.tick()
            ctx.set(bridge.rx.valid, 0)
            for _ in range(timeout):
                busy |= bool(ctx.get(engine.busy))
                if ctx.get(bridge.tx.valid):
                    got += decoder.feed(bytes([ctx.get(bridge.tx.payload)]))
                await ctx.tick()
                if got and not ctx.get(bridge.activity):
                    break
            replies.append([protocol.decode_frame(frame) for frame in got])
            ran.append(busy)

    simulator = Simulator(m)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    return replies, ran


SESSION = 0x1234
# The board mixes a stamp into the host's nonce at each CONNECT: 0 the first time after reset
# (so CONNECT's nonce SESSION gives session SESSION), then the LFSR's next state.
SECOND_STAMP = 0x4E91


def request(seq, opcode, payload=b""):
    """A request of session SESSION (side-effecting ones carry it)."""
    if opcode in protocol.SESSIONED:
        payload = struct.pack("<H", SESSION) + payload
    return protocol.encode_frame(seq, opcode, payload)


CONNECT = request(0, Op.CONNECT, struct.pack("<H", SESSION))


def make_model(pes, scan_lanes):
    rng = np.random.default_rng(8)
    layers = random_layers(rng, [(12, 10), (6, 12)], density=0.5)
    config = config_for(layers, pes, scan_lanes)
    return config, layers, build_image(config, layers), rng.integers(-128, 128, 10)


@pytest.fixture(scope="module")
def model():
    return make_model(4, 2)


@pytest.mark.parametrize("pes,scan_lanes", [(4, 2), (6, 1)])
def test_inference_over_the_link(pes, scan_lanes):
    # With 6 PEs activation indices skip (word << 3 | lane): the bridge must wrap the lane.
    config, layers, image, x = make_model(pes, scan_lanes)
    expected = golden(layers, x[None])[-1][0]
    replies, _ = run_link(config, image, [
        CONNECT,
        request(1, Op.INFO),
        request(2, Op.LOAD_INPUT, struct.pack(f"<{len(x)}h", *x)),
        request(3, Op.RUN),
        request(4, Op.READ_OUTPUT, struct.pack("<H", len(expected))),
        request(5, Op.READ_CYCLES, struct.pack("<H", 2)),
    ])
    replies = replies[1:]                                      # after CONNECT's
    assert [r[0].code for r in replies] == [Status.OK] * 5
    engine_id, config_word, status, layer_count, capacity, session, image_id = struct.unpack(
        protocol.INFO_LAYOUT, replies[0][0].payload)
    assert engine_id == bus.ENGINE_ID and layer_count == 2 and capacity == protocol.MAX_PAYLOAD
    assert session == SESSION
    assert image_id == protocol.image_identity(isa.image_bus_writes(config, image))
    assert config_word & 0xFF == config.pes
    (total,) = struct.unpack("<I", replies[2][0].payload)
    outputs = struct.unpack(f"<{len(expected)}h", replies[3][0].payload)
    assert list(outputs) == list(expected)
    cycles = isa.layer_cycles(struct.unpack("<II", replies[4][0].payload))
    assert sum(cycles) == total and all(c > 0 for c in cycles)


def test_write_and_read_back_through_registers(model):
    config, _, image, _ = model
    layer_count = bus.bus_address(bus.Region.REGISTERS, bus.Register.LAYER_COUNT)
    replies, _ = run_link(config, image, [
        CONNECT,
        request(1, Op.WRITE, struct.pack("<II", layer_count, 1)),
        request(2, Op.READ, struct.pack("<IH", layer_count, 1)),
        request(3, Op.WRITE, struct.pack("<II", layer_count, 2)),
        request(4, Op.READ, struct.pack("<IH", layer_count, 1)),
    ])
    assert [r[0].code for r in replies] == [Status.OK] * 5
    assert struct.unpack("<I", replies[2][0].payload) == (1,)
    assert struct.unpack("<I", replies[4][0].payload) == (2,)


def test_errors_and_retries(model):
    config, _, image, x = model
    layer_count = bus.bus_address(bus.Region.REGISTERS, bus.Register.LAYER_COUNT)
    good = request(7, Op.WRITE, struct.pack("<II", layer_count, 1))
    damaged = bytearray(good)
    damaged[5] ^= 0x10
    replies, ran = run_link(config, image, [
        CONNECT,
        bytes(damaged),                                        # bad CRC: nothing executed
        request(8, 0x7F),                                      # unknown opcode
        request(9, Op.RUN, b"\x00"),                           # wrong length
        request(10, Op.READ, struct.pack("<IH", layer_count, 0)),
        bytes([0x11, 0x22, protocol.END]),                     # short noise: no reply
        request(11, Op.RUN),
        request(11, Op.RUN),                                   # a retry: replayed, not re-run
        request(12, Op.READ_CYCLES, struct.pack("<H", 1)),
        request(13, Op.READ, struct.pack("<IH", layer_count, 1)),
    ])
    replies, ran = replies[1:], ran[1:]
    codes = [[r.code for r in reply] for reply in replies]
    assert codes == [[Status.BAD_CRC], [Status.UNKNOWN], [Status.BAD_LENGTH],
                     [Status.BAD_LENGTH], [], [Status.OK], [Status.OK], [Status.OK], [Status.OK]]
    assert replies[0][0].seq == 7
    assert struct.unpack("<I", replies[8][0].payload) == (2,)  # the damaged write did nothing
    assert ran[5] and not ran[6]                               # the retry did not run again
    assert replies[5][0].payload == replies[6][0].payload      # it got the cached reply


def test_a_replayed_connect_does_not_revive_its_session(model):
    """A restarted host's old frames played again, CONNECT first: the CONNECT makes a new
    session (the board's stamp has moved), so the old session's LOAD_INPUT and RUN stay
    refused and nothing runs."""
    config, _, image, x = model
    load = request(1, Op.LOAD_INPUT, struct.pack(f"<{len(x)}h", *x))
    replies, ran = run_link(config, image, [
        CONNECT,                                                # session SESSION
        CONNECT,                                # its retry (the answer lost): the same session
        protocol.encode_frame(0, Op.CONNECT, struct.pack("<H", 0x7777)),   # another host
        CONNECT, load, request(2, Op.RUN),                      # the first host's, again
    ])
    assert [r[0].code for r in replies] == [Status.OK] * 4 + [Status.STALE] * 2
    sessions = [struct.unpack("<H", r[0].payload)[0] for r in replies[:4]]
    assert sessions[:3] == [SESSION, SESSION, 0x7777 ^ SECOND_STAMP]
    assert sessions[3] not in sessions[:3]
    assert not any(ran[1:])                     # (the engine clears itself after reset)


def test_infer_and_frames_sent_while_the_bridge_executes(model):
    """INFER (input, run, outputs in one frame), frames sent back to back without waiting for
    answers (the receiver takes the next frame while the executor works on one; one that
    ends meanwhile waits), a retried INFER answered from the engine, not run again, and
    INFER's refusals."""
    config, layers, image, x = model
    x1 = (x * 5 + 1) % 200 - 100
    expected = golden(layers, np.stack([x, x1]))[-1]

    def infer(seq, values, count=6):
        return request(seq, Op.INFER, struct.pack(f"<H{len(values)}h", count, *values))

    first, second = infer(1, x), infer(2, x1)
    replies, ran = run_link(config, image, [
        CONNECT,
        first + second,                 # back to back: the second waits, complete
        request(3, Op.READ_CYCLES, struct.pack("<H", 2)),
        second,                                                  # a retry of the last one
        infer(4, x, count=0),                                    # refused: no outputs asked
        infer(5, x, count=200),                                  # refused: over the limit
        request(6, Op.INFER, struct.pack("<H", 6)),              # refused: no input
    ])
    streamed = replies[1]
    assert [r.code for r in streamed] == [Status.OK] * 2 and [r.seq for r in streamed] == [1, 2]
    for reply, want in zip(streamed, expected):
        total, *outputs = struct.unpack("<I6h", reply.payload)
        assert outputs == list(want) and total > 0
    assert struct.unpack("<II", replies[2][0].payload)[-1] == total     # cumulative
    assert replies[3][0].code == Status.OK and replies[3][0].payload == streamed[1].payload
    assert ran[1] and not ran[3]                                 # the retry did not run
    assert [r[0].code for r in replies[4:]] == [Status.BAD_LENGTH] * 3
    assert not any(ran[4:])
