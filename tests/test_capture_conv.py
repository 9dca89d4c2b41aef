"""Capture and passes of convolutional networks (issue 17): Conv2d, BatchNorm2d, ReLU, max and
average pooling, Flatten, from nn.Module and ONNX.  Each pass is tested twice: the float
interpreter gives the same result before and after, and the structural change happened."""

import warnings

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune
from onnx import TensorProto, helper, numpy_helper

from sparseforge.compiler.capture import (
    UnsupportedLayerError,
    UnsupportedSettingError,
    capture,
)
from sparseforge.compiler.conv import ConvGeometry, Pool, im2col, max_pool
from sparseforge.compiler.errors import InputError
from sparseforge.compiler.ir import Conv2d, Graph, Linear, Op, OpKind
from sparseforge.compiler.passes import (
    canonicalize,
    erase_identities,
    fold_avgpool,
    fold_batchnorm,
    fuse_maxpool,
    fuse_relu,
)

RNG = np.random.default_rng(17)


def seeded(*modules):
    torch.manual_seed(17)
    return randomised_batchnorms(nn.Sequential(*modules))


def randomised_batchnorms(model):
    """``model`` in evaluation mode with every BatchNorm2d's statistics and affine drawn from
    torch's generator (a fresh one is the identity, which would test no folding)."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.weight.normal_()
                module.bias.normal_()
    return model.eval()


def torch_out(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x.astype(np.float32))).numpy().astype(np.float64)


def kinds(graph):
    return [op.kind for op in graph.ops]


# ---- geometry and the NumPy arithmetic --------------------------------------------------------

@pytest.mark.parametrize("kernel,stride,padding", [((3, 3), (1, 1), (1, 1)),
                                                   ((2, 3), (2, 1), (0, 2)),
                                                   ((5, 5), (2, 2), (2, 2))])
def test_im2col_times_the_kernel_matrix_is_torch_conv2d(kernel, stride, padding):
    geometry = ConvGeometry(3, 9, 8, 4, kernel, stride, padding)
    weight = RNG.normal(size=(4, 3, *kernel))
    x = RNG.normal(size=(2, 3 * 9 * 8))
    patches = im2col(geometry, x)
    assert patches.shape == (2, geometry.positions, 3 * kernel[0] * kernel[1])
    ours = (patches @ weight.reshape(4, -1).T).transpose(0, 2, 1)
    expected = torch.nn.functional.conv2d(torch.from_numpy(x.reshape(2, 3, 9, 8)),
                                          torch.from_numpy(weight), stride=stride,
                                          padding=padding).numpy()
    assert ours.shape == (2, 4, geometry.positions)
    np.testing.assert_allclose(ours.reshape(expected.shape), expected, rtol=1e-12, atol=1e-12)


def test_im2col_keeps_integers_exact():
    geometry = ConvGeometry(1, 4, 4, 1, (3, 3), padding=(1, 1))
    x = np.arange(16, dtype=np.int64)[None] * (1 << 40)
    patches = im2col(geometry, x)
    assert patches.dtype == np.int64
    assert patches[0, 0].tolist() == [0, 0, 0, 0, 0, 1 << 40, 0, 4 << 40, 5 << 40]


def test_max_pool_drops_windows_that_do_not_fit_as_floor_mode_does():
    maps = RNG.normal(size=(2, 3, 7, 5))
    ours = max_pool(Pool((3, 2), (2, 2)), maps)
    expected = torch.nn.functional.max_pool2d(torch.from_numpy(maps), (3, 2), (2, 2)).numpy()
    np.testing.assert_array_equal(ours, expected)


def test_geometry_refuses_a_kernel_that_does_not_fit_and_round_trips_json():
    with pytest.raises(ValueError, match=r"a 5x5 kernel with padding \(0, 0\) does not fit a "
                                         r"3x3 input"):
        ConvGeometry(1, 3, 3, 1, (5, 5))
    with pytest.raises(ValueError, match="in_channels must be a positive integer, not 0"):
        ConvGeometry(0, 3, 3, 1, 1)
    geometry = ConvGeometry(2, 8, 8, 4, (3, 3), 2, 1, Pool(2, 2))
    assert ConvGeometry.from_json(geometry.to_json()) == geometry
    assert geometry.out_shape == (4, 2, 2)


# ---- capture of nn.Module ---------------------------------------------------------------------

def cnn():
    return seeded(nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                  nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6), nn.ReLU(),
                  nn.AvgPool2d(2, 1), nn.Conv2d(6, 4, (1, 2)), nn.ReLU(),
                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def test_a_cnn_is_captured_and_canonicalised_with_its_function():
    model = cnn()
    x = RNG.normal(size=(6, 2, 9, 10))
    graph = capture(model, input_shape=(2, 9, 10))
    assert graph.input_shape == (2, 9, 10) and graph.input_size == 180
    assert kinds(graph) == [OpKind.CONV, OpKind.BATCHNORM, OpKind.RELU, OpKind.MAXPOOL,
                            OpKind.CONV, OpKind.RELU, OpKind.AVGPOOL, OpKind.CONV, OpKind.RELU,
                            OpKind.AVGPOOL, OpKind.FLATTEN, OpKind.LINEAR]
    expected = torch_out(model, x)
    np.testing.assert_allclose(graph.run(x), expected, rtol=1e-5, atol=1e-5)
    network = canonicalize(graph)
    # The 2x2 average pooling after a ReLU became a convolution of its own; the global one
    # before the classifier was folded into it.
    assert [type(layer) for layer in network.layers] == [Conv2d] * 4 + [Linear]
    first, depthwise, box = network.layers[:3]
    assert first.geometry.pool == Pool((2, 2), (2, 2)) and first.relu
    assert depthwise.geometry.stride == (2, 2) and depthwise.relu
    # Depthwise: zero across channels (the sparse engine stores no entry for them).
    kernel = depthwise.weight.reshape(6, 6, 3, 3)
    off_diagonal = kernel[~np.eye(6, dtype=bool)]
    assert not off_diagonal.any() and np.count_nonzero(depthwise.weight) == 6 * 9
    np.testing.assert_allclose(box.weight.reshape(6, 6, 2, 2)[np.eye(6, dtype=bool)], 0.25)
    assert not box.relu
    np.testing.assert_allclose(network.forward(x), expected, rtol=1e-5, atol=1e-5)
    assert network.input_size == 180 and network.output_size == 3


def test_a_grouped_convolution_is_the_full_one_it_equals(tmp_path):
    # groups=2 (ResNeXt, ShuffleNet) was refused: "the engine runs groups 1 or in_channels".
    import onnxruntime

    model = seeded(nn.Conv2d(4, 6, 3, padding=1, groups=2), nn.ReLU(), nn.Flatten())
    x = RNG.normal(size=(3, 4, 5, 5))
    graph = capture(model, input_shape=(4, 5, 5))
    kernel = graph.ops[0].params["weight"]
    # Outputs 0-2 read inputs 0-1, outputs 3-5 inputs 2-3: zero between the groups.
    assert not kernel[:3, 2:].any() and not kernel[3:, :2].any()
    assert graph.ops[0].attrs["parameters"] == 6 * 2 * 9
    np.testing.assert_allclose(canonicalize(graph).forward(x), torch_out(model, x), rtol=1e-5,
                               atol=1e-5)
    weight = RNG.normal(size=(6, 2, 3, 3))
    path = onnx_cnn(tmp_path / "grouped.onnx", [
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[3, 3],
                         group=2)], {"w": weight}, [None, 4, 5, 5])
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = x.astype(np.float32)
    np.testing.assert_allclose(capture(path).run(x).reshape(3, -1),
                               session.run(None, {"x": x})[0].reshape(3, -1),
                               rtol=1e-4, atol=1e-4)
    # Groups that do not divide the outputs (torch builds none; an ONNX file can hold one).
    path = onnx_cnn(tmp_path / "odd.onnx", [
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[3, 3],
                         group=4)], {"w": weight[:, :1]}, [None, 4, 5, 5])
    with pytest.raises(UnsupportedSettingError, match="groups must divide the 4 input and 6 "
                                                      "output channels"):
        capture(path)


def test_conv_padding_same_and_valid_and_a_pruned_kernel():
    conv = nn.Conv2d(1, 2, 3, padding="same")
    torch.nn.utils.prune.l1_unstructured(conv, "weight", amount=0.5)
    model = seeded(conv, nn.Conv2d(2, 2, 3, padding="valid"), nn.Flatten())
    x = RNG.normal(size=(3, 1, 6, 6))
    graph = capture(model, input_shape=(1, 6, 6))
    assert graph.ops[0].attrs["padding"] == (1, 1)
    assert np.count_nonzero(graph.ops[0].params["weight"]) == 9
    np.testing.assert_allclose(canonicalize(graph).forward(x), torch_out(model, x), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("layer,setting,value", [
    (nn.Conv2d(2, 2, 3, dilation=2), "dilation", r"\(2, 2\)"),
    (nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), "padding_mode", "'reflect'"),
    (nn.Conv2d(2, 2, 2, padding="same"), "padding", "'same' with the even kernel"),
    (nn.MaxPool2d(2, dilation=2), "dilation", "2"),
    (nn.AvgPool2d(3, padding=1, count_include_pad=False), "count_include_pad", "False"),
    (nn.AdaptiveAvgPool2d((None, 2)), "output_size", r"\(None, 2\)"),
])
def test_unsupported_settings_are_named(layer, setting, value):
    model = nn.Sequential(nn.Identity(), layer)
    with pytest.raises(UnsupportedSettingError, match=rf"layer '1' \(\w+\) has {setting} "
                                                      rf"{value}"):
        capture(model, input_shape=(4, 8, 8))


def test_a_cnn_without_an_input_shape_and_other_layers_are_refused_by_name():
    # (It said "give the input's shape, input_shape=", which sf.compress does not take.)
    with pytest.raises(InputError, match=r"layer '0' works on feature maps: give the data as "
                                         r"batch x channels x rows x columns, x.reshape\(len\(x\), "
                                         r"1, rows, columns\) .* input_shape="):
        capture(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2)))
    with pytest.raises(UnsupportedLayerError, match=r"layer '1' cannot run on the engine "
                                                    r"\(Conv3d\)"):
        capture(nn.Sequential(nn.Conv2d(1, 1, 1), nn.Conv3d(1, 1, 1)), input_shape=(1, 4, 4))
    with pytest.raises(ValueError, match=r"Linear '1' follows '0''s feature map \(2, 2, 2\) "
                                         r"without a Flatten"):
        capture(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(8, 2)), input_shape=(1, 4, 4))
    with pytest.raises(ValueError, match=r"Conv2d '1' takes 3 channels but its input has 2"):
        capture(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(3, 2, 1)), input_shape=(1, 4, 4))


# ---- the passes, each twice -------------------------------------------------------------------

def conv_op(name, out_channels, in_channels, kernel=3, relu=False, **attrs):
    if relu:
        attrs["relu"] = True
    return Op(OpKind.CONV, name, {"weight": RNG.normal(size=(out_channels, in_channels, kernel,
                                                              kernel)),
                                  "bias": RNG.normal(size=out_channels)},
              {"stride": (1, 1), "padding": (1, 1), **attrs})


def linear_op(name, out_features, in_features):
    return Op(OpKind.LINEAR, name, {"weight": RNG.normal(size=(out_features, in_features)),
                                    "bias": RNG.normal(size=out_features)})


X = RNG.normal(size=(8, 2 * 6 * 6))


def same_function(before, after):
    np.testing.assert_allclose(after.run(X), before.run(X), rtol=1e-10, atol=1e-10)


def test_fold_batchnorm_into_a_convolution():
    norm = Op(OpKind.BATCHNORM, "bn", {"mean": RNG.normal(size=4),
                                       "var": RNG.uniform(0.5, 2, size=4),
                                       "weight": RNG.normal(size=4),
                                       "bias": RNG.normal(size=4)}, {"eps": 1e-5})
    graph = Graph((conv_op("c", 4, 2), norm, Op(OpKind.RELU, "r")), 72, "", (2, 6, 6))
    after = fold_batchnorm(graph)
    same_function(graph, after)
    assert kinds(after) == [OpKind.CONV, OpKind.RELU]
    assert after.ops[0].params["weight"].shape == (4, 2, 3, 3)


def test_fold_avgpool_into_the_linear_after_it():
    pool = Op(OpKind.AVGPOOL, "gap", {}, {"global": True})
    graph = Graph((conv_op("c", 4, 2, relu=True), pool, Op(OpKind.FLATTEN, "f"),
                   linear_op("fc", 3, 4)), 72, "", (2, 6, 6))
    from sparseforge.compiler.passes import erase_identities

    graph = erase_identities(graph)
    after = fold_avgpool(graph)
    same_function(graph, after)
    assert kinds(after) == [OpKind.CONV, OpKind.LINEAR]
    assert after.ops[1].params["weight"].shape == (3, 4 * 6 * 6)


def test_fold_avgpool_before_a_relu_becomes_a_box_convolution():
    pool = Op(OpKind.AVGPOOL, "avg", {}, {"kernel": (2, 2), "stride": (2, 2),
                                          "padding": (0, 0)})
    graph = Graph((conv_op("c", 4, 2), pool, Op(OpKind.RELU, "r")), 72, "", (2, 6, 6))
    after = fold_avgpool(graph)
    same_function(graph, after)
    assert kinds(after) == [OpKind.CONV, OpKind.CONV, OpKind.RELU]
    box = after.ops[1]
    assert box.name == "avg" and box.attrs["stride"] == (2, 2)
    assert np.count_nonzero(box.params["weight"]) == 4 * 4


def test_fuse_relu_into_a_convolution_also_across_its_max_pooling():
    pool = Op(OpKind.MAXPOOL, "mp", {}, {"kernel": (2, 2), "stride": (2, 2)})
    graph = Graph((conv_op("c1", 3, 2), Op(OpKind.RELU, "r1"), conv_op("c2", 2, 3), pool,
                   Op(OpKind.RELU, "r2")), 72, "", (2, 6, 6))
    after = fuse_relu(graph)
    same_function(graph, after)
    assert kinds(after) == [OpKind.CONV, OpKind.CONV, OpKind.MAXPOOL]
    assert after.ops[0].attrs["relu"] and after.ops[1].attrs["relu"]


def test_fuse_maxpool_into_the_convolution_before_it():
    pool = Op(OpKind.MAXPOOL, "mp", {}, {"kernel": (3, 3), "stride": (2, 2)})
    graph = Graph((conv_op("c", 3, 2, relu=True), pool), 72, "", (2, 6, 6))
    after = fuse_maxpool(graph)
    same_function(graph, after)
    assert kinds(after) == [OpKind.CONV]
    assert after.ops[0].attrs["pool"] == Pool((3, 3), (2, 2))
    twice = Graph((conv_op("c", 3, 2), pool, pool), 72, "", (2, 6, 6))
    with pytest.raises(ValueError, match="MaxPool2d 'mp' follows Conv2d 'c', not a convolution that does "
                                         "not pool yet"):
        fuse_maxpool(fuse_maxpool(twice))


def test_a_batchnorm1d_after_a_flattened_map_is_refused_naming_batchnorm2d():
    # BatchNorm1d over a flattened 4 x 6 x 6 map scales each of its 144 positions on its own:
    # no per-channel filter does that (it was NumPy's broadcast error); over a 1 x 1 map it is
    # per channel and folds.
    torch.manual_seed(0)
    wide = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.BatchNorm1d(144), nn.Linear(144, 3))
    with pytest.raises(InputError, match=r"BatchNorm '2' normalises 144 features, but Conv2d "
                                         r"'0' before it has 4 output channels.*use "
                                         r"BatchNorm2d\(4\) before the Flatten"):
        canonicalize(capture(wide.eval(), input_shape=(1, 8, 8)))
    point = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.BatchNorm1d(4), nn.Linear(4, 3))
    point[2].running_mean.uniform_(-1, 1)
    point[2].running_var.uniform_(0.5, 2)
    graph = capture(point.eval(), input_shape=(1, 3, 3))
    folded = fold_batchnorm(erase_identities(graph))
    assert OpKind.BATCHNORM not in kinds(folded)
    x = torch.randn(5, 1, 3, 3)
    np.testing.assert_allclose(folded.run(x.reshape(5, -1).numpy()),
                               point(x).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_a_maxpool_after_a_linear_or_the_input_is_refused():
    pool = Op(OpKind.MAXPOOL, "mp", {}, {"kernel": (2, 2), "stride": (2, 2)})
    with pytest.raises(ValueError, match="MaxPool2d 'mp' follows the model's input, not a convolution"):
        fuse_maxpool(Graph((pool,), 72, "", (2, 6, 6)))


# ---- ONNX --------------------------------------------------------------------------------------

def onnx_cnn(path, nodes, initializers, input_shape):
    graph = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None])],
        [numpy_helper.from_array(np.asarray(v, np.float32), name)
         for name, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_onnx_cnn_equals_onnxruntime(tmp_path):
    import onnxruntime

    r = np.random.default_rng(3)
    init = {"w1": r.normal(size=(4, 1, 3, 3)), "b1": r.normal(size=4),
            "s": r.normal(size=4), "t": r.normal(size=4), "mu": r.normal(size=4),
            "var": r.uniform(0.5, 2, size=4),
            "w2": r.normal(size=(4, 1, 3, 3)),
            "w3": r.normal(size=(4, 4, 1, 1)),
            "shape": np.array([0, -1]), "w4": r.normal(size=(3, 16)), "b4": r.normal(size=3)}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "s", "t", "mu", "var"], ["n1"],
                         name="bn1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], name="depthwise", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], group=4),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("AveragePool", ["r2"], ["a2"], name="avg", kernel_shape=[2, 2],
                         strides=[1, 1]),
        helper.make_node("Conv", ["a2", "w3"], ["c3"], name="pointwise", kernel_shape=[1, 1]),
        helper.make_node("GlobalAveragePool", ["c3"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "w4", "b4"], ["y"], name="fc", transB=1),
    ]
    init["w4"] = r.normal(size=(3, 4))
    path = onnx_cnn(tmp_path / "cnn.onnx", nodes, init, [None, 1, 10, 10])
    graph = capture(path)
    assert graph.input_shape == (1, 10, 10)
    x = r.normal(size=(5, 1, 10, 10)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x})[0]
    network = canonicalize(graph)
    assert [layer.name for layer in network.layers] == ["conv1", "depthwise", "avg",
                                                        "pointwise", "fc"]
    np.testing.assert_allclose(network.forward(x), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(graph.run(x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("view", [(1, 8, 8), (2, 32)])
def test_onnx_of_an_unflatten_that_makes_the_input_a_map(tmp_path, dynamic, view):
    # torch writes nn.Unflatten's target shape as arithmetic on constants (Mod, Add, Reshape)
    # and slices of the input's Shape; worked out, it is the view that makes the input a map.
    convolution = nn.Conv2d(1, 2, 3) if len(view) == 3 else nn.Conv1d(2, 2, 3)
    model = nn.Sequential(nn.Unflatten(1, view), convolution, nn.ReLU(), nn.Flatten(),
                          nn.Linear(72 if len(view) == 3 else 60, 3)).eval()
    path = tmp_path / "unflatten.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, torch.zeros(1, 64), str(path), dynamo=False,
                          input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}} if dynamic else None)
    _assert_the_export_reads_as_the_view(path, model, view)


def _assert_the_export_reads_as_the_view(path, model, view):
    """The ONNX file at ``path`` is read with ``view`` as its input map (a 1-D signal's as a
    map of one row), and computes what ``model`` does on flat inputs of 64."""
    graph = capture(path)
    assert graph.input_shape == (view if len(view) == 3 else (2, 1, 32))
    x = np.random.default_rng(4).normal(size=(5, 64)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(canonicalize(graph).forward(x), expected, rtol=1e-5, atol=1e-5)


class _Viewed(nn.Module):
    """``x.view(x.size(0), *view)`` in the forward, as people write it."""

    def __init__(self, view):
        super().__init__()
        self.view = view
        self.conv = nn.Conv2d(1, 2, 3) if len(view) == 3 else nn.Conv1d(2, 2, 3)
        self.fc = nn.Linear(72 if len(view) == 3 else 60, 3)

    def forward(self, x):
        x = x.view(x.size(0), *self.view)
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


@pytest.mark.parametrize("dynamo", [False, True])
@pytest.mark.parametrize("view", [(1, 8, 8), (2, 32)])
def test_onnx_of_a_view_exported_at_a_fixed_batch_of_one(tmp_path, dynamo, view):
    # Both exporters' default call (torch.randn(1, 64), no dynamic axes) writes the view's
    # target with the batch as 1: "target shape [1, 1, 8, 8], which the engine does not run".
    import logging

    if dynamo:
        pytest.importorskip("onnxscript")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    model = _Viewed(view).eval()
    path = tmp_path / "viewed.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 64),), str(path), dynamo=dynamo,
                          input_names=["x"])
    _assert_the_export_reads_as_the_view(path, model, view)


@pytest.mark.parametrize("attrs,setting", [
    ({"pads": [1, 1, 0, 0]}, r"asymmetric padding pads=\[1, 1, 0, 0\]"),
    ({"dilations": [2, 2]}, r"dilations \[2, 2\]"),
    ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, "auto_pad SAME_UPPER, which the engine "
                                                    "does not run; SAME pads symmetrically only"),
])
def test_onnx_unsupported_conv_settings_are_named(tmp_path, attrs, setting):
    weight = np.ones((4, 4, 3, 3))
    path = onnx_cnn(tmp_path / "c.onnx", [
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[3, 3], **attrs)],
        {"w": weight}, [None, 4, 8, 8])
    with pytest.raises(UnsupportedSettingError, match=rf"ONNX node 'conv' \(Conv\) has "
                                                      rf"{setting}"):
        capture(path)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
def test_onnx_same_padding_at_stride_1_is_symmetric_padding(tmp_path, auto_pad):
    import onnxruntime

    weight = np.random.default_rng(4).normal(size=(4, 2, 3, 5))
    path = onnx_cnn(tmp_path / "same.onnx", [
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[3, 5],
                         auto_pad=auto_pad)], {"w": weight}, [None, 2, 6, 7])
    graph = capture(path)
    assert graph.ops[0].attrs["padding"] == (1, 2)
    x = np.random.default_rng(5).normal(size=(2, 2, 6, 7)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(graph.run(x).reshape(2, -1),
                               session.run(None, {"x": x})[0].reshape(2, -1),
                               rtol=1e-4, atol=1e-4)


def test_onnx_reshape_to_a_map_and_an_input_without_a_static_shape_are_refused(tmp_path):
    weight = np.ones((2, 1, 3, 3))
    reshape = onnx_cnn(tmp_path / "r.onnx", [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[3, 3]),
        helper.make_node("Reshape", ["c", "shape"], ["y"], name="reshape")],
        {"w": weight, "shape": np.array([0, 2, 4])}, [None, 1, 4, 4])
    with pytest.raises(UnsupportedLayerError, match=r"layer 'reshape' \(a view of 'conv''s "
                                                    r"2 x 2 x 2 map as 2 x 4: the engine keeps "
                                                    r"each map's layout"):
        capture(reshape)
    dynamic = onnx_cnn(tmp_path / "d.onnx", [
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[3, 3])],
        {"w": weight}, [None, 1, None, None])
    with pytest.raises(ValueError, match=r"node 'conv' works on feature maps, but the graph "
                                         r"input 'x' has no static shape"):
        capture(dynamic)


class _FunctionalPooling(nn.Module):
    """PyTorch's MNIST-example style: pooling written as function calls in the forward."""

    def __init__(self, tail):
        super().__init__()
        torch.manual_seed(3)
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 6, 3)
        self.fc = nn.Linear(6, 3)
        self.tail = tail

    def forward(self, x):
        import torch.nn.functional as F

        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.relu(self.conv2(x))
        if self.tail == "mean":
            x = x.mean((2, 3))
        elif self.tail == "mean_keepdim":
            x = torch.flatten(x.mean(dim=(-1, -2), keepdim=True), 1)
        elif self.tail == "adaptive":
            x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        else:
            x = torch.flatten(F.avg_pool2d(x, kernel_size=2, stride=2), 1)
        return self.fc(x)


