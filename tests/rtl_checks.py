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


def digits_images(count: int = 400):
    """The first ``count`` 8 x 8 digits as images (batch x 1 x 8 x 8, in [0, 1]) and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return ((digits.data[:count] / 16).astype(np.float32).reshape(-1, 1, 8, 8),
            digits.target[:count])


def trained(model, x, y, steps: int):
    """``model`` after ``steps`` full-batch Adam steps on ``(x, y)``, in evaluation mode."""
    import torch
    import torch.nn.functional as F

    optimiser = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(steps):
        optimiser.zero_grad()
        F.cross_entropy(model(torch.tensor(x)), torch.tensor(y)).backward()
        optimiser.step()
    return model.eval()


def assert_the_program_computes_the_network(compressed, x, pes: int, board: str) -> None:
    """``compressed`` compiled for ``pes`` PEs on ``board``: the golden model of its image
    gives, on ``x`` (floats), what the integer network computes."""
    import sparseforge as sf
    from sparseforge.sim.reference.golden import run_image

    program = sf.compile(compressed, pes=pes, board=board)
    x_int = compressed.network.quantize_input(x.reshape(len(x), -1))
    golden = program.network_output(run_image(program.config, program.image,
                                              program.engine_input(x_int)))
    np.testing.assert_array_equal(golden, compressed.network.forward(x_int))
