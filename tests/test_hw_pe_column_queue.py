"""hw/pe_column_queue.py: two columns, first in first out, its ready and valid from its level
alone."""

from collections import deque

import numpy as np
import pytest
from amaranth.sim import Simulator

from sparseforge.compiler.config import EngineConfig
from sparseforge.hw.pe_column_queue import COLUMN_QUEUE_DEPTH, ColumnQueue


@pytest.mark.parametrize("push_rate,pop_rate", [(0.9, 0.9), (0.9, 0.3), (0.3, 0.9)])
def test_first_in_first_out(push_rate, pop_rate):
    """Random pushes and pops: the columns leave in order; ``i.ready`` is "fewer than two held"
    and ``o.valid`` "one held", whatever the other side does in the same cycle."""
    config = EngineConfig(pes=1, entry_depth=256, max_column_entries=16)
    dut = ColumnQueue(config)
    rng = np.random.default_rng(int(push_rate * 10) * 10 + int(pop_rate * 10))
    words = [{"column": {"start": int(s), "count": int(c)}, "value": int(v)}
             for s, c, v in zip(rng.integers(0, 256, 60), rng.integers(0, 17, 60),
                                rng.integers(-128, 128, 60))]
    popped = []

    async def testbench(ctx):
        model = deque()
        pushed = 0
        for _ in range(400):
            ctx.set(dut.i.valid, pushed < len(words) and rng.random() < push_rate)
            if pushed < len(words):
                ctx.set(dut.i.payload, words[pushed])
            ctx.set(dut.o.ready, rng.random() < pop_rate)
            assert ctx.get(dut.i.ready) == (len(model) < COLUMN_QUEUE_DEPTH)
            assert ctx.get(dut.o.valid) == ctx.get(dut.busy) == (len(model) > 0)
            push = ctx.get(dut.i.valid) and ctx.get(dut.i.ready)
            pop = ctx.get(dut.o.valid) and ctx.get(dut.o.ready)
            if pop:
                head = ctx.get(dut.o.payload)
                popped.append({"column": {"start": head.column.start,
                                          "count": head.column.count}, "value": head.value})
                assert popped[-1] == model.popleft()
            if push:
                model.append(words[pushed])
                pushed += 1
            await ctx.tick()

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    assert len(popped) > 30
    assert popped == words[:len(popped)]
