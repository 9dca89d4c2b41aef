"""hw/pe_mac.py: each entry's product lands in the row its zero runs name, back-to-back
products for one row included; the write-back reads the rows out and clears them."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from sparseforge.compiler.config import EngineConfig
from sparseforge.hw.pe_mac import MultiplyAccumulate


def random_columns(rng, config, number):
    """Columns of (value, rows): a nonzero activation and the increasing rows it meets; the
    first row of a column is often the previous column's last (a back-to-back update)."""
    columns = []
    for _ in range(number):
        rows = sorted(rng.choice(config.max_rows, int(rng.integers(1, 5)), replace=False))
        if columns and rng.random() < 0.4:
            rows = sorted({columns[-1][1][-1], *rows})
        columns.append((int(rng.integers(-128, 128)), [int(r) for r in rows]))
    return columns


def entries_of(rng, config, columns):
    """The walker's steps for ``columns``: (value, first, zero_run, code) per entry."""
    steps = []
    for value, rows in columns:
        previous = -1
        for row in rows:
            assert row - previous - 1 <= config.max_zero_run
            steps.append((value, previous < 0, row - previous - 1,
                          int(rng.integers(0, config.codebook_size))))
            previous = row
    return steps


def ref_accumulate(config, columns, steps, codebook):
    acc = np.zeros(config.max_rows, dtype=np.int64)
    rows = [row for _, column_rows in columns for row in column_rows]
    for (value, _, _, code), row in zip(steps, rows):
        acc[row] += value * codebook[code]
    return acc


def rtl_accumulate(config, steps, codebook, *, idle, seed):
    """Feed the steps (the entry word a cycle after its step, as the entry memory answers),
    then read every row out twice: after the products, and after the clear."""
    dut = MultiplyAccumulate(config)
    rng = np.random.default_rng(seed)
    readouts = []

    async def writeback(ctx):
        # The schedule's timing (hw/writeback.py): a row read every cycle, cleared the next.
        wb = dut.writeback
        ctx.set(wb.active, 1)
        rows = []
        for row in range(config.max_rows + 1):
            ctx.set(wb.read, row < config.max_rows)
            ctx.set(wb.row, min(row, config.max_rows - 1))
            ctx.set(wb.clear, row > 0)
            ctx.set(wb.clear_row, max(row - 1, 0))
            await ctx.tick()
            if row < config.max_rows:
                rows.append(ctx.get(dut.acc))
        ctx.set(wb.active, 0)
        ctx.set(wb.clear, 0)
        return rows

    async def testbench(ctx):
        ctx.set(dut.codebook, [int(c) for c in codebook])
        pending = list(steps)
        entry = None            # the entry word the memory shows from the next edge
        while pending or entry is not None:
            if pending and rng.random() >= idle:
                value, first, zero_run, code = pending.pop(0)
                ctx.set(dut.steps.valid, 1)
                ctx.set(dut.steps.payload, {"value": value, "first": first})
                word = {"zero_run": zero_run, "weight": int(codebook[code])} \
                    if config.decoded_weights else {"zero_run": zero_run, "code": code}
            else:
                ctx.set(dut.steps.valid, 0)
                word = None
            await ctx.tick()
            entry = word
            if entry is not None:
                ctx.set(dut.entry, entry)
        ctx.set(dut.steps.valid, 0)
        while ctx.get(dut.busy):
            await ctx.tick()
        readouts.append(await writeback(ctx))
        readouts.append(await writeback(ctx))

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    return readouts


@pytest.mark.parametrize("decoded_weights,acc_memory_bits", [(False, 0), (True, 16)])
@pytest.mark.parametrize("idle", [0.0, 0.5])
def test_accumulates_into_the_right_rows(decoded_weights, acc_memory_bits, idle):
    config = EngineConfig(pes=1, max_rows=12, decoded_weights=decoded_weights,
                          acc_memory_bits=acc_memory_bits)
    rng = np.random.default_rng(7 + decoded_weights + int(idle * 10))
    codebook = rng.integers(-128, 128, config.codebook_size)
    codebook[0] = 0
    columns = random_columns(rng, config, 40)
    steps = entries_of(rng, config, columns)
    products, cleared = rtl_accumulate(config, steps, codebook, idle=idle, seed=len(steps))
    expected = ref_accumulate(config, columns, steps, codebook)
    assert np.count_nonzero(expected) > config.max_rows // 2
    np.testing.assert_array_equal(products, expected)
    np.testing.assert_array_equal(cleared, np.zeros(config.max_rows))
