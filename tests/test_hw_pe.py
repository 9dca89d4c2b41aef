"""hw/pe.py: one ProcessingElement, without the engine: the broadcast unit's groups into its
queue, a write-back through its ``writeback`` port, and each row's accumulator and bias on its
readout equal to a NumPy product of its rows of the layer."""

import dataclasses

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from sparseforge.compiler import isa
from sparseforge.compiler.numerics import ceil_div
from sparseforge.hw.pe import ProcessingElement
from sparseforge.hw.writeback import WritebackSchedule
from tests.oracle import build_image, config_for, random_layers


class PEUnderTest(wiring.Component):
    """A PE and the write-back schedule that drives it in the engine."""

    def __init__(self, config, pe):
        self.pe = pe
        self.schedule = WritebackSchedule(config)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.pe, m.submodules.schedule = self.pe, self.schedule
        wiring.connect(m, self.schedule.schedule, self.pe.writeback)
        return m


def ref_rows(layer, x, pes, k):
    """PE ``k``'s rows (``i mod pes == k``) of the layer's product, and their biases; a PE
    with a row fewer than others reads out zeros for it."""
    acc = np.asarray(x, np.int64) @ layer.codebook.astype(np.int64)[layer.codes].T
    rows = ceil_div(len(acc), pes)
    mine = [acc[k::pes], np.asarray(layer.bias)[k::pes]]
    return [np.pad(v, (0, rows - len(v))) for v in mine]


def groups_for(config, image, x, k):
    """What the broadcast unit queues for PE ``k`` (``isa.group_layout``): each group of
    ``scan_lanes`` activations with a nonzero activation in a column the PE has entries in."""
    lanes = config.scan_lanes
    pointers = image.pointers[k]
    groups = []
    for g in range(ceil_div(len(x), lanes)):
        values = [int(x[j]) if j < len(x) else 0 for j in range(g * lanes, g * lanes + lanes)]
        on = [lane for lane in range(lanes) if values[lane] != 0
              and pointers[g * lanes + lane + 1] > pointers[g * lanes + lane]]
        if not on:
            continue
        group = {"pointer": g * lanes, "values": values}
        if lanes > 1:
            group.update(first=on[0], rest=sum(1 << lane for lane in on[1:]),
                         single=len(on) == 1)
        groups.append(group)
    return groups


def rtl_rows(config, image, inputs, k, *, seed):
    """Run each input's groups through PE ``k`` (the queue's ready honoured, idle cycles
    between groups), then its write-back; return each write-back's (acc, bias) rows."""
    pe = ProcessingElement(config, entries=isa.entry_words(config, image, k),
                           pointers=image.pointers[k], biases=image.biases[k])
    dut = PEUnderTest(config, pe)
    rng = np.random.default_rng(seed)
    rows = config.max_rows                  # the layer's rows per PE
    readouts = []

    async def testbench(ctx):
        ctx.set(pe.codebook, [int(c) for c in image.codebook[0]])
        for x in inputs:
            for group in groups_for(config, image, x, k):
                while rng.random() < 0.3:
                    await ctx.tick()
                ctx.set(pe.queue.valid, 1)
                ctx.set(pe.queue.payload, group)
                await ctx.tick().until(pe.queue.ready)
                ctx.set(pe.queue.valid, 0)
            for _ in range(3):              # the busy flag may come a cycle late
                await ctx.tick()
            while ctx.get(pe.busy):
                await ctx.tick()
            ctx.set(dut.schedule.start, 1)
            ctx.set(dut.schedule.rows, rows)
            ctx.set(dut.schedule.bias_base, config.pointer_depth)
            await ctx.tick()
            ctx.set(dut.schedule.start, 0)
            shown = []
            while len(shown) < rows:
                if ctx.get(pe.readout.valid):
                    payload = ctx.get(pe.readout.payload)
                    shown.append((payload.acc, payload.bias))
                await ctx.tick()
            assert not ctx.get(pe.readout.valid)
            readouts.append(shown)

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    return readouts


FLAGS = {
    "plain": {},
    "iCE40 flags": {"decoded_weights": True, "acc_memory_bits": 16},
    "ECP5 flags": {"column_queue": True, "link_registers": True, "decoded_weights": True},
}


@pytest.mark.parametrize("flags", FLAGS.values(), ids=FLAGS.keys())
@pytest.mark.parametrize("pes,scan_lanes,k", [(2, 1, 1), (4, 4, 2), (4, 2, 0)])
def test_rows_match_numpy(pes, scan_lanes, k, flags):
    """Two inputs in turn: the second's rows show that the write-back cleared the first's."""
    rng = np.random.default_rng(pes * 10 + scan_lanes + len(flags))
    layers = random_layers(rng, [(14, 16)], density=0.4)
    config = dataclasses.replace(config_for(layers, pes, scan_lanes, fifo_depth=4), **flags)
    image = build_image(config, layers)
    inputs = rng.integers(-128, 128, (2, 16))
    inputs[rng.random(inputs.shape) < 0.3] = 0
    readouts = rtl_rows(config, image, inputs, k, seed=pes + k)
    for x, shown in zip(inputs, readouts):
        acc, bias = ref_rows(layers[0], x, pes, k)
        np.testing.assert_array_equal([a for a, _ in shown], acc)
        np.testing.assert_array_equal([b for _, b in shown], bias)
