"""The link's command executor: a received frame's command on the engine's host bus, and the
reply (docs/protocol.md, "Commands" and "Execution"; the bus is ``compiler/bus.py``).

One state machine waits for the frame receiver's good frame, checks the request, executes it
and streams the reply out as it is produced (bus reads go straight to the SLIP encoder):

* A side-effecting command (WRITE, LOAD_INPUT, RUN, RESET, SEAL, INFER) carries the session that the
  last CONNECT made current; one of another session is refused (STALE), unexecuted.  One whose
  sequence number, opcode and CRC field (so its payload) equal the last one's is not executed
  again: its cached reply is sent, so a retry after a lost reply never runs a command twice.
  One with an older sequence number, or the last one's with other contents, is a replayed
  frame and refused (STALE).  A CONNECT to a new session empties the cache, so a new host
  session is never answered from an old one's.  Reads are simply executed again.
* The loaded image's identity: the host writes it last (SEAL), after every word of the image;
  any WRITE clears it, and RUN is refused (NO_IMAGE) until the next SEAL, so a half-loaded
  image never runs.  The gateware stores and reports it (INFO), the host computes it.
* INFER is LOAD_INPUT, RUN and READ_OUTPUT in one frame, so that a host streaming inferences
  sends one frame per input while the last one runs (the frame receiver takes it meanwhile).
  Its retry, like RUN's, is answered from the engine: the cycle count and the outputs, which
  the engine holds until the next input.
* The machine uses a continuation register for its two subroutines, "collect N payload bytes
  into a little-endian word" and "emit N bytes of a word", so each command reads as a short
  sequence.  The steps several states share (collect, emit, reply, the CRC trailer, remember
  and refuse) are :class:`_Registers`' methods; the states are written in groups, one method
  each.
"""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.compiler import bus, isa
from sparseforge.compiler.config import EngineConfig

from .. import protocol
from .frame_receiver import FrameSignature

__all__ = ["CommandExecutor"]

Op, Status = protocol.Opcode, protocol.Status


class After(enum.Enum, shape=4):
    """Where the FSM goes when a collect or emit subroutine finishes."""
    WRITE_ADDRESS = 0
    WRITE_DATA = 1
    READ_ADDRESS = 2
    READ_COUNT = 3
    COUNT = 4
    READ_WORD = 5
    RUN_WORD = 6
    CRC = 7
    END = 8
    CONNECT = 9
    SEAL = 10
    ECHO = 11
    IDENTITY = 12
    OUTPUTS = 13


