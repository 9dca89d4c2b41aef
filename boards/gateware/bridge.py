"""The link bridge: SLIP frames from the UART in, engine host-bus operations, replies out.

Implements docs/protocol.md (``boards/protocol.py`` is the definition it is tested against):

* A frame is received into a buffer while its CRC is computed; nothing is executed before the
  closing END shows the CRC good, so a corrupted frame (a flipped address bit) can never write
  a stray memory.  Bytes that arrive while a command executes are dropped: the host sees no
  reply and retries.
* A side-effecting command (WRITE, LOAD_INPUT, RUN, RESET) whose sequence number equals the
  last one's is not executed again: its cached reply is sent, so a retry after a lost reply
  never runs a command twice.  Reads are simply executed again.
* Replies stream out as they are produced (bus reads go straight to the UART), escaped by a
  small SLIP encoder.

The FSM uses a continuation register for its two subroutines, "collect N payload bytes into a
little-endian word" and "emit N bytes of a word", so each command reads as a short sequence.
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.compiler import bus, isa
from sparseforge.compiler.config import EngineConfig
from sparseforge.hw import ram

from .. import protocol

__all__ = ["LinkBridge", "SlipEncoder", "crc16_next"]


def crc16_next(m: Module, crc, byte) -> Signal:
    """CRC-16/CCITT-FALSE of ``crc`` after one more byte (MSB first), as gates.  Each bit step
    gets its own signal: written as one expression the tree would double eight times."""
    value = Signal(16)
    m.d.comb += value.eq(crc ^ (byte << 8))
    for _ in range(8):
        step = Signal(16)
        m.d.comb += step.eq(Mux(value[15], (value << 1) ^ 0x1021, value << 1))
        value = step
    return value


class SlipEncoder(wiring.Component):
    """Escapes END and ESC in a stream of bytes; bytes marked ``raw`` (the frame delimiters)
    pass unescaped."""
    i: In(stream.Signature(data.StructLayout({"byte": 8, "raw": 1})))
    o: Out(stream.Signature(8))

    def elaborate(self, platform):
        m = Module()
        pending = Signal()
        second = Signal(8)
        byte = self.i.payload.byte
        special = ~self.i.payload.raw & ((byte == protocol.END) | (byte == protocol.ESC))
        with m.If(pending):
            m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(second)]
            with m.If(self.o.ready):
                m.d.sync += pending.eq(0)
        with m.Else():
            m.d.comb += [
                self.o.valid.eq(self.i.valid),
                self.o.payload.eq(Mux(special, protocol.ESC, byte)),
                self.i.ready.eq(self.o.ready),
            ]
            with m.If(self.i.valid & self.o.ready & special):
                m.d.sync += [pending.eq(1),
                             second.eq(Mux(byte == protocol.END, protocol.ESC_END,
                                           protocol.ESC_ESC))]
        return m


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


class LinkBridge(wiring.Component):
    """Parameters
    ----------
    config : the engine's configuration (for activation addressing).
    max_payload : the frame buffer's payload capacity in bytes.

    Ports
    -----
    rx : In(stream of bytes) from the UART receiver (never back-pressured).
    tx : Out(stream of bytes) to the UART transmitter.
    bus : Out(host bus) to the engine.
    engine_busy : In; the engine is running.
    bus_idle : In; the bus can take an operation and the last one is complete (a clock-domain
        crossing between the bridge and the engine lowers it while an operation is in flight;
        wired to the engine directly, it stays 1).
    engine_reset : Out; one-cycle pulse (the RESET command).
    activity : Out; a frame is being executed or answered (for an LED).
    """

    def __init__(self, config: EngineConfig, max_payload: int = protocol.MAX_PAYLOAD):
        self._config = config
        self._max_payload = max_payload
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "bus": Out(bus.host_bus_signature()),
            "engine_busy": In(1),
            "bus_idle": In(1, init=1),
            "engine_reset": Out(1),
            "activity": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        capacity = self._max_payload + 4             # seq, code, payload, two CRC bytes
        Op, Status = protocol.Opcode, protocol.Status

        # Written while a frame arrives, read only after it has (hw/ram.py: so no collision
        # logic on the read port).
        m.submodules.buffer = buffer = memory.Memory(shape=8, depth=capacity, init=[],
                                                     attrs=ram.ATTRIBUTES)
        buffer_w = buffer.write_port()
        buffer_r = ram.registered_read_port(m, buffer, "buffer_read")
        m.submodules.encoder = encoder = SlipEncoder()
        wiring.connect(m, encoder.o, wiring.flipped(self.tx))

        # ---- one CRC unit: frames are received and answered, never both at once -------------
        crc = Signal(16, init=0xFFFF)
        crc_byte = Signal(8)
        crc_step = Signal()
        crc_reset = Signal()
        with m.If(crc_reset):
            m.d.sync += crc.eq(0xFFFF)
        with m.Elif(crc_step):
            m.d.sync += crc.eq(crc16_next(m, crc, crc_byte))

        # ---- receive: unescape, buffer, CRC ----------------------------------------------------
        length = Signal(range(capacity + 1))
        escaped, poisoned, overflow = Signal(), Signal(), Signal()
        seq = Signal(8)
        # One flag per opcode, decoded as the byte arrives: the FSM tests flags, not 8-bit
        # compares, on its paths to the wide address and word registers.
        opcode_is = {op: Signal(name=f"is_{op.name.lower()}") for op in Op}
        receiving = Signal()
        byte = Signal(8)
        is_data = Signal()
        m.d.comb += self.rx.ready.eq(1)
        arriving = self.rx.valid & receiving
        with m.If(arriving):
            with m.If(self.rx.payload == protocol.END):
                m.d.sync += escaped.eq(0)
            with m.Elif(self.rx.payload == protocol.ESC):
                m.d.sync += escaped.eq(1)
            with m.Elif(escaped):
                m.d.sync += escaped.eq(0)
                m.d.comb += [is_data.eq(1), byte.eq(Mux(self.rx.payload == protocol.ESC_END,
                                                         protocol.END, protocol.ESC))]
                with m.If((self.rx.payload != protocol.ESC_END)
                          & (self.rx.payload != protocol.ESC_ESC)):
                    m.d.sync += poisoned.eq(1)
            with m.Else():
                m.d.comb += [is_data.eq(1), byte.eq(self.rx.payload)]
        with m.If(is_data):
            with m.If(length == capacity):
                m.d.sync += overflow.eq(1)
            with m.Else():
                m.d.comb += [buffer_w.addr.eq(length), buffer_w.data.eq(byte),
                             buffer_w.en.eq(1), crc_byte.eq(byte), crc_step.eq(1)]
                m.d.sync += length.eq(length + 1)
                with m.If(length == 0):
                    m.d.sync += seq.eq(byte)
                with m.If(length == 1):
                    m.d.sync += [flag.eq(byte == op) for op, flag in opcode_is.items()]
        with m.If(self.rx.valid & ~receiving):
            m.d.sync += poisoned.eq(1)                   # dropped while busy: frame is lost

        # ---- state of the command being executed -------------------------------------------------
        # A register: the subtraction and the checks on it would otherwise sit in one cycle with
        # DISPATCH's decisions.  It lags `length` by a cycle; DISPATCH comes after the frame's
        # END, when `length` has long stopped moving.
        payload_length = Signal(range(capacity + 1))
        m.d.sync += payload_length.eq(length - 4)
        position = Signal(range(capacity + 1))           # next payload byte in the buffer
        word = Signal(32)                                # collected or to-be-emitted word
        count = Signal(3)                                # bytes left in the subroutine
        wide = Signal()                                  # collecting 4 bytes (else 2)
        after = Signal(After)
        status = Signal(8)
        address = Signal(bus.ADDRESS_BITS)               # every bus access goes here
        items = Signal(range(self._max_payload // 2 + 1))
        activations = Signal()                           # address walks activation indices
        last_valid, last_seq = Signal(), Signal(8)
        last_status, last_has_word = Signal(8), Signal()

        emit_byte, emit_raw, emit_valid = Signal(8), Signal(), Signal()
        m.d.comb += [
            encoder.i.payload.byte.eq(emit_byte),
            encoder.i.payload.raw.eq(emit_raw),
            encoder.i.valid.eq(emit_valid),
        ]
        with m.If(emit_valid & encoder.i.ready & ~emit_raw):
            m.d.comb += [crc_byte.eq(emit_byte), crc_step.eq(1)]

        # The next bus index: +1, except that activation index i is (word << lane_bits | lane)
        # and, when pes is not a power of two, the lane wraps before the field does.
        lane_bits = isa.lane_bits(config)
        next_address = Signal(32)
        index_bits = bus.INDEX_BITS
        m.d.comb += next_address.eq(Cat((address[:index_bits] + 1)[:index_bits],
                                        address[index_bits:]))
        if config.pes & (config.pes - 1):
            with m.If(activations & (address[:lane_bits] == config.pes - 1)):
                m.d.comb += next_address.eq(address + (1 << lane_bits) - (config.pes - 1))

        host_bus = self.bus
        # A LOAD_INPUT value is 16 bits on the wire, written as is: the engine takes the low
        # act_bits of an activation write.
        m.d.comb += [host_bus.addr.eq(address), host_bus.w_data.eq(word)]

        def collect(bytes_, then):
            m.d.sync += [count.eq(bytes_), wide.eq(bytes_ == 4), after.eq(then), word.eq(0)]
            m.next = "COLLECT_ADDR"

        def emit(value, bytes_, then):
            m.d.sync += [word.eq(value), count.eq(bytes_), after.eq(then)]
            m.next = "EMIT"

        def reply(code, then_payload):
            """Send END, seq, status; then go on with the command's payload."""
            m.d.sync += [status.eq(code), after.eq(then_payload)]
            m.next = "REPLY_START"

        def trailer():
            """The CRC, high byte first (latched: sending it must not change it), then END."""
            emit(Cat(crc[8:16], crc[0:8]), 2, After.END)

        def remember(code, has_word=0):
            m.d.sync += [last_valid.eq(1), last_seq.eq(seq), last_status.eq(code),
                         last_has_word.eq(has_word)]

        def refuse(code):
            """An error reply; a side-effecting command remembers it for its retries."""
            remember(code)
            reply(code, After.CRC)

        m.d.comb += self.activity.eq(~receiving)
        retry = Signal()            # a side-effecting command repeated: answer from the cache
        bad_length = Signal()       # the payload's length is wrong for the opcode
        side_effect = (opcode_is[Op.WRITE] | opcode_is[Op.LOAD_INPUT] | opcode_is[Op.RUN]
                       | opcode_is[Op.RESET])

        with m.FSM():
            with m.State("RECEIVE"):
                m.d.comb += receiving.eq(1)
                good = ~overflow & ~poisoned & (length >= 4) & (crc == 0)
                with m.If(arriving & (self.rx.payload == protocol.END)):
                    m.d.sync += [position.eq(2), activations.eq(0)]
                    with m.If((length != 0) & good):
                        m.next = "CHECK"                # the frame stays in the buffer
                    with m.Else():
                        m.d.comb += crc_reset.eq(1)
                        m.d.sync += [length.eq(0), poisoned.eq(0), overflow.eq(0)]
                        # Answer what looks like a damaged request; ignore short noise.
                        with m.If(overflow):
                            reply(Status.BAD_LENGTH, After.CRC)
                        with m.Elif(length >= 4):
                            reply(Status.BAD_CRC, After.CRC)

            with m.State("CHECK"):
                # The request's checks, registered, so that DISPATCH decides on flags.
                m.d.sync += [
                    retry.eq(side_effect & last_valid & (seq == last_seq)),
                    bad_length.eq(
                        (opcode_is[Op.INFO] | opcode_is[Op.RUN] | opcode_is[Op.RESET])
                        & (payload_length != 0)
                        | opcode_is[Op.WRITE]
                        & ((payload_length < 8) | (payload_length[:2] != 0))
                        | opcode_is[Op.READ] & (payload_length != 6)
                        | opcode_is[Op.LOAD_INPUT]
                        & ((payload_length == 0) | payload_length[0]
                           | (payload_length > 2 * config.max_features))
                        | (opcode_is[Op.READ_OUTPUT] | opcode_is[Op.READ_CYCLES])
                        & (payload_length != 2)),
                ]
                # Every command starts with the bus idle: a RESET is then taken at once.
                with m.If(self.bus_idle):
                    m.next = "DISPATCH"

            with m.State("DISPATCH"):
                with m.If(retry):
                    with m.If(last_has_word):
                        # A RUN's reply carries its cycle count: read it again (the engine
                        # holds it until the next run, and only this retry could start one).
                        m.d.sync += address.eq(bus.bus_address(bus.Region.REGISTERS,
                                                               bus.Register.TOTAL_CYCLES))
                        m.next = "RUN_WAIT"
                    with m.Else():
                        reply(last_status, After.CRC)
                with m.Elif(opcode_is[Op.INFO]):
                    with m.If(bad_length):
                        reply(Status.BAD_LENGTH, After.CRC)
                    with m.Else():
                        # Registers id, config, control, layer_count: indices 0 to 3.
                        m.d.sync += [address.eq(bus.bus_address(bus.Region.REGISTERS, 0)),
                                     items.eq(4)]
                        reply(Status.OK, After.READ_WORD)
                with m.Elif(opcode_is[Op.WRITE]):
                    with m.If(bad_length):
                        refuse(Status.BAD_LENGTH)
                    with m.Elif(self.engine_busy):
                        refuse(Status.BUSY)
                    with m.Else():
                        m.d.sync += items.eq((payload_length >> 2) - 1)
                        collect(4, After.WRITE_ADDRESS)
                with m.Elif(opcode_is[Op.READ]):
                    with m.If(bad_length):
                        reply(Status.BAD_LENGTH, After.CRC)
                    with m.Else():
                        collect(4, After.READ_ADDRESS)
                with m.Elif(opcode_is[Op.LOAD_INPUT]):
                    with m.If(bad_length):
                        refuse(Status.BAD_LENGTH)
                    with m.Elif(self.engine_busy):
                        refuse(Status.BUSY)
                    with m.Else():
                        m.d.sync += [items.eq(payload_length >> 1), activations.eq(1),
                                     address.eq(bus.bus_address(bus.Region.ACTIVATIONS, 0))]
                        collect(2, After.WRITE_DATA)
                with m.Elif(opcode_is[Op.RUN]):
                    with m.If(bad_length):
                        refuse(Status.BAD_LENGTH)
                    with m.Elif(self.engine_busy):
                        refuse(Status.BUSY)
                    with m.Else():
                        m.d.sync += [address.eq(bus.bus_address(bus.Region.REGISTERS,
                                                                bus.Register.CONTROL)),
                                     word.eq(1)]
                        m.next = "RUN_START"
                with m.Elif(opcode_is[Op.READ_OUTPUT] | opcode_is[Op.READ_CYCLES]):
                    with m.If(bad_length):
                        reply(Status.BAD_LENGTH, After.CRC)
                    with m.Else():
                        with m.If(opcode_is[Op.READ_OUTPUT]):
                            m.d.sync += [activations.eq(1), address.eq(
                                bus.bus_address(bus.Region.ACTIVATIONS, 0))]
                        with m.Else():
                            m.d.sync += address.eq(bus.bus_address(bus.Region.CYCLES, 0))
                        collect(2, After.COUNT)
                with m.Elif(opcode_is[Op.RESET]):
                    with m.If(bad_length):
                        refuse(Status.BAD_LENGTH)
                    with m.Else():
                        m.d.comb += self.engine_reset.eq(1)
                        remember(Status.OK)
                        reply(Status.OK, After.CRC)
                with m.Else():
                    reply(Status.UNKNOWN, After.CRC)

            # ---- subroutine: collect `count` payload bytes, little-endian, into `word` -----------
            with m.State("COLLECT_ADDR"):
                m.d.comb += buffer_r.addr.eq(position)
                m.next = "COLLECT_DATA"
            with m.State("COLLECT_DATA"):
                shifted = Mux(wide, Cat(word[8:32], buffer_r.data), Cat(word[8:16], buffer_r.data))
                m.d.sync += [word.eq(shifted), position.eq(position + 1), count.eq(count - 1)]
                with m.If(count == 1):
                    m.next = "CONTINUE"
                with m.Else():
                    m.next = "COLLECT_ADDR"

            # ---- subroutine: emit the low `count` bytes of `word`, little-endian -----------------
            with m.State("EMIT"):
                m.d.comb += [emit_byte.eq(word[:8]), emit_valid.eq(1)]
                with m.If(encoder.i.ready):
                    m.d.sync += [word.eq(word >> 8), count.eq(count - 1)]
                    with m.If(count == 1):
                        m.next = "CONTINUE"

            # ---- reply framing -------------------------------------------------------------------
            with m.State("REPLY_START"):
                m.d.comb += [emit_byte.eq(protocol.END), emit_raw.eq(1), emit_valid.eq(1)]
                with m.If(encoder.i.ready):
                    m.d.comb += crc_reset.eq(1)
                    m.next = "REPLY_SEQ"
            with m.State("REPLY_SEQ"):
                m.d.comb += [emit_byte.eq(seq), emit_valid.eq(1)]
                with m.If(encoder.i.ready):
                    m.next = "REPLY_STATUS"
            with m.State("REPLY_STATUS"):
                m.d.comb += [emit_byte.eq(status), emit_valid.eq(1)]
                with m.If(encoder.i.ready):
                    m.next = "CONTINUE"
            with m.State("REPLY_END"):
                m.d.comb += [emit_byte.eq(protocol.END), emit_raw.eq(1), emit_valid.eq(1)]
                with m.If(encoder.i.ready):
                    m.d.comb += crc_reset.eq(1)
                    m.d.sync += [length.eq(0), poisoned.eq(0), overflow.eq(0), escaped.eq(0)]
                    m.next = "RECEIVE"

            # ---- bus work ------------------------------------------------------------------------
            # The address and the word hold until the bus is idle again: behind a clock-domain
            # crossing the engine takes them some cycles after asking.
            with m.State("WRITE_BUS"):
                with m.If(self.bus_idle):
                    m.d.comb += host_bus.w_en.eq(1)
                    m.next = "WRITE_DONE"
            with m.State("WRITE_DONE"):
                with m.If(self.bus_idle):
                    m.d.sync += [address.eq(next_address), items.eq(items - 1)]
                    with m.If(items == 1):
                        remember(Status.OK)
                        reply(Status.OK, After.CRC)
                    with m.Else():
                        collect(Mux(opcode_is[Op.LOAD_INPUT], 2, 4), After.WRITE_DATA)
            with m.State("READ_BUS"):
                with m.If(self.bus_idle):
                    m.d.comb += host_bus.r_en.eq(1)
                    m.next = "READ_WAIT"
            with m.State("READ_WAIT"):
                with m.If(host_bus.r_valid):
                    m.d.sync += [address.eq(next_address), items.eq(items - 1)]
                    emit(host_bus.r_data, Mux(opcode_is[Op.READ_OUTPUT], 2, 4), After.READ_WORD)
            with m.State("RUN_START"):
                with m.If(self.bus_idle):
                    m.d.comb += host_bus.w_en.eq(1)
                    m.next = "RUN_STARTED"
            with m.State("RUN_STARTED"):
                # The engine raises busy the cycle after the start write.  Behind a crossing,
                # the write's completion comes back after busy has risen and crossed; wired
                # directly or through register stages, RUN_SETTLE allows for the late busy.
                with m.If(self.bus_idle):
                    m.d.sync += address.eq(bus.bus_address(bus.Region.REGISTERS,
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
                    m.d.sync += word.eq(host_bus.r_data)
                    remember(Status.OK, 1)
                    reply(Status.OK, After.RUN_WORD)

            # ---- continuations: where each subroutine returns to -------------------------------
            with m.State("CONTINUE"):
                with m.Switch(after):
                    with m.Case(After.WRITE_ADDRESS):
                        m.d.sync += address.eq(word)
                        collect(4, After.WRITE_DATA)
                    with m.Case(After.WRITE_DATA):
                        m.next = "WRITE_BUS"
                    with m.Case(After.READ_ADDRESS):
                        m.d.sync += address.eq(word)
                        collect(2, After.READ_COUNT)
                    with m.Case(After.READ_COUNT, After.COUNT):
                        limit = Mux(opcode_is[Op.READ], self._max_payload // 4,
                                    Mux(opcode_is[Op.READ_CYCLES], config.max_layers,
                                        min(config.max_features, self._max_payload // 2)))
                        with m.If((word[:16] == 0) | (word[:16] > limit)):
                            reply(Status.BAD_LENGTH, After.CRC)
                        with m.Else():
                            m.d.sync += items.eq(word[:16])
                            reply(Status.OK, After.READ_WORD)
                    with m.Case(After.READ_WORD):
                        with m.If(items != 0):
                            m.next = "READ_BUS"
                        with m.Elif(opcode_is[Op.INFO]):
                            emit(self._max_payload, 2, After.CRC)
                        with m.Else():
                            trailer()
                    with m.Case(After.RUN_WORD):
                        emit(word, 4, After.CRC)
                    with m.Case(After.CRC):
                        trailer()
                    with m.Case(After.END):
                        m.next = "REPLY_END"
        return m
