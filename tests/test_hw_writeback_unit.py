"""hw/writeback_unit.py: every PE follows the same schedule (``rows`` rows from the layer's
bias base), and each group's requantizer serves its PEs in turn, one per cycle, with the layer's
shift and ReLU."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from sparseforge.compiler.config import EngineConfig
from sparseforge.compiler.numerics import requantize
from sparseforge.hw.requantize import latency
from sparseforge.hw.writeback_unit import WritebackUnit

CONFIGS = {
    "N=2": dict(pes=2),
    "N=4, one requantizer": dict(pes=4, writeback_lanes=1),
    "N=12, three requantizers, two schedules": dict(pes=12, writeback_lanes=3),
    "N=8, link registers": dict(pes=8, writeback_lanes=4, readout_register=True,
                                link_registers=True),
}


def simulate(dut, testbench):
    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()


@pytest.mark.parametrize("name", CONFIGS)
def test_every_pe_follows_one_schedule(name):
    config = EngineConfig(scan_lanes=1, max_features=48, **CONFIGS[name])
    dut = WritebackUnit(config)
    rows, bias_base = 5, 7
    reads = []

    async def testbench(ctx):
        ctx.set(dut.layer, {"rows": rows, "bias_base": bias_base})
        await ctx.tick()                        # the layer's registers take it
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(rows * config.writeback_period + 4):
            schedules = [{field: ctx.get(getattr(schedule, field))
                          for field in ("active", "read", "row", "bias_address", "clear")}
                         for schedule in dut.schedules]
            assert all(schedule == schedules[0] for schedule in schedules)
            if schedules[0]["read"]:
                reads.append((schedules[0]["row"], schedules[0]["bias_address"]))
            await ctx.tick()
        assert not ctx.get(dut.schedules[0].active)

    simulate(dut, testbench)
    first_bias = config.pointer_depth + bias_base
    assert reads == [(row, first_bias + row) for row in range(rows)]


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("shift,relu", [(0, False), (3, True), (9, False)])
def test_groups_requantize_their_pes_in_turn(name, shift, relu):
    """Bursts of readouts, whole rows or cut short; each burst starts at a group's first PE."""
    config = EngineConfig(scan_lanes=1, max_features=48, **CONFIGS[name])
    pes, period = config.pes, config.writeback_period
    groups = pes // period
    dut = WritebackUnit(config)
    rng = np.random.default_rng(pes * 100 + shift * 2 + relu)
    bursts = [int(rng.integers(1, 3 * period + 1)) for _ in range(5)]
    served = [[g * period + t % period for g in range(groups)]
              for burst in bursts for t in range(burst)]
    cycles = len(served)
    acc = rng.integers(-(1 << (config.acc_bits - 1)), 1 << (config.acc_bits - 1),
                       (cycles, pes))
    bias = rng.integers(-(1 << (config.bias_bits - 1)), 1 << (config.bias_bits - 1),
                        (cycles, pes))
    results = []

    async def testbench(ctx):
        ctx.set(dut.layer, {"shift": shift, "relu": relu})
        await ctx.tick()
        valid = []
        for burst in bursts:
            valid += [False] * int(rng.integers(1, 4)) + [True] * burst
        valid += [False] * (latency(config) + 2)
        fed = 0
        for offered in valid:
            for k, readout in enumerate(dut.readouts):
                ctx.set(readout.valid, offered)
                if offered:
                    ctx.set(readout.payload, {"acc": int(acc[fed, k]), "bias": int(bias[fed, k])})
            if ctx.get(dut.results.valid):
                results.append(list(ctx.get(dut.results.payload)))
            fed += offered
            await ctx.tick()

    simulate(dut, testbench)
    expected = [[int(requantize(acc[t, k], bias[t, k], shift, config.act_bits, relu))
                 for k in row] for t, row in enumerate(served)]
    assert results == expected
