"""The host runtime: talk to an engine on a board over its UART link.

``Device`` speaks docs/protocol.md over a *transport* (anything with ``write(bytes)``,
``read(timeout) -> bytes`` that returns what arrived within ``timeout`` seconds, ``clock()`` in
seconds, and ``byte_seconds``, a byte's time on the wire): :class:`SerialTransport` for a real board
(pyserial), or the simulated UART of the board simulation (``boards/benches/board_bench.py``), so
the same code is tested end to end without a board.

A ``Device`` first CONNECTs with a random session number, which every side-effecting request
then carries: the board refuses a request of any other session, and its reply cache starts
empty, so one host session is never answered from another's.  Every command gets a fresh
sequence number.  When a reply is lost or damaged the command is sent again with the *same*
number and bytes: the device executes reads again and answers a repeated write, run or reset
from its cache (keyed by session, sequence number, opcode and the frame's CRC), so nothing runs
twice.  A command that still gets no good reply after ``retries`` attempts raises
:class:`LinkError`; a reply of the wrong length for its command is refused at once.

:meth:`Device.infer_many` streams inferences: one INFER frame per input (LOAD_INPUT, RUN and
READ_OUTPUT in one command), the next one sent while the board runs the last, up to ``window``
unanswered, so the line to the board never waits for the engine or for a reply (the board takes
the next frame while it executes one).

:meth:`Device.load` writes an image, every word acknowledged, then seals it with its identity
(``protocol.image_identity``) and reads that back; a RUN on a board whose image is partial
(a load cut short) is refused by the board itself, and :meth:`Device.require_image` refuses a
board that holds another image than the program's.
"""

from __future__ import annotations

import random
import struct
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from sparseforge.compiler import bus, isa
from sparseforge.compiler.errors import UserError

from .protocol import (
    INFO_LAYOUT,
    MAX_PAYLOAD,
    SESSIONED,
    Frame,
    Opcode,
    ProtocolError,
    SlipDecoder,
    Status,
    decode_frame,
    encode_frame,
    image_identity,
    reply_length,
)

__all__ = ["Device", "DeviceInfo", "LinkError", "DeviceError", "ImageMismatch",
           "SerialTransport", "activation_runs", "find_serial_port"]


class LinkError(UserError, RuntimeError):
    """No good reply after every retry (the board is gone, or the line is too noisy), or a
    reply that cannot belong to the command (another protocol version)."""


# What an error status means to the person who sees it.
_STATUS_TEXT = {
    Status.BAD_LENGTH: "the request's length or a count was refused",
    Status.UNKNOWN: "the board does not know this command (an older bitstream?)",
    Status.BUSY: "the engine is running",
    Status.STALE: "another host session connected to the board after this one, so the board "
                  "no longer takes this session's commands",
    Status.NO_IMAGE: "the board holds no complete image (a load was cut short, or a WRITE "
                     "came after it): load the program again (`sparseforge run --load`)",
}


class DeviceError(UserError, RuntimeError):
    """The device answered with an error status."""

    def __init__(self, opcode: Opcode, status: int):
        self.opcode, self.status = opcode, status
        name = Status(status).name if status in Status._value2member_map_ else hex(status)
        reason = _STATUS_TEXT.get(status)
        super().__init__(f"{opcode.name} failed on the device: {name}"
                         + (f" ({reason})" if reason else ""))


class ImageMismatch(UserError, RuntimeError):
    """The board holds another image than the program's, or none that is complete."""


class EngineMismatch(UserError, RuntimeError):
    """The board's engine (its bitstream) is not the one the program was compiled for."""