@pytest.mark.parametrize("tail", ["mean", "mean_keepdim", "adaptive", "avg_pool"])
def test_pooling_written_as_function_calls_is_captured(tail):
    model = _FunctionalPooling(tail).eval()
    x = RNG.normal(size=(4, 1, 8, 8))
    graph = capture(model, input_shape=(1, 8, 8))
    assert OpKind.MAXPOOL in kinds(graph) and OpKind.AVGPOOL in kinds(graph)
    np.testing.assert_allclose(canonicalize(graph).forward(x), torch_out(model, x), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("call,message", [
    (lambda x: nn.functional.max_pool2d(x, 2, dilation=2), "dilation"),
    (lambda x: nn.functional.adaptive_avg_pool2d(x, (None, 2)), "output_size"),
    (lambda x: x.mean(1), "a mean over a map's rows and columns"),
], ids=["max_pool2d-dilation", "adaptive-2", "mean-channels"])
def test_pooling_calls_the_engine_does_not_run_are_refused(call, message):
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            return call(self.conv(x))

    with pytest.raises(UnsupportedSettingError, match=message):
        capture(Model(), input_shape=(1, 6, 6))


class _Flattening(nn.Module):
    """A CNN flattened and regularised the ways other people's code does it."""

    def __init__(self, how):
        super().__init__()
        self.conv, self.drop = nn.Conv2d(1, 4, 3), nn.Dropout2d(0.2)
        self.fc, self.how = nn.Linear(4 * 6 * 6, 3), how

    def forward(self, x):
        x = self.drop(torch.relu(self.conv(x)))
        if self.how == "shape":
            x = x.view(x.shape[0], -1)
        elif self.how == "size item":
            x = x.view(x.size()[0], -1)
        elif self.how == "len":
            x = x.reshape(len(x), -1)
        else:
            x = torch.nn.functional.dropout2d(x, 0.1, training=self.training).flatten(1)
        return self.fc(x)


@pytest.mark.parametrize("how", ["shape", "size item", "dropout2d"])
def test_shape_items_and_channel_dropout_in_a_forward_are_captured(how):
    model = _Flattening(how).eval()
    x = RNG.normal(size=(3, 1, 8, 8))
    graph = capture(model, input_shape=(1, 8, 8))
    assert kinds(graph)[-2:] == [OpKind.FLATTEN, OpKind.LINEAR]
    np.testing.assert_allclose(graph.run(x), torch_out(model, x), rtol=1e-5, atol=1e-5)


def test_an_untraceable_forward_says_what_to_write_instead():
    with pytest.raises(InputError, match=r"'_Flattening': its forward cannot be traced by "
                                         r"torch.fx \('len' is not supported") as error:
        capture(_Flattening("len").eval(), input_shape=(1, 8, 8))
    assert "flatten with torch.flatten(x, 1)" in str(error.value)


# ---- a view that makes the input a map ---------------------------------------------------------

class _ViewsItsInput(nn.Module):
    """The MNIST-example style: flat (or any) input viewed as maps first in the forward."""

    def __init__(self, view):
        super().__init__()
        torch.manual_seed(5)
        self.conv, self.fc = nn.Conv2d(2, 3, 3, padding=1), nn.Linear(3 * 4 * 5, 4)
        self.view = view

    def forward(self, x):
        x = self.view(x)
        x = torch.relu(self.conv(x))
        return self.fc(x.view(x.size(0), -1))


RESHAPE_WITH_A_FREE_DIMENSION = _ViewsItsInput(lambda x: x.reshape(x.size(0), 2, 4, -1))


@pytest.mark.parametrize("model", [
    seeded(nn.Unflatten(1, (2, 4, 5)), nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
           nn.Linear(60, 4)),
    _ViewsItsInput(lambda x: x.view(-1, 2, 4, 5)),
    RESHAPE_WITH_A_FREE_DIMENSION,
    _ViewsItsInput(lambda x: torch.reshape(x, (x.shape[0], 2, 4, 5))),
], ids=["Unflatten", "view", "reshape", "torch.reshape"])
@pytest.mark.parametrize("data_shape", [None, (40,), (2, 4, 5), (1, 8, 5)])
def test_a_view_of_the_input_as_maps_declares_the_input_map(model, data_shape):
    if data_shape is None and model is RESHAPE_WITH_A_FREE_DIMENSION:
        data_shape = (40,)          # its -1 needs the data's size (the next test)
    graph = capture(model, input_shape=data_shape)
    assert graph.input_shape == (2, 4, 5) and graph.input_size == 40
    assert OpKind.RESHAPE not in kinds(graph) and kinds(graph)[0] is OpKind.CONV
    x = RNG.normal(size=(5, 40))
    np.testing.assert_allclose(canonicalize(graph).forward(x), torch_out(model, x),
                               rtol=1e-5, atol=1e-5)


def test_views_that_change_a_maps_layout_or_make_other_shapes_are_refused():
    unknown = _ViewsItsInput(lambda x: x.view(x.size(0), 2, -1, 5))
    with pytest.raises(InputError, match=r"views the input as a map of \(2, -1, 5\): give its "
                                         r"channels, rows and columns as numbers"):
        capture(unknown)
    assert capture(unknown, input_shape=(40,)).input_shape == (2, 4, 5)
    with pytest.raises(InputError, match=r"views the input as a map of 2 x 4 x 5 \(40 values\) "
                                         r"but the data has 36 values per sample"):
        capture(_ViewsItsInput(lambda x: x.view(-1, 2, 4, 5)), input_shape=(1, 6, 6))
    with pytest.raises(UnsupportedSettingError, match=r"\(view\) has shape \(-1, 2, 2, 2, 5\)"):
        capture(_ViewsItsInput(lambda x: x.view(-1, 2, 2, 2, 5)))
    with pytest.raises(UnsupportedSettingError, match=r"\(Unflatten\) has dim and "
                                                      r"unflattened_size 1 and \(2, 2, 2, 5\)"):
        capture(nn.Sequential(nn.Unflatten(1, (2, 2, 2, 5)), nn.Linear(5, 2)))

    class Relaid(nn.Module):
        def __init__(self, shape):
            super().__init__()
            self.conv, self.shape = nn.Conv2d(1, 2, 3, padding=1), shape

        def forward(self, x):
            return torch.flatten(self.conv(x).view(-1, *self.shape), 1)

    # A view to the shape the map has changes nothing; to another layout it is refused.
    assert kinds(capture(Relaid((2, 4, 4)), input_shape=(1, 4, 4))) == [OpKind.CONV,
                                                                        OpKind.FLATTEN]
    with pytest.raises(UnsupportedLayerError, match=r"a view of 'conv''s 2 x 4 x 4 map as "
                                                    r"4 x 2 x 4"):
        capture(Relaid((4, 2, 4)), input_shape=(1, 4, 4))


@pytest.mark.parametrize("model", [
    _ViewsItsInput(lambda x: x.view(x.size(0), 2, 4, 5)),
    _ViewsItsInput(lambda x: x.reshape(-1, 2, 4, 5)),
], ids=["view(size(0), ...)", "reshape(-1, ...)"])
def test_an_onnx_reshape_of_a_flat_input_to_maps_declares_the_input_map(model, tmp_path):
    import onnxruntime

    path = tmp_path / "flat_input_cnn.onnx"
    with warnings.catch_warnings():         # the TorchScript exporter, as the examples use
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model.eval(), torch.zeros(1, 40), str(path), input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}}, dynamo=False)
    graph = capture(path)
    assert graph.input_shape == (2, 4, 5) and kinds(graph)[0] is OpKind.CONV
    x = RNG.normal(size=(5, 40))
    expected = onnxruntime.InferenceSession(str(path)).run(None, {"x": x.astype(np.float32)})[0]
    np.testing.assert_allclose(canonicalize(graph).forward(x), expected, rtol=1e-4, atol=1e-4)


