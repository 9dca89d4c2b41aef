"""The fault campaign of the host link: the host's ``Device`` against the real gateware (the
board bench's ``LinkedEngine`` under cocotb) through a line that damages what it carries.

Each scenario runs inferences through one kind of fault, each with its own session, and checks
every answer against the golden outputs; after it a clean line must still get a right answer
(else the board hangs).  The bench watches the engine's ``busy`` line, so every run the board
starts is attributed to the host's RUN command it belongs to: a second run for one command, or
a run outside any, is a duplicate execution.

The faults (docs/protocol.md, "Execution"):

* ``flip``: every byte on the line, both ways, has a bit flipped with this probability;
* ``drop``: a frame (a request, or a chunk of reply bytes) loses one byte;
* ``truncate``: a frame is cut short;
* ``duplicate``: a request is sent twice in a row;
* ``replay``: a request is followed or preceded by an earlier one, of this session or an
  earlier session, from the line's whole history;
* ``garbage``: random bytes (ENDs and ESCs among them) come before a request;
* host restarted mid-sequence: a session loads an input, sends half of its RUN and is gone;
  a new session's inference must not see the old input, and the old session's frames, played
  again afterwards, must not execute;
* a model load cut halfway: a session writes half of another model's image and stops; the next
  session's RUN must be refused (the board holds no complete image) until the model is loaded
  whole, and then give that model's outputs;
* streamed: ``Device.infer_many`` (INFER frames, two unanswered) through flipped bits, dropped
  bytes, cut, duplicated frames and garbage.  Its runs are counted, not attributed (frames
  overlap); an input whose answer was lost after a later frame went out runs again by design
  (``Device.infer_many``), so the runs may exceed the inferences.  Replays are left out: a
  replayed CONNECT takes the session over, which ``infer_many`` reports as ``infer`` does.
"""

from __future__ import annotations

import random
import struct
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from sparseforge.boards.device import Device, DeviceError, LinkError
from sparseforge.boards.protocol import Opcode, Status, encode_frame

__all__ = ["LineFaults", "Tracker", "SCENARIOS", "campaign"]


@dataclass(frozen=True)
class Faults:
    """Fault probabilities of one scenario (see the module docstring)."""
    flip: float = 0.0
    drop: float = 0.0
    truncate: float = 0.0
    duplicate: float = 0.0
    replay: float = 0.0
    garbage: float = 0.0


SCENARIOS: tuple[tuple[str, Faults], ...] = (
    ("bit flips, 3% of bytes", Faults(flip=0.03)),
    ("dropped bytes, 10% of frames", Faults(drop=0.10)),
    ("truncated frames, 10%", Faults(truncate=0.10)),
    ("duplicated frames, 20%", Faults(duplicate=0.20)),
    ("replayed frames, 20%", Faults(replay=0.20)),
    ("garbage between frames, 20%", Faults(garbage=0.20)),
    ("all of them at once", Faults(flip=0.01, drop=0.05, truncate=0.05, duplicate=0.1,
                                   replay=0.1, garbage=0.1)),
)


class LineFaults:
    """A transport that damages what it carries; ``history`` is every request ever written
    (shared between the sessions of a campaign, so that old sessions' frames are replayed)."""

    def __init__(self, inner, faults: Faults, rng: random.Random, history: list[bytes],
                 injected: Counter):
        self.inner, self.faults, self.rng = inner, faults, rng
        self.history, self.injected = history, injected
        self.byte_seconds = inner.byte_seconds

    def _flip(self, data: bytearray) -> None:
        if not self.faults.flip:
            return
        for i in range(len(data)):
            if self.rng.random() < self.faults.flip:
                data[i] ^= 1 << self.rng.randrange(8)
                self.injected["bit flip"] += 1

    def _cut(self, data: bytearray) -> bytearray:
        rng, faults = self.rng, self.faults
        if data and rng.random() < faults.drop:
            del data[rng.randrange(len(data))]
            self.injected["dropped byte"] += 1
        if len(data) > 1 and rng.random() < faults.truncate:
            data = data[:rng.randrange(1, len(data))]
            self.injected["truncation"] += 1
        return data

    def write(self, data: bytes) -> None:
        rng, faults = self.rng, self.faults
        original = bytes(data)
        frame = self._cut(bytearray(data))
        self._flip(frame)
        wire = bytearray()
        if rng.random() < faults.garbage:
            wire += bytes(rng.choice([0xC0, 0xDB, rng.randrange(256)])
                          for _ in range(rng.randint(1, 12)))
            self.injected["garbage"] += 1
        replayed = None
        if self.history and rng.random() < faults.replay:
            replayed = rng.choice(self.history)
            self.injected["replayed frame"] += 1
        if replayed is not None and rng.random() < 0.5:
            wire += replayed
            replayed = None
        wire += frame
        if rng.random() < faults.duplicate:
            wire += frame
            self.injected["duplicated frame"] += 1
        if replayed is not None:
            wire += replayed
        self.history.append(original)
        self.inner.write(bytes(wire))

    def read(self, timeout: float) -> bytes:
        data = bytearray(self.inner.read(timeout))
        if data:
            data = self._cut(data)
            self._flip(data)
        return bytes(data)

    def clock(self) -> float:
        return self.inner.clock()


