"""hw/broadcast.py: the broadcast unit alone, between a model of the activation buffer and
model PE queues that drain at random.

Every PE must receive exactly the groups it has work in (a nonzero activation in a column it
holds entries in), in order, with the right pointer, values and first/rest/single lanes, and
never more than its queue holds; ``idle`` must rise only once every group has reached its
queue.  With queues that drain at once, the scan asks for a group every cycle.
"""

import random
from collections import deque

import pytest
from amaranth.sim import Simulator

from sparseforge.compiler.config import EngineConfig
from sparseforge.compiler.numerics import ceil_div
from sparseforge.hw.activation_buffer import LATENCY
from sparseforge.hw.broadcast import BroadcastUnit


def make_config(pes, scan_lanes, fifo_depth, link_registers):
    return EngineConfig(pes=pes, scan_lanes=scan_lanes, fifo_depth=fifo_depth,
                        link_registers=link_registers, act_bits=6, max_features=40,
                        occupancy_depth=50, pointer_depth=100)


def random_layer(rng, config):
    """Activations (a list of words of ``pes`` values) and occupancy words for a scan of a
    random number of groups, about half the activations zero and half the columns held."""
    groups = rng.randint(1, ceil_div(config.max_features, config.scan_lanes))
    high = (1 << (config.act_bits - 1)) - 1
    words = [[rng.randint(-high - 1, high) if rng.random() < 0.6 else 0
              for _ in range(config.pes)] for _ in range(config.act_words)]
    occupancy = [[[rng.random() < 0.5 for _ in range(config.pes)]
                  for _ in range(config.scan_lanes)] for _ in range(groups)]
    return words, occupancy


def occupancy_word(bits):
    """Pack ``bits[lane][pe]`` as ``isa.occupancy_layout``: lane ``l``, PE ``p`` at bit
    ``l * pes + p``."""
    pes = len(bits[0])
    return sum(1 << (lane * pes + pe) for lane, row in enumerate(bits)
               for pe, held in enumerate(row) if held)


def expected_groups(config, words, occupancy, pointer_base):
    """Per PE, the groups it must receive: (pointer, values, first, rest, single)."""
    lanes = config.scan_lanes
    flat = [value for word in words for value in word]
    expected = [[] for _ in range(config.pes)]
    for group, bits in enumerate(occupancy):
        values = flat[group * lanes:(group + 1) * lanes]
        for pe in range(config.pes):
            work = [lane for lane in range(lanes) if values[lane] != 0 and bits[lane][pe]]
            if work:
                rest = sum(1 << lane for lane in work[1:])
                expected[pe].append((pointer_base + group * lanes, tuple(values), work[0],
                                     rest, rest == 0))
    return expected


def received(config, payload):
    values = tuple(payload.values[lane] for lane in range(config.scan_lanes))
    if config.scan_lanes == 1:
        return (payload.pointer, values, 0, 0, True)
    return (payload.pointer, values, payload.first, payload.rest, bool(payload.single))


def run_scans(config, layers, *, drain_rates, seed, use_init=False):
    """Run one scan per layer (``(words, occupancy, occupancy_base, pointer_base)``), each
    started once the unit is idle.  Returns, per scan, what each PE received, the cycles from
    start to idle and the cycles in which the unit asked for an activation word."""
    rng = random.Random(seed)
    init = None
    if use_init:
        assert len(layers) == 1
        _, occupancy, base, _ = layers[0]
        init = [0] * base + [occupancy_word(bits) for bits in occupancy]
    dut = BroadcastUnit(config, occupancy=init)
    results = []

    async def testbench(ctx):
        memory = {}
        answers = deque([None] * LATENCY)        # the activation buffer's read pipeline
        queues = [deque() for _ in range(config.pes)]
        dequeue_link = deque([0])
        cycle = 0

        async def tick():
            """One cycle of the activation buffer and of the PEs' queues around the unit."""
            nonlocal cycle
            answer = answers.popleft()
            # Junk outside the answer's cycle: the unit must take the word exactly then.
            ctx.set(dut.activations.data,
                    answer if answer is not None else [rng.randint(-8, 7)
                                                      for _ in range(config.pes)])
            popped = 0
            for pe, queue in enumerate(queues):
                if queue and rng.random() < drain_rates[pe]:
                    queue.popleft()
                    popped |= 1 << pe
            # With link registers the PE registers its dequeues on their way back.
            dequeued = popped if not config.link_registers else dequeue_link.popleft()
            dequeue_link.append(popped)
            ctx.set(dut.dequeued, dequeued)
            for pe, queue in enumerate(queues):
                if ctx.get(dut.queues[pe].valid):
                    queue.append(received(config, ctx.get(dut.queues[pe].payload)))
                    arrivals[pe].append(queue[-1])
                    assert len(queue) <= config.fifo_depth, f"PE {pe}'s queue overflows"
            asked = ctx.get(dut.activations.en)
            if asked:
                asks.append(cycle)
            answers.append(memory[ctx.get(dut.activations.addr)] if asked else None)
            idle = ctx.get(dut.idle)
            await ctx.tick()
            cycle += 1
            return idle

        for words, occupancy, occupancy_base, pointer_base in layers:
            memory = dict(enumerate(words))
            arrivals = [[] for _ in range(config.pes)]
            asks = []
            if not use_init:
                for group, bits in enumerate(occupancy):
                    ctx.set(dut.occupancy_write.en, 1)
                    ctx.set(dut.occupancy_write.addr, occupancy_base + group)
                    ctx.set(dut.occupancy_write.data, occupancy_word(bits))
                    await tick()
                ctx.set(dut.occupancy_write.en, 0)
                await tick()                    # with link registers the last write lands now
            ctx.set(dut.groups, len(occupancy))
            ctx.set(dut.occupancy_base, occupancy_base)
            ctx.set(dut.pointer_base, pointer_base)
            ctx.set(dut.start, 1)
            start = cycle
            await tick()
            ctx.set(dut.start, 0)
            expected = expected_groups(config, words, occupancy, pointer_base)
            while not await tick():
                assert cycle - start < 40 * (len(occupancy) + 10), "the scan never ends"
            results.append((arrivals, cycle - 1 - start, [c - start for c in asks]))
            for pe in range(config.pes):
                assert arrivals[pe] == expected[pe], f"PE {pe}'s groups"
            # Idle for good: nothing more arrives while the queues drain.
            for _ in range(3):
                assert await tick()
            assert [len(arrival) for arrival in arrivals] == [len(e) for e in expected]

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    return results