# ---- 1-D networks: signals of (channels, length) run as maps of one row ------------------------

def conv1d_network():
    return seeded(nn.Conv1d(2, 4, 5, padding="same"), nn.ReLU(), nn.MaxPool1d(2),
                  nn.Conv1d(4, 6, 3, stride=2), nn.BatchNorm1d(6), nn.ReLU(),
                  nn.AvgPool1d(2, padding=1), nn.Flatten(), nn.Linear(24, 3))


class _Functional1d(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(9)
        self.conv, self.fc = nn.Conv1d(2, 3, 3, padding=1), nn.Linear(3, 2)

    def forward(self, x):
        import torch.nn.functional as F

        x = F.max_pool1d(F.relu(self.conv(x.view(x.size(0), 2, 32))), 2, stride=2)
        return self.fc(torch.flatten(F.adaptive_avg_pool1d(x, 1), 1))


@pytest.mark.parametrize("model, data_shape", [(conv1d_network(), (2, 32)),
                                               (_Functional1d(), (64,)),
                                               (_Functional1d(), None)],
                         ids=["Sequential", "functional, flat data", "functional"])
def test_a_1d_network_runs_as_maps_of_one_row(model, data_shape):
    graph = capture(model, input_shape=data_shape)
    assert graph.input_shape == (2, 1, 32)
    x = RNG.normal(size=(5, 64))
    expected = torch_out(model, x.reshape(5, 2, 32))
    np.testing.assert_allclose(canonicalize(graph).forward(x), expected, rtol=1e-5, atol=1e-5)
    first = canonicalize(graph).layers[0]
    assert first.geometry.kernel[0] == 1 and first.geometry.in_shape == (2, 1, 32)


def test_an_onnx_1d_network_equals_onnxruntime(tmp_path):
    import onnxruntime

    model = conv1d_network()
    path = tmp_path / "conv1d.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, torch.zeros(1, 2, 32), str(path), input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}}, dynamo=False)
    graph = capture(path)
    assert graph.input_shape == (2, 1, 32)
    x = RNG.normal(size=(5, 2, 32)).astype(np.float32)
    expected = onnxruntime.InferenceSession(str(path)).run(None, {"x": x})[0]
    np.testing.assert_allclose(canonicalize(graph).forward(x.reshape(5, -1)), expected,
                               rtol=1e-4, atol=1e-4)


def test_1d_settings_the_engine_does_not_run_and_2d_layers_on_signals_are_refused():
    with pytest.raises(UnsupportedSettingError, match=r"'0' \(Conv1d\) has dilation 2"):
        capture(nn.Sequential(nn.Conv1d(1, 2, 3, dilation=2)), input_shape=(1, 16))
    with pytest.raises(UnsupportedSettingError, match=r"\(Conv1d\) has padding 'same' with the "
                                                      r"even kernel 4"):
        capture(nn.Sequential(nn.Conv1d(1, 2, 4, padding="same")), input_shape=(1, 16))
    with pytest.raises(UnsupportedSettingError, match=r"'1' \(AdaptiveAvgPool1d\) has "
                                                      r"output_size 4"):
        capture(nn.Sequential(nn.Conv1d(1, 2, 3), nn.AdaptiveAvgPool1d(4)), input_shape=(1, 16))
    with pytest.raises(InputError, match=r"layer '0' works on 2-D feature maps but the data is "
                                         r"batch x 8 x 8: give it as batch x channels x rows x "
                                         r"columns"):
        capture(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(72, 2)),
                input_shape=(8, 8))
    # A first Conv2d of one input channel takes batch x rows x columns as grey images.
    graph = capture(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 2)),
                    input_shape=(8, 8))
    assert graph.input_shape == (1, 8, 8)