class Tracker:
    """Which host command is on the line, and the runs the board started during each: the
    bench's monitor calls :meth:`run_started` at every rising edge of the engine's busy."""

    def __init__(self):
        self.command = None         # (index, opcode) of the command in progress
        self.last_run = None        # the index of the last RUN command
        self.runs: Counter = Counter()
        self.failed_runs: set[int] = set()
        self.unexpected = 0
        self.streaming = False      # infer_many on the line: runs are counted, not attributed
        self.streamed_runs = 0
        self._index = 0

    def begin(self, opcode: Opcode) -> int:
        self._index += 1
        self.command = (self._index, opcode)
        if opcode == Opcode.RUN:
            self.last_run = self._index
        return self._index

    def end(self, index: int, failed: bool) -> None:
        if failed and self.command and self.command[1] == Opcode.RUN:
            self.failed_runs.add(index)
        self.command = None

    def run_started(self) -> None:
        if self.streaming:
            self.streamed_runs += 1
        elif self.command and self.command[1] == Opcode.RUN:
            self.runs[self.command[0]] += 1
        elif self.last_run in self.failed_runs and not self.runs[self.last_run]:
            # A RUN the host gave up on whose bytes were still on their way: its one run.
            self.runs[self.last_run] += 1
        else:
            self.unexpected += 1

    @property
    def duplicates(self) -> int:
        return sum(max(0, n - 1) for n in self.runs.values()) + self.unexpected


class TrackedDevice(Device):
    """A ``Device`` that tells the tracker which command is on the line."""

    def __init__(self, transport, tracker: Tracker, **options):
        super().__init__(transport, **options)
        self.tracker = tracker

    def _transact(self, opcode, payload=b"", **options):
        index = self.tracker.begin(opcode)
        failed = True
        try:
            frame = super()._transact(opcode, payload, **options)
            failed = False
            return frame
        finally:
            self.tracker.end(index, failed)


@dataclass
class Tally:
    inferences: int = 0
    correct: int = 0
    link_errors: int = 0
    refusals: int = 0           # the device said no (DeviceError): a clean error
    silent_wrong: int = 0
    hangs: int = 0
    commands: int = 0
    retried: int = 0
    errors: Counter = field(default_factory=Counter)

    def to_json(self) -> dict:
        return {"inferences": self.inferences, "correct": self.correct,
                "link_errors": self.link_errors, "refusals": self.refusals,
                "silent_wrong": self.silent_wrong, "hangs": self.hangs,
                "commands": self.commands, "retried": self.retried,
                "errors": dict(self.errors.most_common(6))}


