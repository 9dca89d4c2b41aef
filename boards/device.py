"""The host runtime: talk to an engine on a board over its UART link.

``Device`` speaks docs/protocol.md over a *transport* (anything with ``write(bytes)``,
``read(timeout) -> bytes`` that returns what arrived within ``timeout`` seconds, ``clock()`` in
seconds, and ``byte_seconds``, a byte's time on the wire): :class:`SerialTransport` for a real board
(pyserial), or the simulated UART of the board simulation (``boards/benches/board_bench.py``), so
the same code is tested end to end without a board.

Every command gets a fresh sequence number.  When a reply is lost or damaged the command is sent
again with the *same* number: the device executes reads again and answers a repeated write, run
or reset from its cache, so nothing runs twice.  A command that still gets no good reply after
``retries`` attempts raises :class:`LinkError`.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

import numpy as np

from sparseforge.compiler import bus, isa

from .protocol import (
    MAX_PAYLOAD,
    Frame,
    Opcode,
    ProtocolError,
    SlipDecoder,
    Status,
    decode_frame,
    encode_frame,
)

__all__ = ["Device", "DeviceInfo", "LinkError", "DeviceError", "SerialTransport",
           "find_serial_port"]


class LinkError(RuntimeError):
    """No good reply after every retry: the board is gone, or the line is too noisy."""


class DeviceError(RuntimeError):
    """The device answered with an error status."""

    def __init__(self, opcode: Opcode, status: int):
        self.opcode, self.status = opcode, status
        name = Status(status).name if status in Status._value2member_map_ else hex(status)
        super().__init__(f"{opcode.name} failed on the device: {name}")


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


class Device:
    """An engine on a board (or in simulation) behind a transport.

    Parameters
    ----------
    transport : the byte pipe (``SerialTransport`` or a simulated one).
    retries : attempts per command before :class:`LinkError`.
    timeout : seconds to wait for a reply beyond the time its bytes take on the wire.
    """

    def __init__(self, transport, *, retries: int = 6, timeout: float = 0.25):
        self.transport = transport
        self.retries = retries
        self.timeout = timeout
        self._seq = 0
        self._decoder = SlipDecoder()
        self.retried = 0            # commands sent more than once (for reports and tests)

    # ---- the protocol -------------------------------------------------------------------------
    def _transact(self, opcode: Opcode, payload: bytes = b"", *, reply_bytes: int = 0,
                  extra_seconds: float = 0.0) -> Frame:
        self._seq = (self._seq + 1) & 0xFF
        wire = encode_frame(self._seq, opcode, payload)
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
                    if frame.seq != self._seq:
                        continue                    # a late reply to an earlier command
                    if frame.code == Status.BAD_CRC:
                        last_problem = "the device saw a damaged request"
                        resend = True               # no need to wait out the timeout
                        break
                    if frame.code != Status.OK:
                        raise DeviceError(opcode, frame.code)
                    return frame
        raise LinkError(f"{opcode.name}: {last_problem} after {self.retries} attempts")

    # ---- commands -----------------------------------------------------------------------------
    def info(self) -> DeviceInfo:
        frame = self._transact(Opcode.INFO, reply_bytes=18)
        engine_id, config, status, layers, capacity = struct.unpack("<IIIIH", frame.payload)
        if engine_id != bus.ENGINE_ID:
            raise LinkError(f"the device answered with engine id {engine_id:#x}, "
                            f"not sparseforge's {bus.ENGINE_ID:#x}")
        return DeviceInfo(engine_id, config & 0xFF, (config >> 8) & 0xFF, (config >> 16) & 0xFF,
                          (config >> 24) & 0xFF, layers, capacity, bool(status & 1))

    def write(self, address: int, words) -> None:
        """Bus writes of ``words`` to consecutive indices from ``address``."""
        words = [int(w) & 0xFFFFFFFF for w in words]
        per_frame = (MAX_PAYLOAD - 4) // 4
        for start in range(0, len(words), per_frame):
            chunk = words[start:start + per_frame]
            self._transact(Opcode.WRITE, struct.pack(f"<I{len(chunk)}I", address + start, *chunk))

    def read(self, address: int, count: int) -> list[int]:
        per_frame = MAX_PAYLOAD // 4
        words: list[int] = []
        for start in range(0, count, per_frame):
            n = min(per_frame, count - start)
            frame = self._transact(Opcode.READ, struct.pack("<IH", address + start, n),
                                   reply_bytes=4 * n)
            words += struct.unpack(f"<{n}I", frame.payload)
        return words

    def load_image(self, config, image) -> int:
        """Write a program image into the engine; returns the number of bus writes."""
        return self.write_all(isa.image_bus_writes(config, image))

    def write_all(self, writes) -> int:
        """Bus writes given as (address, data) rows, sent as runs of consecutive addresses."""
        writes = np.asarray(writes, dtype=np.uint64).reshape(-1, 2)
        start = 0
        while start < len(writes):
            end = start + 1
            while (end < len(writes) and writes[end, 0] == writes[end - 1, 0] + 1
                   and end - start < (MAX_PAYLOAD - 4) // 4):
                end += 1
            self.write(int(writes[start, 0]), writes[start:end, 1])
            start = end
        return len(writes)

    def load_input(self, values) -> None:
        values = [int(v) for v in values]
        if not values or len(values) > MAX_PAYLOAD // 2:
            raise ValueError(f"an input must have 1 to {MAX_PAYLOAD // 2} values, "
                             f"not {len(values)}")
        self._transact(Opcode.LOAD_INPUT, struct.pack(f"<{len(values)}h", *values))

    def run(self, expected_seconds: float = 0.0) -> int:
        """Run the loaded model on the loaded input; returns the run's total cycles."""
        frame = self._transact(Opcode.RUN, reply_bytes=4, extra_seconds=expected_seconds)
        return struct.unpack("<I", frame.payload)[0]

    def read_output(self, count: int) -> np.ndarray:
        frame = self._transact(Opcode.READ_OUTPUT, struct.pack("<H", count),
                               reply_bytes=2 * count)
        return np.array(struct.unpack(f"<{count}h", frame.payload), dtype=np.int64)

    def read_cycles(self, layers: int) -> list[int]:
        """Cycles each layer of the last run took (the engine records the run's count at the
        end of each layer)."""
        frame = self._transact(Opcode.READ_CYCLES, struct.pack("<H", layers),
                               reply_bytes=4 * layers)
        return isa.layer_cycles(struct.unpack(f"<{layers}I", frame.payload))

    def runs(self) -> int:
        """Runs the engine started since its reset (counts exactly-once execution)."""
        return self.read(bus.bus_address(bus.Region.REGISTERS, bus.Register.RUNS), 1)[0]

    def reset(self) -> None:
        self._transact(Opcode.RESET)

    def infer(self, x, out_features: int, layers: int) -> tuple[np.ndarray, list[int]]:
        """One inference: load ``x`` (integers), run, read outputs and per-layer cycles."""
        self.load_input(x)
        self.run()
        return self.read_output(out_features), self.read_cycles(layers)


class SerialTransport:
    """A UART through pyserial."""

    def __init__(self, port: str, baud: int):
        import serial

        self.serial = serial.Serial(port, baud, timeout=0)
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


def find_serial_port(usb_ids) -> str:
    """The serial port of the first connected device with one of ``usb_ids`` ((vid, pid)
    pairs); raises LinkError listing what is connected when none matches."""
    from serial.tools import list_ports

    ports = list(list_ports.comports())
    for port in ports:
        if (port.vid, port.pid) in set(usb_ids):
            return port.device
    seen = ", ".join(f"{p.device} ({p.vid:04x}:{p.pid:04x})" if p.vid else p.device
                     for p in ports) or "no serial ports"
    wanted = ", ".join(f"{v:04x}:{p:04x}" for v, p in usb_ids)
    raise LinkError(f"no board with USB id {wanted} is connected (found: {seen}); "
                    f"pass --port")
