"""The engine in conv mode in Amaranth's simulator: random small convolutional networks run
bit-exact against the golden model and cycle-exact against the cycle model, the image in the
engine or loaded over the bus."""

import numpy as np
import pytest

from sparseforge.compiler.program import compile
from sparseforge.sim.reference.cycles import program_timings
from sparseforge.sim.reference.golden import run_image
from tests.conv_models import random_conv_network, random_inputs
from tests.test_hw_engine import rtl_infer


def check(program, x, **options):
    config, image = program.config, program.image
    expected = run_image(config, image, x)
    outputs, cycles = rtl_infer(config, image, x, **options)
    np.testing.assert_array_equal(outputs, expected)
    predicted = np.array([[t.cycles for t in row] for row in program_timings(program, x)])
    np.testing.assert_array_equal(cycles, predicted)


@pytest.mark.parametrize("seed", range(6))
def test_random_conv_networks_bit_and_cycle_exact(seed):
    rng = np.random.default_rng(4200 + seed)
    network = random_conv_network(rng, max_size=7, max_layers=2)
    pes = int(rng.choice([1, 2, 4]))
    lanes = int(rng.choice([g for g in (1, 2, 4) if pes % g == 0]))
    program = compile(network, pes=pes, scan_lanes=lanes)
    x = program.engine_input(random_inputs(rng, network, 2))
    check(program, x, load_over_bus=seed % 2 == 1, input_idle=0.2 * (seed % 3),
          output_stall=0.3 * (seed % 2), seed=seed)


@pytest.mark.parametrize("flags", [
    {"writeback_lanes": 2, "readout_register": True, "decoded_weights": True},
    {"column_queue": True, "readout_register": True, "link_registers": True,
     "decoded_weights": True},
    {"acc_memory_bits": 8, "fifo_depth": 2},
])
def test_conv_engines_with_the_boards_options(flags):
    import dataclasses

    rng = np.random.default_rng(len(str(flags)))
    network = random_conv_network(rng, max_size=7, max_layers=2)
    base = compile(network, pes=4, scan_lanes=2)
    program = compile(network, config=dataclasses.replace(base.config, **flags))
    check(program, program.engine_input(random_inputs(rng, network, 2)), seed=3)


def test_a_pooled_cnn_with_a_classifier():
    from sparseforge.compiler.conv import ConvGeometry, Pool
    from sparseforge.compiler.ir import QuantizedConv2d, QuantizedLinear, QuantizedNetwork
    from tests.conv_models import random_layer_parts

    rng = np.random.default_rng(8)
    g1 = ConvGeometry(1, 6, 6, 4, 3, 1, 1, Pool(2, 2))
    g2 = ConvGeometry(4, 3, 3, 6, 2, 1, 0, Pool((2, 1), (1, 1)))
    network = QuantizedNetwork((
        QuantizedConv2d(name="c1", relu=True, geometry=g1, **random_layer_parts(rng, 4, 9, .6)),
        QuantizedConv2d(name="c2", relu=True, geometry=g2,
                        **random_layer_parts(rng, 6, 16, .5)),
        QuantizedLinear(name="fc", relu=False, **random_layer_parts(rng, 3, 12, .7))))
    program = compile(network, pes=2)
    x = random_inputs(rng, network, 3)
    check(program, program.engine_input(x), output_stall=0.3, seed=1)
    assert program.network_output(run_image(program.config, program.image,
                                            program.engine_input(x))).tolist() == \
        network.forward(x).tolist()
