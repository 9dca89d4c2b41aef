"""hw/host_reads.py: every read is answered exactly READ_LATENCY cycles after its r_en, with
the register, the cycle counter or the activation lane it names (0 for other regions), reads
back to back."""

import random

import pytest
from amaranth import Elaboratable, Module, Signal, signed
from amaranth.lib import data, memory, wiring
from amaranth.sim import Simulator

from sparseforge.compiler import bus, isa
from sparseforge.compiler.config import EngineConfig
from sparseforge.hw.activation_buffer import LATENCY
from sparseforge.hw.host_reads import HostReadPath


class Harness(Elaboratable):
    """The read path with a cycle counter memory and an activation memory read in
    ``activation_buffer.LATENCY`` cycles, as in the engine."""

    def __init__(self, config, cycles, activations):
        self.config = config
        self.reads = HostReadPath(config)
        self.cycles = cycles
        self.activations = activations

    def elaborate(self, platform):
        m = Module()
        config = self.config
        m.submodules.reads = reads = self.reads
        m.submodules.cycles = cycles = memory.Memory(shape=32, depth=config.max_layers,
                                                     init=self.cycles)
        wiring.connect(m, reads.cycles, cycles.read_port())
        m.submodules.activations = activations = memory.Memory(
            shape=data.ArrayLayout(signed(config.act_bits), config.pes),
            depth=config.act_words, init=self.activations)
        port = activations.read_port()
        addr = Signal.like(port.addr)
        en = Signal()
        assert LATENCY == 2                 # the request registered, then the memory's read
        m.d.sync += [addr.eq(reads.activations.addr), en.eq(reads.activations.en)]
        m.d.comb += [port.addr.eq(addr), port.en.eq(en), reads.activations.data.eq(port.data)]
        return m


@pytest.mark.parametrize("pes", [1, 3, 4, 8, 16])
def test_reads_answer_after_read_latency(pes):
    config = EngineConfig(pes=pes, scan_lanes=1, max_features=40)
    rng = random.Random(pes)
    cycles = [rng.getrandbits(32) for _ in range(config.max_layers)]
    values = [rng.randrange(-128, 128) for _ in range(config.act_words * pes)]
    words = [values[w * pes:(w + 1) * pes] for w in range(config.act_words)]
    top = Harness(config, cycles, words)
    dut = top.reads
    state = {"busy": 1, "done": 1, "layer_count": 3, "total_cycles": rng.getrandbits(32),
             "input_count": 17, "runs": rng.getrandbits(16)}
    registers = {
        bus.Register.ID: bus.ENGINE_ID,
        bus.Register.CONFIG: (pes | config.act_bits << 8 | config.code_bits << 16
                              | config.scan_lanes << 24),
        bus.Register.CONTROL: 3,
        bus.Register.LAYER_COUNT: 3,
        bus.Register.TOTAL_CYCLES: state["total_cycles"],
        bus.Register.INPUT_COUNT: 17,
        bus.Register.RUNS: state["runs"],
        7: 0,
    }
    reads = []
    for _ in range(300):
        kind = rng.randrange(4)
        if kind == 0:
            index = rng.randrange(8)
            reads.append((bus.bus_address(bus.Region.REGISTERS, index), registers[index]))
        elif kind == 1:
            layer = rng.randrange(config.max_layers)
            reads.append((bus.bus_address(bus.Region.CYCLES, layer), cycles[layer]))
        elif kind == 2:
            i = rng.randrange(len(values))
            reads.append((bus.bus_address(bus.Region.ACTIVATIONS, isa.activation_index(i, config)),
                          values[i] & 0xFFFF_FFFF))
        else:
            region = rng.choice([bus.Region.DESCRIPTORS, bus.Region.CODEBOOK,
                                 bus.Region.OCCUPANCY, bus.Region.ENTRIES])
            reads.append((bus.bus_address(region, rng.randrange(64)), 0))
    answered = []

    async def testbench(ctx):
        for name, value in state.items():
            ctx.set(getattr(dut, name), value)
        expected = {}
        for cycle in range(len(reads) * 2 + bus.READ_LATENCY + 1):
            if cycle - bus.READ_LATENCY in expected:
                assert ctx.get(dut.bus.r_valid), f"no answer at cycle {cycle}"
                address, value = expected.pop(cycle - bus.READ_LATENCY)
                assert ctx.get(dut.bus.r_data) == value, f"read of {address:#x}"
                answered.append(address)
            else:
                assert not ctx.get(dut.bus.r_valid), f"an answer at cycle {cycle}"
            ctx.set(dut.bus.r_en, 0)
            if reads and rng.random() < 0.7:
                address, value = reads.pop()
                ctx.set(dut.bus.addr, address)
                ctx.set(dut.bus.r_en, 1)
                expected[cycle] = (address, value)
            else:
                ctx.set(dut.bus.addr, rng.getrandbits(32))      # ignored without r_en
            await ctx.tick()
        assert not expected and not reads

    simulator = Simulator(top)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    assert len(answered) == 300
