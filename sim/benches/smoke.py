"""cocotb bench for the toolchain smoke test: a streaming multiply-accumulate.

The DUT (tests/test_toolchain_smoke.py) takes a stream of signed 8-bit pairs and outputs their
running dot product; the bench feeds random pairs with idle cycles and checks every sum.
"""

import json
import random

import cocotb
from amaranth import signed
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge


class Pair(data.Struct):
    """The DUT's input word; the bench packs it with the same layout the hardware decodes."""
    a: signed(8)
    b: signed(8)


def _bench_parameters() -> dict:
    path = cocotb.plusargs.get("sf_bench")
    return json.loads(open(path).read()) if path else {"count": 50, "seed": 1}


@cocotb.test()
async def dot_product_matches_python(dut):
    parameters = _bench_parameters()
    rng = random.Random(parameters["seed"])
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.i__valid.value = 0
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    expected = 0
    for _ in range(parameters["count"]):
        a, b = rng.randint(-128, 127), rng.randint(-128, 127)
        expected += a * b
        await FallingEdge(dut.clk)
        dut.i__payload.value = Pair.const({"a": a, "b": b}).as_bits()
        dut.i__valid.value = 1
        await RisingEdge(dut.clk)
        await FallingEdge(dut.clk)
        dut.i__valid.value = 0
        if rng.random() < 0.3:
            await ClockCycles(dut.clk, rng.randint(1, 3))
    await ClockCycles(dut.clk, 2)
    assert dut.total.value.to_signed() == expected, (dut.total.value.to_signed(), expected)
