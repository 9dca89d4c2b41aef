"""cocotb bench for the board: the host runtime talks to the simulated board over its UART pins.

The DUT is ``LinkedEngine`` (UART, link bridge, engine) as the board carries it, its two clocks
at the board's frequencies (the engine's PLL output and the link's own clock), the line at the
board's baud rate.  A UART model drives and watches the pins; :class:`SimulatedTransport` gives the host's :class:`Device` the
same byte-pipe interface a serial port has, and the host code runs unchanged in a bridge thread
(``cocotb.task.bridge``) while the simulator advances only when the host waits for bytes.
:class:`FaultyTransport` injects line faults (flipped bits, garbage, truncated frames, dropped
replies) to show that every command completes exactly once or fails clearly.
"""

from __future__ import annotations

import json
import random
from collections import deque
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.task import bridge, resume
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge

from sparseforge.boards.device import Device, DeviceError, ImageMismatch, LinkError

from .link_faults import Tracker, campaign

class UartModel:
    """The host end of the UART: sends queued bytes on ``rx``, collects bytes from ``tx``; a
    bit is ``clocks_per_bit`` cycles of the link's clock (``link_period_ps`` each)."""

    def __init__(self, dut, clocks_per_bit: int, link_period_ps: int):
        self.dut, self.clocks_per_bit = dut, clocks_per_bit
        self.link_period_ps = link_period_ps
        self.to_device: deque[int] = deque()
        self.from_device = bytearray()
        self.sending = cocotb.triggers.Event()
        dut.rx.value = 1
        cocotb.start_soon(self._drive())
        cocotb.start_soon(self._watch())

    async def _drive(self):
        clock, line = self.dut.link_clk, self.dut.rx
        while True:
            if not self.to_device:
                self.sending.clear()
                await self.sending.wait()
                continue
            byte = self.to_device.popleft()
            for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                line.value = bit
                await ClockCycles(clock, self.clocks_per_bit)

    async def _watch(self):
        clock, line = self.dut.link_clk, self.dut.tx
        while True:
            await FallingEdge(line)
            await ClockCycles(clock, self.clocks_per_bit // 2)      # middle of the start bit
            byte = 0
            for i in range(8):
                await ClockCycles(clock, self.clocks_per_bit)
                byte |= int(line.value) << i
            await ClockCycles(clock, self.clocks_per_bit)           # the stop bit
            self.from_device.append(byte)

    def send(self, data: bytes) -> None:
        self.to_device.extend(data)
        self.sending.set()


class SimulatedTransport:
    """A serial port whose other end is the simulated board; time is simulated time."""

    def __init__(self, uart: UartModel):
        self.uart = uart
        self.byte_seconds = 10 * uart.clocks_per_bit * uart.link_period_ps * 1e-12
        self.now = 0.0

    def write(self, data: bytes) -> None:
        self.uart.send(data)

    def read(self, timeout: float) -> bytes:
        return resume(self._read)(timeout)

    async def _read(self, timeout: float) -> bytes:
        # Wait in steps of a byte time until bytes have arrived and the line has gone quiet
        # for a byte time (a whole reply, usually), or the timeout passes.
        step = 10 * self.uart.clocks_per_bit
        waited, seen = 0.0, -1
        while waited < timeout:
            await ClockCycles(self.uart.dut.link_clk, step)
            waited += self.byte_seconds
            count = len(self.uart.from_device)
            if count and count == seen:
                break
            seen = count
        self.now += waited
        data = bytes(self.uart.from_device)
        self.uart.from_device.clear()
        return data

    def clock(self) -> float:
        return self.now


class FaultyTransport:
    """Wraps a transport and damages the line: each request may get a flipped bit, leading
    garbage, or be cut short; each chunk read may be dropped or get a flipped bit."""

    def __init__(self, inner, rng: random.Random, rate: float):
        self.inner, self.rng, self.rate = inner, rng, rate
        self.byte_seconds = inner.byte_seconds
        self.injected = {"flip": 0, "garbage": 0, "truncate": 0, "drop": 0, "flip_reply": 0}

    def write(self, data: bytes) -> None:
        data = bytearray(data)
        fault = self.rng.random()
        if fault < self.rate / 3:
            data[self.rng.randrange(len(data))] ^= 1 << self.rng.randrange(8)
            self.injected["flip"] += 1
        elif fault < 2 * self.rate / 3:
            data[:0] = bytes(self.rng.randrange(256) for _ in range(self.rng.randint(1, 12)))
            self.injected["garbage"] += 1
        elif fault < self.rate:
            data = data[:self.rng.randrange(1, len(data))]
            self.injected["truncate"] += 1
        self.inner.write(bytes(data))

    def read(self, timeout: float) -> bytes:
        data = bytearray(self.inner.read(timeout))
        if data:
            fault = self.rng.random()
            if fault < self.rate / 2:
                self.injected["drop"] += 1
                return b""
            if fault < self.rate:
                data[self.rng.randrange(len(data))] ^= 1 << self.rng.randrange(8)
                self.injected["flip_reply"] += 1
        return bytes(data)

    def clock(self) -> float:
        return self.inner.clock()


def host_session(plan: dict, transport) -> dict:
    """What a user's script does: check the board, maybe load a model, run every input."""
    # A lost reply is noticed after this much silence: 64 byte times of the simulated line
    # (a real board's 0.25 s would be millions of simulated cycles).
    device = Device(transport, retries=plan.get("retries", 8),
                    timeout=64 * transport.byte_seconds)
    info = device.info()
    written = 0
    if plan.get("writes"):
        written = device.load_writes(np.load(plan["writes"]))
    inputs = np.load(plan["inputs"])
    outputs, cycles, failures = [], [], []
    runs_ok = 0
    started = transport.clock()
    for x in inputs:
        try:
            device.load_input(x)
            device.run()
            runs_ok += 1
            outputs.append(device.read_output(plan["out_features"]).tolist())
            cycles.append(device.read_cycles(plan["layers"]))
        except (LinkError, DeviceError) as error:
            failures.append(str(error))
            outputs.append(None)
            cycles.append(None)
    result = {"info": info.__dict__, "outputs": outputs, "cycles": cycles,
              "failures": failures, "runs_ok": runs_ok,
              "seconds": transport.clock() - started}
    result["streamed"] = []
    for window in plan.get("windows", []):
        # The same inputs again, streamed; simulated seconds, as for the loop above.
        started, commands = transport.clock(), device.commands
        streamed, totals = device.infer_many(inputs, plan["out_features"], window=window)
        result["streamed"].append({"window": window, "outputs": streamed.tolist(),
                                   "total_cycles": totals.tolist(),
                                   "seconds": transport.clock() - started,
                                   "commands": device.commands - commands})
    result.update(runs_counted=device.runs(), retried=device.retried, written=written)
    return result


def program_session(plan: dict, transport) -> dict:
    """What ``sparseforge run DIR --input X.npy`` does once its port is open
    (``program_run.run_program``), with the progress it reports and simulated seconds."""
    from sparseforge.boards.program_run import run_program
    from sparseforge.compiler.program import load_program

    device = Device(transport, retries=plan.get("retries", 8),
                    timeout=64 * transport.byte_seconds)
    task = plan["program_run"]
    progress = []
    try:
        run = run_program(device, load_program(task["program"]), np.load(task["inputs"]),
                          load=task["load"], progress=lambda done, total: progress.append(
                              [done, total]), clock=transport.clock)
    except (LinkError, DeviceError, ImageMismatch) as error:
        return {"error": str(error), "commands": device.commands}
    return {"outputs": run.outputs.tolist(), "predictions": run.predictions.tolist(),
            "cycles": run.cycles.tolist(), "layer_cycles": run.layer_cycles,
            "seconds": run.seconds, "progress": progress, "commands": device.commands,
            "retried": device.retried}


async def watch_runs(dut, tracker: Tracker) -> None:
    """Every run the engine starts, for the tracker to attribute to a host command."""
    while True:
        await RisingEdge(dut.busy)
        tracker.run_started()


@cocotb.test()
async def host_runtime_over_simulated_uart(dut):
    plan = json.loads(Path(cocotb.plusargs["sf_bench"]).read_text())
    cocotb.start_soon(Clock(dut.clk, plan["engine_period_ps"], unit="ps").start())
    cocotb.start_soon(Clock(dut.link_clk, plan["link_period_ps"], unit="ps").start())
    from sparseforge.sim.benches.engine_bench import wake_combinational_logic
    await wake_combinational_logic(dut)
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    uart = UartModel(dut, plan["clocks_per_bit"], plan["link_period_ps"])
    transport = SimulatedTransport(uart)
    if plan.get("campaign"):
        tracker = Tracker()
        cocotb.start_soon(watch_runs(dut, tracker))
        result = await bridge(campaign)(plan, transport, tracker)
        Path(plan["results"]).write_text(json.dumps(result))
        return
    if plan.get("program_run"):
        result = await bridge(program_session)(plan, transport)
        Path(plan["results"]).write_text(json.dumps(result))
        return
    faults = None
    if plan.get("fault_rate"):
        faults = FaultyTransport(transport, random.Random(plan.get("seed", 1)),
                                 plan["fault_rate"])
    result = await bridge(host_session)(plan, faults or transport)
    result["injected"] = faults.injected if faults else {}
    Path(plan["results"]).write_text(json.dumps(result))
