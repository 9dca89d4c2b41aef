"""The link's frame receiver: SLIP frames from the UART into a buffer, checked before anything
runs (docs/protocol.md, "Frames" and "Execution").

A frame is unescaped and written into a block RAM while its CRC is computed; its first two
bytes, the sequence number and the opcode, are kept in registers as they arrive.  At the closing
END the frame is good when it has at least its four header and CRC bytes, fitted the buffer,
had no bad escape, lost no byte and its CRC over everything, CRC bytes included, is 0.  The
frame's last two bytes, its CRC field, are kept as well (the executor's reply cache is keyed by
them), and a payload's first two bytes are compared with the current session as they arrive
(a side-effecting request carries its session there).  A good frame stays in the buffer for
the command executor, which reads its payload through a registered port and tells the receiver
when to take the next frame.  Bytes that arrive while
the executor is busy are dropped (the receiver is never back-pressured) and poison the frame
they belong to: the host sees no good reply and retries.
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.compiler.config import EngineConfig
from sparseforge.hw import ram

from .. import protocol

__all__ = ["FrameReceiver", "FrameSignature"]

HEADER_AND_CRC = 4              # seq, code and the two CRC bytes around a frame's payload


class FrameSignature(wiring.Signature):
    """A received frame, as the frame receiver offers it to the command executor.

    Parameters
    ----------
    capacity : the frame buffer's size in bytes (seq, code, payload and CRC).

    Members
    -------
    receiving : In; a frame is awaited.  Bytes that arrive otherwise are dropped and poison
        the frame they belong to.
    discard : In; forget the frame whose END is arriving (the END ends any escape).
    restart : In; forget the frame, and any escape, and take the next one.
    end : Out; an END arrives while ``receiving``: the frame is complete.
    good : Out; the frame is long enough, fitted, was escaped correctly, lost no byte and its
        CRC is right.  Decides with ``end``.
    overflow : Out; the frame did not fit the buffer.
    length : Out(range(capacity + 1)); the frame's bytes so far.
    payload_length : Out(range(capacity + 1)); ``length`` minus the header and CRC bytes, one
        cycle later (a register: the checks on it stay out of the executor's decisions).
    bad_length : Out; the payload's length is wrong for the opcode (from ``payload_length``).
    seq : Out(8); the frame's first byte, its sequence number.
    crc_field : Out(16); the frame's last two bytes, high byte first: its CRC field, which
        covers the sequence number, the opcode and the payload.
    session : In(16); the current session.  session_ok : Out; the payload's first two bytes
        (little-endian) equal it.
    opcode : Out(one flag per :class:`protocol.Opcode`, named in lower case); decoded from the
        second byte as it arrives, so that the executor tests flags, not 8-bit compares, on its
        paths to the wide address and word registers.
    read_addr : In(range(capacity)); read_data : Out(8); the buffer's read port: ``read_data``
        is the byte at ``read_addr`` from the next cycle.
    """

    def __init__(self, capacity: int):
        self._capacity = capacity
        super().__init__({
            "receiving": In(1),
            "discard": In(1),
            "restart": In(1),
            "end": Out(1),
            "good": Out(1),
            "overflow": Out(1),
            "length": Out(range(capacity + 1)),
            "payload_length": Out(range(capacity + 1)),
            "bad_length": Out(1),
            "seq": Out(8),
            "crc_field": Out(16),
            "session": In(16),
            "session_ok": Out(1),
            "opcode": Out(wiring.Signature({op.name.lower(): Out(1)
                                            for op in protocol.Opcode})),
            "read_addr": In(range(capacity)),
            "read_data": Out(8),
        })

    @property
    def capacity(self) -> int:
        return self._capacity

    def __eq__(self, other):
        return type(other) is type(self) and other.capacity == self.capacity

    def __repr__(self):
        return f"FrameSignature({self._capacity})"


class FrameReceiver(wiring.Component):
    """Parameters
    ----------
    config : the engine's configuration (the most activations a LOAD_INPUT carries).
    max_payload : the frame buffer's payload capacity in bytes.

    Members
    -------
    rx : In(stream of bytes) from the UART receiver (never back-pressured).
    frame : Out(:class:`FrameSignature`) to the command executor.
    crc_byte : Out(8); crc_step : Out; each byte written into the buffer, for the CRC unit.
    crc : In(16); the CRC unit's value.
    """

    def __init__(self, config: EngineConfig, max_payload: int = protocol.MAX_PAYLOAD):
        self._config = config
        self._max_payload = max_payload
        super().__init__({
            "rx": In(stream.Signature(8)),
            "frame": Out(FrameSignature(max_payload + HEADER_AND_CRC)),
            "crc_byte": Out(8),
            "crc_step": Out(1),
            "crc": In(16),
        })

    def elaborate(self, platform):
        m = Module()
        frame = self.frame
        capacity = self._max_payload + HEADER_AND_CRC

        # Written while a frame arrives, read only after it has (hw/ram.py: so no collision
        # logic on the read port).
        m.submodules.buffer = buffer = memory.Memory(shape=8, depth=capacity, init=[],
                                                     attrs=ram.ATTRIBUTES)
        buffer_w = buffer.write_port()
        buffer_r = ram.registered_read_port(m, buffer, "buffer_read")
        m.d.comb += [buffer_r.addr.eq(frame.read_addr), frame.read_data.eq(buffer_r.data)]

        # ---- unescape, buffer, CRC ---------------------------------------------------------
        length = frame.length
        escaped = Signal()
        poisoned = Signal()
        byte = Signal(8)
        is_data = Signal()
        m.d.comb += self.rx.ready.eq(1)
        arriving = self.rx.valid & frame.receiving
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
                m.d.sync += frame.overflow.eq(1)
            with m.Else():
                m.d.comb += [buffer_w.addr.eq(length), buffer_w.data.eq(byte),
                             buffer_w.en.eq(1), self.crc_byte.eq(byte), self.crc_step.eq(1)]
                m.d.sync += [length.eq(length + 1),
                             frame.crc_field.eq(Cat(byte, frame.crc_field[:8]))]
                with m.If(length == 2):
                    m.d.sync += frame.session_ok.eq(byte == frame.session[:8])
                with m.If(length == 3):
                    m.d.sync += frame.session_ok.eq(frame.session_ok
                                                    & (byte == frame.session[8:]))
                with m.If(length == 0):
                    m.d.sync += frame.seq.eq(byte)
                with m.If(length == 1):
                    m.d.sync += [getattr(frame.opcode, op.name.lower()).eq(byte == op)
                                 for op in protocol.Opcode]
        with m.If(self.rx.valid & ~frame.receiving):
            m.d.sync += poisoned.eq(1)                   # dropped while busy: frame is lost

        # ---- the checks on a complete frame ---------------------------------------------------
        m.d.comb += frame.end.eq(arriving & (self.rx.payload == protocol.END))
        good = ~frame.overflow & ~poisoned & (length >= HEADER_AND_CRC) & (self.crc == 0)
        m.d.comb += frame.good.eq((length != 0) & good)
        payload_length = frame.payload_length
        m.d.sync += payload_length.eq(length - HEADER_AND_CRC)
        m.d.comb += frame.bad_length.eq(self._bad_length(payload_length))

        with m.If(frame.discard):
            m.d.sync += [length.eq(0), poisoned.eq(0), frame.overflow.eq(0)]
        with m.If(frame.restart):
            m.d.sync += [length.eq(0), poisoned.eq(0), frame.overflow.eq(0), escaped.eq(0)]
        return m

    def _bad_length(self, payload_length):
        """The payload's length is wrong for the opcode (docs/protocol.md, "Commands"); the
        side-effecting ones count their two session bytes."""
        opcode = self.frame.opcode
        two = opcode.run | opcode.reset | opcode.connect | opcode.read_output | opcode.read_cycles
        return (opcode.info & (payload_length != 0)
                | two & (payload_length != 2)
                | (opcode.read | opcode.seal) & (payload_length != 6)
                | opcode.write & ((payload_length < 10) | (payload_length[:2] != 2))
                | opcode.load_input
                & ((payload_length < 4) | payload_length[0]
                   | (payload_length > 2 + 2 * self._config.max_features)))