def test_an_adaptive_average_pooling_whose_size_divides_the_map_is_a_pooling():
    import torch.nn.functional as F

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(6)
            self.conv, self.fc = nn.Conv2d(2, 3, 3, padding=1), nn.Linear(3 * 2 * 4, 2)

        def forward(self, x):
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(F.relu(self.conv(x)), (2, 4)),
                                         1))

    for model in (seeded(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(12, 2)), Functional()):
        graph = capture(model, input_shape=(2, 8, 8))
        x = RNG.normal(size=(5, 2 * 8 * 8))
        expected = torch_out(model, x.reshape(5, 2, 8, 8))
        np.testing.assert_allclose(graph.run(x), expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(canonicalize(graph).forward(x), expected, rtol=1e-5,
                                   atol=1e-5)
    with pytest.raises(InputError, match=r"adaptive pooling '2' to 2x2 on a 7x7 map: its "
                                         r"windows would differ in size"):
        capture(seeded(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                       nn.Flatten(), nn.Linear(12, 2)), input_shape=(2, 7, 7))


# ---- zero padding before a convolution --------------------------------------------------------

class PaddedByCall(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 3, 3, padding=1), nn.Linear(3 * 36, 2)

    def forward(self, x):
        x = torch.relu(self.conv(torch.nn.functional.pad(x, (1, 1, 1, 1))))
        return self.fc(torch.flatten(x, 1))


@pytest.mark.parametrize("model, shape", [
    (lambda: seeded(nn.ZeroPad2d(1), nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(),
                    nn.Linear(48, 2)), (1, 4, 4)),
    (lambda: seeded(nn.ConstantPad2d((2, 2, 1, 1), 0.0), nn.Dropout(), nn.Conv2d(1, 3, 3),
                    nn.Flatten(), nn.Linear(3 * 4 * 6, 2)), (1, 4, 4)),
    (lambda: seeded(nn.ZeroPad1d(2), nn.Conv1d(2, 3, 5, padding=1), nn.ReLU(), nn.Flatten(),
                    nn.Linear(3 * 10, 2)), (2, 8)),
    (lambda: PaddedByCall().eval(), (1, 4, 4)),
], ids=["ZeroPad2d", "ConstantPad2d of zeros", "ZeroPad1d to a padded Conv1d", "F.pad"])
def test_zero_padding_before_a_convolution_becomes_its_padding(model, shape, tmp_path):
    model = model()
    x = RNG.normal(size=(6, *shape))
    network = canonicalize(capture(model, input_shape=shape))
    np.testing.assert_allclose(network.forward(x), torch_out(model, x), rtol=1e-5, atol=1e-5)
    # The same model through ONNX (PyTorch's default exporter puts the padding in the Conv).
    path = tmp_path / "padded.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(2, *shape),), str(path), dynamo=True,
                          verbose=False)
    np.testing.assert_allclose(canonicalize(capture(path)).forward(x), torch_out(model, x),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model, message", [
    (lambda: seeded(nn.ConstantPad2d(1, 0.5), nn.Conv2d(1, 3, 3)), r"has value 0.5"),
    (lambda: seeded(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(1, 3, 3)),
     r"\(top 0, bottom 1, left 0, right 1\).*the same on both sides"),
    (lambda: seeded(nn.Conv2d(1, 3, 3), nn.ZeroPad2d(1), nn.MaxPool2d(2)),
     r"right before a convolution.*'2' follows it"),
], ids=["not zeros", "one-sided", "before a pooling"])
def test_paddings_a_convolution_cannot_take_are_refused_by_name(model, message):
    with pytest.raises(UnsupportedSettingError, match=message):
        capture(model(), input_shape=(1, 6, 6))