def campaign(plan: dict, transport, tracker: Tracker) -> dict:
    """Every scenario of :data:`SCENARIOS` on ``plan``'s inputs, then a restarted host and a
    cut model load; returns the counts per scenario and in total."""
    rng = random.Random(plan.get("seed", 1))
    inputs = np.load(plan["inputs"])
    expected = np.load(plan["expected"])
    per_scenario = int(plan.get("per_scenario", len(inputs)))
    out_features, layers = plan["out_features"], plan["layers"]
    retries = plan.get("retries", 10)
    history: list[bytes] = []
    injected: Counter = Counter()
    timeout = 64 * transport.byte_seconds      # a lost reply is noticed after 64 byte times

    def device(faults: Faults | None = None) -> TrackedDevice:
        line = (LineFaults(transport, faults, rng, history, injected) if faults
                else LineFaults(transport, Faults(), rng, history, injected))
        return TrackedDevice(line, tracker, retries=retries, timeout=timeout,
                             rng=random.Random(rng.random()))

    def infer(dev: Device, index: int, tally: Tally, want=None) -> None:
        want = expected[index] if want is None else want
        tally.inferences += 1
        try:
            outputs, cycles = dev.infer(inputs[index], out_features, layers)
        except LinkError as error:
            tally.link_errors += 1
            tally.errors[str(error).split(" after ")[0]] += 1
            return
        except DeviceError as error:
            tally.refusals += 1
            tally.errors[str(error).split(" (")[0]] += 1
            return
        if np.array_equal(outputs, want) and len(cycles) == layers:
            tally.correct += 1
        else:
            tally.silent_wrong += 1

    def probe(tally: Tally) -> None:
        """A clean line afterwards must get a right answer, else the board hangs."""
        check = Tally()
        infer(device(), 0, check)
        if check.correct != 1:
            tally.hangs += 1
            tally.errors["no right answer on a clean line afterwards"] += 1

    results = {}
    for name, faults in SCENARIOS:
        tally = Tally()
        before = injected.copy()
        dev = device(faults)
        for i in range(per_scenario):
            infer(dev, i % len(inputs), tally)
        tally.commands, tally.retried = dev.commands, dev.retried
        probe(tally)
        results[name] = tally.to_json() | {"faults": sum((injected - before).values())}

    # Streamed: every fault but replays at once, through infer_many.
    tally, before = Tally(), injected.copy()
    dev = device(Faults(flip=0.01, drop=0.05, truncate=0.05, duplicate=0.1, garbage=0.1))
    rows = [i % len(inputs) for i in range(2 * per_scenario)]
    tracker.streaming, runs_before = True, tracker.streamed_runs
    tally.inferences = len(rows)
    try:
        outputs, _ = dev.infer_many(inputs[rows], out_features)
        for row, got in zip(rows, outputs):
            if np.array_equal(got, expected[row]):
                tally.correct += 1
            else:
                tally.silent_wrong += 1
    except LinkError as error:
        tally.link_errors += 1
        tally.errors[str(error).split(" after ")[0]] += 1
    except DeviceError as error:
        tally.refusals += 1
        tally.errors[str(error).split(" (")[0]] += 1
    finally:
        tracker.streaming = False
    tally.commands, tally.retried = dev.commands, dev.retried
    probe(tally)
    results["streamed (infer_many)"] = tally.to_json() | {
        "faults": sum((injected - before).values()),
        "runs": tracker.streamed_runs - runs_before}

    # A host restarted mid-sequence: A loads x_i and sends half its RUN; B infers x_j; then A's
    # frames come again (their replays must not execute).
    tally, faults_injected, commands = Tally(), 0, 0
    for i in range(per_scenario):
        a = device()
        a.load_input(inputs[i % len(inputs)])
        run = encode_frame(rng.randrange(256), Opcode.RUN, struct.pack("<H", a.session))
        transport.write(run[:len(run) // 2])
        old_frames = history[-2:] + [run]          # A's CONNECT, LOAD_INPUT and RUN
        faults_injected += 1 + len(old_frames)
        b = device()
        infer(b, (i + 1) % len(inputs), tally)
        for frame in old_frames:
            transport.write(frame)
        infer(b, (i + 2) % len(inputs), tally)
        commands += a.commands + b.commands
    tally.commands = commands
    probe(tally)
    results["host restarted mid-sequence"] = tally.to_json() | {"faults": faults_injected}

    # A model load cut halfway: B's half image, then a RUN (refused), the whole of B (B's
    # outputs), and A again (A's outputs).
    tally, commands = Tally(), 0
    writes_a, writes_b = np.load(plan["writes"]), np.load(plan["writes_b"])
    expected_b = np.load(plan["expected_b"])
    cut = device()
    cut.write_all(writes_b[:len(writes_b) // 2])
    dev = device()
    infer(dev, 0, tally, expected_b[0])
    refused = tally.refusals == 1 and "NO_IMAGE" in next(iter(tally.errors), "")
    dev.load_writes(writes_b)
    for i in range(per_scenario):
        infer(dev, i % len(inputs), tally, expected_b[i % len(inputs)])
    dev.load_writes(writes_a)
    infer(dev, 0, tally)
    commands += cut.commands + dev.commands
    tally.commands = commands
    probe(tally)
    results["model load cut halfway"] = tally.to_json() | {
        "faults": 1, "run_refused_after_cut": refused}

    total = Counter()
    for figures in results.values():
        for key in ("faults", "commands", "inferences", "correct", "link_errors", "refusals",
                    "silent_wrong", "hangs", "retried"):
            total[key] += figures[key]
    return {"scenarios": results, "total": dict(total) | {"duplicates": tracker.duplicates},
            "injected": dict(injected), "runs_seen": sum(tracker.runs.values()),
            "status_names": {s.value: s.name for s in Status}}