class CommandExecutor(wiring.Component):
    """Parameters
    ----------
    config : the engine's configuration (for activation addressing and the count limits).
    max_payload : the frame buffer's payload capacity in bytes.
    image_identity : the identity of the image the engine's memories start with (0: none),
        what INFO reports until the first WRITE.

    Members
    -------
    frame : In(:class:`FrameSignature`) from the frame receiver.
    reply : Out(stream of ``byte`` and ``raw``) to the SLIP encoder; the frame delimiters are
        ``raw``.
    crc : In(16); the CRC unit's value: over the reply so far, for its trailer.
    crc_clear : Out; restart the CRC unit (a frame dropped, a reply begun or sent).
    bus : Out(host bus) to the engine.
    engine_busy : In; the engine is running.
    bus_idle : In; the bus can take an operation and the last one is complete.
    engine_reset : Out; one-cycle pulse (the RESET command).
    """

    def __init__(self, config: EngineConfig, max_payload: int = protocol.MAX_PAYLOAD,
                 image_identity: int = 0):
        if not 0 <= image_identity < 1 << 32:
            raise ValueError(f"image_identity must be a u32, not {image_identity}")
        self._config = config
        self._max_payload = max_payload
        self._image_identity = image_identity
        super().__init__({
            "frame": In(FrameSignature(max_payload)),
            "reply": Out(stream.Signature(data.StructLayout({"byte": 8, "raw": 1}))),
            "crc": In(16),
            "crc_clear": Out(1),
            "bus": Out(bus.host_bus_signature()),
            "engine_busy": In(1),
            "bus_idle": In(1, init=1),
            "engine_reset": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        r = _Registers(m, self, self._max_payload, self._image_identity)
        m.d.comb += self.frame.session.eq(r.session)

        # The next bus index: +1, except that activation index i is (word << lane_bits | lane)
        # and, when pes is not a power of two, the lane wraps before the field does.
        config = self._config
        lane_bits = isa.lane_bits(config)
        next_address = Signal(32)
        index_bits = bus.INDEX_BITS
        m.d.comb += next_address.eq(Cat((r.address[:index_bits] + 1)[:index_bits],
                                        r.address[index_bits:]))
        if config.pes & (config.pes - 1):
            with m.If(r.activations & (r.address[:lane_bits] == config.pes - 1)):
                m.d.comb += next_address.eq(r.address + (1 << lane_bits) - (config.pes - 1))

        # A LOAD_INPUT value is 16 bits on the wire, written as is: the engine takes the low
        # act_bits of an activation write.
        m.d.comb += [self.bus.addr.eq(r.address), self.bus.w_data.eq(r.word)]

        # Amaranth numbers the states in the order they are first named: the groups keep this
        # order, and so the state encoding.
        with m.FSM():
            self._receive_and_check(m, r)
            self._dispatch(m, r)
            self._subroutines(m, r)
            self._bus_work(m, r, next_address)
            self._continuations(m, r)
        return m

    def _receive_and_check(self, m, r):
        """RECEIVE until the frame receiver holds a frame; CHECK the request."""
        frame = self.frame
        with m.State("RECEIVE"):
            with m.If(frame.valid):
                # A side-effecting request's payload begins with its session: skip it.
                m.d.sync += [r.position.eq(Mux(r.sessioned, 2, 0)), r.activations.eq(0)]
                with m.If(frame.good):
                    m.next = "CHECK"                # the frame stays in the buffer
                with m.Else():
                    # A damaged request (noise too short to be one never comes this far).
                    with m.If(frame.overflow):
                        r.reply(Status.BAD_LENGTH, After.CRC)
                    with m.Else():
                        r.reply(Status.BAD_CRC, After.CRC)

        with m.State("CHECK"):
            # The request's checks, registered, so that DISPATCH decides on flags.
            # The host numbers a session's commands upwards and starts a new session before
            # 128 of them: an older number (half the ring behind), or the last number with
            # other contents, is a replayed frame, never executed.
            session_ok = frame.session_ok
            same_seq = frame.seq == r.last_seq
            same_key = same_seq & (frame.crc_field == r.last_crc) & (r.operation == r.last_op)
            older = (frame.seq - r.last_seq)[7]
            m.d.sync += [
                # A CONNECT is remembered too (no operation flag: no other command's key):
                # its retry keeps the session it made.
                r.retry.eq((r.sessioned | frame.opcode.connect) & r.last_valid & same_key),
                r.stale.eq(r.sessioned & ~frame.bad_length
                           & (~session_ok | r.last_valid & ~same_key
                              & (same_seq | older))),
                r.bad_length.eq(frame.bad_length),
            ]
            # Every command starts with the bus idle: a RESET is then taken at once.
            with m.If(self.bus_idle):
                m.next = "DISPATCH"

    def _dispatch(self, m, r):
        """DISPATCH: a cached reply, an error reply, or the command's first step."""
        opcode = self.frame.opcode
        payload_length = self.frame.payload_length
        with m.State("DISPATCH"):
            # An INFER that ran is answered from the engine (below); any other cached reply,
            # and an INFER's cached refusal, here.
            with m.If(r.retry & ~opcode.connect & ~(opcode.infer & r.last_has_word)):
                with m.If(r.last_has_word):
                    # A RUN's reply carries its cycle count: read it again (the engine holds
                    # it until the next run, and only this retry could start one).
                    m.d.sync += r.address.eq(bus.bus_address(bus.Region.REGISTERS,
                                                             bus.Register.TOTAL_CYCLES))
                    m.next = "RUN_WAIT"
                with m.Else():
                    r.reply(r.last_status, After.CRC)
            with m.Elif(r.stale):
                r.reply(Status.STALE, After.CRC)
            with m.Elif(opcode.info):
                with m.If(r.bad_length):
                    r.reply(Status.BAD_LENGTH, After.CRC)
                with m.Else():
                    # Registers id, config, control, layer_count: indices 0 to 3.
                    m.d.sync += [r.address.eq(bus.bus_address(bus.Region.REGISTERS, 0)),
                                 r.items.eq(4)]
                    r.reply(Status.OK, After.READ_WORD)
            with m.Elif(opcode.write):
                with m.If(r.bad_length):
                    r.refuse(Status.BAD_LENGTH)
                with m.Elif(self.engine_busy):
                    r.refuse(Status.BUSY)
                with m.Else():
                    # session (2), address (4), n words: (6 + 4n) >> 2 == n + 1.
                    m.d.sync += [r.items.eq((payload_length >> 2) - 1),
                                 r.identity.eq(0), r.sealed.eq(0)]
                    r.collect(4, After.WRITE_ADDRESS)
            with m.Elif(opcode.read):
                with m.If(r.bad_length):
                    r.reply(Status.BAD_LENGTH, After.CRC)
                with m.Else():
                    r.collect(4, After.READ_ADDRESS)
            with m.Elif(opcode.load_input | opcode.infer):
                # INFER: its output count first (checked as READ_OUTPUT's), then as LOAD_INPUT.
                with m.If(r.retry):
                    r.collect(2, After.COUNT)               # an INFER that ran
                with m.Elif(r.bad_length):
                    r.refuse(Status.BAD_LENGTH)
                with m.Elif(self.engine_busy):
                    r.refuse(Status.BUSY)
                with m.Elif(opcode.infer & ~r.sealed):
                    r.refuse(Status.NO_IMAGE)
                with m.Else():
                    m.d.sync += [r.items.eq((payload_length >> 1) - 1), r.activations.eq(1),
                                 r.address.eq(bus.bus_address(bus.Region.ACTIVATIONS, 0))]
                    with m.If(opcode.infer):
                        r.collect(2, After.COUNT)
                    with m.Else():
                        r.collect(2, After.WRITE_DATA)
            with m.Elif(opcode.run):
                with m.If(r.bad_length):
                    r.refuse(Status.BAD_LENGTH)
                with m.Elif(self.engine_busy):
                    r.refuse(Status.BUSY)
                with m.Elif(~r.sealed):
                    r.refuse(Status.NO_IMAGE)
                with m.Else():
                    m.d.sync += [r.address.eq(bus.bus_address(bus.Region.REGISTERS,
                                                              bus.Register.CONTROL)),
                                 r.word.eq(1)]
                    m.next = "RUN_START"
            with m.Elif(opcode.read_output | opcode.read_cycles):
                with m.If(r.bad_length):
                    r.reply(Status.BAD_LENGTH, After.CRC)
                with m.Else():
                    with m.If(opcode.read_output):
                        m.d.sync += [r.activations.eq(1), r.address.eq(
                            bus.bus_address(bus.Region.ACTIVATIONS, 0))]
                    with m.Else():
                        m.d.sync += r.address.eq(bus.bus_address(bus.Region.CYCLES, 0))
                    r.collect(2, After.COUNT)
            with m.Elif(opcode.reset):
                with m.If(r.bad_length):
                    r.refuse(Status.BAD_LENGTH)
                with m.Else():
                    m.d.comb += self.engine_reset.eq(1)
                    r.remember(Status.OK)
                    r.reply(Status.OK, After.CRC)
            with m.Elif(opcode.connect):
                with m.If(r.bad_length):
                    r.reply(Status.BAD_LENGTH, After.CRC)
                with m.Else():
                    r.collect(2, After.CONNECT)
            with m.Elif(opcode.seal):
                with m.If(r.bad_length):
                    r.refuse(Status.BAD_LENGTH)
                with m.Else():
                    r.collect(4, After.SEAL)
            with m.Else():
                r.reply(Status.UNKNOWN, After.CRC)

    def _subroutines(self, m, r):
        """The collect and emit subroutines, and the reply's framing around them."""
        reply = self.reply
        # ---- collect `count` payload bytes, little-endian, into `word` -------------------------
        with m.State("COLLECT_ADDR"):
            m.d.comb += self.frame.read_addr.eq(r.position)
            m.next = "COLLECT_DATA"
        with m.State("COLLECT_DATA"):
            byte = self.frame.read_data
            shifted = Mux(r.wide, Cat(r.word[8:32], byte), Cat(r.word[8:16], byte))
            m.d.sync += [r.word.eq(shifted), r.position.eq(r.position + 1),
                         r.count.eq(r.count - 1)]
            with m.If(r.count == 1):
                m.next = "CONTINUE"
            with m.Else():
                m.next = "COLLECT_ADDR"

        # ---- emit the low `count` bytes of `word`, little-endian -------------------------------
        with m.State("EMIT"):
            m.d.comb += [reply.payload.byte.eq(r.word[:8]), reply.valid.eq(1)]
            with m.If(reply.ready):
                m.d.sync += [r.word.eq(r.word >> 8), r.count.eq(r.count - 1)]
                with m.If(r.count == 1):
                    m.next = "CONTINUE"

        # ---- reply framing ---------------------------------------------------------------------
        with m.State("REPLY_START"):
            m.d.comb += [reply.payload.byte.eq(protocol.END), reply.payload.raw.eq(1),
                         reply.valid.eq(1)]
            with m.If(reply.ready):
                m.d.comb += self.crc_clear.eq(1)
                m.next = "REPLY_SEQ"
        with m.State("REPLY_SEQ"):
            m.d.comb += [reply.payload.byte.eq(self.frame.seq), reply.valid.eq(1)]
            with m.If(reply.ready):
                m.next = "REPLY_STATUS"
        with m.State("REPLY_STATUS"):
            m.d.comb += [reply.payload.byte.eq(r.status), reply.valid.eq(1)]
            with m.If(reply.ready):
                m.next = "CONTINUE"
        with m.State("REPLY_END"):
            m.d.comb += [reply.payload.byte.eq(protocol.END), reply.payload.raw.eq(1),
                         reply.valid.eq(1)]
            with m.If(reply.ready):
                m.d.comb += [self.crc_clear.eq(1), self.frame.release.eq(1)]
                m.next = "RECEIVE"

    def _bus_work(self, m, r, next_address):
        """Bus writes, bus reads and a run.  The address and the word hold until the bus is idle
        again: behind a clock-domain crossing the engine takes them some cycles after asking."""
        host_bus = self.bus
        opcode = self.frame.opcode
        with m.State("WRITE_BUS"):
            with m.If(self.bus_idle):
                m.d.comb += host_bus.w_en.eq(1)
                m.next = "WRITE_DONE"
        with m.State("WRITE_DONE"):
            with m.If(self.bus_idle):
                m.d.sync += [r.address.eq(next_address), r.items.eq(r.items - 1)]
                with m.If((r.items == 1) & opcode.infer):
                    # The input is in: run it.
                    m.d.sync += [r.address.eq(bus.bus_address(bus.Region.REGISTERS,
                                                              bus.Register.CONTROL)),
                                 r.word.eq(1)]
                    m.next = "RUN_START"
                with m.Elif(r.items == 1):
                    r.remember(Status.OK)
                    r.reply(Status.OK, After.CRC)
                with m.Else():
                    r.collect(Mux(opcode.load_input | opcode.infer, 2, 4), After.WRITE_DATA)
        with m.State("READ_BUS"):
            with m.If(self.bus_idle):
                m.d.comb += host_bus.r_en.eq(1)
                m.next = "READ_WAIT"
        with m.State("READ_WAIT"):
            with m.If(host_bus.r_valid):
                m.d.sync += [r.address.eq(next_address), r.items.eq(r.items - 1)]
                r.emit(host_bus.r_data, Mux(opcode.read_output | opcode.infer, 2, 4),
                       After.READ_WORD)
        with m.State("RUN_START"):
            with m.If(self.bus_idle):
                m.d.comb += host_bus.w_en.eq(1)
                m.next = "RUN_STARTED"
        with m.State("RUN_STARTED"):
            # The engine raises busy the cycle after the start write.  Behind a crossing, the
            # write's completion comes back after busy has risen and crossed; wired directly
            # or through register stages, RUN_SETTLE allows for the late busy.
            with m.If(self.bus_idle):
                m.d.sync += r.address.eq(bus.bus_address(bus.Region.REGISTERS,
                                                         bus.Register.TOTAL_CYCLES))
                m.next = "RUN_SETTLE"
        with m.State("RUN_SETTLE"):
            m.next = "RUN_WAIT"
        with m.State("RUN_WAIT"):
            with m.If(~self.engine_busy & self.bus_idle):
                m.d.comb += host_bus.r_en.eq(1)
                m.next = "RUN_CYCLES"
        with m.State("RUN_CYCLES"):
            with m.If(host_bus.r_valid):
                m.d.sync += r.word.eq(host_bus.r_data)
                r.remember(Status.OK, 1)
                r.reply(Status.OK, After.RUN_WORD)

    def _continuations(self, m, r):
        """CONTINUE: where each subroutine returns to."""
        config, max_payload = self._config, self._max_payload
        opcode = self.frame.opcode
        with m.State("CONTINUE"):
            with m.Switch(r.after):
                with m.Case(After.WRITE_ADDRESS):
                    m.d.sync += r.address.eq(r.word)
                    r.collect(4, After.WRITE_DATA)
                with m.Case(After.WRITE_DATA):
                    m.next = "WRITE_BUS"
                with m.Case(After.READ_ADDRESS):
                    m.d.sync += r.address.eq(r.word)
                    r.collect(2, After.READ_COUNT)
                with m.Case(After.READ_COUNT, After.COUNT):
                    count = r.word[:16]
                    limit = Mux(opcode.read, max_payload // 4,
                                Mux(opcode.read_cycles, config.max_layers,
                                    Mux(opcode.infer,
                                        min(config.max_features, (max_payload - 4) // 2),
                                        min(config.max_features, max_payload // 2))))
                    bad = (count == 0) | (count > limit)
                    with m.If(opcode.infer):
                        # The outputs to send back after the run; then the input's values (a
                        # retry: none, the engine's cycle count and outputs are read again).
                        m.d.sync += r.outputs.eq(count)
                        with m.If(r.retry):
                            m.d.sync += r.address.eq(bus.bus_address(
                                bus.Region.REGISTERS, bus.Register.TOTAL_CYCLES))
                            m.next = "RUN_WAIT"
                        with m.Elif(bad):
                            r.refuse(Status.BAD_LENGTH)
                        with m.Else():
                            m.d.sync += r.items.eq(r.items - 1)     # the count was one
                            r.collect(2, After.WRITE_DATA)
                    with m.Elif(bad):
                        r.reply(Status.BAD_LENGTH, After.CRC)
                    with m.Else():
                        m.d.sync += r.items.eq(count)
                        r.reply(Status.OK, After.READ_WORD)
                with m.Case(After.READ_WORD):
                    with m.If(r.items != 0):
                        m.next = "READ_BUS"
                    with m.Elif(opcode.info):
                        r.emit(Cat(Const(max_payload, 16), r.session), 4, After.IDENTITY)
                    with m.Else():
                        r.trailer()
                with m.Case(After.RUN_WORD):
                    with m.If(opcode.infer):
                        r.emit(r.word, 4, After.OUTPUTS)
                    with m.Else():
                        r.emit(r.word, 4, After.CRC)
                with m.Case(After.OUTPUTS):
                    m.d.sync += [r.items.eq(r.outputs), r.activations.eq(1),
                                 r.address.eq(bus.bus_address(bus.Region.ACTIVATIONS, 0))]
                    m.next = "READ_BUS"
                with m.Case(After.IDENTITY):
                    r.emit(r.identity, 4, After.CRC)
                with m.Case(After.CONNECT):
                    # The board's part of the session: the host's nonce mixed with a stamp
                    # that moves at every CONNECT, so a CONNECT played again (a replay, or a
                    # restarted host's old frame) makes a session no earlier frame carries,
                    # and that session's old frames stay refused.  The host's retry of the
                    # last CONNECT (its answer lost) keeps the session that one made.
                    with m.If(~r.retry):
                        m.d.sync += [r.session.eq(r.word[:16] ^ r.stamp),
                                     r.stamp.eq(_next_stamp(r.stamp))]
                        m.d.comb += self.frame.new_session.eq(1)
                        r.remember(Status.OK)           # the cache: this CONNECT only
                    r.reply(Status.OK, After.ECHO)
                with m.Case(After.ECHO):
                    r.emit(r.session, 2, After.CRC)
                with m.Case(After.SEAL):
                    m.d.sync += [r.identity.eq(r.word), r.sealed.eq(1)]
                    r.remember(Status.OK)
                    r.reply(Status.OK, After.CRC)
                with m.Case(After.CRC):
                    r.trailer()
                with m.Case(After.END):
                    m.next = "REPLY_END"


_STAMP_SEED = 0xACE1        # the LFSR's state when the stamp is 0 (an LFSR cannot hold 0)
_STAMP_TAPS = 0xB400        # x^16 + x^14 + x^13 + x^11 + 1: 65535 states


def _next_stamp(stamp):
    """The stamp after one more CONNECT: a Galois LFSR step on ``stamp ^ _STAMP_SEED`` (the
    constants fold into the logic: a few LUTs)."""
    state = stamp ^ _STAMP_SEED
    return Mux(state[0], (state >> 1) ^ _STAMP_TAPS, state >> 1) ^ _STAMP_SEED


class _Registers:
    """The state of the command being executed, and the steps that several states take: each
    sets some of these registers and the next state."""

    def __init__(self, m: Module, executor: CommandExecutor, max_payload: int,
                 image_identity: int):
        self._m = m
        self._executor = executor
        opcode = executor.frame.opcode
        self.position = Signal(range(max_payload + 1))   # next payload byte in the buffer
        self.word = Signal(32)                           # collected or to-be-emitted word
        self.count = Signal(3)                           # bytes left in the subroutine
        self.wide = Signal()                             # collecting 4 bytes (else 2)
        self.after = Signal(After)
        self.status = Signal(8)
        self.address = Signal(bus.ADDRESS_BITS)          # every bus access goes here
        self.items = Signal(range(max_payload // 2 + 1))
        self.outputs = Signal(range(max_payload // 2 + 1))   # an INFER's output count
        self.activations = Signal()                      # address walks activation indices
        # The side-effecting opcodes, one flag each: the cache compares them, and they are the
        # requests that carry a session.
        self.operation = Cat(opcode.write, opcode.load_input, opcode.run, opcode.reset,
                             opcode.seal, opcode.infer)
        self.sessioned = self.operation.any()
        self.session = Signal(16)                        # made current by CONNECT
        # Kept through resets, as the memories' contents are: set by the bitstream's image,
        # cleared by a WRITE, set by SEAL.
        self.identity = Signal(32, init=image_identity, reset_less=True)
        self.sealed = Signal(init=image_identity != 0, reset_less=True)
        # The last side-effecting command: its key (sequence number, opcode, CRC field) and
        # reply.
        self.last_valid = Signal()
        self.last_seq = Signal(8)
        self.last_op = Signal(len(self.operation))
        self.last_crc = Signal(16)
        self.last_status = Signal(8)
        self.last_has_word = Signal()
        self.retry = Signal()       # a side-effecting command repeated: answer from the cache
        self.stale = Signal()       # a side-effecting command of another session, or replayed
        # Mixed into each new session: 0 at power-up (the first CONNECT's session is the
        # host's nonce), then the states of a 16-bit LFSR, one per CONNECT.
        self.stamp = Signal(16)
        self.bad_length = Signal()  # the payload's length is wrong for the opcode

    def collect(self, bytes_, then):
        """Collect ``bytes_`` (2 or 4) payload bytes into ``word``; then continue at ``then``.
        ``word`` needs no clearing first: four bytes shifted in replace all of it, and two
        leave its high half zero (COLLECT_DATA's 16-bit shift), which saves a source of
        ``word``'s multiplexer (34 LUT4s of 734 on the iCE40)."""
        self._m.d.sync += [self.count.eq(bytes_), self.wide.eq(bytes_ == 4), self.after.eq(then)]
        self._m.next = "COLLECT_ADDR"

    def emit(self, value, bytes_, then):
        """Emit the low ``bytes_`` bytes of ``value``; then continue at ``then``."""
        self._m.d.sync += [self.word.eq(value), self.count.eq(bytes_), self.after.eq(then)]
        self._m.next = "EMIT"

    def reply(self, code, then_payload):
        """Send END, seq, status; then go on with the command's payload."""
        self._m.d.sync += [self.status.eq(code), self.after.eq(then_payload)]
        self._m.next = "REPLY_START"

    def trailer(self):
        """The CRC, high byte first (latched: sending it must not change it), then END."""
        crc = self._executor.crc
        self.emit(Cat(crc[8:16], crc[0:8]), 2, After.END)

    def remember(self, code, has_word=0):
        """Cache ``code`` as the reply to this frame's sequence number."""
        frame = self._executor.frame
        self._m.d.sync += [self.last_valid.eq(1), self.last_seq.eq(frame.seq),
                           self.last_op.eq(self.operation), self.last_crc.eq(frame.crc_field),
                           self.last_status.eq(code), self.last_has_word.eq(has_word)]

    def refuse(self, code):
        """An error reply; a side-effecting command remembers it for its retries."""
        self.remember(code)
        self.reply(code, After.CRC)
