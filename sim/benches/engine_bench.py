"""cocotb bench for the generated engine.

The plan (a JSON file named by ``+sf_bench=``) lists cases; for each, the bench loads a program
image through the host bus (so one compiled engine serves many models), streams every input in,
collects the outputs and the per-layer cycle counters, checks the outputs against the golden
model bit for bit, and writes what it saw to the case's results file for the Python side.

Drivers follow cocotbext-axi's shape, for the 2.x API: one class per interface
(:class:`HostBusDriver`, :class:`StreamSource`, :class:`StreamSink`) and a :class:`TB` that owns
the clock and reset.  Every stream can be stalled from both sides (idle cycles on the source,
backpressure on the sink) to shake out handshake bugs.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, Timer

from sparseforge.compiler import bus, isa

CLOCK_NS = 10


def _bench_plan() -> dict:
    path = cocotb.plusargs.get("sf_bench")
    if not path:
        raise RuntimeError("the engine bench needs +sf_bench=<plan.json>")
    return json.loads(Path(path).read_text())


async def wake_combinational_logic(dut) -> None:
    """Make Icarus evaluate every ``always @*`` block once at time zero.

    Yosys's Verilog backend adds a dummy register to each module and reads it in every
    combinational block so that its initial value change triggers them; Icarus 11 does not treat
    a declaration initialiser as an event, and comb outputs stay X until an input changes.
    Depositing a value on each of those registers gives every block its first evaluation.
    """
    if "icarus" not in cocotb.SIM_NAME.lower():
        return
    triggers = []

    def walk(handle, depth=0):
        for child in handle:
            name = child._name
            if name.startswith("$auto$verilog_backend"):
                triggers.append(child)
            elif depth < 8 and child._type in ("GPI_MODULE", "GPI_GENARRAY"):
                walk(child, depth + 1)

    walk(dut)
    dut._log.info(f"Icarus: waking {len(triggers)} modules' combinational logic")
    for value in (1, 0):
        for trigger in triggers:
            trigger.value = value
        await Timer(1, unit="ps")


class HostBusDriver:
    """Master of the engine's host bus (``bus.host_bus_signature``)."""

    def __init__(self, dut, clock):
        self.dut, self.clock = dut, clock
        dut.bus__w_en.value = 0
        dut.bus__r_en.value = 0
        dut.bus__addr.value = 0
        dut.bus__w_data.value = 0

    async def write_many(self, writes) -> None:
        """Back-to-back writes, one per cycle: ``writes`` is an (n, 2) array of (addr, data)."""
        dut = self.dut
        for address, value in writes:
            await FallingEdge(self.clock)
            dut.bus__addr.value = int(address)
            dut.bus__w_data.value = int(value) & 0xFFFFFFFF
            dut.bus__w_en.value = 1
        await FallingEdge(self.clock)
        dut.bus__w_en.value = 0

    async def write(self, address: int, value: int) -> None:
        await self.write_many([(address, value)])

    async def read(self, address: int) -> int:
        dut = self.dut
        await FallingEdge(self.clock)
        dut.bus__addr.value = address
        dut.bus__r_en.value = 1
        await FallingEdge(self.clock)
        dut.bus__r_en.value = 0
        for _ in range(bus.READ_LATENCY + 2):
            if dut.bus__r_valid.value:
                return int(dut.bus__r_data.value)
            await FallingEdge(self.clock)
        raise AssertionError(f"no read data for address {address:#x}")


class StreamSource:
    """Drives a stream of ``isa.stream_layout`` words; ``idle`` is the chance of an idle cycle."""

    def __init__(self, dut, clock, prefix: str, layout, rng: random.Random, idle: float = 0.0):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.clock, self.layout, self.rng, self.idle = clock, layout, rng, idle
        self.valid.value = 0

    async def send(self, values) -> None:
        # Decide at each falling edge; `ready` depends only on registers, so what it reads
        # here is what the next rising edge sees.
        values = list(values)
        index, driving = 0, False
        while index < len(values):
            await FallingEdge(self.clock)
            if not driving:
                if self.rng.random() < self.idle:
                    self.valid.value = 0
                    continue
                self.payload.value = self.layout.const(
                    {"value": int(values[index]), "last": index == len(values) - 1}).as_bits()
                self.valid.value = 1
                driving = True
            if self.ready.value:
                index, driving = index + 1, False
        await FallingEdge(self.clock)
        self.valid.value = 0


