"""hw/host_writes.py: each region's writes reach their memory (wide words only on their last
chunk), per-PE writes reach the addressed PE a cycle later, memory writes are refused while
busy, and the layer count, start, done and runs registers follow the bus."""

import random

import pytest
from amaranth.sim import Simulator

from sparseforge.compiler import bus, isa
from sparseforge.compiler.config import EngineConfig
from sparseforge.hw.host_writes import HostWriteDecoder
from sparseforge.hw.pe import Target

CONFIGS = {
    "N=1": dict(pes=1, scan_lanes=1, max_features=24),
    "N=3": dict(pes=3, scan_lanes=1, max_features=24),
    "N=8 wide occupancy": dict(pes=8, scan_lanes=8, max_features=24),
    "N=16 three-chunk descriptors": dict(pes=16, scan_lanes=8, max_features=2048,
                                         pointer_depth=8192, bias_depth=1024,
                                         occupancy_depth=4096, entry_depth=16384),
}


def run(dut, testbench):
    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()


def write(ctx, dut, address, value):
    ctx.set(dut.bus.addr, address)
    ctx.set(dut.bus.w_data, value)
    ctx.set(dut.bus.w_en, 1)


def memory_ports(dut):
    """The memory write ports, each with the region that reaches it."""
    return {bus.Region.DESCRIPTORS: dut.descriptors, bus.Region.OCCUPANCY: dut.occupancy,
            bus.Region.CODEBOOK: dut.codebook, bus.Region.ACTIVATIONS: dut.activation}


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("busy", [False, True])
def test_each_region_reaches_its_memory_on_the_last_chunk(name, busy):
    """A wide word is written chunk by chunk; only its last chunk raises the write enable, with
    the whole word assembled; while busy no memory is written."""
    config = EngineConfig(**CONFIGS[name])
    dut = HostWriteDecoder(config)
    rng = random.Random(f"{name}{busy}")
    widths = {bus.Region.DESCRIPTORS: isa.descriptor_layout(config).size,
              bus.Region.OCCUPANCY: isa.occupancy_layout(config).size,
              bus.Region.CODEBOOK: config.coef_bits, bus.Region.ACTIVATIONS: 32}
    depths = {bus.Region.DESCRIPTORS: config.max_layers,
              bus.Region.OCCUPANCY: config.occupancy_depth,
              bus.Region.CODEBOOK: config.max_layers * config.codebook_size,
              bus.Region.ACTIVATIONS: config.max_features}
    checked = []

    async def testbench(ctx):
        ctx.set(dut.busy, busy)
        for _ in range(8):
            for region, width in widths.items():
                word = rng.randrange(depths[region])
                if region == bus.Region.ACTIVATIONS:
                    activation, word = word, isa.activation_index(word, config)
                value = rng.getrandbits(width)
                chunks = bus.chunks_of(width)
                for chunk in range(chunks):
                    index = bus.chunk_index(word, chunk, width)
                    write(ctx, dut, bus.bus_address(region, index),
                          (value >> (32 * chunk)) & 0xFFFF_FFFF)
                    last = chunk == chunks - 1
                    for other, port in memory_ports(dut).items():
                        assert ctx.get(port.en) == (other == region and last and not busy), \
                            f"{other.name} enable on a write to {region.name}"
                    if last and not busy:
                        port = memory_ports(dut)[region]
                        if region == bus.Region.ACTIVATIONS:
                            assert ctx.get(port.addr) == activation // config.pes
                            assert ctx.get(port.lane) == activation % config.pes
                            mask = (1 << config.act_bits) - 1
                            assert ctx.get(port.value) & mask == value & mask
                        else:
                            assert ctx.get(port.addr) == word
                            data = ctx.get(port.data)
                            mask = (1 << len(port.data)) - 1
                            assert data & mask == value & mask, f"{region.name} word"
                        checked.append(region)
                    await ctx.tick()
                ctx.set(dut.bus.w_en, 0)
                await ctx.tick()

    run(dut, testbench)
    assert len(checked) == (0 if busy else 8 * len(widths))


