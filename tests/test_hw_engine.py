"""The whole engine in Amaranth's simulator: bit-exact outputs and cycle counts vs the models."""

import dataclasses

import numpy as np
import pytest
from amaranth.sim import Simulator

from sparseforge.compiler import bus, isa
from sparseforge.compiler.numerics import ceil_div
from sparseforge.hw.engine import Engine
from sparseforge.sim.reference.cycles import layer_timing
from tests.oracle import build_image, config_for, random_layers


def rtl_infer(config, image, inputs, *, input_idle=0.0, output_stall=0.0, seed=0,
              load_over_bus=False):
    """Stream each input through the engine; return outputs and per-layer cycle counts.

    With ``load_over_bus`` the engine is generated empty and the image is written through the
    host bus first, as the host does to change models without regenerating the engine."""
    dut = Engine(config, None if load_over_bus else image)
    rng = np.random.default_rng(seed)
    outputs, cycles = [], []

    async def read(ctx, address):
        ctx.set(dut.bus.addr, address)
        ctx.set(dut.bus.r_en, 1)
        await ctx.tick()
        ctx.set(dut.bus.r_en, 0)
        for _ in range(bus.READ_LATENCY + 1):
            if ctx.get(dut.bus.r_valid):
                return ctx.get(dut.bus.r_data)
            await ctx.tick()
        raise AssertionError("no read data")

    async def wait_idle(ctx):
        control = bus.bus_address(bus.Region.REGISTERS, bus.Register.CONTROL)
        while (await read(ctx, control)) & 1:
            pass

    async def testbench(ctx):
        await wait_idle(ctx)
        if load_over_bus:
            for address, value in isa.image_bus_writes(config, image):
                ctx.set(dut.bus.addr, int(address))
                ctx.set(dut.bus.w_data, int(value))
                ctx.set(dut.bus.w_en, 1)
                await ctx.tick()
            ctx.set(dut.bus.w_en, 0)
        for x in inputs:
            for i, value in enumerate(x):
                while rng.random() < input_idle:
                    await ctx.tick()
                ctx.set(dut.input.valid, 1)
                ctx.set(dut.input.payload, {"value": int(value), "last": i == len(x) - 1})
                await ctx.tick().until(dut.input.ready)
                ctx.set(dut.input.valid, 0)
            result = []
            while True:
                ready = rng.random() >= output_stall
                ctx.set(dut.output.ready, ready)
                valid, payload = ctx.get(dut.output.valid), ctx.get(dut.output.payload)
                await ctx.tick()
                if ready and valid:
                    result.append(payload.value)
                    if payload.last:
                        break
            ctx.set(dut.output.ready, 0)
            outputs.append(result)
            await wait_idle(ctx)
            cycles.append(isa.layer_cycles(
                [await read(ctx, bus.bus_address(bus.Region.CYCLES, layer))
                 for layer in range(image.layer_count)]))

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    return np.array(outputs), np.array(cycles)


def column_counts(image, layers, index, pes):
    """Entries of each PE's columns of layer ``index``, from the image's pointers."""
    base = sum(layer.codes.shape[1] + 1 for layer in layers[:index])
    width = layers[index].codes.shape[1]
    return np.array([np.diff(image.pointers[k][base:base + width + 1]) for k in range(pes)])


def assert_cycles_match_model(config, image, layers, activations, cycles):
    for b in range(len(cycles)):
        for index, layer in enumerate(layers):
            counts = column_counts(image, layers, index, config.pes)
            timing = layer_timing(config, counts, activations[index][b] != 0,
                                  layer.codes.shape[0],
                                  layers[index - 1].codes.shape[0] if index else None)
            assert cycles[b, index] == timing.cycles, (b, index, cycles[b, index], timing)


def golden(layers, x, act_bits=8):
    activations = [np.asarray(x, np.int64)]
    for layer in layers:
        activations.append(layer.forward(activations[-1], act_bits))
    return activations


