"""hw/broadcast_queue.py: a PE queue's credits, counted by the broadcast unit.

A group offered is pushed exactly while the count of free entries is not zero, the count
follows the pushes and the dequeues (from empty to full and back), ``next_full`` says a
cycle ahead that it reaches zero (the offer stage's ``blocked`` register), and with link
registers the pushed group reaches the queue two cycles after the push, as it was, and a
dequeue is counted a cycle after it arrives.
"""

import random

import pytest
from amaranth.sim import Simulator

from sparseforge.compiler.config import EngineConfig
from sparseforge.hw.broadcast_queue import QueueFeed


@pytest.mark.parametrize("fifo_depth", [2, 3, 16])
@pytest.mark.parametrize("link_registers", [False, True])
def test_pushes_while_it_has_credits(fifo_depth, link_registers):
    config = EngineConfig(pes=4, scan_lanes=2, fifo_depth=fifo_depth,
                          link_registers=link_registers, act_bits=4, pointer_depth=64)
    dut = QueueFeed(config)
    rng = random.Random(fifo_depth * 2 + link_registers)
    delay = 2 if link_registers else 0
    seen = {"full": 0, "empty": 0}

    async def testbench(ctx):
        held = 0                                # groups in the queue, as the unit counts them
        outstanding = 0                         # groups pushed and not yet dequeued
        in_flight = [None] * delay              # pushes on their way through the link
        # With link registers a dequeue is counted a cycle after the unit sees it (its own
        # register; the PE's is outside it).
        returning = [False] * (1 if link_registers else 0)
        for cycle in range(1500):
            # Phases of filling and of draining, so that the count goes from end to end.
            filling = (cycle // (4 * fifo_depth)) % 2 == 0
            offered = rng.random() < (0.9 if filling else 0.2)
            dequeued = outstanding > 0 and rng.random() < (0.2 if filling else 0.9)
            group = {"pointer": rng.randrange(64), "values": [rng.randint(-8, 7)] * 2,
                     "first": rng.randrange(2), "rest": rng.randrange(4),
                     "single": rng.randrange(2)}
            ctx.set(dut.offered, offered)
            ctx.set(dut.wants, offered or rng.random() < 0.5)
            ctx.set(dut.group, group)
            ctx.set(dut.dequeued, dequeued)
            pushed = offered and held < fifo_depth
            returning.append(dequeued)
            held += pushed - returning.pop(0)
            outstanding += pushed - dequeued
            assert 0 <= held <= fifo_depth
            seen["full"] += held == fifo_depth
            seen["empty"] += held == 0
            assert ctx.get(dut.next_full) == (held == fifo_depth), f"next_full at {cycle}"
            in_flight.append(group if pushed else None)
            arriving = in_flight.pop(0)
            assert ctx.get(dut.queue.valid) == (arriving is not None), f"push at {cycle}"
            if arriving is not None:
                payload = ctx.get(dut.queue.payload)
                assert (payload.pointer, payload.first, payload.rest) == \
                    (arriving["pointer"], arriving["first"], arriving["rest"])
            await ctx.tick()

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    assert seen["full"] > 10 and seen["empty"] > 10
