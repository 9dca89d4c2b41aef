"""Capture: nn.Module (Sequential walk, torch.fx) and ONNX files into the Graph IR."""

from collections import OrderedDict

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from torch.nn.utils import prune

from sparseforge.compiler.capture import (
    UnsupportedLayerError,
    UnsupportedSettingError,
    capture,
    capture_module,
    capture_onnx,
)
from sparseforge.compiler.ir import ENGINE_ACTIVATIONS, SUPPORTED_OPS, OpKind
from sparseforge.compiler.passes import canonicalize


def seeded_model(*modules, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(*modules)


def torch_out(model, x):
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x.astype(np.float32))).double().numpy()


def inputs(features, batch=16, seed=1):
    return np.random.default_rng(seed).normal(size=(batch, features))


def test_sequential_mlp_is_captured_in_order_with_module_paths():
    model = seeded_model(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Dropout(0.3),
                         nn.Linear(8, 3), nn.Softmax(dim=1))
    graph = capture(model)
    assert [op.kind for op in graph.ops] == [OpKind.FLATTEN, OpKind.LINEAR, OpKind.RELU,
                                             OpKind.IDENTITY, OpKind.LINEAR, OpKind.SOFTMAX]
    assert [op.name for op in graph.ops] == ["0", "1", "2", "3", "4", "5"]
    assert graph.input_size == 12
    x = inputs(12)
    np.testing.assert_allclose(graph.run(x), torch_out(model, x), rtol=1e-5, atol=1e-6)


def test_nested_sequential_names_are_paths():
    model = nn.Sequential(OrderedDict(
        encoder=nn.Sequential(OrderedDict(fc1=nn.Linear(6, 5), act=nn.ReLU())),
        head=nn.Linear(5, 2)))
    graph = capture_module(model)
    assert [op.name for op in graph.ops] == ["encoder.fc1", "encoder.act", "head"]


