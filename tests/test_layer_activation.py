"""Activations of a layer besides ReLU: clamps (ReLU6, Hardtanh, clamp(min, max), an ONNX
Clip) as the layer's output range and LeakyReLU as its leak (a slope of 2**-leak), after a
Linear layer or a convolution.  Captured from modules, functions and ONNX, trained as they
run, quantized as docs/numerics.md "Clamps and leaky ReLU" says, and run by the engine's
write-back (``layer_activation``): its outputs equal the golden model's and its cycles the
cycle model's."""

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
from sparseforge.compiler.conv import ConvGeometry, Pool
from sparseforge.compiler.errors import InputError, InputWarning
from sparseforge.compiler.ir import Conv2d, Linear, Network
from sparseforge.compiler.passes import canonicalize
from tests.rtl_checks import assert_bit_and_cycle_exact

SCHEDULE = dict(sparsity=0.6, prune_steps=2, prune_epochs=3, final_epochs=6, share_epochs=4)


class ActivationsInForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.second, self.last = nn.Linear(6, 16), nn.Linear(16, 8), nn.Linear(8, 3)

    def forward(self, x):
        x = torch.clamp(self.first(x), -0.5, 2.0)
        x = F.leaky_relu(self.second(x), 0.125).clamp(max=4.0)
        return F.hardtanh(self.last(x), min_val=-3.0, max_val=3.0)


def onnx_of(model, features: int):
    import onnx

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), torch.zeros(1, features), buffer, dynamo=False)
    return onnx.load_from_string(buffer.getvalue())


@pytest.mark.parametrize("source", ["modules", "functions", "onnx"])
def test_activations_are_captured_as_each_layers_range_and_leak(source):
    torch.manual_seed(0)
    model = (nn.Sequential(nn.Linear(6, 16), nn.ReLU6(), nn.Linear(16, 8), nn.LeakyReLU(0.25),
                           nn.Hardtanh(-1, 2), nn.Linear(8, 3))
             if source != "functions" else ActivationsInForward())
    network = canonicalize(capture(onnx_of(model, 6) if source == "onnx" else model))
    expected = ([((0.0, 6.0), 0), ((-1.0, 2.0), 2), (None, 0)] if source != "functions"
                else [((-0.5, 2.0), 0), ((None, 4.0), 3), ((-3.0, 3.0), 0)])
    assert [(layer.clamp, layer.leak) for layer in network.layers] == expected
    x = np.random.default_rng(1).normal(scale=3, size=(64, 6))
    with torch.no_grad():
        np.testing.assert_allclose(network.forward(x), model(torch.tensor(x).float()).numpy(),
                                   atol=1e-5)
        # Trained as it runs: the torch copy applies what the network does.
        np.testing.assert_allclose(network_to_torch(network)(torch.tensor(x).float()).numpy(),
                                   network.forward(x), atol=1e-5)


def test_relu_leaks_and_clamps_after_one_layer_compose():
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Hardtanh(-2, 3), nn.ReLU6(),
                          nn.Linear(5, 5), nn.LeakyReLU(0.5), nn.LeakyReLU(0.25),
                          nn.Linear(5, 5), nn.LeakyReLU(0.5), nn.ReLU(), nn.Linear(5, 2))
    first, second, third, _ = to_network(model).layers
    assert first.relu and first.clamp == (0.0, 3.0)
    assert second.leak == 3 and not second.relu
    assert third.relu and not third.leak
    x = np.random.default_rng(0).normal(scale=4, size=(32, 4))
    with torch.no_grad():
        np.testing.assert_allclose(to_network(model).forward(x),
                                   model(torch.tensor(x).float()).numpy(), atol=1e-5)


