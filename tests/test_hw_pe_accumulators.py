"""hw/pe_accumulators.py: a synchronous read transparent to the write, holding while not
enabled; the high bits in registers answer as the memory's low bits do."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from sparseforge.compiler.config import EngineConfig
from sparseforge.hw.pe_accumulators import AccumulatorFile


def ref_accumulators(rows, operations):
    """The read data after each cycle's (read_en, read_addr, write_en, write_addr, data)."""
    file = [0] * rows
    held = 0
    seen = []
    for read_en, read_addr, write_en, write_addr, value in operations:
        if read_en:
            held = value if write_en and write_addr == read_addr else file[read_addr]
        if write_en:
            file[write_addr] = value
        seen.append(held)
    return seen


def rtl_accumulators(config, operations):
    dut = AccumulatorFile(config)
    seen = []

    async def testbench(ctx):
        for read_en, read_addr, write_en, write_addr, value in operations:
            ctx.set(dut.read.en, read_en)
            ctx.set(dut.read.addr, read_addr)
            ctx.set(dut.write.en, write_en)
            ctx.set(dut.write.addr, write_addr)
            ctx.set(dut.write.data, value)
            await ctx.tick()
            seen.append(ctx.get(dut.read.data))

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    return seen


@pytest.mark.parametrize("acc_bits,acc_memory_bits", [(24, 0), (24, 16), (16, 15)])
@pytest.mark.parametrize("max_rows", [2, 5])
def test_reads_like_a_transparent_memory(acc_bits, acc_memory_bits, max_rows):
    """Random reads and writes over a few rows, so that a read often names the row written in
    the same cycle (EIE's bypass: the new sum) and the read is often disabled (the word
    holds); with high bits in registers the whole word answers alike."""
    config = EngineConfig(pes=1, acc_bits=acc_bits, acc_memory_bits=acc_memory_bits,
                          max_rows=max_rows)
    rng = np.random.default_rng(acc_bits + acc_memory_bits + max_rows)
    top = 1 << (acc_bits - 1)
    operations = [(int(rng.random() < 0.7), int(rng.integers(max_rows)),
                   int(rng.random() < 0.7), int(rng.integers(max_rows)),
                   int(rng.integers(-top, top)))
                  for _ in range(150)]
    expected = ref_accumulators(max_rows, operations)
    assert sum(r and w and ra == wa for r, ra, w, wa, _ in operations) > 8     # bypasses
    assert rtl_accumulators(config, operations) == expected