class ViewNet(nn.Module):
    """A custom forward: traced with torch.fx."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 9)
        self.bn = nn.BatchNorm1d(9)
        self.fc2 = nn.Linear(9, 4)

    def forward(self, x):
        x = x.view(x.size(0), -1)
        x = F.relu(self.bn(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


def test_custom_forward_is_traced_and_batchnorm_uses_running_statistics():
    torch.manual_seed(3)
    model = ViewNet()
    model.train()
    model(torch.randn(64, 1, 4, 4) * 3 + 1)         # moves the running statistics
    graph = capture(model)
    assert [op.kind for op in graph.ops] == [OpKind.FLATTEN, OpKind.LINEAR, OpKind.BATCHNORM,
                                             OpKind.RELU, OpKind.LINEAR, OpKind.SOFTMAX]
    assert graph.ops[1].name == "fc1" and graph.ops[2].name == "bn"
    x = inputs(16)
    expected = torch_out(model, x.reshape(-1, 1, 4, 4))   # eval mode: running statistics
    np.testing.assert_allclose(np.log(graph.run(x)), expected, rtol=1e-4, atol=1e-5)


def test_pruned_weights_are_the_effective_product_even_when_weight_is_stale():
    model = seeded_model(nn.Linear(10, 6), nn.ReLU(), nn.Linear(6, 2))
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    with torch.no_grad():                   # training step: weight is recomputed only in forward
        model[0].weight_orig.mul_(2.0)
    expected = (model[0].weight_orig * model[0].weight_mask).detach().double().numpy()
    weight = capture(model).ops[0].params["weight"]
    np.testing.assert_array_equal(weight, expected)
    assert np.count_nonzero(weight) == 30
    x = inputs(10)
    np.testing.assert_allclose(capture(model).run(x), torch_out(model, x), rtol=1e-5, atol=1e-6)


class NormedForward(nn.Module):
    def __init__(self, first):
        super().__init__()
        self.first, self.second = first, nn.Linear(8, 2)

    def forward(self, x):
        return self.second(torch.relu(self.first(x)))


@pytest.mark.parametrize("parametrization", ["weight_norm", "spectral_norm"])
def test_parametrized_layers_are_captured_with_the_weight_they_compute(parametrization):
    from torch.nn.utils import parametrizations

    normed = getattr(parametrizations, parametrization)
    torch.manual_seed(0)
    for model in (nn.Sequential(normed(nn.Linear(10, 8)), nn.ReLU(), nn.Linear(8, 2)),
                  NormedForward(normed(nn.Linear(10, 8)))):
        x = inputs(10)
        np.testing.assert_allclose(capture(model.eval()).run(x), torch_out(model, x),
                                   rtol=1e-5, atol=1e-6)
    conv = nn.Sequential(normed(nn.Conv2d(1, 3, 3, padding=1)), nn.ReLU(), nn.Flatten(),
                         nn.Linear(48, 2)).eval()
    x = inputs(16)
    np.testing.assert_allclose(capture(conv, input_shape=(1, 4, 4)).run(x),
                               torch_out(conv, x.reshape(-1, 1, 4, 4)), rtol=1e-5, atol=1e-6)


def test_linear_without_bias_gets_zero_bias():
    graph = capture(seeded_model(nn.Linear(4, 3, bias=False)))
    np.testing.assert_array_equal(graph.ops[0].params["bias"], np.zeros(3))


@pytest.mark.parametrize("layer,kind", [(nn.Conv3d(1, 1, 3), "Conv3d"), (nn.RReLU(), "RReLU"),
                                        (nn.LSTM(4, 4), "LSTM")])
def test_unsupported_module_names_path_type_and_supported_ops(layer, kind):
    model = nn.Sequential(OrderedDict(fc=nn.Linear(4, 4),
                                      block=nn.Sequential(nn.ReLU(), layer)))
    with pytest.raises(UnsupportedLayerError) as caught:
        capture(model)
    message = str(caught.value)
    assert f"layer 'block.1' cannot run on the engine ({kind}); supported: " in message
    assert all(op in message for op in SUPPORTED_OPS)
    # An activation the engine does not have says what to use instead; other layers do not.
    assert message.endswith(f"{ENGINE_ACTIVATIONS}: build the model with "
                            "nn.ReLU in its place and train it again, or let compress swap it "
                            "and retrain (sf.compress(..., swap_activations=True), "
                            "--swap-activations)") == (kind == "RReLU")


class Sigmoidal(nn.Module):
    """A sigmoid between layers: an activation function, run as a table."""

    def __init__(self):
        super().__init__()
        self.fc, self.out = nn.Linear(3, 3), nn.Linear(3, 2)

    def forward(self, x):
        return self.out(torch.sigmoid(self.fc(x)))


class TwoBranches(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.gate = nn.Linear(3, 3), nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(x) * torch.sigmoid(self.gate(x))


def test_unsupported_function_in_a_traced_forward():
    with pytest.raises(UnsupportedLayerError,
                       match=r"'Pointwise.erf' cannot run on the engine \(erf\)"):
        capture(Pointwise(torch.erf))
    model = Sigmoidal()
    graph = capture(model)
    assert [op.kind for op in graph.ops] == [OpKind.LINEAR, OpKind.FUNCTION, OpKind.LINEAR]
    assert graph.ops[1].attrs["function"].name == "sigmoid"
    x = inputs(3)
    np.testing.assert_allclose(graph.run(x), torch_out(model, x), rtol=1e-5, atol=1e-6)


class Pointwise(nn.Module):
    """``step`` between two layers, as people write forwards."""

    def __init__(self, step, last=None):
        super().__init__()
        torch.manual_seed(2)
        self.fc, self.out = nn.Linear(6, 5), nn.Linear(5, 3)
        self.step, self.last = step, last

    def forward(self, x):
        x = self.out(self.step(self.fc(x)))
        return self.last(x) if self.last is not None else x


@pytest.mark.parametrize("model", [
    Pointwise(lambda x: x.float().relu()),
    Pointwise(lambda x: F.relu(x.to(torch.float32))),
    Pointwise(lambda x: F.relu(x.double()).to("cpu", torch.float32)),
    Pointwise(lambda x: torch.clamp(x, min=0)),
    Pointwise(lambda x: x.clamp(0)),
    Pointwise(lambda x: x.clamp_min(0.0)),
    Pointwise(lambda x: x.relu_()),
    Pointwise(F.relu_),
    Pointwise(torch.relu, torch.sigmoid),
    Pointwise(torch.relu, nn.Sigmoid()),
], ids=["float", "to(float32)", "double, to(cpu)", "torch.clamp(min=0)", "clamp(0)",
        "clamp_min(0)", "relu_()", "F.relu_", "final torch.sigmoid", "final nn.Sigmoid"])
def test_casts_clamps_that_are_relus_and_a_final_sigmoid_are_captured(model):
    network = canonicalize(capture(model))
    assert [layer.relu for layer in network.layers] == [True, False]
    x = inputs(6)
    # A final sigmoid is dropped: the outputs are its logits, in the same order.
    expected = torch_out(Pointwise(model.step), x) if model.last else torch_out(model, x)
    np.testing.assert_allclose(network.forward(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("step, message", [
    (lambda x: x.to(torch.int8), r"\(to\) has target torch.int8"),
    (lambda x: torch.clamp(x), r"\(clamp\) has bounds \(\).*no bound is not"),
    (lambda x: x.clamp(6, 0), r"\(clamp\) has bounds \(min=6, max=0\).*lower bound below"),
])
def test_casts_that_round_and_clamps_that_cannot_be_bounds_are_refused(step, message):
    with pytest.raises(UnsupportedSettingError, match=message):
        capture(Pointwise(step))


def test_parallel_branches_are_refused_as_not_a_chain():
    # (A skip connection added back is a chain once carried: tests/test_residual.py.)
    with pytest.raises(UnsupportedLayerError, match=r"\.mul' .*not a chain of layers"):
        capture(TwoBranches())


def test_shape_mismatch_names_both_layers():
    model = seeded_model(nn.Linear(4, 8), nn.ReLU(), nn.Linear(7, 2))
    with pytest.raises(ValueError, match=r"Linear '2' takes 7 inputs but '0' gives 8"):
        capture(model)


def test_batchnorm_width_mismatch():
    model = seeded_model(nn.Linear(4, 8), nn.BatchNorm1d(5))
    with pytest.raises(ValueError, match=r"BatchNorm '1' has .* but '0' gives 8 features"):
        capture(model)


def test_nan_weight_is_refused_with_the_layer_named():
    model = seeded_model(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        model[2].weight[1, 1] = float("nan")
    with pytest.raises(ValueError, match=r"linear '2': weight holds NaN or infinite values"):
        capture(model)


class BatchSoftmax(nn.Module):
    """A traced forward whose softmax is over the batch axis."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return F.softmax(self.fc(x), dim=0)


