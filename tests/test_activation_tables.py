"""Activation functions as tables: Tanh, Sigmoid, GELU, SiLU, ELU, ... after a Linear layer
or a convolution.  Captured from modules, functions and ONNX, trained as the model's own,
quantized as docs/numerics.md "Activations as tables" says (the sums to an 8-bit
pre-activation, a table of the function at each of its 256 values), kept in the .sfm and the
program, and run by the engine's write-back (``table_slots``): its outputs equal the golden
model's and its cycles the cycle model's."""

from __future__ import annotations

import dataclasses
import io
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from amaranth.sim import Simulator

import sparseforge as sf
from sparseforge.compiler.activations import FUNCTIONS, Function
from sparseforge.compiler.capture import capture
from sparseforge.compiler.compress.convert import network_to_torch, to_network
from sparseforge.compiler.compress.model import load_compressed
from sparseforge.compiler.compress.quantize import quantize_network
from sparseforge.compiler.config import EngineConfig
from sparseforge.compiler.conv import ConvGeometry, Pool
from sparseforge.compiler.errors import InputError
from sparseforge.compiler.ir import Conv2d, Linear, Network, OpKind
from sparseforge.compiler.numerics import requantize_rows
from sparseforge.hw.requantize import Requantizer, latency
from tests.rtl_checks import assert_bit_and_cycle_exact

SCHEDULE = dict(sparsity=0.6, prune_steps=2, prune_epochs=3, final_epochs=6, share_epochs=4)

# Each function with parameters other than PyTorch's defaults where it has any.
EXAMPLES = [Function("tanh"), Function("sigmoid"), Function.of("gelu"),
            Function.of("gelu", tanh=1.0), Function("silu"), Function.of("elu", alpha=0.5),
            Function("selu"), Function.of("celu", alpha=2.0),
            Function.of("softplus", beta=2.0, threshold=5.0), Function("mish"),
            Function("hardswish"), Function("hardsigmoid"), Function("softsign"),
            Function("tanhshrink"), Function("logsigmoid")]


def test_every_function_has_an_example():
    assert {function.name for function in EXAMPLES} == set(FUNCTIONS)


@pytest.mark.parametrize("function", EXAMPLES, ids=str)
def test_each_function_is_what_its_pytorch_module_computes(function):
    x = np.linspace(-12, 12, 2001)
    with torch.no_grad():
        expected = function.torch_module()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(function(x), expected, rtol=1e-12, atol=1e-12)
    assert Function.from_json(function.to_json()) == function


def test_a_function_names_what_is_wrong():
    with pytest.raises(ValueError, match="no activation function 'swish'; the engine's are "
                                         "celu, elu, gelu"):
        Function("swish")
    with pytest.raises(ValueError, match=r"elu takes 1 finite parameters \(alpha\)"):
        Function("elu", (float("nan"),))
    with pytest.raises(ValueError, match="gelu has no parameter approximate"):
        Function.of("gelu", approximate=1.0)