class StreamSink:
    """Receives a stream up to and including ``last``; ``stall`` is the chance of backpressure."""

    def __init__(self, dut, clock, prefix: str, layout, rng: random.Random, stall: float = 0.0):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.clock, self.layout, self.rng, self.stall = clock, layout, rng, stall
        self.ready.value = 0

    async def receive(self, limit_cycles: int) -> list[int]:
        values = []
        for _ in range(limit_cycles):
            await FallingEdge(self.clock)
            ready = self.rng.random() >= self.stall
            self.ready.value = int(ready)
            if ready and self.valid.value:
                word = self.layout.from_bits(int(self.payload.value))
                values.append(int(word.value))
                if word.last:
                    await FallingEdge(self.clock)
                    self.ready.value = 0
                    return values
        raise AssertionError(f"the output stream did not finish within {limit_cycles} cycles "
                             f"({len(values)} values received)")


class TB:
    """Owns the clock and reset and the three interface drivers."""

    def __init__(self, dut, config: dict, *, seed: int, input_idle: float, output_stall: float):
        self.dut = dut
        self.rng = random.Random(seed)
        from sparseforge.compiler.config import EngineConfig
        self.config = EngineConfig.from_json(config)
        layout = isa.stream_layout(self.config)
        cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
        self.bus = HostBusDriver(dut, dut.clk)
        self.source = StreamSource(dut, dut.clk, "input", layout, self.rng, input_idle)
        self.sink = StreamSink(dut, dut.clk, "output", layout, self.rng, output_stall)

    async def reset(self) -> None:
        await wake_combinational_logic(self.dut)
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 2)
        self.dut.rst.value = 0
        await self.wait_idle()

    async def wait_idle(self, limit: int = 1_000_000) -> None:
        control = bus.bus_address(bus.Region.REGISTERS, bus.Register.CONTROL)
        for _ in range(limit):
            if not (await self.bus.read(control)) & 1:
                return
        raise AssertionError("the engine stayed busy")

    async def infer(self, x: np.ndarray, layer_count: int, timeout: int) -> tuple[list, list]:
        receiver = cocotb.start_soon(self.sink.receive(timeout))
        await self.source.send(x)
        outputs = await receiver
        await self.wait_idle()
        ends = [await self.bus.read(bus.bus_address(bus.Region.CYCLES, layer))
                for layer in range(layer_count)]
        return outputs, isa.layer_cycles(ends)


@cocotb.test()
async def engine_matches_golden_model(dut):
    plan = _bench_plan()
    stalls = plan.get("stalls", {})
    tb = TB(dut, plan["config"], seed=plan.get("seed", 1),
            input_idle=stalls.get("input_idle", 0.0), output_stall=stalls.get("output_stall", 0.0))
    await tb.reset()
    identity = await tb.bus.read(bus.bus_address(bus.Region.REGISTERS, bus.Register.ID))
    assert identity == bus.ENGINE_ID, f"engine id {identity:#x}"
    mismatched_cases = []
    for case in plan["cases"]:
        started = time.perf_counter()
        if case.get("writes"):
            await tb.bus.write_many(np.load(case["writes"]))
        inputs = np.load(case["inputs"])
        expected = np.load(case["expected"])
        layer_count = int(case["layer_count"])
        outputs, cycles = [], []
        for x in inputs:
            y, c = await tb.infer(x, layer_count, timeout=int(case.get("timeout", 10_000_000)))
            outputs.append(y)
            cycles.append(c)
        outputs = np.array(outputs, dtype=np.int64)
        cycles = np.array(cycles, dtype=np.int64)
        np.savez(case["results"], outputs=outputs, cycles=cycles,
                 seconds=time.perf_counter() - started)
        if not np.array_equal(outputs, expected):
            mismatched_cases.append(case["name"])
            bad = np.argwhere(outputs != expected)
            dut._log.error(f"case {case['name']}: {len(bad)} mismatches, first at "
                           f"{bad[0].tolist()}: got {outputs[tuple(bad[0])]}, "
                           f"expected {expected[tuple(bad[0])]}")
        else:
            dut._log.info(f"case {case['name']}: {len(inputs)} inputs match the golden model; "
                          f"cycles per layer {cycles.mean(axis=0).round(1).tolist()}")
    assert not mismatched_cases, f"outputs differ from the golden model in {mismatched_cases}"