@pytest.mark.parametrize("model,layer,axis", [
    (nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=0)), "1", 0),
    (nn.Sequential(nn.Linear(4, 3), nn.LogSoftmax(dim=-2)), "1", -2),
    (BatchSoftmax(), "BatchSoftmax.softmax", 0)])
def test_softmax_over_the_batch_is_refused(model, layer, axis):
    # Dropped as if it were the class softmax, it would change the predictions.
    with pytest.raises(UnsupportedSettingError,
                       match=rf"layer '{layer}' \(Softmax\) has axis {axis} \(over the "
                             rf"batch; its input is batch x 3\)"):
        capture(model)


@pytest.mark.parametrize("softmax", [
    nn.Softmax(dim=1), nn.Softmax(dim=-1), nn.LogSoftmax(dim=1),
    pytest.param(nn.Softmax(), marks=pytest.mark.filterwarnings("ignore:Implicit dimension"))])
def test_softmax_over_the_classes_is_dropped(softmax):
    model = seeded_model(nn.Linear(4, 3), softmax)
    network = canonicalize(capture(model))
    x = inputs(4)
    np.testing.assert_array_equal(network.forward(x).argmax(1), torch_out(model, x).argmax(1))


def test_softmax_over_a_feature_maps_channels_is_refused():
    # One softmax per position: not the softmax over each sample's outputs.
    model = seeded_model(nn.Conv2d(2, 3, 3), nn.Softmax(dim=1))
    with pytest.raises(UnsupportedSettingError, match=r"layer '1' \(Softmax\) has axis 1 "
                                                      r"\(over the channels at each position"):
        capture(model, input_shape=(2, 5, 5))
    flat = seeded_model(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Softmax(dim=1))
    assert [op.kind for op in capture(flat, input_shape=(2, 5, 5)).ops][-1] is OpKind.SOFTMAX


