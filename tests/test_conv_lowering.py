"""Conv mode's lowering, program image, golden model and cycle model (issue 17): random
convolutional networks compile, the golden model (which reads only the image) equals the
network's integer semantics and the unrolled Toeplitz matrix, each kernel is stored once, and
the cycle model's sums add up."""

import dataclasses

import numpy as np
import pytest

from sparseforge.compiler import configure
from sparseforge.compiler.conv import ConvGeometry, Pool
from sparseforge.compiler.encode import encode_layer
from sparseforge.compiler.ir import QuantizedConv2d, QuantizedNetwork
from sparseforge.compiler.lowering import lower
from sparseforge.compiler.numerics import requantize
from sparseforge.compiler.program import ProgramError, compile, load_program
from sparseforge.sim.reference.cycles import (
    conv_prologue,
    pipeline_fill,
    position_overhead,
    program_timings,
)
from sparseforge.sim.reference.golden import check_program, run_image
from tests.conv_models import random_conv_network, random_inputs, random_layer_parts, toeplitz

PES = (1, 2, 4, 8, 16)


@pytest.mark.parametrize("seed", range(60))
def test_random_conv_networks_run_on_the_golden_model_as_the_network_does(seed):
    rng = np.random.default_rng(1700 + seed)
    network = random_conv_network(rng)
    pes = int(rng.choice(PES))
    lanes = int(rng.choice([g for g in (1, 2, 4, 8) if pes % g == 0]))
    program = compile(network, pes=pes, scan_lanes=lanes)
    assert program.config.conv and program.config.scan_lanes == lanes
    check_program(program)
    x = random_inputs(rng, network, 6)
    outputs = run_image(program.config, program.image, program.engine_input(x))
    assert outputs.shape == (6, program.out_features)
    np.testing.assert_array_equal(program.network_output(outputs), network.forward(x))


def single_conv(rng, geometry, relu=True):
    parts = random_layer_parts(rng, geometry.out_channels, geometry.patch_size, 0.5)
    return QuantizedNetwork((QuantizedConv2d(name="conv", relu=relu, geometry=geometry,
                                             **parts),))


@pytest.mark.parametrize("kernel,stride,padding", [((3, 3), (1, 1), (1, 1)),
                                                   ((5, 2), (2, 1), (2, 0)),
                                                   ((1, 1), (2, 2), (0, 0))])
def test_the_golden_model_equals_the_unrolled_toeplitz_matrix(kernel, stride, padding):
    rng = np.random.default_rng(sum(kernel) + 10 * stride[0])
    geometry = ConvGeometry(5, 9, 7, 12, kernel, stride, padding)
    network = single_conv(rng, geometry, relu=False)
    layer = network.layers[0]
    program = compile(network, pes=4, scan_lanes=2)
    x = random_inputs(rng, network, 5)
    golden = program.network_output(run_image(program.config, program.image,
                                              program.engine_input(x)))
    rows = np.repeat(np.arange(12), geometry.positions)     # each output's channel
    acc = x @ toeplitz(layer).T
    expected = requantize(acc, layer.bias[rows], layer.shift, 8, relu=False)
    np.testing.assert_array_equal(golden, expected)


def test_each_kernel_is_stored_once_whatever_the_number_of_positions():
    rng = np.random.default_rng(5)
    entries = []
    for size in (6, 12, 16):
        geometry = ConvGeometry(3, size, size, 8, (3, 3), (1, 1), (1, 1), Pool((2, 2), (2, 2)))
        network = single_conv(np.random.default_rng(5), geometry)
        program = compile(network, pes=4)
        stored = sum(len(e) for e in program.image.entries)
        kernel = sum(csc.entries for csc in encode_layer(network.layers[0].codes, 4,
                                                         program.config.max_zero_run))
        entries.append(stored)
        assert stored == kernel                   # the kernel's own encoding, once
        assert program.lowering.walks[0].positions_count == size * size
    assert len(set(entries)) == 1, entries
    del rng


def test_the_maps_alternate_between_two_regions_and_the_buffer_holds_them():
    rng = np.random.default_rng(9)
    network = random_conv_network(rng, max_layers=3, linear=True)
    lowering = lower(network, 8, 2)
    assert lowering.maps[0].base == 0
    region_a = max(m.words(8) for m in lowering.maps[0::2])
    assert all(m.base == region_a for m in lowering.maps[1::2])
    assert lowering.buffer_words == region_a + max(m.words(8) for m in lowering.maps[1::2])
    config = configure.derive_config(network, 8, scan_lanes=2)
    assert config.act_words >= lowering.buffer_words


def test_a_conv_program_saves_loads_and_refuses_a_damaged_geometry(tmp_path):
    rng = np.random.default_rng(11)
    network = random_conv_network(rng, linear=True)
    program = compile(network, pes=4)
    program.save(tmp_path / "p")
    loaded = load_program(tmp_path / "p")
    assert loaded.config.conv and loaded.lowering.walks == program.lowering.walks
    x = random_inputs(rng, network, 3)
    np.testing.assert_array_equal(
        run_image(loaded.config, loaded.image, loaded.engine_input(x)),
        run_image(program.config, program.image, program.engine_input(x)))
    damaged = dataclasses.replace(program.image, geometry=np.array(
        [int(w) ^ 1 for w in program.image.geometry], dtype=object))
    from sparseforge.compiler.program import validate_image

    with pytest.raises(ProgramError, match="geometry differs from the network's encoding"):
        validate_image(damaged, network)


def test_conv_mode_needs_a_power_of_two_number_of_pes_and_fits_maps_on_the_part():
    rng = np.random.default_rng(13)
    network = single_conv(rng, ConvGeometry(2, 6, 6, 4, 3, 1, 1))
    with pytest.raises(ValueError, match="runs on a power-of-two number of PEs, not 6"):
        compile(network, pes=6)
    huge = single_conv(rng, ConvGeometry(16, 128, 128, 8, 1))
    with pytest.raises(configure.DoesNotFit, match=r"activations: the model's maps need "
                                                   r"393216 in the activation buffer, the "
                                                   r"engine holds at most 65536"):
        compile(huge, pes=8)
    wide = single_conv(rng, ConvGeometry(64, 8, 8, 64, 5, 1, 2))
    with pytest.raises(configure.DoesNotFit, match=r"does not fit the iCE40UP5K [^\n]*\n(.*\n)*"
                                                   r"  BRAM: needs about \d+, the iCE40UP5K "
                                                   r"has 30"):
        compile(wide, pes=8, board="icebreaker")


def test_the_cycle_model_adds_a_prologue_and_every_positions_fixed_cycles():
    rng = np.random.default_rng(17)
    geometry = ConvGeometry(3, 8, 8, 8, (3, 3), (1, 1), (1, 1), Pool((2, 2), (2, 2)))
    network = single_conv(rng, geometry)
    program = compile(network, pes=4, scan_lanes=1)
    x = random_inputs(rng, network, 2)
    (timing,), _ = program_timings(program, program.engine_input(x))
    config = program.config
    rows = 2
    positions = 64
    assert timing.cycles == (conv_prologue(config, None) + positions
                             * position_overhead(config, rows) + timing.compute)
    assert timing.overhead == (conv_prologue(config, None)
                               + positions * (position_overhead(config, rows)
                                              + pipeline_fill(config)))
    # Every position's compute phase lasts at least its fill and its patch's scan (27 groups).
    assert timing.compute >= positions * max(pipeline_fill(config), 27)
    assert timing.limit <= timing.bound <= int(timing.work.sum())
