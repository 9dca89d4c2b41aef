"""hw/broadcast_mask.py: the mask stage writes every landed group into the buffer, a cycle
after it lands (two with link registers), with each PE's lanes of work.

The whole unit's test sees only the groups that reach a PE; here a group that no PE has work
in must still be written (the fetch stage counted it against the buffer's room), and every
field is checked for every mask pattern, not only those a PE receives.
"""

import random

import pytest
from amaranth.sim import Simulator

from sparseforge.compiler.config import EngineConfig
from sparseforge.hw.broadcast_mask import MaskStage


def expected_entry(config, word, bits, sub, pointer):
    lanes = config.scan_lanes
    values = word[sub * lanes:(sub + 1) * lanes]
    masks = [[lane for lane in range(lanes) if values[lane] != 0 and bits[lane][pe]]
             for pe in range(config.pes)]
    entry = {"pointer": pointer, "values": values, "wants": [bool(m) for m in masks]}
    if lanes > 1:
        entry["firsts"] = [m[0] if m else 0 for m in masks]
        entry["rests"] = [sum(1 << lane for lane in m[1:]) for m in masks]
    return entry


def observed_entry(config, data):
    lanes, pes = config.scan_lanes, config.pes
    entry = {"pointer": data.pointer, "values": [data.values[lane] for lane in range(lanes)],
             "wants": [bool(data.wants >> pe & 1) for pe in range(pes)]}
    if lanes > 1:
        entry["firsts"] = [data.firsts[pe] for pe in range(pes)]
        entry["rests"] = [data.rests[pe] for pe in range(pes)]
    return entry


@pytest.mark.parametrize("pes,scan_lanes", [(1, 1), (3, 1), (4, 2), (4, 4), (8, 8)])
@pytest.mark.parametrize("link_registers", [False, True])
def test_masks_every_landed_group(pes, scan_lanes, link_registers):
    config = EngineConfig(pes=pes, scan_lanes=scan_lanes, act_bits=5,
                          link_registers=link_registers, pointer_depth=64)
    dut = MaskStage(config)
    rng = random.Random(pes * 10 + scan_lanes + 100 * link_registers)
    delay = 1 + link_registers
    written = []

    async def testbench(ctx):
        pending = [None] * delay
        empty = 0
        for cycle in range(300):
            landing = rng.random() < 0.7
            # Sparse values and sparse occupancy, so that some groups want no PE at all.
            word = [rng.randint(-16, 15) if rng.random() < 0.4 else 0 for _ in range(pes)]
            bits = [[rng.random() < 0.4 for _ in range(pes)] for _ in range(scan_lanes)]
            sub = rng.randrange(config.groups_per_word)
            pointer = rng.randrange(config.pointer_depth)
            ctx.set(dut.landing.valid, landing)
            ctx.set(dut.landing.sub, sub)
            ctx.set(dut.landing.pointer, pointer)
            ctx.set(dut.activations, word)
            ctx.set(dut.occupancy, [sum(held << pe for pe, held in enumerate(row)) for row in bits])
            expected = pending.pop(0)
            assert ctx.get(dut.w_en) == (expected is not None), f"write at cycle {cycle}"
            if expected is not None:
                assert observed_entry(config, ctx.get(dut.w_data)) == expected
                written.append(expected)
                empty += not any(expected["wants"])
            pending.append(expected_entry(config, word, bits, sub, pointer) if landing
                           else None)
            await ctx.tick()
        assert empty > 0, "no group without work was written"

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    assert len(written) > 150
