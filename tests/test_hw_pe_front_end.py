"""hw/pe_front_end.py: the lanes with work of each queued group, in order, each with its
column word; a column every cycle while the walker takes them."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from sparseforge.compiler.config import EngineConfig
from sparseforge.hw.pe_front_end import FrontEnd


def column_word(config, index):
    """The parameter memory's word at pointer index ``index`` (any function of it will do)."""
    start, count = (index * 3) % (1 << config.pointer_bits), index % 5 + 1
    return start | count << config.pointer_bits


def random_groups(rng, config, number):
    """Groups as the broadcast unit queues them, and the lanes with work of each."""
    lanes = config.scan_lanes
    groups, work = [], []
    for g in range(number):
        values = [int(v) for v in rng.integers(-128, 128, lanes)]
        mask = [bool(b) for b in rng.random(lanes) < 0.5]
        if not any(mask):
            mask[int(rng.integers(lanes))] = True
        on = [lane for lane in range(lanes) if mask[lane]]
        group = {"pointer": g * lanes, "values": values}
        if lanes > 1:
            group.update(first=on[0], rest=sum(1 << lane for lane in on[1:]),
                         single=len(on) == 1)
        groups.append(group)
        work.append([(g * lanes + lane, values[lane]) for lane in on])
    return groups, work


def rtl_front_end(config, groups, *, stall, seed, limit=400):
    """Push ``groups`` into the queue as fast as it takes them, answer the column reads as the
    parameter memory does, take the columns with probability ``1 - stall``; return the
    cycles of the columns taken, the columns ((start, count), value), and the dequeues."""
    dut = FrontEnd(config)
    rng = np.random.default_rng(seed)
    taken_at, columns = [], []
    dequeued = 0

    async def testbench(ctx):
        nonlocal dequeued
        pushed = 0
        cycle = 0
        while pushed < len(groups) or ctx.get(dut.busy):
            assert cycle < limit
            ctx.set(dut.queue.valid, pushed < len(groups))
            if pushed < len(groups):
                ctx.set(dut.queue.payload, groups[pushed])
            ctx.set(dut.columns.ready, rng.random() >= stall)
            if ctx.get(dut.columns.valid) and ctx.get(dut.columns.ready):
                column = ctx.get(dut.columns.payload)
                taken_at.append(cycle)
                columns.append(((column.column.start, column.column.count), column.value))
            pushed += ctx.get(dut.queue.valid) and ctx.get(dut.queue.ready)
            dequeued += ctx.get(dut.dequeued)
            read = ctx.get(dut.parameter_read.en), ctx.get(dut.parameter_read.addr)
            await ctx.tick()
            if read[0]:
                ctx.set(dut.parameter_read.data, column_word(config, read[1]))
            cycle += 1

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    return taken_at, columns, dequeued


def ref_columns(config, work):
    mask = (1 << config.pointer_bits) - 1
    return [((column_word(config, index) & mask, column_word(config, index) >> config.pointer_bits),
             value) for lanes in work for index, value in lanes]


@pytest.mark.parametrize("lanes", [1, 2, 4])
@pytest.mark.parametrize("stall", [0.0, 0.5])
def test_issues_the_lanes_with_work_in_order(lanes, stall):
    """Each group's lanes with work, lowest first, each with its value and the column word at
    its pointer index; every group dequeued once.  With the walker always ready and the queue
    never empty, a column every cycle (no bubble between lanes or groups)."""
    config = EngineConfig(pes=4, scan_lanes=lanes, pointer_depth=128, entry_depth=256,
                          fifo_depth=4)
    rng = np.random.default_rng(lanes * 10 + int(stall * 10))
    groups, work = random_groups(rng, config, 24)
    taken_at, columns, dequeued = rtl_front_end(config, groups, stall=stall, seed=lanes)
    assert columns == ref_columns(config, work)
    assert dequeued == len(groups)
    if stall == 0.0:
        assert taken_at == list(range(taken_at[0], taken_at[0] + len(columns)))
        # The queue's write-to-read cycle and the column word's read.
        assert taken_at[0] == 2 + (lanes > 1)

