"""ONNX files as torch.onnx.export writes them: equal initializers stored once and their copies
read through Identity nodes, which capture takes as the constants they name; and a final
Softmax, whose axis decides whether it can be dropped."""

import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from sparseforge.compiler.capture import UnsupportedLayerError, UnsupportedSettingError, capture
from sparseforge.compiler.ir import OpKind
from sparseforge.compiler.passes import canonicalize


def export(model, features, path):
    """``model`` in evaluation mode as an ONNX file, by the TorchScript exporter (dynamo=False,
    as the examples export; torch flags it with a DeprecationWarning)."""
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.zeros(2, features),), str(path), dynamo=False,
                          input_names=["x"], output_names=["y"])
    return path


def identities_of_initializers(path):
    proto = onnx.load(str(path)).graph
    stored = {init.name for init in proto.initializer}
    return [list(node.input) for node in proto.node
            if node.op_type == "Identity" and node.input[0] in stored]


def torch_out(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x.astype(np.float32))).double().numpy()


def inputs(features, batch=16, seed=1):
    return np.random.default_rng(seed).normal(size=(batch, features))


def fresh_batchnorm_mlp():
    # A fresh BatchNorm: weight == running_var (ones), bias == running_mean (zeros).
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))


def zero_bias_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU(),
                          nn.Linear(5, 3))
    for layer in (model[0], model[2]):
        nn.init.zeros_(layer.bias)
    return model


@pytest.mark.parametrize("build,kinds", [
    (fresh_batchnorm_mlp, [OpKind.LINEAR, OpKind.BATCHNORM, OpKind.RELU, OpKind.LINEAR]),
    (zero_bias_mlp, [OpKind.LINEAR, OpKind.RELU, OpKind.LINEAR, OpKind.RELU, OpKind.LINEAR])])
def test_deduplicated_initializers_import_like_the_model(tmp_path, build, kinds):
    model = build()
    path = export(model, 6, tmp_path / "m.onnx")
    assert identities_of_initializers(path)      # the exporter did deduplicate
    graph = capture(path)
    assert [op.kind for op in graph.ops] == kinds
    x = inputs(6)
    np.testing.assert_allclose(canonicalize(graph).forward(x), torch_out(model, x), rtol=1e-5,
                               atol=1e-6)


def test_batchnorm_after_relu_folds_into_the_next_linear_as_the_modules_does(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.BatchNorm1d(5), nn.Linear(5, 3))
    with torch.no_grad():           # weight and running_var stay equal: one initializer
        model[2].running_mean.normal_()
        model[2].bias.normal_()
    path = export(model, 6, tmp_path / "m.onnx")
    assert identities_of_initializers(path)
    x = np.random.default_rng(1).normal(size=(4, 6))
    for source in (model, path):
        network = canonicalize(capture(source))
        assert len(network.layers) == 2
        np.testing.assert_allclose(network.forward(x), torch_out(model, x), rtol=1e-5,
                                   atol=1e-5)
    # With a ReLU after it as well, there is no layer to fold it into.
    relu_after = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.BatchNorm1d(5), nn.ReLU(),
                               nn.Linear(5, 3))
    path = export(relu_after, 6, tmp_path / "r.onnx")
    for source in (relu_after, path):
        with pytest.raises(ValueError, match=r"BatchNorm \S+ follows ReLU \S+ and comes before "
                                             r"ReLU \S+: .*move it before the ReLU"):
            canonicalize(capture(source))


def test_identity_of_a_constant_node_is_that_constant(tmp_path):
    rng = np.random.default_rng(2)
    weight, bias = rng.normal(size=(3, 4)), rng.normal(size=3)
    nodes = [helper.make_node("Constant", [], ["b"], name="c",
                              value=numpy_helper.from_array(bias.astype(np.float32))),
             helper.make_node("Identity", ["b"], ["b_copy"], name="alias"),
             helper.make_node("Gemm", ["x", "w", "b_copy"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(
        nodes, "test", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        [numpy_helper.from_array(weight.astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp_path / "m.onnx"))
    captured = capture(tmp_path / "m.onnx")
    assert [(op.kind, op.name) for op in captured.ops] == [(OpKind.LINEAR, "fc")]
    np.testing.assert_array_equal(captured.ops[0].params["bias"],
                                  bias.astype(np.float32).astype(np.float64))


def test_exported_softmax_over_the_batch_is_refused(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3), nn.Softmax(dim=0))
    with pytest.raises(UnsupportedSettingError, match=r"\(Softmax\) has axis 0 \(over the "
                                                      r"batch; its input is batch x 3\)"):
        capture(export(model, 6, tmp_path / "m.onnx"))
    model[1].dim = 1
    path = export(model, 6, tmp_path / "m1.onnx")
    x = inputs(6)
    np.testing.assert_array_equal(canonicalize(capture(path)).forward(x).argmax(1),
                                  torch_out(model, x).argmax(1))


class _ViewByBatch(nn.Module):
    """``x.view(x.size(0), ...)``, which an export with a dynamic batch axis writes as Shape ->
    Gather -> Unsqueeze -> Concat -> Reshape."""

    def __init__(self, middle=None):
        super().__init__()
        self.conv, self.middle = nn.Conv2d(1, 4, 3), middle
        self.fc = nn.Linear(144 if middle is None else 36, 3)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        x = x.view(x.size(0), -1) if self.middle is None else x.view(x.size(0), self.middle, -1)
        return self.fc(x)


def export_dynamic_batch(model, path):
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.zeros(2, 1, 8, 8),), str(path), dynamo=False,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return path


def test_a_flatten_by_the_batch_size_of_a_dynamic_batch_export_is_a_flatten(tmp_path):
    model = _ViewByBatch()
    path = export_dynamic_batch(model, tmp_path / "view.onnx")
    assert "Shape" in [node.op_type for node in onnx.load(str(path)).graph.node]
    graph = capture(path)
    assert [op.kind for op in graph.ops] == [OpKind.CONV, OpKind.RELU, OpKind.FLATTEN,
                                             OpKind.LINEAR]
    x = np.random.default_rng(0).normal(size=(3, 1, 8, 8))
    np.testing.assert_allclose(graph.run(x), torch_out(model, x), rtol=1e-5, atol=1e-5)


def test_a_reshape_by_the_batch_size_to_more_than_vectors_is_refused(tmp_path):
    path = export_dynamic_batch(_ViewByBatch(middle=4), tmp_path / "three.onnx")
    # (batch, 4, -1) is a view as 1-D signals, which would relayout the 4 x 6 x 6 map.
    with pytest.raises(UnsupportedLayerError, match=r"a view of '/conv/Conv''s 4 x 6 x 6 map "
                                                    r"as 4 x -1: the engine keeps each map's "
                                                    r"layout"):
        capture(path)
