"""hw/broadcast_offer.py: the offer stage holds a group back only for the PEs that want it and
have no room.

Fed from a model of the buffer, into model queues that drain at different rates (one PE's very
slowly): every PE receives exactly the groups that want it, in order; and without link
registers, cycle by cycle, a PE that wants the head, has not taken it and has a free entry
takes it at once whatever the other PEs do, and the head leaves the buffer in the very cycle
the last PE that wants it takes it (at once when none does).
"""

import random
from collections import deque

import pytest
from amaranth.sim import Simulator

from sparseforge.compiler.config import EngineConfig
from sparseforge.hw.broadcast_offer import OfferStage


def random_entry(rng, config):
    lanes, pes = config.scan_lanes, config.pes
    wants = [rng.random() < 0.4 for _ in range(pes)]
    entry = {"pointer": rng.randrange(config.pointer_depth),
             "values": [rng.randint(-8, 7) for _ in range(lanes)],
             "wants": sum(want << pe for pe, want in enumerate(wants))}
    if lanes > 1:
        masks = [rng.randrange(1, 1 << lanes) if want else 0 for want in wants]
        entry["firsts"] = [(mask & -mask).bit_length() - 1 if mask else 0 for mask in masks]
        entry["rests"] = [mask & (mask - 1) for mask in masks]
    return entry


def group_for(config, entry, pe):
    """What PE ``pe`` must receive of ``entry``."""
    if config.scan_lanes == 1:
        return (entry["pointer"], tuple(entry["values"]))
    rest = entry["rests"][pe]
    return (entry["pointer"], tuple(entry["values"]), entry["firsts"][pe], rest, rest == 0)


def received(config, payload):
    values = tuple(payload.values[lane] for lane in range(config.scan_lanes))
    if config.scan_lanes == 1:
        return (payload.pointer, values)
    return (payload.pointer, values, payload.first, payload.rest, bool(payload.single))


@pytest.mark.parametrize("pes,scan_lanes,fifo_depth", [(1, 1, 2), (3, 1, 2), (4, 2, 3),
                                                       (8, 4, 2), (8, 8, 4)])
@pytest.mark.parametrize("link_registers", [False, True])
def test_offers_each_group_to_the_pes_that_want_it(pes, scan_lanes, fifo_depth,
                                                   link_registers):
    config = EngineConfig(pes=pes, scan_lanes=scan_lanes, fifo_depth=fifo_depth,
                          link_registers=link_registers, act_bits=4, pointer_depth=64)
    dut = OfferStage(config)
    rng = random.Random(pes * 100 + scan_lanes * 10 + fifo_depth + 1000 * link_registers)
    entries = [random_entry(rng, config) for _ in range(150)]
    entries[3]["wants"] = 0                             # a group that wants no PE
    expected = [[group_for(config, e, pe) for e in entries if e["wants"] >> pe & 1]
                for pe in range(pes)]
    drain_rates = [0.05] + [rng.choice([0.3, 0.9]) for _ in range(pes - 1)]
    arrivals = [[] for _ in range(pes)]

    def head_after(buffer, arriving, popped):
        # The buffer's head next cycle (the offer stage takes it a cycle ahead).
        following = list(buffer)[1 if popped else 0:] + ([arriving] if arriving else [])
        return following[0] if following else empty

    empty = {**random_entry(rng, config), "wants": 0}

    async def testbench(ctx):
        buffer = deque()
        waiting = deque(entries)
        arriving = None
        queues = [deque() for _ in range(pes)]
        dequeue_link = deque([0])                       # the PE's register on `dequeued`
        taken = [False] * pes                           # PEs that received the head
        for cycle in range(3000):
            if arriving:
                buffer.append(arriving)
            arriving = waiting.popleft() if waiting and rng.random() < 0.6 else None
            # The buffer's output: valid while it holds a group, which stays until popped.
            ctx.set(dut.head.valid, bool(buffer))
            if buffer:
                ctx.set(dut.head.payload, buffer[0])
            ctx.set(dut.next_if_popped, head_after(buffer, arriving, True))
            ctx.set(dut.next_if_kept, head_after(buffer, arriving, False))
            credits = [fifo_depth - len(queue) for queue in queues]
            popped = 0
            for pe, queue in enumerate(queues):
                if queue and rng.random() < drain_rates[pe]:
                    queue.popleft()
                    popped |= 1 << pe
            dequeued = popped if not link_registers else dequeue_link.popleft()
            dequeue_link.append(popped)
            ctx.set(dut.dequeued, dequeued)

            pushed = [bool(ctx.get(dut.queues[pe].valid)) for pe in range(pes)]
            for pe in range(pes):
                if pushed[pe]:
                    queues[pe].append(received(config, ctx.get(dut.queues[pe].payload)))
                    arrivals[pe].append(queues[pe][-1])
                    assert len(queues[pe]) <= fifo_depth, f"PE {pe}'s queue overflows"
            pop = ctx.get(dut.pop)
            assert pop == (bool(buffer) and ctx.get(dut.head.ready))
            if not link_registers:
                wants = [bool(buffer) and buffer[0]["wants"] >> pe & 1 for pe in range(pes)]
                for pe in range(pes):
                    take = wants[pe] and not taken[pe] and credits[pe] > 0
                    assert pushed[pe] == take, f"PE {pe}'s push at cycle {cycle}"
                    taken[pe] |= pushed[pe]
                assert pop == (bool(buffer) and all(taken[pe] or not wants[pe]
                                                    for pe in range(pes))), f"pop at {cycle}"
            if pop:
                buffer.popleft()
                taken = [False] * pes
            await ctx.tick()
            if (not waiting and not buffer and not arriving
                    and list(map(len, arrivals)) == list(map(len, expected))):
                break
        else:
            raise AssertionError("the groups did not all arrive")
        ctx.set(dut.head.valid, 0)
        for _ in range(4):                              # and nothing more
            assert not any(ctx.get(queue.valid) for queue in dut.queues)
            await ctx.tick()

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    for pe in range(pes):
        assert arrivals[pe] == expected[pe], f"PE {pe}'s groups"
