"""hw/output_stream.py: after the run's end, the first ``out_features`` activations of the buffer
come out in order, ``last`` on the final one, whatever the back-pressure; ``unloading`` falls
when that one is taken."""

import random

import pytest
from amaranth import Elaboratable, Module, Signal, signed
from amaranth.lib import data, memory
from amaranth.sim import Simulator

from sparseforge.compiler.config import EngineConfig
from sparseforge.hw.activation_buffer import LATENCY
from sparseforge.hw.output_stream import OutputStream


class Harness(Elaboratable):
    """The output stream reading a memory in ``activation_buffer.LATENCY`` cycles while it is
    unloading, as the engine's port arbitration serves it."""

    def __init__(self, config, words):
        self.config = config
        self.stream = OutputStream(config)
        self.words = words

    def elaborate(self, platform):
        m = Module()
        config = self.config
        m.submodules.stream = stream = self.stream
        m.submodules.activations = activations = memory.Memory(
            shape=data.ArrayLayout(signed(config.act_bits), config.pes),
            depth=config.act_words, init=self.words)
        port = activations.read_port()
        addr = Signal.like(port.addr)
        en = Signal()
        assert LATENCY == 2
        m.d.sync += [addr.eq(stream.read.addr), en.eq(stream.read.en & stream.unloading)]
        m.d.comb += [port.addr.eq(addr), port.en.eq(en), stream.read.data.eq(port.data)]
        return m


@pytest.mark.parametrize("pes", [1, 3, 4, 8])
@pytest.mark.parametrize("ready_rate", [1.0, 0.4])
def test_streams_the_outputs_in_order(pes, ready_rate):
    config = EngineConfig(pes=pes, scan_lanes=1, max_features=24)
    rng = random.Random(pes * 10 + int(ready_rate * 10))
    values = [rng.randrange(-128, 128) for _ in range(config.act_words * pes)]
    top = Harness(config, [values[w * pes:(w + 1) * pes] for w in range(config.act_words)])
    dut = top.stream
    lengths = [rng.randrange(1, config.max_features + 1) for _ in range(4)] + [1, 24]
    streamed = []

    async def testbench(ctx):
        for length in lengths:
            for _ in range(rng.randrange(3)):
                assert not ctx.get(dut.unloading) and not ctx.get(dut.output.valid)
                await ctx.tick()
            ctx.set(dut.out_features, length)
            ctx.set(dut.run_done, 1)
            await ctx.tick()
            ctx.set(dut.run_done, 0)
            outputs = []
            while ctx.get(dut.unloading):
                ready = rng.random() < ready_rate
                ctx.set(dut.output.ready, ready)
                if ctx.get(dut.output.valid) and ready:
                    payload = ctx.get(dut.output.payload)
                    outputs.append(payload.value)
                    assert payload.last == (len(outputs) == length), f"last at {len(outputs)}"
                await ctx.tick()
                assert len(outputs) <= length
            assert outputs == values[:length]
            streamed.append(length)

    simulator = Simulator(top)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    assert streamed == lengths
