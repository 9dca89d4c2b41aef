"""hw/broadcast_fetch.py: the fetch stage against a model of its room counter.

The stage must ask for a group exactly when a scan has groups left and the buffer has room
for one more, counting the groups asked for and not yet popped (a pop counted a cycle late),
so that the buffer never overflows and a stall lasts no longer than the room takes to come
back; each group's word, occupancy address, sub-word and pointer must follow in order, the
occupancy a cycle after the ask and the landing two.
"""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from sparseforge.compiler.config import EngineConfig
from sparseforge.compiler.numerics import ceil_div
from sparseforge.hw.broadcast_fetch import FetchStage
from sparseforge.sim.reference.cycles import _ZeroSkip


async def start_scan(ctx, dut, rng, config, groups, columns):
    """Start a scan of ``groups`` groups (``columns`` columns) at random bases; returns the
    occupancy and pointer bases."""
    occupancy_base = rng.randint(0, config.occupancy_depth - groups)
    pointer_base = rng.randint(0, config.pointer_depth - columns)
    ctx.set(dut.groups, groups)
    ctx.set(dut.occupancy_base, occupancy_base)
    ctx.set(dut.pointer_base, pointer_base)
    ctx.set(dut.start, 1)
    await ctx.tick()
    ctx.set(dut.start, 0)
    return occupancy_base, pointer_base


@pytest.mark.parametrize("pes,scan_lanes", [(1, 1), (4, 1), (4, 2), (8, 8)])
@pytest.mark.parametrize("depth", [2, 3, 7])
@pytest.mark.parametrize("pop_rate", [0.3, 1.0])
def test_asks_while_the_buffer_has_room(pes, scan_lanes, depth, pop_rate):
    config = EngineConfig(pes=pes, scan_lanes=scan_lanes, max_features=48,
                          occupancy_depth=60, pointer_depth=120)
    dut = FetchStage(config, buffer_depth=depth)
    rng = random.Random(pes * 100 + scan_lanes * 10 + depth + int(pop_rate * 1000))
    lanes, per_word = config.scan_lanes, config.groups_per_word
    scans = []

    async def testbench(ctx):
        for _ in range(3):
            groups = rng.randint(0, ceil_div(config.max_features, lanes))
            occupancy_base, pointer_base = await start_scan(ctx, dut, rng, config, groups,
                                                            groups * lanes)
            asks, pops = [], []                 # cycle numbers, from the cycle after start
            landed = 0                          # groups through the landing (in the buffer)
            stalls = 0
            for cycle in range(12 * (groups + depth)):
                # Pop only a group that has reached the buffer (asked three cycles ago).
                pop = landed > len(pops) and rng.random() < pop_rate
                ctx.set(dut.pop, pop)
                room = depth - len(asks) + sum(1 for c in pops if c < cycle - 1)
                expected_ask = len(asks) < groups and room > 0
                assert 0 <= room <= depth
                assert ctx.get(dut.activations.en) == expected_ask, f"ask at cycle {cycle}"
                if expected_ask:
                    group = len(asks)
                    assert ctx.get(dut.activations.addr) == group // per_word
                    asks.append(cycle)
                elif len(asks) < groups:
                    stalls += 1
                # The occupancy read a cycle after the ask, the landing a cycle after that.
                occupancy_asked = cycle - 1 in asks
                assert ctx.get(dut.occupancy.en) == occupancy_asked
                assert ctx.get(dut.asked) == occupancy_asked
                if occupancy_asked:
                    group = asks.index(cycle - 1)
                    assert ctx.get(dut.occupancy.addr) == occupancy_base + group
                assert ctx.get(dut.landing.valid) == (cycle - 2 in asks)
                if cycle - 2 in asks:
                    group = asks.index(cycle - 2)
                    assert ctx.get(dut.landing.sub) == group % per_word
                    assert ctx.get(dut.landing.pointer) == pointer_base + group * lanes
                    landed += 1
                if pop:
                    pops.append(cycle)
                await ctx.tick()
                if len(pops) == groups and not ctx.get(dut.running):
                    break
            assert len(asks) == groups and len(pops) == groups
            assert not ctx.get(dut.running)
            ctx.set(dut.pop, 0)
            await ctx.tick()                    # the last pop is counted
            scans.append((groups, stalls))

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    assert len(scans) == 3
    # Popped as soon as it has landed, a group holds its room for five cycles (the ask, the
    # occupancy read, the landing, the pop, the pop counted): five entries ask every cycle.
    if depth >= 5 and pop_rate == 1:
        assert all(stalls == 0 for _, stalls in scans)
    elif max(groups for groups, _ in scans) > depth:
        assert any(stalls for _, stalls in scans), "the room never ran out"



@pytest.mark.parametrize("pes", [1, 2, 8])
@pytest.mark.parametrize("density", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("pop_rate", [0.3, 1.0])
def test_skipping_zeros_asks_for_the_nonzero_activations_as_the_cycle_model_does(
        pes, density, pop_rate):
    """``skip_zeros``: each cycle the stage asks for what the cycle model's walk
    (``sim/reference/cycles._ZeroSkip``) asks for, the nonzero columns in order, reading the
    nonzero map (a dict here, answered a cycle after a read, as the block RAM does) a word at
    a time; lanes of the last word past the layer, set in the map, are never asked for."""
    config = EngineConfig(pes=pes, scan_lanes=1, max_features=48, occupancy_depth=60,
                          pointer_depth=120, skip_zeros=True)
    depth = 7
    dut = FetchStage(config, buffer_depth=depth)
    rng = random.Random(pes * 1000 + int(density * 100) + int(pop_rate * 10))

    async def testbench(ctx):
        for _ in range(3):
            groups = rng.randint(1, config.max_features)
            active = [rng.random() < density for _ in range(config.act_words * pes)]
            words = {w: sum(active[w * pes + lane] << lane for lane in range(pes))
                     for w in range(config.act_words)}
            model = _ZeroSkip(config, np.array(active[:groups]))
            occupancy_base, pointer_base = await start_scan(ctx, dut, rng, config, groups,
                                                            groups)
            asks, pops = [], []                 # (cycle, column) asked; cycles popped
            for cycle in range(20 * (groups + depth)):
                landed = sum(1 for when, _ in asks if when <= cycle - 3)
                pop = landed > len(pops) and rng.random() < pop_rate
                ctx.set(dut.pop, pop)
                room = depth - len(asks) + sum(1 for when in pops if when < cycle - 1)
                expected = model.can_ask and room > 0
                assert ctx.get(dut.activations.en) == expected, f"ask at cycle {cycle}"
                column = model.step(expected)
                if expected:
                    assert ctx.get(dut.activations.addr) == column // pes
                    asks.append((cycle, column))
                for when, asked in asks[-3:]:
                    if when == cycle - 1:
                        assert ctx.get(dut.occupancy.addr) == occupancy_base + asked
                    if when == cycle - 2:
                        assert ctx.get(dut.landing.valid)
                        assert ctx.get(dut.landing.sub) == asked % pes
                        assert ctx.get(dut.landing.pointer) == pointer_base + asked
                read, address = ctx.get(dut.nonzero.en), ctx.get(dut.nonzero.addr)
                if pop:
                    pops.append(cycle)
                await ctx.tick()
                if read:
                    ctx.set(dut.nonzero.data, words[address])
                if model.done and len(pops) == len(asks) and not ctx.get(dut.running):
                    break
            assert [column for _, column in asks] == [c for c in range(groups) if active[c]]
            assert not ctx.get(dut.running)
            ctx.set(dut.pop, 0)
            await ctx.tick()                    # the last pop is counted
            await ctx.tick()

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
