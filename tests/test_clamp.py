"""Clamps after a Linear layer (ReLU6, Hardtanh, clamp(min, max), an ONNX Clip): captured as
the layer's output range, trained as a Hardtanh, quantized as the range's bounds in the
layer's output format (docs/numerics.md "Clamps"), and run by the per-row write-back: the
engine's outputs equal the golden model's and its cycles the cycle model's."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import sparseforge as sf
from sparseforge.compiler.capture import capture
from sparseforge.compiler.compress.convert import network_to_torch, to_network
from sparseforge.compiler.compress.model import load_compressed
from sparseforge.compiler.compress.quantize import quantize_network
from sparseforge.compiler.compress.swap import swap_activations, swap_onnx_activations
from sparseforge.compiler.errors import InputError
from sparseforge.compiler.ir import Linear, Network
from sparseforge.compiler.passes import canonicalize

SCHEDULE = dict(sparsity=0.6, prune_steps=2, prune_epochs=3, final_epochs=6, share_epochs=4)


class ClampInForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.second, self.last = nn.Linear(6, 16), nn.Linear(16, 8), nn.Linear(8, 3)

    def forward(self, x):
        x = torch.clamp(self.first(x), -0.5, 2.0)
        x = F.relu6(self.second(x)).clamp(max=4.0)
        return F.hardtanh(self.last(x), min_val=-3.0, max_val=3.0)


def onnx_of(model, features: int):
    import onnx

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), torch.zeros(1, features), buffer, dynamo=False)
    return onnx.load_from_string(buffer.getvalue())


@pytest.mark.parametrize("source", ["modules", "functions", "onnx"])
def test_clamps_are_captured_as_each_layers_output_range(source):
    torch.manual_seed(0)
    model = (nn.Sequential(nn.Linear(6, 16), nn.ReLU6(), nn.Linear(16, 8), nn.Hardtanh(-1, 2),
                           nn.Linear(8, 3)) if source != "functions" else ClampInForward())
    network = canonicalize(capture(onnx_of(model, 6) if source == "onnx" else model))
    expected = ([(0.0, 6.0), (-1.0, 2.0), None] if source != "functions"
                else [(-0.5, 2.0), (0.0, 4.0), (-3.0, 3.0)])
    assert [layer.clamp for layer in network.layers] == expected
    x = np.random.default_rng(1).normal(scale=3, size=(64, 6))
    with torch.no_grad():
        np.testing.assert_allclose(network.forward(x), model(torch.tensor(x).float()).numpy(),
                                   atol=1e-5)
    # Trained as it runs: the torch copy clamps where the network does.
    with torch.no_grad():
        np.testing.assert_allclose(network_to_torch(network)(torch.tensor(x).float()).numpy(),
                                   network.forward(x), atol=1e-5)


def test_relu_and_clamps_after_one_layer_meet_in_their_overlap():
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Hardtanh(-2, 3), nn.ReLU6(),
                          nn.Linear(5, 2))
    [first, _] = to_network(model).layers
    assert first.relu and first.clamp == (0.0, 3.0)
    x = np.random.default_rng(0).normal(scale=4, size=(32, 4))
    with torch.no_grad():
        np.testing.assert_allclose(to_network(model).forward(x),
                                   model(torch.tensor(x).float()).numpy(), atol=1e-5)


@pytest.mark.parametrize("model, words", [
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU6(), nn.Flatten(), nn.Linear(8, 2)),
     ["convolution's write-back has ReLU only", "swap_activations=True"]),
    (nn.Sequential(nn.Hardtanh(), nn.Linear(4, 2)), ["the model's input", "clamp"]),
    (nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Hardtanh(-2, 0), nn.Linear(4, 2)),
     ["constant output"]),
])
def test_a_clamp_the_engine_cannot_run_is_refused_by_name(model, words):
    with pytest.raises(InputError) as error:
        to_network(model, (1, 4, 4) if isinstance(model[0], nn.Conv2d) else None)
    for word in words:
        assert word in str(error.value)


def test_a_clamp_after_a_convolution_is_swapped_and_one_after_a_linear_layer_kept():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU6(), nn.Flatten(), nn.Linear(8, 4),
                          nn.ReLU6(), nn.Linear(4, 2))
    _, swaps = swap_activations(model)
    assert [swap.kind for swap in swaps] == ["ReLU6"] and swaps[0].where == "1"
    _, onnx_swaps = swap_onnx_activations(onnx_of(nn.Sequential(
        nn.Unflatten(1, (1, 4, 4)), *model), 16))
    assert [swap.kind for swap in onnx_swaps] == ["Clip"]


def clamped_network(seed: int = 0) -> Network:
    """A 10-24-12-3 network with ReLU6 and Hardtanh(-1, 1), its weights 3 shared values."""
    rng = np.random.default_rng(seed)

    def weight(out, inp):
        return rng.choice([0.0, 0.0, -0.5, 0.25, 0.75], size=(out, inp))

    return Network((Linear("fc1", weight(24, 10), rng.normal(size=24), False, clamp=(0.0, 6.0)),
                    Linear("fc2", weight(12, 24), rng.normal(size=12), False,
                           clamp=(-1.0, 1.0)),
                    Linear("fc3", weight(3, 12), rng.normal(size=3), False)))


def test_the_clamp_is_quantized_to_the_output_format_and_saturates_there():
    network = clamped_network()
    x = np.random.default_rng(2).normal(scale=2, size=(200, 10))
    quantized = quantize_network(network, x)
    first, second, _ = quantized.layers
    assert first.output_format.frac == 4 and (first.requant.low, first.requant.high) == (0, 96)
    assert first.relu and not second.relu
    assert (second.requant.low, second.requant.high) == (-(1 << second.output_format.frac),
                                                         1 << second.output_format.frac)
    hidden = first.forward(first.input_format.quantize(x))
    assert hidden.max() == 96 and hidden.min() == 0
    # A narrower range than the activations' is the per-row write-back's, not the shift's.
    assert first.power_of_two_form() is None


def test_a_compressed_model_with_clamps_keeps_them_through_its_file(tmp_path):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)
    model = nn.Sequential(nn.Linear(6, 24), nn.ReLU6(), nn.Linear(24, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compressed = sf.compress(model, (x, y), **SCHEDULE)
    assert compressed.float_network.layers[0].clamp == (0.0, 6.0)
    # The bound in the output format, saturated there when the data never reached it.
    first = compressed.network.layers[0]
    assert first.requant.high == min(6 << first.output_format.frac, 127)
    loaded = load_compressed(compressed.save(tmp_path / "m.sfm"))
    assert loaded.float_network.layers[0].clamp == (0.0, 6.0)
    np.testing.assert_array_equal(loaded.predict(x), compressed.predict(x))


@pytest.mark.cocotb
def test_clamped_layers_are_bit_exact_on_the_rtl(tmp_path):
    from sparseforge.sim.reference.golden import run_image
    from sparseforge.sim.rtl import RtlCase, run_rtl
    from sparseforge.sim.runner import available_simulators
    from sparseforge.sim.simulate import predict

    if "verilator" not in available_simulators():
        pytest.skip("verilator is not installed")
    x = np.random.default_rng(3).normal(scale=2, size=(40, 10))
    quantized = quantize_network(clamped_network(), x)
    program = sf.compile(quantized, pes=4, board="icebreaker")
    assert program.config.multiplier_bits > 0
    x_int = program.quantize_input(x)
    golden = run_image(program.config, program.image, x_int)
    np.testing.assert_array_equal(program.network_output(golden), quantized.forward(x_int))
    [result] = run_rtl(program.config, [RtlCase("clamps", program.image, x_int, golden)],
                       build_dir=tmp_path / "rtl", input_idle=0.2, output_stall=0.2)
    assert result.mismatches == 0
    np.testing.assert_array_equal(result.outputs, golden)
    predicted = np.array([[timing.cycles for timing in row] for row in predict(program, x_int)])
    np.testing.assert_array_equal(result.cycles, predicted)
