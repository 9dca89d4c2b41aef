"""Swapping the activations the engine does not have for ReLU (``compress/swap.py``,
``sf.compress(..., swap_activations=True)``): which ones are swapped, that the model given is
left alone, and that the retrained model compresses and compiles bit-exactly."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import sparseforge as sf
from sparseforge.compiler.compress.swap import Swap, swap_activations, swap_onnx_activations
from sparseforge.compiler.errors import InputWarning

FAST = dict(sparsity=0.6, prune_steps=1, prune_epochs=2, final_epochs=2, share_epochs=2,
            swap_epochs=20)


class Functional(nn.Module):
    """Activations written as calls in a forward, the last one ending the network."""

    def __init__(self):
        super().__init__()
        self.first, self.second, self.out = nn.Linear(6, 12), nn.Linear(12, 8), nn.Linear(8, 3)

    def forward(self, x):
        x = torch.tanh(self.first(x))
        x = F.leaky_relu(self.second(x), 0.1)
        return torch.sigmoid(self.out(x))


def blobs(features=6, classes=3, count=240, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(classes, features))
    y = rng.integers(0, classes, count)
    return (centres[y] + rng.normal(size=(count, features))).astype(np.float32), y


def exported(model, path, **options):
    """``model`` exported to ONNX at ``path`` with a dynamic batch axis (TorchScript export,
    whose deprecation warning is not this test's subject)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, torch.zeros(1, 6), str(path), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}}, **options)
    return path


def test_hidden_activations_become_relu_and_the_model_given_is_unchanged():
    model = nn.Sequential(nn.Linear(6, 12), nn.GELU(), nn.Linear(12, 3), nn.Tanh())
    swapped, swaps = swap_activations(model)
    assert swaps == [Swap("1", "GELU")]                 # the final Tanh is not hidden
    assert isinstance(model[1], nn.GELU)
    x = torch.randn(5, 6)
    expected = torch.tanh(model[2](torch.relu(model[0](x))))
    assert torch.equal(swapped(x), expected)

    swapped, swaps = swap_activations(Functional())
    assert [swap.kind for swap in swaps] == ["tanh"]      # the engine has leaky ReLU
    assert "sigmoid" in swapped.code                   # the final one stays

    relu_only = nn.Sequential(nn.Linear(6, 3), nn.ReLU(), nn.Linear(3, 2))
    assert swap_activations(relu_only) == (relu_only, [])


def test_compress_runs_them_as_tables_unless_asked_to_swap_and_then_retrains():
    x, y = blobs()
    model = nn.Sequential(nn.Linear(6, 16), nn.ELU(), nn.Linear(16, 3))
    tabled = sf.compress(model, train=(x, y),
                         **{k: v for k, v in FAST.items() if k != "swap_epochs"})
    assert str(tabled.network.layers[0].function) == "elu"
    assert "swapped_activations" not in tabled.provenance
    with pytest.warns(InputWarning, match=r"ELU at '1' swapped for ReLU and the model retrained "
                                          r"\(20 epochs\): accuracy \d+\.\d% as given, "
                                          r"\d+\.\d% with ReLU, \d+\.\d% retrained"):
        compressed = sf.compress(model, train=(x, y), swap_activations=True, **FAST)
    assert isinstance(model[1], nn.ELU)
    provenance = compressed.provenance
    assert provenance["swapped_activations"] == [{"where": "1", "kind": "ELU"}]
    assert provenance["accuracy_swapped_retrained"] == compressed.report.accuracy_float
    assert provenance["accuracy_swapped_retrained"] > 0.8
    program = sf.compile(compressed, pes=2)
    codes = compressed.network.quantize_input(x[:20])
    np.testing.assert_array_equal(sf.reference(program, codes, integer=True),
                                  compressed.network.forward(codes))


def test_a_final_activation_is_not_swapped():
    x, y = blobs()
    model = nn.Sequential(nn.Linear(6, 3), nn.Tanh())
    compressed = sf.compress(model, train=(x, y), swap_activations=True, **FAST)
    assert str(compressed.network.layers[-1].function) == "tanh"     # its table
    assert "swapped_activations" not in compressed.provenance


def test_an_onnx_models_activation_nodes_are_swapped(tmp_path):
    x, y = blobs()
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    path = exported(model, tmp_path / "tanh.onnx")
    proto, swaps = swap_onnx_activations(path)
    assert [swap.kind for swap in swaps] == ["Tanh"]
    assert [node.op_type for node in proto.graph.node] == ["Gemm", "Relu", "Gemm"]
    with pytest.warns(InputWarning, match=r"Tanh at '[^']+' swapped for ReLU .* as given"):
        compressed = sf.compress(str(path), train=(x, y), swap_activations=True, **FAST)
    # The model's own accuracy, run by onnxruntime, is torch's.
    with torch.no_grad():
        own = float(np.mean(model(torch.from_numpy(x)).numpy().argmax(axis=1) == y))
    assert compressed.provenance["accuracy_as_given"] == pytest.approx(own)


class TimesTanh(nn.Module):
    """x * tanh(x) between two layers: arithmetic no function of the engine's computes."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.first, self.second = nn.Linear(6, 16), nn.Linear(16, 3)

    def forward(self, x):
        x = self.first(x)
        return self.second(x * torch.tanh(x))


def test_the_command_line_runs_silu_as_a_table_and_swaps_when_asked(tmp_path, capsys):
    from sparseforge.cli import main

    x, y = blobs()
    np.savez(tmp_path / "data.npz", x_train=x, y_train=y)
    common = ["--data", str(tmp_path / "data.npz"), "-o", str(tmp_path / "m.sfm"),
              "--sparsity", "0.6", "--prune-steps", "1", "--prune-epochs", "1",
              "--final-epochs", "1", "--share-epochs", "1"]
    # torch writes SiLU as x * Sigmoid(x): the capture recognises the function.
    silu = exported(nn.Sequential(nn.Linear(6, 16), nn.SiLU(), nn.Linear(16, 3)),
                    tmp_path / "silu.onnx")
    assert main(["compress", str(silu), *common]) == 0
    assert str(sf.load_compressed(tmp_path / "m.sfm").float_network.layers[0].function) == "silu"
    # Arithmetic that is no function it has: the refusal of the Mul names the activation.
    other = exported(TimesTanh(), tmp_path / "other.onnx")
    command = ["compress", str(other), *common]
    assert main(command) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert ("the model's activations the engine does not have: Tanh -> Mul at " in error)
    assert "--swap-activations" in error
    with warnings.catch_warnings():
        warnings.simplefilter("always", InputWarning)
        assert main(command + ["--swap-activations", "--swap-epochs", "3"]) == 0
    assert "swapped for ReLU and the model retrained (3 epochs)" in " ".join(
        capsys.readouterr().err.split())
    assert sf.load_compressed(tmp_path / "m.sfm").provenance["swapped_activations"]


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.second = nn.Linear(6, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.second(torch.sigmoid(self.first(x)) * 2 + x)


@pytest.mark.parametrize("opset", [17, 20])
def test_onnx_activations_written_as_arithmetic(tmp_path, opset):
    model = nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.Linear(16, 3))
    path = exported(model, tmp_path / "gelu.onnx", opset_version=opset)
    proto, swaps = swap_onnx_activations(path)
    assert [node.op_type for node in proto.graph.node if node.op_type != "Constant"] == [
        "Gemm", "Relu", "Gemm"]
    assert [swap.kind for swap in swaps] == ["GELU (Erf arithmetic)" if opset < 20 else "Gelu"]
    # Arithmetic that reads another tensor besides the activation's input is not part of
    # it: the skip connection's Add stays (and the capture carries it, residual.py).
    exported(Residual(), path)
    proto, swaps = swap_onnx_activations(path)
    assert [swap.kind for swap in swaps] == ["Sigmoid -> Mul"]
    assert [node.op_type for node in proto.graph.node if node.op_type != "Constant"] == [
        "Gemm", "Relu", "Add", "Gemm"]
    x, y = blobs()
    with pytest.warns(InputWarning, match="Sigmoid -> Mul at '[^']+' swapped for ReLU"):
        compressed = sf.compress(str(path), train=(x, y), swap_activations=True, **FAST)
    # first's 6 outputs and the 6 inputs carried beside them (the input can be negative: the
    # ReLU would clip it, so it is carried as itself and its negation, 12 rows).
    assert [layer.out_features for layer in compressed.network.layers] == [18, 3]


def test_a_matmul_layers_bias_stays_the_layers_when_its_activation_is_swapped():
    # Keras and other exporters write a layer as MatMul then Add: the Add is the bias, not
    # part of the Tanh after it.
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    constants = [numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)
                 for name, shape in (("W1", (4, 6)), ("b1", (6,)), ("W2", (6, 2)), ("b2", (2,)))]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W1"], ["h0"], name="mm1"),
         helper.make_node("Add", ["h0", "b1"], ["h1"], name="add1"),
         helper.make_node("Tanh", ["h1"], ["h2"], name="tanh"),
         helper.make_node("MatMul", ["h2", "W2"], ["h3"], name="mm2"),
         helper.make_node("Add", ["h3", "b2"], ["y"], name="add2")], "keras",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])], constants)
    proto, swaps = swap_onnx_activations(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    assert swaps == [Swap("tanh", "Tanh")]
    assert [(node.op_type, list(node.input)) for node in proto.graph.node][:3] == [
        ("MatMul", ["x", "W1"]), ("Add", ["h0", "b1"]), ("Relu", ["h1"])]
