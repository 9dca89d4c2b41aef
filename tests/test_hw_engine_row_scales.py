"""The engine with per-row requantization (``multiplier_bits``) in Amaranth's simulator:
outputs equal the golden model and QuantizedNetwork.forward, cycles equal the cycle model,
with shared requantizers, the iCE40 and ECP5 flags, PE products in logic, and images loaded
over the bus (scale words in chunks) or at generation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sparseforge.compiler import isa
from sparseforge.compiler.configure import derive_config
from sparseforge.compiler.ir import QuantizedLinear, QuantizedNetwork, RowRequant
from sparseforge.compiler.numerics import FixedFormat
from sparseforge.compiler.program import compile as compile_program
from sparseforge.sim.reference.golden import run_image
from sparseforge.sim.simulate import predict
from tests.test_hw_engine import rtl_infer

ACT_BITS = 8


def scaled_layer(rng, name, out_features, in_features, *, density=0.4, relu=False):
    """A layer with random per-row multipliers (up to 16 bits, some negative), shifts,
    rounding terms, tie rules and an output range narrower than the activations'."""
    codes = rng.integers(1, 16, (out_features, in_features))
    codes[rng.random(codes.shape) >= density] = 0
    codebook = rng.integers(-8, 8, 16)
    codebook[0] = 0
    multiplier = rng.integers(1, 1 << 15, out_features) * rng.choice([1, 1, -1], out_features)
    shift = rng.integers(12, 22, out_features)
    rounding = rng.integers(0, np.abs(multiplier))
    low = 0 if relu else int(rng.integers(-100, -5))
    high = int(rng.integers(5, 120))
    requant = RowRequant(multiplier, shift, rounding, rng.random(out_features) < 0.5, low, high)
    fmt = FixedFormat(ACT_BITS, 0)
    return QuantizedLinear(name, codes.astype(np.uint8), codebook,
                           rng.integers(-500, 500, out_features), 4, fmt, FixedFormat(5, 0),
                           fmt, 12, relu, requant=requant)


def network(seed, shapes):
    rng = np.random.default_rng(seed)
    layers = [scaled_layer(rng, f"fc{i}", out, inp, relu=i < len(shapes) - 1)
              for i, (out, inp) in enumerate(shapes)]
    return QuantizedNetwork(tuple(layers)), rng


CONFIGS = {
    "one requantizer per PE": dict(pes=2, scan_lanes=2),
    "shared requantizers, iCE40 flags": dict(pes=4, scan_lanes=1, writeback_lanes=2,
                                             readout_register=True, decoded_weights=True,
                                             lut_products=True, fifo_depth=2),
    "ECP5 flags": dict(pes=4, scan_lanes=2, column_queue=True, readout_register=True,
                       link_registers=True, decoded_weights=True),
    "four PEs, one requantizer": dict(pes=4, scan_lanes=1, writeback_lanes=1),
    "three PEs": dict(pes=3, scan_lanes=1),
}


@pytest.mark.parametrize("name,load_over_bus",
                         [(name, index % 2 == 1) for index, name in enumerate(CONFIGS)])
def test_engine_with_row_scales_matches_golden_and_cycles(name, load_over_bus):
    net, rng = network(len(name) + load_over_bus, [(13, 10), (6, 13)])
    flags = dict(CONFIGS[name])
    pes = flags.pop("pes")
    config = dataclasses.replace(derive_config(net, pes, scan_lanes=flags.pop("scan_lanes")),
                                 **flags)
    assert config.multiplier_bits >= 12 and config.rounding_bits > 0
    assert isa.scale_layout(config).size > 32           # so scale words go over in chunks
    program = compile_program(net, config=config)
    inputs = rng.integers(-128, 128, (3, 10))
    inputs[:, rng.random(10) < 0.3] = 0
    expected = run_image(config, program.image, inputs)
    np.testing.assert_array_equal(program.network_output(expected), net.forward(inputs))
    outputs, cycles = rtl_infer(config, program.image, inputs, input_idle=0.2,
                                output_stall=0.2, load_over_bus=load_over_bus)
    np.testing.assert_array_equal(outputs, expected)
    predicted = np.array([[timing.cycles for timing in row] for row in predict(program, inputs)])
    np.testing.assert_array_equal(cycles, predicted)
    # The outputs use the range: something clamped at each end, and many values between.
    assert len(np.unique(outputs)) > 3