def test_capture_dispatch_errors(tmp_path):
    with pytest.raises(TypeError, match="not int"):
        capture(3)
    with pytest.raises(ValueError, match=r"model.pt: capture reads ONNX files"):
        capture(tmp_path / "model.pt")
    with pytest.raises(ValueError, match="has no Linear or Conv2d layer"):
        capture(nn.Sequential(nn.ReLU()))


# ---- ONNX ------------------------------------------------------------------------------------

def onnx_file(path, nodes, initializers, input_shape, output="y", opset=17):
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [None, None])],
        [numpy_helper.from_array(np.asarray(v, np.float32), name) for name, v in
         initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_onnx_gemm_transb_alpha_beta_relu_and_final_softmax(tmp_path):
    rng = np.random.default_rng(5)
    w1, b1 = rng.normal(size=(6, 8)), rng.normal(size=6)      # transB=1: out x in
    w2, b2 = rng.normal(size=(6, 3)), rng.normal(size=3)      # transB=0: in x out
    nodes = [helper.make_node("Flatten", ["x"], ["f"], name="flat", axis=1),
             helper.make_node("Gemm", ["f", "w1", "b1"], ["h"], name="fc1", transB=1,
                              alpha=0.5, beta=2.0),
             helper.make_node("Relu", ["h"], ["r"], name="act"),
             helper.make_node("Dropout", ["r"], ["d"], name="drop"),
             helper.make_node("Gemm", ["d", "w2", "b2"], ["z"], name="fc2"),
             helper.make_node("Softmax", ["z"], ["y"], name="soft", axis=1)]
    path = onnx_file(tmp_path / "m.onnx", nodes, {"w1": w1, "b1": b1, "w2": w2, "b2": b2},
                     [None, 2, 4])
    graph = capture(path)
    assert [op.kind for op in graph.ops] == [OpKind.FLATTEN, OpKind.LINEAR, OpKind.RELU,
                                             OpKind.IDENTITY, OpKind.LINEAR, OpKind.SOFTMAX]
    assert graph.input_size == 8
    x = inputs(8)
    w1, b1, w2, b2 = (np.float32(a).astype(np.float64) for a in (w1, b1, w2, b2))
    logits = np.maximum(0.5 * x @ w1.T + 2.0 * b1, 0) @ w2 + b2
    network = canonicalize(graph)
    np.testing.assert_allclose(network.forward(x), logits, rtol=1e-12)
    np.testing.assert_allclose(graph.run(x).argmax(1), logits.argmax(1))


def test_onnx_matmul_add_and_batchnorm(tmp_path):
    rng = np.random.default_rng(6)
    w, b = rng.normal(size=(5, 4)), rng.normal(size=4)          # MatMul: in x out
    scale, shift, mean = rng.normal(size=4), rng.normal(size=4), rng.normal(size=4)
    var = rng.uniform(0.5, 2, size=4)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
             helper.make_node("Add", ["m", "b"], ["a"], name="add"),
             helper.make_node("BatchNormalization", ["a", "s", "t", "mu", "var"], ["n"],
                              name="bn", epsilon=1e-3),
             helper.make_node("Identity", ["n"], ["y"], name="id")]
    path = onnx_file(tmp_path / "m.onnx", nodes,
                     {"w": w, "b": b, "s": scale, "t": shift, "mu": mean, "var": var}, [None, 5])
    graph = capture_onnx(path)
    assert [(op.kind, op.name) for op in graph.ops] == [
        (OpKind.LINEAR, "mm"), (OpKind.BATCHNORM, "bn"), (OpKind.IDENTITY, "id")]
    f32 = [np.float32(a).astype(np.float64) for a in (w, b, scale, shift, mean, var)]
    w, b, scale, shift, mean, var = f32
    x = inputs(5)
    expected = (x @ w + b - mean) / np.sqrt(var + 1e-3) * scale + shift
    np.testing.assert_allclose(canonicalize(graph).forward(x), expected, rtol=1e-9, atol=1e-12)


