"""hw/pe_walker.py: a column's entries one per cycle, and back-to-back columns without a
bubble between them."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from sparseforge.compiler.config import EngineConfig
from sparseforge.hw.pe_walker import EntryWalker


def rtl_walk(config, columns, *, idle=0.0, seed=0, limit=400):
    """Offer ``columns`` ((start, count, value) each) to the walker, a column in a cycle with
    probability ``1 - idle``; return per cycle (entry_addr, value, first) of each step, or
    None in a cycle without one."""
    dut = EntryWalker(config)
    rng = np.random.default_rng(seed)
    cycles = []

    async def testbench(ctx):
        offered = 0
        offering = False
        for _ in range(limit):
            offering = offered < len(columns) and (offering or rng.random() >= idle)
            if offering:
                start, count, value = columns[offered]
                ctx.set(dut.columns.valid, 1)
                ctx.set(dut.columns.payload,
                        {"column": {"start": start, "count": count}, "value": value})
            else:
                ctx.set(dut.columns.valid, 0)
            assert ctx.get(dut.columns.ready) == (not ctx.get(dut.busy))
            taken = ctx.get(dut.columns.valid) and ctx.get(dut.columns.ready)
            if ctx.get(dut.steps.valid):
                step = ctx.get(dut.steps.payload)
                cycles.append((ctx.get(dut.entry_addr), step.value, step.first))
            else:
                cycles.append(None)
            await ctx.tick()
            if taken:
                offered += 1
                offering = False
        assert offered == len(columns)

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    while cycles and cycles[-1] is None:
        cycles.pop()
    return cycles


def ref_walk(columns):
    """Each column's entries in order: (address, value, first)."""
    return [(start + i, value, i == 0) for start, count, value in columns for i in range(count)]


def random_columns(rng, number, max_count):
    starts = np.cumsum(rng.integers(0, 8, number))
    return [(int(s), int(rng.integers(1, max_count + 1)), int(rng.integers(-128, 128)))
            for s in starts]


@pytest.mark.parametrize("max_count", [1, 2, 5])
def test_back_to_back_columns_cost_no_bubbles(max_count):
    """With the next column always offered, the walker reads one entry in every cycle from the
    first column's first entry to the last column's last."""
    config = EngineConfig(pes=1, entry_depth=512, max_column_entries=8)
    columns = random_columns(np.random.default_rng(max_count), 30, max_count)
    cycles = rtl_walk(config, columns)
    assert None not in cycles
    assert cycles == ref_walk(columns)


@pytest.mark.parametrize("idle", [0.3, 0.7])
def test_columns_offered_with_gaps(idle):
    """Columns offered with idle cycles between them: the same entries, in order, each column's
    first flagged; an empty column is taken and skipped."""
    config = EngineConfig(pes=1, entry_depth=512, max_column_entries=8)
    rng = np.random.default_rng(int(idle * 10))
    columns = random_columns(rng, 25, 6)
    columns[3] = (columns[3][0], 0, 5)
    columns[10] = (columns[10][0], 0, -5)
    cycles = rtl_walk(config, columns, idle=idle, seed=int(idle * 10))
    assert [c for c in cycles if c is not None] == ref_walk(columns)
