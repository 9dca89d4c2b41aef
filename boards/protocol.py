"""The host link protocol (docs/protocol.md): SLIP framing, CRC-16, commands and replies.

This module is the definition both sides share: the host runtime builds and parses frames with
it, the gateware (``boards/gateware``) implements the same rules, and the tests check the two
against each other over a simulated UART.

A frame on the wire is ``END, slip(seq, opcode/status, payload..., crc_hi, crc_lo), END``; the CRC
is CRC-16/CCITT-FALSE (polynomial 0x1021, initial 0xFFFF, no reflection, no final XOR) over
everything before it, appended high byte first, so the CRC over a whole good frame is 0 (what
the gateware checks).  Other multi-byte fields are little-endian.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from amaranth.lib import enum

__all__ = ["END", "ESC", "ESC_END", "ESC_ESC", "Opcode", "Status", "Frame", "ProtocolError",
           "crc16", "slip_encode", "SlipDecoder", "encode_frame", "decode_frame",
           "MAX_PAYLOAD", "IDEMPOTENT", "SESSIONED", "reply_length", "INFO_LAYOUT",
           "image_identity"]

END, ESC, ESC_END, ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD

# Largest payload of a frame in either direction.  The device keeps two frames (one executing,
# the next arriving) in one 512-byte block RAM, each frame's payload and CRC in one half: 254
# payload bytes.  A WRITE frame carries its session, an address and up to 62 words.
MAX_PAYLOAD = 254


class Opcode(enum.IntEnum, shape=8):
    # "session" is the u16 that CONNECT made current; a side-effecting request carries it first.
    INFO = 0x01          # -> id, config, status, layer count (u32 each), max payload u16,
                         #    session u16, image u32
    WRITE = 0x02         # session, addr u32, data u32 * n: bus writes to addr, addr+1, ...
    READ = 0x03          # addr u32, count u16 -> data u32 * count from index addr, addr+1, ...
    LOAD_INPUT = 0x04    # session, value i16 * n: activations 0 .. n-1 (act_bits wide)
    RUN = 0x05           # session -> total cycles u32; runs the loaded image on the input
    READ_OUTPUT = 0x06   # count u16 -> value i16 * count: activations 0 .. count-1
    READ_CYCLES = 0x07   # count u16 -> cycles u32 * count: layers 0 .. count-1 of the last run
    RESET = 0x08         # session: clears the engine's state (not the loaded model)
    CONNECT = 0x09       # session u16 -> session u16: a new session, the reply cache emptied
    SEAL = 0x0A          # session, image u32: the image loaded since the last WRITE is this one
    INFER = 0x0B         # session, count u16, value i16 * n -> total cycles u32, value i16 *
                         #    count: LOAD_INPUT, RUN and READ_OUTPUT in one command


class Status(enum.IntEnum, shape=8):
    OK = 0x00
    BAD_CRC = 0x01       # the frame's CRC did not match: nothing was executed
    UNKNOWN = 0x02       # unknown opcode
    BAD_LENGTH = 0x03    # payload length wrong for the opcode, or over MAX_PAYLOAD
    BUSY = 0x04          # the engine is running (or was asked to run with no layers)
    STALE = 0x05         # a side-effecting request of another session: nothing was executed
    NO_IMAGE = 0x06      # RUN while no sealed image is loaded (a WRITE since the last SEAL)


# Replaying these is harmless, so a retry executes them again; the others (writes, RUN, RESET)
# are executed once per sequence number and a retry gets the cached reply.
IDEMPOTENT = frozenset({Opcode.INFO, Opcode.READ, Opcode.READ_OUTPUT, Opcode.READ_CYCLES,
                        Opcode.CONNECT})
# The others carry the session first in their payload, and the device refuses them (STALE)
# unless it is the current one: a frame from an earlier host session never executes.
SESSIONED = frozenset(Opcode) - IDEMPOTENT

# INFO's reply: the engine's registers 0..3, the bridge's buffer, session and image identity.
INFO_LAYOUT = "<IIIIHHI"


def reply_length(opcode: Opcode, count: int = 0) -> int:
    """The payload bytes of an OK reply to ``opcode`` (``count``: words or values asked for)."""
    return {Opcode.INFO: struct.calcsize(INFO_LAYOUT), Opcode.READ: 4 * count,
            Opcode.RUN: 4, Opcode.READ_OUTPUT: 2 * count, Opcode.READ_CYCLES: 4 * count,
            Opcode.INFER: 4 + 2 * count,
            Opcode.CONNECT: 2}.get(opcode, 0)


def image_identity(writes) -> int:
    """The identity of an image: CRC-32 over its bus writes ((address, data) rows, as
    ``isa.image_bus_writes`` lists them), each as two little-endian u32, never 0 (0 is the
    device's "no image").  The host computes it and seals a loaded image with it; the gateware
    only stores and reports it."""
    import numpy as np

    rows = np.asarray(writes, dtype=np.uint64).reshape(-1, 2).astype("<u4")
    return zlib.crc32(rows.tobytes()) or 1


class ProtocolError(RuntimeError):
    """A reply that cannot be right: bad CRC, wrong length, or an error status."""


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE, bitwise as the gateware computes it."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def slip_encode(data: bytes) -> bytes:
    """One frame on the wire: END, the escaped bytes, END (the leading END flushes line noise)."""
    out = bytearray([END])
    for byte in data:
        if byte == END:
            out += bytes([ESC, ESC_END])
        elif byte == ESC:
            out += bytes([ESC, ESC_ESC])
        else:
            out.append(byte)
    out.append(END)
    return bytes(out)


class SlipDecoder:
    """Streaming SLIP decoder: feed bytes, get complete (unescaped) frames; empty frames between
    back-to-back ENDs are dropped, and a bad escape poisons only its own frame."""

    def __init__(self):
        self._frame = bytearray()
        self._escaped = False
        self._poisoned = False

    def feed(self, data: bytes) -> list[bytes]:
        frames = []
        for byte in data:
            if byte == END:
                if self._frame and not self._poisoned:
                    frames.append(bytes(self._frame))
                self._frame.clear()
                self._escaped = self._poisoned = False
            elif self._escaped:
                self._escaped = False
                if byte == ESC_END:
                    self._frame.append(END)
                elif byte == ESC_ESC:
                    self._frame.append(ESC)
                else:
                    self._poisoned = True
            elif byte == ESC:
                self._escaped = True
            else:
                self._frame.append(byte)
        return frames


@dataclass(frozen=True)
class Frame:
    seq: int
    code: int          # an Opcode in a request, a Status in a reply
    payload: bytes


def encode_frame(seq: int, code: int, payload: bytes = b"") -> bytes:
    """A request or reply, CRC appended and SLIP-framed, ready for the wire."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds the {MAX_PAYLOAD}-byte limit")
    body = bytes([seq & 0xFF, code & 0xFF]) + payload
    return slip_encode(body + struct.pack(">H", crc16(body)))


def decode_frame(data: bytes) -> Frame:
    """A frame from its unescaped bytes; raises ProtocolError on a short frame or a bad CRC."""
    if len(data) < 4:
        raise ProtocolError(f"frame of {len(data)} bytes is shorter than the 4-byte minimum")
    body, (crc,) = data[:-2], struct.unpack(">H", data[-2:])
    if crc16(body) != crc:
        raise ProtocolError(f"frame CRC {crc:#06x} does not match its contents "
                            f"({crc16(body):#06x})")
    return Frame(body[0], body[1], bytes(body[2:]))