def test_onnx_unsupported_node_and_non_chain(tmp_path):
    w = np.ones((3, 3))
    sine = onnx_file(tmp_path / "s.onnx", [
        helper.make_node("Gemm", ["x", "w"], ["h"], name="fc"),
        helper.make_node("Sin", ["h"], ["y"], name="wave")], {"w": w}, [None, 3])
    with pytest.raises(UnsupportedLayerError,
                       match="ONNX node 'wave' cannot run on the engine \\(Sin\\)"):
        capture(sine)
    sigmoid = onnx_file(tmp_path / "f.onnx", [
        helper.make_node("Gemm", ["x", "w"], ["h"], name="fc"),
        helper.make_node("Sigmoid", ["h"], ["y"], name="squash")], {"w": w}, [None, 3])
    assert [op.kind for op in capture(sigmoid).ops] == [OpKind.LINEAR, OpKind.SIGMOID]
    assert len(canonicalize(capture(sigmoid)).layers) == 1        # a final one is dropped
    gated = onnx_file(tmp_path / "r.onnx", [
        helper.make_node("Gemm", ["x", "w"], ["h"], name="fc"),
        helper.make_node("Mul", ["h", "x"], ["y"], name="gate")], {"w": w}, [None, 3])
    with pytest.raises(UnsupportedLayerError, match="'gate' .*not a chain of layers"):
        capture(gated)


def test_onnx_node_reading_only_constants_names_them(tmp_path):
    path = onnx_file(tmp_path / "m.onnx", [
        helper.make_node("Gemm", ["x", "w"], ["h"], name="fc"),
        helper.make_node("Mul", ["w", "w"], ["y"], name="square")], {"w": np.ones((3, 3))},
        [None, 3])
    with pytest.raises(UnsupportedLayerError, match=r"'square' \(it reads only the constants "
                                                    r"\['w', 'w'\]: not a chain of layers"):
        capture(path)


def test_onnx_nodes_the_output_does_not_read_are_left_out(tmp_path):
    # The output is the Gemm's, before the ReLU: the ReLU computes nothing the model returns.
    path = onnx_file(tmp_path / "m.onnx", [
        helper.make_node("Gemm", ["x", "w"], ["y"], name="fc"),
        helper.make_node("Relu", ["y"], ["r"], name="act")], {"w": np.ones((3, 3))}, [None, 3])
    assert [op.kind for op in capture(path).ops] == [OpKind.LINEAR]


@pytest.mark.parametrize("opset,attrs,input_shape,refused", [
    (17, {"axis": 0}, [None, 4], "axis 0 \\(over the batch;"),
    (17, {}, [None, 4], None),                              # axis -1 from opset 13
    (11, {}, [None, 4], None),                              # axis 1 before opset 13
    (11, {"axis": 0}, [None, 4], "axis 0 \\(over the batch and the classes;"),
    (17, {"axis": 1}, [None, 2, 3, 3], "axis 1 \\(over the channels at each position;"),
    # before opset 13, axis 1 normalises each sample's whole output, channels, rows and columns
    (11, {"axis": 1}, [None, 2, 3, 3], None),
    (11, {"axis": 2}, [None, 2, 3, 3], "axis 2 \\(over the rows and the columns;")])