def activation_runs(count: int, pes: int):
    """``(first activation, bus index, length)`` of each run of activations ``0 .. count-1``
    whose bus indices (``isa.activation_index``: word and lane as bit fields) follow one
    another: one run when ``pes`` is a power of two, else a word's ``pes`` lanes at a time
    (the lane field's unused values lie between words)."""
    if pes & (pes - 1) == 0:
        if count:
            yield 0, 0, count
        return
    lane_bits = (pes - 1).bit_length()
    for first in range(0, count, pes):
        yield first, (first // pes) << lane_bits, min(pes, count - first)


@dataclass(frozen=True)
class DeviceInfo:
    engine_id: int
    pes: int
    act_bits: int
    code_bits: int
    scan_lanes: int
    layer_count: int
    max_payload: int
    busy: bool
    session: int        # the session the board takes side-effecting commands from
    image: int          # the loaded image's identity; 0: none complete


# A WRITE carries the session (2 bytes) and the address (4) before its words; a LOAD_INPUT the
# session before its values.
WORDS_PER_WRITE = (MAX_PAYLOAD - 6) // 4
VALUES_PER_LOAD = (MAX_PAYLOAD - 2) // 2
# An INFER carries the session and the output count before its values; its reply the cycle
# count before the outputs.
VALUES_PER_INFER = (MAX_PAYLOAD - 4) // 2
# Commands per session, fewer than half the 256 sequence numbers.
SESSION_COMMANDS = 120


class Device:
    """An engine on a board (or in simulation) behind a transport.

    Parameters
    ----------
    transport : the byte pipe (``SerialTransport`` or a simulated one).
    retries : attempts per command before :class:`LinkError`.
    timeout : seconds to wait for a reply beyond the time its bytes take on the wire.
    rng : where the session and the first sequence number come from (seed it for a
        reproducible simulation).
    """

    def __init__(self, transport, *, retries: int = 6, timeout: float = 0.25,
                 rng: random.Random | None = None):
        self.transport = transport
        self.retries = retries
        self.timeout = timeout
        self._rng = rng or random.SystemRandom()
        self._seq = self._rng.randrange(256)
        self._since_connect = 0
        self._decoder = SlipDecoder()
        self.session: int | None = None
        self.commands = 0           # commands sent (for reports and tests)
        self.retried = 0            # commands sent more than once

    # ---- the protocol -------------------------------------------------------------------------
    def connect(self) -> int:
        """Start a session: the board mixes a random nonce of ours with a stamp of its own
        that moves at every CONNECT, makes the result the session it takes side-effecting
        commands from (its reply cache emptied) and answers it.  Returns it."""
        nonce = self._rng.randrange(1, 1 << 16)
        self.session = None
        self._since_connect = 0
        frame = self._transact(Opcode.CONNECT, struct.pack("<H", nonce))
        (self.session,) = struct.unpack("<H", frame.payload)
        return self.session

    def _transact(self, opcode: Opcode, payload: bytes = b"", *, count: int = 0,
                  extra_seconds: float = 0.0) -> Frame:
        if opcode in SESSIONED:
            # The board takes a side-effecting command only with a sequence number ahead of
            # the last one's by less than half the ring (older ones are replays): a session
            # ends before its numbers come round.
            if self.session is None or self._since_connect >= SESSION_COMMANDS:
                self.connect()
            payload = struct.pack("<H", self.session) + payload
        expected = reply_length(opcode, count)
        self._seq = seq = (self._seq + 1) & 0xFF
        self._since_connect += 1
        self.commands += 1
        wire = encode_frame(seq, opcode, payload)
        reply_bytes = expected
        # Waiting time: the request and the reply on the wire (SLIP may double every byte).
        seconds = (self.timeout + extra_seconds
                   + self.transport.byte_seconds * (len(wire) + 2 * (reply_bytes + 8)))
        last_problem = "no reply"
        for attempt in range(self.retries):
            if attempt:
                self.retried += 1
            self.transport.write(wire)
            deadline = self.transport.clock() + seconds
            resend = False
            while not resend and (remaining := deadline - self.transport.clock()) > 0:
                for raw in self._decoder.feed(self.transport.read(remaining)):
                    try:
                        frame = decode_frame(raw)
                    except ProtocolError as error:
                        last_problem = str(error)
                        continue
                    if frame.seq != seq:
                        continue                    # a late reply to an earlier command
                    if encode_frame(frame.seq, frame.code, frame.payload) == wire:
                        # Our own request back, byte for byte: no board answers that way.
                        raise LinkError(f"{opcode.name}: the line sends back what the host "
                                        f"sends (a TX-RX loopback, or a device that echoes): "
                                        f"this port is not the board's link")
                    if frame.code == Status.BAD_CRC:
                        last_problem = "the device saw a damaged request"
                        resend = True               # no need to wait out the timeout
                        break
                    if frame.code == Status.STALE:
                        self.session = None         # taken over: a new session next time
                    if frame.code != Status.OK:
                        raise DeviceError(opcode, frame.code)
                    if len(frame.payload) != expected:
                        # Its CRC was good: not line noise, a device that speaks otherwise.
                        raise LinkError(f"{opcode.name}: the board's reply has "
                                        f"{len(frame.payload)} payload bytes, not {expected}: "
                                        f"it speaks another protocol version (rebuild and "
                                        f"flash the bitstream)")
                    return frame
        raise LinkError(f"{opcode.name}: {last_problem} after {self.retries} attempts")

    # ---- commands -----------------------------------------------------------------------------
    def info(self) -> DeviceInfo:
        frame = self._transact(Opcode.INFO)
        engine_id, config, status, layers, capacity, session, image = struct.unpack(
            INFO_LAYOUT, frame.payload)
        if engine_id != bus.ENGINE_ID:
            raise LinkError(f"the device answered with engine id {engine_id:#x}, "
                            f"not sparseforge's {bus.ENGINE_ID:#x}")
        return DeviceInfo(engine_id, config & 0xFF, (config >> 8) & 0xFF, (config >> 16) & 0xFF,
                          (config >> 24) & 0xFF, layers, capacity, bool(status & 1), session,
                          image)

    def write(self, address: int, words) -> None:
        """Bus writes of ``words`` to consecutive indices from ``address``."""
        words = [int(w) & 0xFFFFFFFF for w in words]
        per_frame = WORDS_PER_WRITE
        for start in range(0, len(words), per_frame):
            chunk = words[start:start + per_frame]
            self._transact(Opcode.WRITE, struct.pack(f"<I{len(chunk)}I", address + start, *chunk))

    def read(self, address: int, count: int) -> list[int]:
        per_frame = MAX_PAYLOAD // 4
        words: list[int] = []
        for start in range(0, count, per_frame):
            n = min(per_frame, count - start)
            frame = self._transact(Opcode.READ, struct.pack("<IH", address + start, n),
                                   count=n)
            words += struct.unpack(f"<{n}I", frame.payload)
        return words

    def load(self, config, image) -> int:
        """Write a program image into the engine, every word acknowledged, then seal it with
        its identity and read that back; returns the number of bus writes.  Cut short (a
        LinkError), it leaves the board with no complete image, which it refuses to run."""
        return self.load_writes(isa.image_bus_writes(config, image))

    load_image = load

    def load_writes(self, writes) -> int:
        """:meth:`load` of an image given as its bus writes (``isa.image_bus_writes``)."""
        identity = image_identity(writes)
        count = self.write_all(writes)
        self.seal(identity)
        found = self.info().image
        if found != identity:
            raise ImageMismatch(f"the board reports image {found:#010x} after loading "
                                f"{identity:#010x}")
        return count

    def seal(self, identity: int) -> None:
        """Tell the board that the words written since its identity was cleared (by the
        load's first WRITE) are the image ``identity``: it runs again from now on."""
        if not 0 < identity < 1 << 32:
            raise ValueError(f"an image identity is a non-zero u32, not {identity}")
        self._transact(Opcode.SEAL, struct.pack("<I", identity))

    def require_image(self, config, image) -> int:
        """Refuse a board that does not hold exactly this image, complete; returns its
        identity."""
        identity = image_identity(isa.image_bus_writes(config, image))
        found = self.info().image
        if found == 0:
            raise ImageMismatch("the board holds no complete image (a load was cut short, or "
                                "words were written after it): load the program with --load")
        if found != identity:
            raise ImageMismatch(f"the board holds image {found:#010x}, not this program's "
                                f"{identity:#010x}: flash the program's bitstream, or load it "
                                f"with --load")
        return identity

    def write_all(self, writes) -> int:
        """Bus writes given as (address, data) rows, sent as runs of consecutive addresses."""
        writes = np.asarray(writes, dtype=np.uint64).reshape(-1, 2)
        start = 0
        while start < len(writes):
            end = start + 1
            while (end < len(writes) and writes[end, 0] == writes[end - 1, 0] + 1
                   and end - start < WORDS_PER_WRITE):
                end += 1
            self.write(int(writes[start, 0]), writes[start:end, 1])
            start = end
        return len(writes)

    def load_input(self, values) -> None:
        """The input activations of the next run: a LOAD_INPUT frame, or for an input wider
        than one (``VALUES_PER_LOAD``) :meth:`load_wide_input`."""
        values = [int(v) for v in values]
        if not values:
            raise ValueError("an input must have at least one value")
        if len(values) > VALUES_PER_LOAD:
            self.load_wide_input(values)
            return
        self._transact(Opcode.LOAD_INPUT, struct.pack(f"<{len(values)}h", *values))

    def load_wide_input(self, values, info: DeviceInfo | None = None) -> DeviceInfo:
        """An input wider than a LOAD_INPUT frame: WRITE frames into the activation region
        from activation 0 (:func:`activation_runs`: a word's lanes are bus indices in a row,
        a word's unused lanes are not), then the image sealed again with its identity, since
        any WRITE unseals it (the activations are not part of the image).  ``info`` is the
        board's INFO (asked for when not given).  A board without a complete image is refused,
        as a run of it would be.  Returns ``info``, for the next."""
        if info is None:
            info = self.info()
        if not info.image:
            raise ImageMismatch("the board holds no complete image: load the program first")
        values = list(values)
        for first, index, count in activation_runs(len(values), info.pes):
            self.write(bus.bus_address(bus.Region.ACTIVATIONS, index),
                       values[first:first + count])
        self.seal(info.image)
        return info

    def read_wide_output(self, count: int, info: DeviceInfo | None = None) -> np.ndarray:
        """Outputs more than a READ_OUTPUT frame carries: READ frames of the activation
        region from activation 0 (the last layer's outputs), each value sign-extended to the
        bus word by the board."""
        if info is None:
            info = self.info()
        words: list[int] = []
        for _, index, run in activation_runs(count, info.pes):
            words += self.read(bus.bus_address(bus.Region.ACTIVATIONS, index), run)
        return np.array(words, dtype=np.uint32).view(np.int32).astype(np.int64)

    def run(self, expected_seconds: float = 0.0) -> int:
        """Run the loaded model on the loaded input; returns the run's total cycles."""
        frame = self._transact(Opcode.RUN, extra_seconds=expected_seconds)
        return struct.unpack("<I", frame.payload)[0]

    def read_output(self, count: int) -> np.ndarray:
        """The last run's first ``count`` outputs (at most ``VALUES_PER_INFER``; more:
        :meth:`read_wide_output`)."""
        frame = self._transact(Opcode.READ_OUTPUT, struct.pack("<H", count), count=count)
        return np.array(struct.unpack(f"<{count}h", frame.payload), dtype=np.int64)

    def read_cycles(self, layers: int) -> list[int]:
        """Cycles each layer of the last run took (the engine records the run's count at the
        end of each layer)."""
        frame = self._transact(Opcode.READ_CYCLES, struct.pack("<H", layers), count=layers)
        return isa.layer_cycles(struct.unpack(f"<{layers}I", frame.payload))

    def runs(self) -> int:
        """Runs the engine started since its reset (counts exactly-once execution)."""
        return self.read(bus.bus_address(bus.Region.REGISTERS, bus.Register.RUNS), 1)[0]

    def reset(self) -> None:
        self._transact(Opcode.RESET)

    def _infer_each(self, rows, out_features: int, progress, expected_seconds: float
                    ) -> tuple[np.ndarray, np.ndarray]:
        outputs = np.zeros((len(rows), out_features), dtype=np.int64)
        cycles = np.zeros(len(rows), dtype=np.int64)
        info = None                     # asked of the board once, for every input
        for index, row in enumerate(rows):
            if len(row) > VALUES_PER_LOAD:
                info = self.load_wide_input(row, info)
            else:
                self.load_input(row)
            cycles[index] = self.run(expected_seconds)
            if out_features > VALUES_PER_INFER:
                info = info or self.info()
                outputs[index] = self.read_wide_output(out_features, info)
            else:
                outputs[index] = self.read_output(out_features)
            if progress:
                progress(index + 1, len(rows))
        return outputs, cycles

    def infer(self, x, out_features: int, layers: int) -> tuple[np.ndarray, list[int]]:
        """One inference: load ``x`` (integers), run, read outputs and per-layer cycles."""
        self.load_input(x)
        self.run()
        return self.read_output(out_features), self.read_cycles(layers)

    def infer_many(self, inputs, out_features: int, *, window: int = 2, progress=None,
                   expected_seconds: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Inferences of every row of ``inputs`` (integers), streamed: one INFER frame each,
        the next sent while the board runs the last, at most ``window`` unanswered (the board
        holds one frame while it receives the next: 2 keeps the line busy).  Returns the
        outputs (rows x ``out_features``) and each run's total cycles.  ``progress(done,
        total)`` is called after each answer; ``expected_seconds`` is one run's time, for the
        reply timeouts.

        Retries keep the exactly-once rule where it can: a frame the board saw damaged
        (BAD_CRC) is sent again under a new number; a lost reply is asked for again with the
        same number (answered from the board's cache, not run again) when no later frame was
        sent.  When a later frame was sent, the board has moved on and the lost answer is gone
        with its cache entry: that input is sent again as a new command, so it may run twice
        on the board (an inference has no effect but its answer)."""
        rows = [[int(v) for v in row] for row in inputs]
        for index, row in enumerate(rows):
            if not row:
                raise ValueError(f"input {index} has no values")
        if out_features < 1:
            raise ValueError(f"out_features must be at least 1, not {out_features}")
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        if out_features > VALUES_PER_INFER or any(len(row) > VALUES_PER_INFER for row in rows):
            # Wider than an INFER frame: each input in WRITE frames (or LOAD_INPUT), then RUN
            # and READ_OUTPUT (or READ frames), one after the other (nothing to stream).
            return self._infer_each(rows, out_features, progress, expected_seconds)
        outputs = np.zeros((len(rows), out_features), dtype=np.int64)
        cycles = np.zeros(len(rows), dtype=np.int64)
        stream = _Stream(len(rows))
        reply_bytes = 2 * (reply_length(Opcode.INFER, out_features) + 8)
        while stream.todo or stream.flight:
            while stream.todo and len(stream.flight) < window:
                # A new session only between frames: its CONNECT waits for its answer.
                if self.session is None or self._since_connect >= SESSION_COMMANDS:
                    if stream.flight:
                        break
                    self.connect()
                index = stream.todo.popleft()
                self._seq = seq = (self._seq + 1) & 0xFF
                self._since_connect += 1
                self.commands += 1
                wire = encode_frame(seq, Opcode.INFER, struct.pack(
                    f"<HH{len(rows[index])}h", self.session, out_features, *rows[index]))
                self.transport.write(wire)
                stream.last_seq = seq
                stream.flight.append(_InFlight(index, seq, wire, 0.0))
                self._set_deadlines(stream, reply_bytes, expected_seconds)
            oldest = stream.flight[0]
            remaining = oldest.deadline - self.transport.clock()
            if remaining <= 0:
                self._lost_reply(stream, oldest, reply_bytes, expected_seconds)
                continue
            for raw in self._decoder.feed(self.transport.read(remaining)):
                try:
                    frame = decode_frame(raw)
                except ProtocolError:
                    continue
                entry = next((e for e in stream.flight if e.seq == frame.seq), None)
                if entry is None:
                    continue                        # a late reply to an earlier command
                if frame.code == Status.OK:
                    if len(frame.payload) != reply_length(Opcode.INFER, out_features):
                        raise LinkError(f"INFER: the board's reply has {len(frame.payload)} "
                                        f"payload bytes, not "
                                        f"{reply_length(Opcode.INFER, out_features)}: it "
                                        f"speaks another protocol version (rebuild and flash "
                                        f"the bitstream)")
                    stream.flight.remove(entry)
                    cycles[entry.index] = struct.unpack_from("<I", frame.payload)[0]
                    outputs[entry.index] = struct.unpack_from(f"<{out_features}h",
                                                              frame.payload, 4)
                    stream.done += 1
                    if progress is not None:
                        progress(stream.done, len(rows))
                elif frame.code == Status.BAD_CRC or (frame.code == Status.STALE
                                                      and entry.seq != stream.last_seq):
                    # Not executed (damaged), or overtaken by a later frame: a new command.
                    self._send_again(stream, entry, new_number=True)
                else:
                    if frame.code == Status.STALE:
                        self.session = None         # taken over: a new session next time
                    raise DeviceError(Opcode.INFER, frame.code)
        return outputs, cycles

    def _set_deadlines(self, stream: _Stream, reply_bytes: int, expected_seconds: float):
        """Each frame in flight waits for what is ahead of it on the line and its own answer."""
        now, ahead = self.transport.clock(), 0
        for entry in stream.flight:
            ahead += len(entry.wire) + reply_bytes
            entry.deadline = max(entry.deadline, now + self.timeout + expected_seconds
                                 + self.transport.byte_seconds * ahead)

    def _lost_reply(self, stream: _Stream, entry: _InFlight, reply_bytes: int,
                    expected_seconds: float) -> None:
        """No answer to ``entry`` in time: ask again, under its own number when nothing was
        sent after it (the board's cache answers a repeat), else as a new command (a later
        frame, answered or not, has taken the cache)."""
        alone = entry.seq == stream.last_seq
        self._send_again(stream, entry, new_number=not alone)
        if alone:
            entry.deadline = 0.0
            self._set_deadlines(stream, reply_bytes, expected_seconds)

    def _send_again(self, stream: _Stream, entry: _InFlight, *, new_number: bool) -> None:
        stream.attempts[entry.index] += 1
        if stream.attempts[entry.index] >= self.retries:
            raise LinkError(f"INFER of input {entry.index}: no good reply after "
                            f"{self.retries} attempts")
        self.retried += 1
        if new_number:
            stream.flight.remove(entry)
            stream.todo.appendleft(entry.index)
        else:
            self.transport.write(entry.wire)


@dataclass
class _InFlight:
    """An INFER sent and not yet answered."""
    index: int          # the input's place in the batch
    seq: int
    wire: bytes
    deadline: float


class _Stream:
    """The bookkeeping of :meth:`Device.infer_many`."""

    def __init__(self, count: int):
        self.todo: deque[int] = deque(range(count))
        self.flight: deque[_InFlight] = deque()
        self.attempts = [0] * count
        self.done = 0
        self.last_seq = None        # the newest frame sent: the board's cache holds its answer


class SerialTransport:
    """A UART through pyserial."""

    def __init__(self, port: str, baud: int):
        import serial

        self.serial = serial.Serial(port, baud, timeout=0)
        self.serial.reset_input_buffer()        # an earlier process's unread replies
        self.byte_seconds = 10.0 / baud

    def write(self, data: bytes) -> None:
        self.serial.write(data)

    def read(self, timeout: float) -> bytes:
        self.serial.timeout = timeout
        first = self.serial.read(1)
        if not first:
            return b""
        self.serial.timeout = 0
        return first + self.serial.read(self.serial.in_waiting or 0)

    def clock(self) -> float:
        return time.monotonic()

    def close(self) -> None:
        self.serial.close()


def find_serial_port(usb_ids, interface: int | None = None) -> str:
    """The serial port of the first connected device with one of ``usb_ids`` ((vid, pid)
    pairs), on its USB ``interface`` when the bridge has several (an FT2232H shows two ports
    with one id; the iCEBreaker's link is on the second, channel B); raises LinkError listing
    what is connected when none matches."""
    from serial.tools import list_ports

    ports = list(list_ports.comports())
    matches = [port for port in ports if (port.vid, port.pid) in set(usb_ids)]
    if matches and interface is not None:
        # The interface number ends the port's USB location ("1-1.2:1.1"); without one, the
        # device's ports come in interface order (ttyUSB0, ttyUSB1).
        located = [port for port in matches
                   if (getattr(port, "location", None) or "").endswith(f".{interface}")]
        if located:
            return located[0].device
        ordered = sorted(matches, key=lambda port: port.device)
        if interface < len(ordered):
            return ordered[interface].device
    if matches:
        return matches[0].device
    seen = ", ".join(f"{p.device} ({p.vid:04x}:{p.pid:04x})" if p.vid else p.device
                     for p in ports) or "no serial ports"
    wanted = ", ".join(f"{v:04x}:{p:04x}" for v, p in usb_ids)
    raise LinkError(f"no board with USB id {wanted} is connected (found: {seen}); "
                    f"pass --port")
