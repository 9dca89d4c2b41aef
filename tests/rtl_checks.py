"""One program on the generated Verilog against the golden model and the cycle model, for the
tests of a layer feature (ranges and leaks, activation tables) that compile a quantized
network for a board and run a few inputs."""

from __future__ import annotations

import numpy as np
import pytest


def assert_bit_and_cycle_exact(program, quantized, x, build_dir, name: str) -> None:
    """``program`` (compiled from ``quantized``) on Verilator with inputs ``x`` (floats),
    streamed with idle inputs and stalled outputs: its outputs equal the golden model's,
    which equal the network's, and each inference's cycles the cycle model's."""
    from sparseforge.sim.reference.golden import run_image
    from sparseforge.sim.rtl import RtlCase, run_rtl
    from sparseforge.sim.runner import available_simulators
    from sparseforge.sim.simulate import predict

    if "verilator" not in available_simulators():
        pytest.skip("verilator is not installed")
    x_int = program.quantize_input(x)
    golden = run_image(program.config, program.image, x_int)
    np.testing.assert_array_equal(program.network_output(golden), quantized.forward(x_int))
    [result] = run_rtl(program.config, [RtlCase(name, program.image, x_int, golden)],
                       build_dir=build_dir, input_idle=0.2, output_stall=0.2)
    assert result.mismatches == 0
    np.testing.assert_array_equal(result.outputs, golden)
    predicted = np.array([[timing.cycles for timing in row] for row in predict(program, x_int)])
    np.testing.assert_array_equal(result.cycles, predicted)