@pytest.mark.parametrize("source", ["module", "onnx"])
def test_a_prelu_of_one_slope_is_a_leaky_relu_and_one_per_channel_is_refused(source):
    model = nn.Sequential(nn.Linear(4, 5), nn.PReLU(init=0.25), nn.Linear(5, 2))
    network = canonicalize(capture(onnx_of(model, 4) if source == "onnx" else model))
    assert network.layers[0].leak == 2
    channels = nn.Sequential(nn.Linear(4, 5), nn.PReLU(5), nn.Linear(5, 2))
    with pytest.raises(InputError, match=r"PReLU.*num_parameters 5" if source == "module"
                       else r"PRelu"):
        capture(onnx_of(channels, 4) if source == "onnx" else channels)
    swapped = (swap_onnx_activations(onnx_of(channels, 4)) if source == "onnx"
               else swap_activations(channels))[1]
    kept = (swap_onnx_activations(onnx_of(model, 4)) if source == "onnx"
            else swap_activations(model))[1]
    assert len(swapped) == 1 and kept == []


def test_a_slope_the_engine_does_not_have_runs_as_the_nearest_and_is_told():
    model = nn.Sequential(nn.Linear(4, 5), nn.LeakyReLU(), nn.Linear(5, 2))
    with pytest.warns(InputWarning, match=r"LeakyReLU '1': negative_slope 0.01 runs as "
                                          r"2\*\*-7 = 0.0078125"):
        network = to_network(model)
    assert network.layers[0].leak == 7
    assert isinstance(network_to_torch(network)[1], nn.LeakyReLU)
    assert network_to_torch(network)[1].negative_slope == 2 ** -7


@pytest.mark.parametrize("model, words", [
    (nn.Sequential(nn.Hardtanh(), nn.Linear(4, 2)), ["the model's input", "clamp"]),
    (nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Hardtanh(-2, 0), nn.Linear(4, 2)),
     ["constant output"]),
    (nn.Sequential(nn.Linear(4, 4), nn.Hardtanh(), nn.LeakyReLU(0.5), nn.Linear(4, 2)),
     ["before a clamp, not after"]),
    (nn.Sequential(nn.Linear(4, 4), nn.LeakyReLU(1.5), nn.Linear(4, 2)),
     ["negative_slope 1.5", "between 0 and 1"]),
    (nn.Sequential(nn.Linear(4, 4), nn.LeakyReLU(1e-9), nn.Linear(4, 2)),
     ["do not come near"]),
])
def test_an_activation_the_engine_cannot_run_is_refused_by_name(model, words):
    with pytest.raises(InputError) as error:
        to_network(model)
    for word in words:
        assert word in str(error.value)