def test_onnx_softmax_axis_as_its_opset_defines_it(tmp_path, opset, attrs, input_shape,
                                                  refused):
    spatial = len(input_shape) == 4
    layer = (helper.make_node("Conv", ["x", "w"], ["h"], name="conv") if spatial else
             helper.make_node("Gemm", ["x", "w"], ["h"], name="fc"))
    path = onnx_file(tmp_path / "m.onnx",
                     [layer, helper.make_node("Softmax", ["h"], ["y"], name="soft", **attrs)],
                     {"w": np.ones((2, 2, 1, 1)) if spatial else np.ones((4, 3))}, input_shape,
                     opset=opset)
    if refused is None:
        assert capture(path).ops[-1].kind is OpKind.SOFTMAX
    else:
        with pytest.raises(UnsupportedSettingError,
                           match=f"layer 'soft' \\(Softmax\\) has {refused}"):
            capture(path)


@pytest.mark.parametrize("bias,expected", [(np.full((1, 2), 3.0), [3.0, 3.0]),
                                           (np.array([1.5]), [1.5, 1.5])])
def test_onnx_gemm_bias_broadcasts(tmp_path, bias, expected):
    path = onnx_file(tmp_path / "m.onnx", [helper.make_node("Gemm", ["x", "w", "b"], ["y"])],
                     {"w": np.ones((4, 2)), "b": bias}, [None, 4])
    np.testing.assert_array_equal(capture(path).ops[0].params["bias"], expected)


def test_onnx_bias_of_the_wrong_size(tmp_path):
    path = onnx_file(tmp_path / "m.onnx", [helper.make_node("Gemm", ["x", "w", "b"], ["y"])],
                     {"w": np.ones((4, 2)), "b": np.ones(3)}, [None, 4])
    with pytest.raises(ValueError, match=r"'Gemm_0': bias of shape \(3,\) does not match 2 "
                                         r"outputs"):
        capture(path)


def test_onnx_input_size_must_match_the_first_layer(tmp_path):
    path = onnx_file(tmp_path / "m.onnx", [helper.make_node("Gemm", ["x", "w"], ["y"])],
                     {"w": np.ones((4, 2))}, [None, 5])
    with pytest.raises(ValueError, match="has 5 features but Gemm_0 takes 4"):
        capture(path)


def test_truncated_onnx_file(tmp_path):
    path = onnx_file(tmp_path / "m.onnx", [helper.make_node("Gemm", ["x", "w"], ["y"])],
                     {"w": np.ones((4, 2))}, [None, 4])
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="not a readable ONNX file"):
        capture(path)


class _Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru, self.fc = nn.GRU(8, 16, batch_first=True), nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(self.gru(x.view(-1, 8, 8))[1][-1])


class _Embedded(nn.Module):
    def __init__(self):
        super().__init__()
        self.table, self.fc = nn.Embedding(17, 4), nn.Linear(256, 4)

    def forward(self, x):
        return self.fc(self.table(x.long()).flatten(1))


@pytest.mark.parametrize("make,module_says,onnx_says", [
    (_Recurrent, r"layer 'gru' cannot run on the engine \(GRU\)",
     r"ONNX node '/gru/GRU' cannot run on the engine \(GRU, a recurrent layer\)"),
    (_Embedded, r"layer 'table' cannot run on the engine \(Embedding\)",
     r"ONNX node '/table/Gather' cannot run on the engine \(an embedding \(nn.Embedding\)"),
], ids=["gru", "embedding"])
def test_a_layer_the_engine_lacks_is_named_not_the_helper_before_it(make, module_says,
                                                                    onnx_says, tmp_path):
    """Exporters and traces meet a helper first (a GRU's initial state, ConstantOfShape; an
    embedding's x.long(), Cast): the refusal names the layer."""
    import warnings

    model = make().eval()
    with pytest.raises(UnsupportedLayerError, match=module_says):
        capture(model)
    path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(2, 64), path, dynamo=False)
    with pytest.raises(UnsupportedLayerError, match=onnx_says):
        capture(path)
