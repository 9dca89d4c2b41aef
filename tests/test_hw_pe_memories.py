"""hw/pe_memories.py: the program image's contents at their addresses, and each host write in
the memory its target names (a cycle later with link registers)."""

import numpy as np
import pytest
from amaranth.lib import data
from amaranth.sim import Simulator

from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig
from sparseforge.hw.pe_memories import PEMemories, Target


def small_config(**flags):
    return EngineConfig(pes=1, entry_depth=32, pointer_depth=16, bias_depth=8, max_rows=8,
                        **flags)


def simulate(dut, testbench):
    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()


async def read_entry(ctx, dut, address):
    ctx.set(dut.entry_read.addr, address)
    await ctx.tick()
    return ctx.get(dut.entry_read.data).as_value().value


async def read_parameter(ctx, dut, address):
    ctx.set(dut.parameter_read.addr, address)
    ctx.set(dut.parameter_read.en, 1)
    await ctx.tick()
    ctx.set(dut.parameter_read.en, 0)
    return ctx.get(dut.parameter_read.data)


@pytest.mark.parametrize("decoded_weights", [False, True])
def test_initial_contents(decoded_weights):
    """Entries at their indices; column word ``(p[j], p[j+1] - p[j])`` at pointer index ``j``;
    the biases after the column words, in ``bias_bits`` two's complement."""
    config = small_config(decoded_weights=decoded_weights)
    rng = np.random.default_rng(3 + decoded_weights)
    entries = rng.integers(0, 1 << isa.entry_memory_layout(config).size, 20)
    pointers = np.cumsum([0] + list(rng.integers(0, 4, 9)))
    biases = rng.integers(-(1 << 15), 1 << 15, 5)
    dut = PEMemories(config, entries=entries, pointers=pointers, biases=biases)
    column = isa.column_layout(config)
    seen = {}

    async def testbench(ctx):
        seen["entries"] = [await read_entry(ctx, dut, a) for a in range(len(entries))]
        seen["columns"] = [data.Const(column, await read_parameter(ctx, dut, j))
                           for j in range(len(pointers) - 1)]
        seen["biases"] = [await read_parameter(ctx, dut, config.pointer_depth + r)
                          for r in range(len(biases))]

    simulate(dut, testbench)
    assert seen["entries"] == list(entries)
    assert [(c.start, c.count) for c in seen["columns"]] == \
        [(int(pointers[j]), int(pointers[j + 1] - pointers[j])) for j in range(len(pointers) - 1)]
    assert seen["biases"] == [int(b) & 0xFFFF for b in biases]


@pytest.mark.parametrize("link_registers", [False, True])
def test_host_write_lands_in_its_target(link_registers):
    """A write to each target changes that memory's word only; with link registers it lands a
    cycle later (a read right after it still sees the old word)."""
    config = small_config(link_registers=link_registers)
    dut = PEMemories(config, entries=[0] * 32, pointers=[0] * 16, biases=[0] * 8)
    seen = []

    async def write(ctx, target, address, value):
        ctx.set(dut.write.en, 1)
        ctx.set(dut.write.target, target)
        ctx.set(dut.write.addr, address)
        ctx.set(dut.write.data, value)
        await ctx.tick()
        ctx.set(dut.write.en, 0)

    async def testbench(ctx):
        await write(ctx, Target.ENTRIES, 3, 0x5A)
        seen.append(await read_entry(ctx, dut, 3))      # the next cycle
        seen.append(await read_entry(ctx, dut, 3))      # the one after
        await write(ctx, Target.POINTERS, 3, 0x1234)
        seen.append(await read_parameter(ctx, dut, 3))
        seen.append(await read_parameter(ctx, dut, 3))
        await write(ctx, Target.BIASES, 3, 0xBEEF)
        seen.append(await read_parameter(ctx, dut, config.pointer_depth + 3))
        seen.append(await read_parameter(ctx, dut, config.pointer_depth + 3))
        # Nothing else changed.
        seen.append(await read_parameter(ctx, dut, 3))
        seen.append(await read_entry(ctx, dut, 3 + 8))

    simulate(dut, testbench)
    late = [0, 0x5A, 0, 0x1234, 0, 0xBEEF] if link_registers else \
        [0x5A, 0x5A, 0x1234, 0x1234, 0xBEEF, 0xBEEF]
    assert seen == late + [0x1234, 0]