def test_an_onnx_pad_of_zeros_before_a_conv_is_its_padding(tmp_path):
    torch.manual_seed(3)
    model = seeded(nn.ZeroPad2d((2, 2, 1, 1)), nn.Conv2d(1, 2, 3, padding=1), nn.ReLU())
    conv = model[1]
    nodes = [helper.make_node("Pad", ["x", "pads"], ["padded"], name="pad", mode="constant"),
             helper.make_node("Conv", ["padded", "w", "b"], ["c"], name="conv",
                              kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    initializers = [numpy_helper.from_array(np.array([0, 0, 1, 2, 0, 0, 1, 2], np.int64),
                                            "pads"),
                    numpy_helper.from_array(conv.weight.detach().numpy(), "w"),
                    numpy_helper.from_array(conv.bias.detach().numpy(), "b")]
    graph = helper.make_graph(nodes, "padded", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [None, 1, 4, 4])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)], initializers)
    path = tmp_path / "pad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    [op] = [op for op in capture(path).ops if op.kind is OpKind.CONV]
    assert op.attrs["padding"] == (2, 3)
    x = RNG.normal(size=(5, 1, 4, 4))
    np.testing.assert_allclose(canonicalize(capture(path)).forward(x),
                               torch_out(model, x).reshape(5, -1), rtol=1e-5, atol=1e-5)