CASES = [
    # pes, scan_lanes, fifo_depth, link_registers
    (1, 1, 2, False),
    (3, 1, 3, False),
    (4, 2, 2, False),
    (4, 4, 8, False),
    (8, 2, 3, False),
    (8, 8, 2, False),
    (2, 1, 2, True),
    (4, 2, 3, True),
    (8, 8, 8, True),
]


@pytest.mark.parametrize("pes,scan_lanes,fifo_depth,link_registers", CASES)
def test_every_pe_gets_exactly_its_groups(pes, scan_lanes, fifo_depth, link_registers):
    """Three scans back to back (occupancy written over the port before each), queues that
    drain at different random rates: each PE's groups in order, no queue overflows."""
    config = make_config(pes, scan_lanes, fifo_depth, link_registers)
    seed = pes * 1000 + scan_lanes * 100 + fifo_depth * 10 + link_registers
    rng = random.Random(seed)
    layers = []
    for _ in range(3):
        words, occupancy = random_layer(rng, config)
        groups = len(occupancy)
        layers.append((words, occupancy, rng.randint(0, config.occupancy_depth - groups),
                       rng.randint(0, config.pointer_depth - groups * scan_lanes)))
    drain_rates = [rng.choice([0.1, 0.4, 0.9]) for _ in range(pes)]
    results = run_scans(config, layers, drain_rates=drain_rates, seed=seed)
    delivered = sum(len(queue) for arrivals, _, _ in results for queue in arrivals)
    assert delivered > 0


@pytest.mark.parametrize("link_registers", [False, True])
def test_initial_occupancy(link_registers):
    """The constructor's occupancy words are there without a write."""
    config = make_config(4, 2, 3, link_registers)
    rng = random.Random(7)
    words, occupancy = random_layer(rng, config)
    results = run_scans(config, [(words, occupancy, 5, 11)], drain_rates=[0.5] * 4, seed=7,
                        use_init=True)
    assert sum(len(queue) for queue in results[0][0]) > 0


@pytest.mark.parametrize("pes,scan_lanes,link_registers",
                         [(1, 1, False), (4, 2, False), (8, 8, False), (4, 1, True),
                          (8, 4, True)])
def test_scan_asks_every_cycle(pes, scan_lanes, link_registers):
    """With every column held and queues that drain at once (deep enough for the credits in
    flight), the unit asks for a group in each of ``groups`` consecutive cycles from the
    cycle after the start, and is idle a fixed few cycles after the last."""
    config = make_config(pes, scan_lanes, 8, link_registers)
    groups = ceil_div(config.max_features, scan_lanes)
    words = [[1] * pes for _ in range(config.act_words)]
    occupancy = [[[True] * pes for _ in range(scan_lanes)] for _ in range(groups)]
    (arrivals, cycles, asks), = run_scans(config, [(words, occupancy, 0, 0)],
                                          drain_rates=[1.0] * pes, seed=1)
    assert asks == list(range(1, groups + 1))
    # After the last ask: the request registered, the words landing, landed, two cycles to
    # the buffer's output, offered (and popped); the link registers add the register in front
    # of the buffer and the two out to the PE.
    assert cycles == groups + 6 + 3 * link_registers
    assert all(len(queue) == groups for queue in arrivals)


def test_empty_scan_is_idle_at_once():
    """A layer of no groups asks for nothing."""
    config = make_config(4, 2, 2, False)
    (arrivals, cycles, asks), = run_scans(config, [([[0] * 4] * config.act_words, [], 0, 0)],
                                          drain_rates=[1.0] * 4, seed=3)
    assert asks == [] and cycles <= 2