class InForward(nn.Module):
    """The functions called in a forward, as people write them."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        x = F.gelu(self.fc1(x), approximate="tanh")
        x = F.elu(self.fc2(x), alpha=0.5)
        return torch.sigmoid(self.fc3(x.tanh()))


def onnx_of(model, features: int):
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), torch.zeros(1, features), buffer, dynamo=False,
                          opset_version=20)
    import onnx

    return onnx.load_from_string(buffer.getvalue())


@pytest.mark.parametrize("source", ["modules", "functions", "onnx"])
def test_functions_are_captured_with_their_settings(source):
    torch.manual_seed(0)
    modules = nn.Sequential(nn.Linear(6, 8), nn.GELU(approximate="tanh"), nn.Linear(8, 8),
                            nn.ELU(0.5), nn.Tanh(), nn.Linear(8, 3), nn.Sigmoid())
    model = {"modules": modules, "functions": InForward(), "onnx": modules}[source]
    given = onnx_of(model, 6) if source == "onnx" else model
    graph = capture(given)
    functions = [op.attrs["function"] for op in graph.ops if op.kind is OpKind.FUNCTION]
    assert [str(f) for f in functions] == ["gelu(tanh=1)", "elu(alpha=0.5)", "tanh"]
    x = np.random.default_rng(1).normal(size=(20, 6))
    with torch.no_grad():
        expected = model(torch.from_numpy(x).float()).numpy()
    np.testing.assert_allclose(graph.run(x), expected, rtol=1e-4, atol=1e-5)
    # One function a layer: the table is of the layer's sums.
    with pytest.raises(InputError, match=r"follows another activation of layer '.*2.*'; the "
                                         r"engine applies one activation function"):
        to_network(given)


def test_a_function_fuses_into_its_layer_and_a_relu_after_it_is_a_clamp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.SiLU(), nn.ReLU(), nn.Linear(8, 8), nn.Softplus(),
                          nn.Linear(8, 3), nn.Sigmoid())
    network = to_network(model)
    assert [str(layer.function) for layer in network.layers] == ["silu", "softplus", "None"]
    assert network.layers[0].clamp == (0.0, None)     # final Sigmoid dropped: a classifier
    x = np.random.default_rng(1).normal(size=(20, 6))
    with torch.no_grad():
        logits = model[:-1](torch.from_numpy(x).float()).numpy()
    np.testing.assert_allclose(network.forward(x), logits, rtol=1e-4, atol=1e-5)
    # Trained as it runs: the network's module has the function.
    trainable = network_to_torch(network)
    assert any(isinstance(module, nn.SiLU) for module in trainable.modules())


def test_a_function_that_can_decrease_is_refused_after_max_pooling():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.GELU(), nn.Flatten(),
                          nn.Linear(18, 3))
    with pytest.raises(InputError, match=r"\(gelu\) follows a max pooling: .* put it before "
                                         r"the pooling"):
        to_network(model, (1, 8, 8))
    monotone = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Tanh(), nn.Flatten(),
                             nn.Linear(18, 3))
    assert str(to_network(monotone, (1, 8, 8)).layers[0].function) == "tanh"


def dense_network(seed: int = 0) -> Network:
    """A 10-24-12-3 network with GELU, then Tanh, its weights a few shared values."""
    rng = np.random.default_rng(seed)

    def weight(out, inp):
        return rng.choice([0.0, 0.0, -0.5, 0.25, 0.75], size=(out, inp))

    return Network((Linear("fc1", weight(24, 10), rng.normal(size=24), False,
                           function=Function.of("gelu")),
                    Linear("fc2", weight(12, 24), rng.normal(size=12), False,
                           function=Function("tanh")),
                    Linear("fc3", weight(3, 12), rng.normal(size=3), False)))


def conv_network(seed: int = 0) -> Network:
    """A 1x8x8 map through a 3x3 convolution of 4 channels with Sigmoid and 2x2 max pooling,
    then an ELU Linear layer and a plain one."""
    rng = np.random.default_rng(seed)
    geometry = ConvGeometry(1, 8, 8, 4, (3, 3), (1, 1), (1, 1), Pool((2, 2), (2, 2)))
    return Network((
        Conv2d("conv", rng.choice([0.0, -0.5, 0.5, 1.0], size=(4, 9)), rng.normal(size=4),
               False, geometry, function=Function("sigmoid")),
        Linear("fc1", rng.choice([0.0, 0.0, -0.25, 0.5], size=(12, 64)), rng.normal(size=12),
               False, function=Function.of("elu", alpha=0.5)),
        Linear("fc2", rng.choice([0.0, -0.5, 0.5], size=(3, 12)), rng.normal(size=3), False)))


def test_a_layers_table_is_its_function_at_every_pre_activation_value():
    network = dense_network()
    x = np.random.default_rng(2).normal(scale=2, size=(200, 10))
    quantized = quantize_network(network, x)
    first, second, last = quantized.layers
    assert last.table is None and str(first.function) == "gelu"
    for layer, float_layer in ((first, network.layers[0]), (second, network.layers[1])):
        rows = layer.requant
        assert (rows.low, rows.high, len(rows.table)) == (-128, 127, 256)
        pre_frac = layer.input_format.frac + layer.weight_format.frac - layer.shift
        values = np.arange(-128, 128) * 2.0 ** -pre_frac
        expected = layer.output_format.quantize(float_layer.function(values))
        np.testing.assert_array_equal(rows.table, expected)
    # The layer's outputs: the sums requantized as any layer's, then the table.
    x_int = first.input_format.quantize(x)
    sums = first.codebook[first.codes] @ x_int.T + first.bias[:, None]
    pre = requantize_rows(sums.T, 0, 1, first.shift, -128, 127)
    np.testing.assert_array_equal(first.forward(x_int), first.table[pre + 128])
    assert first.activation_text() == "gelu (table)"
    # Within a step of the pre-activation and one of the output of the float layer's.
    floats = network.forward(x)
    got = last.output_format.dequantize(quantized.forward(x_int))
    assert np.abs(got - floats).max() < 0.5


def test_a_table_needs_8_bit_activations():
    x = np.random.default_rng(2).normal(size=(50, 10))
    with pytest.raises(InputError, match=r"layer fc1: its activation function \(gelu\) runs as "
                                         r"a table of 256 values, for 8-bit activations, not "
                                         r"16-bit"):
        quantize_network(dense_network(), x, act_bits=16)


def test_a_compressed_model_keeps_its_functions_through_its_file_and_program(tmp_path):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)
    model = nn.Sequential(nn.Linear(6, 24), nn.Tanh(), nn.Linear(24, 12),
                          nn.GELU(approximate="tanh"), nn.Linear(12, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compressed = sf.compress(model, (x, y), **SCHEDULE)
    assert [str(layer.function) for layer in compressed.float_network.layers] == [
        "tanh", "gelu(tanh=1)", "None"]
    # The tables lose little against the shared float network they quantize.
    report = compressed.report
    assert abs(report.accuracy_quantized - report.accuracy_shared) < 0.05
    loaded = load_compressed(compressed.save(tmp_path / "m.sfm"))
    assert str(loaded.float_network.layers[1].function) == "gelu(tanh=1)"
    for ours, theirs in zip(loaded.network.layers, compressed.network.layers):
        assert (ours.table is None) == (theirs.table is None)
        if ours.table is not None:
            np.testing.assert_array_equal(ours.table, theirs.table)
    np.testing.assert_array_equal(loaded.predict(x), compressed.predict(x))
    program = sf.compile(compressed, pes=4)
    assert program.config.table_slots == 2 and not program.config.multiplier_bits
    reloaded = sf.load_program(program.save(tmp_path / "program"))
    np.testing.assert_array_equal(reloaded.image.tables, program.image.tables)
    np.testing.assert_array_equal(sf.reference(reloaded, x[:50]), sf.reference(program, x[:50]))
    codes = compressed.network.quantize_input(x[:50])
    np.testing.assert_array_equal(sf.reference(program, codes, integer=True),
                                  compressed.network.forward(codes))


def test_an_engine_without_table_slots_refuses_a_table_by_name():
    x = np.random.default_rng(2).normal(scale=2, size=(50, 10))
    quantized = quantize_network(dense_network(), x)
    program = sf.compile(quantized, pes=2)
    config = dataclasses.replace(program.config, table_slots=1)
    with pytest.raises(ValueError, match="table_slots: 2 layers run an activation function as "
                                         "a table, the engine has 1 table slots"):
        sf.compile(quantized, config=config)


def rtl_table_requantize(config, tables, acc, bias, shift, slots, run):
    """(acc, bias) pairs through a Requantizer with ``tables`` (slot-major words), ``run``
    pairs a layer: pair ``i`` read through slot ``slots[i]`` (None: no table).  The first slot's words are written over
    the host's port before, the second's are the memory's initial words."""
    size = 1 << config.act_bits
    dut = Requantizer(config, tables=[0] * size + list(tables[1]))
    outputs = []

    async def testbench(ctx):
        for address, word in enumerate(tables[0]):
            ctx.set(dut.table_write.en, 1)
            ctx.set(dut.table_write.addr, address)
            ctx.set(dut.table_write.data, int(word) & (size - 1))
            await ctx.tick()
        ctx.set(dut.table_write.en, 0)
        ctx.set(dut.shift, shift)
        ctx.set(dut.relu, 0)
        for start in range(0, len(acc), run):
            # A layer's parameters are stable while its rows pass, as the descriptor's are.
            ctx.set(dut.table, slots[start] is not None)
            ctx.set(dut.table_slot, slots[start] or 0)
            for cycle in range(run + latency(config)):
                if cycle < run:
                    ctx.set(dut.i.valid, 1)
                    ctx.set(dut.i.payload, {"acc": int(acc[start + cycle]),
                                            "bias": int(bias[start + cycle])})
                else:
                    ctx.set(dut.i.valid, 0)
                await ctx.tick()
                if ctx.get(dut.o.valid):
                    outputs.append(ctx.get(dut.o.payload))

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    return np.array(outputs)