def test_clamps_and_leaks_are_not_swapped_and_tanh_is():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU6(), nn.Flatten(), nn.Linear(8, 4),
                          nn.LeakyReLU(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    _, swaps = swap_activations(model)
    assert [swap.kind for swap in swaps] == ["Tanh"]
    _, onnx_swaps = swap_onnx_activations(onnx_of(nn.Sequential(
        nn.Unflatten(1, (1, 4, 4)), *model), 16))
    assert [swap.kind for swap in onnx_swaps] == ["Tanh"]


def dense_network(seed: int = 0) -> Network:
    """A 10-24-12-3 network with ReLU6, then LeakyReLU(0.125) and Hardtanh(-1, 1), its
    weights 3 shared values."""
    rng = np.random.default_rng(seed)

    def weight(out, inp):
        return rng.choice([0.0, 0.0, -0.5, 0.25, 0.75], size=(out, inp))

    return Network((Linear("fc1", weight(24, 10), rng.normal(size=24), False, clamp=(0.0, 6.0)),
                    Linear("fc2", weight(12, 24), rng.normal(size=12), False,
                           clamp=(-1.0, 1.0), leak=3),
                    Linear("fc3", weight(3, 12), rng.normal(size=3), False)))


def conv_network(seed: int = 0) -> Network:
    """A 1x8x8 map through a 3x3 convolution of 4 channels with ReLU6 and 2x2 max pooling,
    then a leaky Linear layer and a plain one."""
    rng = np.random.default_rng(seed)
    geometry = ConvGeometry(1, 8, 8, 4, (3, 3), (1, 1), (1, 1), Pool((2, 2), (2, 2)))
    return Network((
        Conv2d("conv", rng.choice([0.0, -0.5, 0.5, 1.0], size=(4, 9)), rng.normal(size=4),
               False, geometry, clamp=(0.0, 6.0)),
        Linear("fc1", rng.choice([0.0, 0.0, -0.25, 0.5], size=(12, 64)), rng.normal(size=12),
               False, leak=2),
        Linear("fc2", rng.choice([0.0, -0.5, 0.5], size=(3, 12)), rng.normal(size=3), False)))


def test_ranges_and_leaks_are_quantized_to_the_output_format():
    network = dense_network()
    x = np.random.default_rng(2).normal(scale=2, size=(200, 10))
    quantized = quantize_network(network, x)
    first, second, _ = quantized.layers
    assert first.output_format.frac == 4 and (first.requant.low, first.requant.high) == (0, 96)
    assert first.relu and not second.relu and second.requant.leak == 3
    assert (second.requant.low, second.requant.high) == (-(1 << second.output_format.frac),
                                                         1 << second.output_format.frac)
    hidden = first.forward(first.input_format.quantize(x))
    assert hidden.max() == 96 and hidden.min() == 0
    # A negative sum shifts 3 bits further: the slope 1/8 of the float layer's, rounded down.
    sums = first.input_format.quantize(x)
    out = second.forward(first.forward(sums))
    floats = network.layers[1].forward(first.output_format.dequantize(first.forward(sums)),
                                       second.codebook[second.codes] * 2.0 ** -second
                                       .weight_format.frac)
    assert np.all(np.abs(second.output_format.dequantize(out) - floats)
                  <= 2.0 ** -second.output_format.frac)
    # Not the plain write-back's form: the engine needs layer_activation.
    assert first.power_of_two_form() is None and first.activation_form() == (
        first.shift, 0, 96, 0)


def test_a_compressed_model_keeps_its_activations_through_its_file(tmp_path):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)
    model = nn.Sequential(nn.Linear(6, 24), nn.ReLU6(), nn.Linear(24, 12), nn.LeakyReLU(0.25),
                          nn.Linear(12, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compressed = sf.compress(model, (x, y), **SCHEDULE)
    assert compressed.float_network.layers[0].clamp == (0.0, 6.0)
    assert compressed.float_network.layers[1].leak == 2
    # The bound in the output format, saturated there when the data never reached it.
    first, second = compressed.network.layers[:2]
    assert first.requant.high == min(6 << first.output_format.frac, 127)
    assert second.requant.leak == 2
    loaded = load_compressed(compressed.save(tmp_path / "m.sfm"))
    assert loaded.float_network.layers[0].clamp == (0.0, 6.0)
    assert loaded.float_network.layers[1].leak == 2 and loaded.network.layers[1].requant.leak == 2
    np.testing.assert_array_equal(loaded.predict(x), compressed.predict(x))
    program = sf.compile(compressed, pes=4)
    assert program.config.layer_activation
    reloaded = sf.load_program(program.save(tmp_path / "program"))
    np.testing.assert_array_equal(sf.reference(reloaded, x[:50]), sf.reference(program, x[:50]))


@pytest.mark.cocotb
@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_ranges_and_leaks_are_bit_exact_on_the_rtl(kind, tmp_path):
    network = dense_network() if kind == "dense" else conv_network()
    x = np.random.default_rng(3).normal(scale=2, size=(24, network.input_size))
    quantized = quantize_network(network, x)
    # The most PEs the iCEBreaker holds for each (a conv engine's logic is larger).
    program = sf.compile(quantized, pes=4 if kind == "dense" else 2, board="icebreaker")
    assert program.config.layer_activation and not program.config.multiplier_bits
    assert program.config.conv == (kind == "conv")
    assert_bit_and_cycle_exact(program, quantized, x, tmp_path / "rtl", kind)


def with_random_activations(network, rng):
    """``network`` with each layer given a random output range (within its format's, from 0
    or below) and a random leak (0 .. 6), as a clamp and a leaky ReLU quantize to."""
    import dataclasses

    from sparseforge.compiler.ir import QuantizedNetwork, RowRequant

    layers = []
    for layer in network.layers:
        fmt = layer.output_format
        low = int(rng.choice([0, fmt.min, int(rng.integers(fmt.min, 0))]))
        high = int(rng.integers(max(low, 0) + 1, fmt.max + 1))
        leak = 0 if low == 0 else int(rng.integers(0, 7))
        rows = RowRequant.power_of_two(layer.out_features, layer.shift, low, high, leak=leak)
        layers.append(dataclasses.replace(layer, relu=low == 0, requant=rows))
    return QuantizedNetwork(tuple(layers))


@pytest.mark.cocotb
def test_random_ranges_and_leaks_on_one_engine(tmp_path):
    """Random networks of the engine sweep (tests/test_engine_random.py) with a random range
    and leak on every layer, on one 4-PE engine with shared requantizers and the ECP5's
    registers (the requantizer's two-stage shift and clamp), inputs streamed with stalls."""
    from sparseforge.compiler.program import compile as compile_program
    from sparseforge.sim.reference.golden import run_image
    from sparseforge.sim.rtl import RtlCase, run_rtl
    from sparseforge.sim.runner import available_simulators
    from tests.test_engine_random import Case, check, make_cases, shared_config

    if "verilator" not in available_simulators():
        pytest.skip("verilator is not installed")
    rng = np.random.default_rng(77)
    cases = [Case(case.name, with_random_activations(case.network, rng), case.inputs)
             for case in make_cases(4, 40)[5:17]]                  # 12 small networks
    config = shared_config(cases, 4, scan_lanes=2, fifo_depth=4, writeback_lanes=2,
                           readout_register=True, link_registers=True, layer_activation=True)
    programs = [compile_program(case.network, config=config) for case in cases]
    taken = [program.taken_inputs(case.inputs) for case, program in zip(cases, programs)]
    results = run_rtl(config, [RtlCase(case.name, program.image, x,
                                       run_image(config, program.image, x))
                               for case, program, x in zip(cases, programs, taken)],
                      build_dir=tmp_path, seed=7, input_idle=0.3, output_stall=0.3)
    leaky = sum(layer.requant.leak > 0 for case in cases for layer in case.network.layers)
    assert leaky >= 5
    for case, program, result in zip(cases, programs, results):
        check(program, case, result)


def test_the_compile_table_names_each_layers_activation():
    from sparseforge.sim.reference.workload import layer_stats

    x = np.random.default_rng(2).normal(scale=2, size=(200, 10))
    program = sf.compile(quantize_network(dense_network(), x), pes=4)
    assert [stats.activation for stats in layer_stats(program)] == [
        "ReLU, clamp 0 .. 6", "leaky 2**-3, clamp -1 .. 1", "none"]


@pytest.mark.parametrize("leak, message", [
    ("3", "must be an object of integers"), (True, "must be an object of integers"),
    (-1, "leak must be from 0 to 15"), (16, "leak must be from 0 to 15")])
def test_a_program_with_a_bad_leak_is_refused_naming_the_field(leak, message, tmp_path):
    import json

    from sparseforge.compiler.program import ProgramError

    x = np.random.default_rng(2).normal(scale=2, size=(50, 10))
    folder = sf.compile(quantize_network(dense_network(), x), pes=4).save(tmp_path / "p")
    manifest = json.loads((folder / "program.json").read_text())
    manifest["layers"][1]["requant"]["leak"] = leak
    (folder / "program.json").write_text(json.dumps(manifest))
    with pytest.raises(ProgramError, match=r"program.json: layers\[1\]\.requant.*" + message):
        sf.load_program(folder)