@pytest.mark.parametrize("pes,scan_lanes", [(1, 1), (2, 2), (4, 2), (3, 1)])
def test_engine_matches_golden_and_cycle_model(pes, scan_lanes):
    rng = np.random.default_rng(pes * 10 + scan_lanes)
    layers = random_layers(rng, [(12, 10), (7, 12)], density=0.4)
    layers[0].codes[:, 3] = 0                                  # an empty column
    layers[0].codes[0, :] = 0                                  # an empty row
    config = config_for(layers, pes, scan_lanes)
    image = build_image(config, layers)
    inputs = rng.integers(-128, 128, (3, 10))
    inputs[:, rng.random(10) < 0.3] = 0
    outputs, cycles = rtl_infer(config, image, inputs, input_idle=0.3, output_stall=0.3)
    activations = golden(layers, inputs)
    np.testing.assert_array_equal(outputs, activations[-1])
    assert_cycles_match_model(config, image, layers, activations, cycles)


@pytest.mark.parametrize("pes,scan_lanes,fifo_depth,density", [
    (2, 1, 2, 0.05),      # long zero runs: 40 rows per PE, padding entries
    (8, 4, 2, 0.3),       # small queues: the broadcast unit must wait for full PEs
    (16, 4, 4, 0.15),
])
def test_engine_stress(pes, scan_lanes, fifo_depth, density):
    rng = np.random.default_rng(pes + fifo_depth)
    layers = random_layers(rng, [(80, 24), (24, 80)], density=density)
    config = config_for(layers, pes, scan_lanes, fifo_depth=fifo_depth)
    image = build_image(config, layers)
    padding = sum(int(np.count_nonzero((np.array(e) & 0xF0) == 0)) for e in image.entries)
    inputs = rng.integers(-128, 128, (2, 24))
    inputs[:, rng.random(24) < 0.35] = 0
    outputs, cycles = rtl_infer(config, image, inputs, input_idle=0.2, output_stall=0.2)
    activations = golden(layers, inputs)
    np.testing.assert_array_equal(outputs, activations[-1])
    assert_cycles_match_model(config, image, layers, activations, cycles)
    if density < 0.1:
        assert padding > 0


def test_engine_with_accumulator_high_bits_in_registers():
    # Dense rows and large weights: accumulators exceed 16 bits, so the register half matters;
    # one-row PEs make back-to-back updates of one row (the bypass path) the common case.
    rng = np.random.default_rng(11)
    layers = random_layers(rng, [(4, 40), (6, 4)], density=0.9)
    config = dataclasses.replace(config_for(layers, 4, 2), acc_memory_bits=12)
    image = build_image(config, layers)
    inputs = rng.integers(-128, 128, (3, 40))
    outputs, cycles = rtl_infer(config, image, inputs)
    activations = golden(layers, inputs)
    assert np.abs(inputs @ layers[0].codebook[layers[0].codes].T).max() >= 1 << 12
    np.testing.assert_array_equal(outputs, activations[-1])
    assert_cycles_match_model(config, image, layers, activations, cycles)


def test_images_loaded_over_the_bus_run_in_an_empty_engine():
    # One engine, generated without an image, runs two different models loaded at run time.
    rng = np.random.default_rng(21)
    first = random_layers(rng, [(9, 12), (5, 9)], density=0.5)
    second = random_layers(rng, [(12, 8), (6, 12), (4, 6)], density=0.3)
    config = dataclasses.replace(
        config_for(first + second, 4, 2), max_layers=3,
        pointer_depth=max(sum(l.codes.shape[1] + 1 for l in ls) for ls in (first, second)),
        bias_depth=max(sum(ceil_div(l.codes.shape[0], 4) for l in ls) for ls in (first, second)),
        occupancy_depth=max(sum(ceil_div(l.codes.shape[1], 2) for l in ls)
                            for ls in (first, second)))
    for layers in (first, second):
        image = build_image(config, layers)
        inputs = rng.integers(-128, 128, (2, layers[0].codes.shape[1]))
        outputs, cycles = rtl_infer(config, image, inputs, load_over_bus=True)
        np.testing.assert_array_equal(outputs, golden(layers, inputs)[-1])


@pytest.mark.parametrize("pes,writeback_lanes", [(4, 2), (8, 2), (8, 4)])
def test_engine_with_shared_requantizers(pes, writeback_lanes):
    # A one-row layer before another: its write-back is too short to hide the next layer's
    # codebook load, so the sequencer must wait, and the cycle model must know.
    rng = np.random.default_rng(pes * writeback_lanes)
    layers = random_layers(rng, [(20, 12), (3, 20), (9, 3)], density=0.5)
    config = dataclasses.replace(config_for(layers, pes, 2), writeback_lanes=writeback_lanes)
    image = build_image(config, layers)
    inputs = rng.integers(-128, 128, (2, 12))
    outputs, cycles = rtl_infer(config, image, inputs, input_idle=0.2, output_stall=0.2)
    activations = golden(layers, inputs)
    np.testing.assert_array_equal(outputs, activations[-1])
    assert_cycles_match_model(config, image, layers, activations, cycles)