@pytest.mark.parametrize("name", CONFIGS)
def test_a_pe_write_reaches_only_the_addressed_pe_a_cycle_later(name):
    """Refused when the engine was busy in the cycle of the bus write."""
    config = EngineConfig(**CONFIGS[name])
    dut = HostWriteDecoder(config)
    rng = random.Random(name)
    targets = {bus.Region.ENTRIES: Target.ENTRIES, bus.Region.POINTERS: Target.POINTERS,
               bus.Region.BIASES: Target.BIASES}
    landed = []

    async def testbench(ctx):
        for _ in range(40):
            region = rng.choice(list(targets))
            pe = rng.randrange(config.pes)
            index = rng.randrange(1 << bus.INDEX_BITS)
            value = rng.getrandbits(32)
            busy = rng.random() < 0.3
            write(ctx, dut, bus.bus_address(region, index, pe), value)
            ctx.set(dut.busy, busy)
            assert not any(ctx.get(port.en) for port in dut.pe_writes)
            await ctx.tick()
            ctx.set(dut.bus.w_en, 0)
            ctx.set(dut.busy, 0)
            enables = [ctx.get(port.en) for port in dut.pe_writes]
            assert enables == [int(k == pe and not busy) for k in range(config.pes)]
            if not busy:
                port = dut.pe_writes[pe]
                assert ctx.get(port.target) == targets[region]
                assert ctx.get(port.addr) == index
                assert ctx.get(port.data) == value
                landed.append(pe)
            await ctx.tick()
            assert not any(ctx.get(port.en) for port in dut.pe_writes)

    run(dut, testbench)
    assert landed


@pytest.mark.parametrize("layer_count", [0, 3])
def test_control_registers(layer_count):
    """The layer count (refused while busy), start from the control register or the stream
    (a cycle later, not while busy), done (set by the run's end, cleared by a start) and runs
    (starts with at least one layer)."""
    config = EngineConfig(pes=2, scan_lanes=1, max_features=8)
    dut = HostWriteDecoder(config, layer_count=layer_count)
    control = bus.bus_address(bus.Region.REGISTERS, bus.Register.CONTROL)
    count = bus.bus_address(bus.Region.REGISTERS, bus.Register.LAYER_COUNT)

    async def testbench(ctx):
        assert ctx.get(dut.layer_count) == layer_count
        write(ctx, dut, count, 2)
        ctx.set(dut.busy, 1)
        await ctx.tick()
        assert ctx.get(dut.layer_count) == layer_count
        ctx.set(dut.busy, 0)
        await ctx.tick()
        assert ctx.get(dut.layer_count) == 2

        write(ctx, dut, control, 0)               # bit 0 clear: no start
        assert not ctx.get(dut.start)
        await ctx.tick()
        assert not ctx.get(dut.start)
        write(ctx, dut, control, 1)
        ctx.set(dut.busy, 1)                       # refused while busy
        await ctx.tick()
        assert not ctx.get(dut.start)
        ctx.set(dut.busy, 0)
        await ctx.tick()
        ctx.set(dut.bus.w_en, 0)
        assert ctx.get(dut.start)
        assert ctx.get(dut.runs) == 0
        await ctx.tick()
        assert not ctx.get(dut.start)
        assert ctx.get(dut.runs) == 1

        ctx.set(dut.run_done, 1)
        await ctx.tick()
        ctx.set(dut.run_done, 0)
        assert ctx.get(dut.done)
        ctx.set(dut.stream_start, 1)
        await ctx.tick()
        ctx.set(dut.stream_start, 0)
        assert ctx.get(dut.start) and ctx.get(dut.done)
        await ctx.tick()
        assert not ctx.get(dut.done)
        assert ctx.get(dut.runs) == 2

        write(ctx, dut, count, 0)                  # a start with no layers is not a run
        await ctx.tick()
        write(ctx, dut, control, 1)
        await ctx.tick()
        ctx.set(dut.bus.w_en, 0)
        await ctx.tick()
        assert ctx.get(dut.runs) == 2

    run(dut, testbench)


def test_layer_count_out_of_range_is_refused():
    config = EngineConfig(pes=2, scan_lanes=1, max_features=8, max_layers=4)
    with pytest.raises(ValueError, match="layer_count 5"):
        HostWriteDecoder(config, layer_count=5)