@pytest.mark.parametrize("link_registers", [False, True])
def test_the_requantizers_table_stage_matches_numerics(link_registers):
    config = EngineConfig(pes=1, act_bits=8, acc_bits=20, bias_bits=12,
                          readout_register=link_registers, link_registers=link_registers,
                          table_slots=2)
    assert latency(config) == latency(EngineConfig(
        pes=1, act_bits=8, acc_bits=20, bias_bits=12, readout_register=link_registers,
        link_registers=link_registers)) + 1
    rng = np.random.default_rng(5)
    tables = rng.integers(-128, 128, size=(2, 256))
    acc = rng.integers(-(1 << 19), 1 << 19, 400) >> rng.integers(0, 12, 400)
    bias = rng.integers(-(1 << 11), 1 << 11, 400)
    layers = [0, None, 1, 1, 0, None, 1, 0]         # 8 layers of 50 rows
    slots = [layers[i // 50] for i in range(400)]
    shift = 5
    r = requantize_rows(acc, bias, 1, shift, -128, 127)
    expected = np.array([value if slot is None else tables[slot][value + 128]
                         for value, slot in zip(r, slots)])
    np.testing.assert_array_equal(rtl_table_requantize(config, tables, acc, bias, shift, slots, 50),
                                  expected)


@pytest.mark.cocotb
@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_tables_are_bit_exact_on_the_rtl(kind, tmp_path):
    network = dense_network() if kind == "dense" else conv_network()
    x = np.random.default_rng(3).normal(scale=2, size=(24, network.input_size))
    quantized = quantize_network(network, x)
    program = sf.compile(quantized, pes=4 if kind == "dense" else 2, board="icebreaker")
    assert program.config.table_slots == 2 and not program.config.multiplier_bits
    assert program.config.conv == (kind == "conv")
    assert_bit_and_cycle_exact(program, quantized, x, tmp_path / "rtl", kind)


@pytest.mark.parametrize("function, message", [
    (["swish", []], "no activation function 'swish'"),
    (["elu", [1.0, 2.0]], r"elu takes 1 finite parameters \(alpha\)"),
    ("tanh", r"an activation function is \[name, \[parameters\]\]")])
def test_a_program_with_a_bad_function_is_refused_naming_the_field(function, message, tmp_path):
    import json

    from sparseforge.compiler.program import ProgramError

    x = np.random.default_rng(2).normal(scale=2, size=(50, 10))
    folder = sf.compile(quantize_network(dense_network(), x), pes=2).save(tmp_path / "p")
    manifest = json.loads((folder / "program.json").read_text())
    manifest["layers"][1]["function"] = function
    (folder / "program.json").write_text(json.dumps(manifest))
    with pytest.raises(ProgramError, match=r"program.json: layers\[1\].*" + message):
        sf.load_program(folder)


def test_a_table_of_values_outside_its_width_is_refused():
    from sparseforge.compiler.ir import RowRequant

    with pytest.raises(ValueError, match="an activation table is 2\\*\\*bits integers"):
        RowRequant.power_of_two(3, 2, -128, 127, table=np.full(256, 128))


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("activation, name", [
    (nn.SiLU(), "silu"), (nn.Mish(), "mish"), (nn.GELU(), "gelu"),
    (nn.GELU(approximate="tanh"), "gelu(tanh=1)"), (nn.Hardswish(), "hardswish"),
    (nn.LogSigmoid(), "logsigmoid"), (nn.Tanhshrink(), "tanhshrink"), (nn.Softsign(), "softsign"),
])
def test_functions_an_exporter_writes_as_arithmetic_are_recognised(activation, name, opset):
    """torch.onnx writes these as a few elementwise nodes (SiLU as x * Sigmoid(x), GELU as Erf
    arithmetic, ...): the capture evaluates such a run and finds the function it computes."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), activation, nn.Linear(8, 3)).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 6), buffer, dynamo=False, opset_version=opset)
    import onnx

    graph = capture(onnx.load_from_string(buffer.getvalue()))
    assert [str(op.attrs.get("function", op.kind.value)) for op in graph.ops] == [
        "linear", name, "linear"]
    x = np.random.default_rng(0).normal(scale=3, size=(50, 6))
    with torch.no_grad():
        expected = model(torch.from_numpy(x).float()).numpy()
    np.testing.assert_allclose(graph.run(x), expected, rtol=1e-5, atol=1e-5)


class AlmostGelu(nn.Module):
    """x * sigmoid(1.702 x), GELU's sigmoid approximation: none of the engine's functions."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x):
        x = self.fc1(x)
        return self.fc2(x * torch.sigmoid(1.702 * x))


def test_arithmetic_that_is_almost_a_function_is_not_taken_for_it():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proto = onnx_of(AlmostGelu(), 6)
    with pytest.raises(InputError, match=r"cannot run on the engine \(Mul\)"):
        capture(proto)


class WrittenSwish(nn.Module):
    """SiLU written out in a forward, as EfficientNet-style code does."""

    def __init__(self, form):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.form = nn.Linear(6, 8), nn.Linear(8, 3), form

    def forward(self, x):
        x = self.fc1(x)
        if self.form == "product":
            x = x * torch.sigmoid(x)
        elif self.form == "gate-first":
            x = torch.sigmoid(x) * x
        else:
            x = x.mul(x.sigmoid())
        return self.fc2(x)


@pytest.mark.parametrize("form", ["product", "gate-first", "methods"])
def test_a_swish_written_in_a_forward_is_silu(form):
    model = WrittenSwish(form).eval()
    graph = capture(model)
    assert [str(op.attrs.get("function", op.kind.value)) for op in graph.ops] == [
        "linear", "silu", "linear"]
    x = np.random.default_rng(0).normal(scale=3, size=(50, 6))
    with torch.no_grad():
        expected = model(torch.from_numpy(x).float()).numpy()
    np.testing.assert_allclose(graph.run(x), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match="not a chain of layers"):
        capture(AlmostGelu())               # x * sigmoid(1.702 x) is no SiLU
