"""The link's frame receiver: SLIP frames from the UART into a buffer, checked before anything
runs (docs/protocol.md, "Frames" and "Execution").

A frame is unescaped and written into a block RAM while its CRC is computed (the receiver has a
CRC unit of its own: it takes the next frame while the executor answers the last); its first
two bytes, the sequence number and the opcode, are kept in registers as they arrive, and so are
its last two, the CRC field (the executor's reply cache is keyed by them); a payload's first
two, where a side-effecting request carries its session, are compared with the current
session as they arrive (a frame whose session bytes came before a CONNECT changed the session
is taken for another session's).  At the closing END the frame is good
when it has at least its four header and CRC bytes, fitted, had no bad escape, lost no byte and
its CRC over everything, CRC bytes included, is 0.

The buffer holds two frames, each in one half: the one the command executor holds (``valid``
until it ``release``s it) and the one arriving, so the host can send the next request while the
executor works on the last one.  A frame that ends while the executor still holds one waits,
complete, until it is released; bytes that arrive while it waits are dropped (the receiver is
never back-pressured) and poison the frame they belong to: the host sees no good reply and
retries.  A damaged frame of four bytes or more is handed over too, to be answered (BAD_CRC,
or BAD_LENGTH when it overflowed); shorter noise is forgotten.
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.compiler.config import EngineConfig
from sparseforge.hw import ram

from .. import protocol
from .crc import CRC16

__all__ = ["FrameReceiver", "FrameSignature"]

HEADER_AND_CRC = 4              # seq, code and the two CRC bytes around a frame's payload


def bank_bits(max_payload: int) -> int:
    """Address bits of one half of the buffer, which holds a frame from its payload on (the
    payload and the CRC field: the sequence number and opcode are registers)."""
    return (max_payload + HEADER_AND_CRC - 2 - 1).bit_length()


class FrameSignature(wiring.Signature):
    """A received frame, as the frame receiver hands it to the command executor.

    Parameters
    ----------
    max_payload : the largest payload a frame may carry.

    Members
    -------
    valid : Out; a complete frame is held for the executor (until ``release``).
    release : In; the executor is done with the frame (its reply is out): the receiver hands
        over the next one.
    good : Out; the frame is long enough, fitted, was escaped correctly, lost no byte and its
        CRC is right (else it is a damaged frame, to be answered BAD_CRC or BAD_LENGTH).
    overflow : Out; the frame did not fit the buffer.
    payload_length : Out(range(max_payload + 1)).
    bad_length : Out; the payload's length is wrong for the opcode.
    seq : Out(8); the frame's first byte, its sequence number.
    crc_field : Out(16); the frame's last two bytes, high byte first: its CRC field, which
        covers the sequence number, the opcode and the payload.
    session : In(16); the current session.  new_session : In; a CONNECT makes another one
        current (the arriving frame's comparison is void).
    session_ok : Out; the payload's first two bytes (little-endian) were the current session.
    opcode : Out(one flag per :class:`protocol.Opcode`, named in lower case); decoded from the
        second byte as it arrives, so that the executor tests flags, not 8-bit compares, on its
        paths to the wide address and word registers.
    read_addr : In(range(2 ** bank_bits)), a payload index; read_data : Out(8); the buffer's
        read port: ``read_data`` is the payload byte at ``read_addr`` from the next cycle.
    """

    def __init__(self, max_payload: int):
        self._max_payload = max_payload
        super().__init__({
            "valid": Out(1),
            "release": In(1),
            "good": Out(1),
            "overflow": Out(1),
            "payload_length": Out(range(max_payload + 1)),
            "bad_length": Out(1),
            "seq": Out(8),
            "crc_field": Out(16),
            "session": In(16),
            "new_session": In(1),
            "session_ok": Out(1),
            "opcode": Out(wiring.Signature({op.name.lower(): Out(1)
                                            for op in protocol.Opcode})),
            "read_addr": In(range(1 << bank_bits(max_payload))),
            "read_data": Out(8),
        })

    @property
    def max_payload(self) -> int:
        return self._max_payload

    def __eq__(self, other):
        return type(other) is type(self) and other.max_payload == self.max_payload

    def __repr__(self):
        return f"FrameSignature({self._max_payload})"


class FrameReceiver(wiring.Component):
    """Parameters
    ----------
    config : the engine's configuration (the most activations a LOAD_INPUT carries).
    max_payload : the largest payload a frame may carry.

    Members
    -------
    rx : In(stream of bytes) from the UART receiver (never back-pressured).
    frame : Out(:class:`FrameSignature`) to the command executor.
    """

    def __init__(self, config: EngineConfig, max_payload: int = protocol.MAX_PAYLOAD):
        self._config = config
        self._max_payload = max_payload
        super().__init__({
            "rx": In(stream.Signature(8)),
            "frame": Out(FrameSignature(max_payload)),
        })

    def elaborate(self, platform):
        m = Module()
        frame = self.frame
        capacity = self._max_payload + HEADER_AND_CRC
        bits = bank_bits(self._max_payload)
        m.submodules.crc = crc = CRC16()

        # Two halves, one frame each: the executor reads the one it holds while the next one
        # is written into the other (hw/ram.py: a read never meets a write, so no collision
        # logic on the read port).  One 512-byte block RAM on the iCE40 and the ECP5.
        m.submodules.buffer = buffer = memory.Memory(shape=8, depth=2 << bits, init=[],
                                                     attrs=ram.ATTRIBUTES)
        buffer_w = buffer.write_port()
        buffer_r = ram.registered_read_port(m, buffer, "buffer_read")
        held_half = Signal()                    # the half the executor's frame is in
        m.d.comb += [buffer_r.addr.eq(Cat(frame.read_addr, held_half)),
                     frame.read_data.eq(buffer_r.data)]

        # ---- the arriving frame: unescape, buffer, CRC -----------------------------------------
        length = Signal(range(capacity + 1))
        escaped = Signal()
        poisoned = Signal()
        overflow = Signal()
        seq = Signal(8)
        opcode = Signal(len(protocol.Opcode))
        crc_field = Signal(16)
        session_ok = Signal()
        waiting = Signal()          # complete, its verdict taken, until the executor's is done
        waiting_good = Signal()
        byte = Signal(8)
        is_data = Signal()
        m.d.comb += self.rx.ready.eq(1)
        arriving = self.rx.valid & ~waiting
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
                m.d.comb += [buffer_w.addr.eq(Cat((length - 2)[:bits], ~held_half)),
                             buffer_w.data.eq(byte), buffer_w.en.eq(length >= 2),
                             crc.byte.eq(byte), crc.step.eq(1)]
                m.d.sync += [length.eq(length + 1), crc_field.eq(Cat(byte, crc_field[:8]))]
                with m.Switch(length):
                    with m.Case(0):
                        m.d.sync += seq.eq(byte)
                    with m.Case(1):
                        m.d.sync += opcode.eq(Cat(byte == op for op in protocol.Opcode))
                    with m.Case(2):
                        m.d.sync += session_ok.eq(byte == frame.session[:8])
                    with m.Case(3):
                        m.d.sync += session_ok.eq(session_ok & (byte == frame.session[8:]))
        with m.If(frame.new_session):
            m.d.sync += session_ok.eq(0)
        with m.If(self.rx.valid & waiting):
            m.d.sync += poisoned.eq(1)          # dropped: the frame it belongs to is lost

        # ---- a complete frame: forget it, hand it over, or wait --------------------------------
        good = ~overflow & ~poisoned & (length >= HEADER_AND_CRC) & (crc.value == 0)
        answer = good | overflow | (length >= HEADER_AND_CRC)
        ended = arriving & (self.rx.payload == protocol.END)
        handing = Signal()
        handing_good = Signal()
        with m.If(ended):
            m.d.comb += crc.clear.eq(1)
            m.d.sync += poisoned.eq(0)
            with m.If((length != 0) & answer):
                with m.If(frame.valid & ~frame.release):
                    m.d.sync += [waiting.eq(1), waiting_good.eq(good)]
                with m.Else():
                    m.d.comb += [handing.eq(1), handing_good.eq(good)]
            with m.Else():
                m.d.sync += [length.eq(0), overflow.eq(0)]
        with m.If(waiting & (~frame.valid | frame.release)):
            m.d.comb += [handing.eq(1), handing_good.eq(waiting_good)]
            m.d.sync += waiting.eq(0)

        # ---- the executor's frame --------------------------------------------------------------
        held_opcode = Signal.like(opcode)
        m.d.comb += [getattr(frame.opcode, op.name.lower()).eq(held_opcode[index])
                     for index, op in enumerate(protocol.Opcode)]
        with m.If(frame.release):
            m.d.sync += frame.valid.eq(0)
        with m.If(handing):
            m.d.sync += [
                frame.valid.eq(1), frame.good.eq(handing_good), frame.overflow.eq(overflow),
                frame.payload_length.eq(length - HEADER_AND_CRC), frame.seq.eq(seq),
                frame.crc_field.eq(crc_field), frame.session_ok.eq(session_ok),
                held_opcode.eq(opcode), held_half.eq(~held_half),
                length.eq(0), overflow.eq(0),
            ]
        m.d.comb += frame.bad_length.eq(self._bad_length(frame.payload_length))
        return m

    def _bad_length(self, payload_length):
        """The payload's length is wrong for the opcode (docs/protocol.md, "Commands"); the
        side-effecting ones count their two session bytes."""
        opcode = self.frame.opcode
        two = opcode.run | opcode.reset | opcode.connect | opcode.read_output | opcode.read_cycles
        max_features = self._config.max_features
        return (opcode.info & (payload_length != 0)
                | two & (payload_length != 2)
                | (opcode.read | opcode.seal) & (payload_length != 6)
                | opcode.write & ((payload_length < 10) | (payload_length[:2] != 2))
                | opcode.load_input
                & ((payload_length < 4) | payload_length[0]
                   | (payload_length > 2 + 2 * max_features))
                | opcode.infer
                & ((payload_length < 6) | payload_length[0]
                   | (payload_length > 4 + 2 * max_features)))