@pytest.mark.parametrize("load_over_bus", [False, True])
def test_engine_with_decoded_weights(load_over_bus):
    # Codebook values in the entry memories (the iCE40 choice): negative values, padding
    # entries (long zero runs), two layers with different codebooks; the image is the same.
    rng = np.random.default_rng(31 + load_over_bus)
    layers = random_layers(rng, [(80, 16), (9, 80)], density=0.06)
    config = dataclasses.replace(config_for(layers, 2, 1, fifo_depth=2), decoded_weights=True)
    image = build_image(config, layers)
    assert any(np.any(layer.codebook < 0) for layer in layers)
    words = isa.unpack(isa.entry_memory_layout(config), isa.entry_words(config, image, 0))
    codes = isa.unpack(isa.entry_layout(config), np.asarray(image.entries[0], np.uint64))
    assert np.any(codes["code"] == 0) and np.any(words["weight"] < 0)
    inputs = rng.integers(-128, 128, (3, 16))
    inputs[:, rng.random(16) < 0.3] = 0
    outputs, cycles = rtl_infer(config, image, inputs, load_over_bus=load_over_bus)
    activations = golden(layers, inputs)
    np.testing.assert_array_equal(outputs, activations[-1])
    assert_cycles_match_model(config, image, layers, activations, cycles)


@pytest.mark.parametrize("pes,scan_lanes,in_features", [(2, 1, 1), (4, 4, 4), (4, 2, 2)])
def test_engine_waits_for_a_lone_group_in_the_broadcast_buffer(pes, scan_lanes, in_features):
    # A first layer of one scan group: nothing is in the broadcast unit's buffer when that
    # group arrives and no PE is busy, so while it crosses the buffer to its output register
    # the layer must not be taken for finished.
    rng = np.random.default_rng(41 + pes)
    layers = random_layers(rng, [(6, in_features), (3, 6)], density=0.6)
    layers[0].codes[:, -1] = 1
    config = config_for(layers, pes, scan_lanes)
    image = build_image(config, layers)
    inputs = np.zeros((2, in_features), dtype=np.int64)
    inputs[:, -1] = [57, -90]
    outputs, cycles = rtl_infer(config, image, inputs)
    activations = golden(layers, inputs)
    assert np.any(activations[1] != 0)
    np.testing.assert_array_equal(outputs, activations[-1])
    assert_cycles_match_model(config, image, layers, activations, cycles)


@pytest.mark.parametrize("column_queue,readout_register,link_registers",
                         [(True, False, False), (False, True, False), (False, False, True),
                          (True, True, True)])
@pytest.mark.parametrize("pes,scan_lanes,fifo_depth", [(2, 1, 3), (8, 4, 4), (4, 2, 8)])
def test_engine_with_retimed_front_end(column_queue, readout_register, link_registers, pes,
                                       scan_lanes, fifo_depth):
    # The ECP5 choices: a two-entry column queue between the parameter memory and the walker,
    # a register in front of the requantizers, and registers both ways between the broadcast
    # unit and the PEs.  Long and short columns, full queues, padding.
    rng = np.random.default_rng(pes * 7 + fifo_depth + 2 * column_queue + readout_register)
    layers = random_layers(rng, [(48, 20), (20, 48)], density=0.25)
    layers[0].codes[:, 5] = rng.integers(1, 16, 48)                # a long column
    config = dataclasses.replace(config_for(layers, pes, scan_lanes, fifo_depth=fifo_depth),
                                 column_queue=column_queue,
                                 readout_register=readout_register,
                                 link_registers=link_registers)
    image = build_image(config, layers)
    inputs = rng.integers(-128, 128, (3, 20))
    inputs[:, rng.random(20) < 0.3] = 0
    outputs, cycles = rtl_infer(config, image, inputs, input_idle=0.2, output_stall=0.2)
    activations = golden(layers, inputs)
    np.testing.assert_array_equal(outputs, activations[-1])
    assert_cycles_match_model(config, image, layers, activations, cycles)
