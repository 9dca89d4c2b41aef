"""Compression of convolutional networks (issue 17): kernels pruned (magnitude and by filter),
shared by k-means per layer, quantized to fixed point, accounted (Huffman included) and saved,
each through the same functions as a Linear layer's weights, with the kernel as a matrix."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn as nn

import sparseforge as sf
from sparseforge.compiler.compress.accounting import account_layer
from sparseforge.compiler.compress.convert import network_to_torch, torch_to_network
from sparseforge.compiler.compress.convolution import MatrixConv2d
from sparseforge.compiler.compress.model import CompressedModelError, load_compressed
from sparseforge.compiler.compress.prune import (
    linear_layers,
    magnitude_mask,
    prune_iteratively,
    prune_neurons,
)
from sparseforge.compiler.compress.quantize import quantize_network
from sparseforge.compiler.compress.share import SharedLinear, from_shared, share_network, to_shared
from sparseforge.compiler.compress.training import Dataset, TrainConfig
from sparseforge.compiler.conv import ConvGeometry, Pool
from sparseforge.compiler.ir import Conv2d, Linear, Network, QuantizedConv2d

torch.set_num_threads(1)
RNG = np.random.default_rng(1717)


def conv_network(seed=0):
    rng = np.random.default_rng(seed)
    g1 = ConvGeometry(1, 8, 8, 4, (3, 3), (1, 1), (1, 1), Pool((2, 2), (2, 2)))
    g2 = ConvGeometry(4, 4, 4, 6, (3, 3), (2, 2), (1, 1))
    return Network((
        Conv2d("c1", rng.normal(size=(4, 9)), rng.normal(size=4) * 0.1, True, g1),
        Conv2d("c2", rng.normal(size=(6, 36)) * 0.5, rng.normal(size=6) * 0.1, True, g2),
        Linear("fc", rng.normal(size=(3, 24)) * 0.5, rng.normal(size=3) * 0.1, False)))


def images(count, seed=1):
    return np.random.default_rng(seed).uniform(0, 1, size=(count, 64))


def test_matrix_conv2d_is_the_convolution_and_its_pooling_on_flat_maps():
    geometry = ConvGeometry(3, 7, 6, 5, (3, 2), (2, 1), (1, 0), Pool((2, 2), (1, 2)))
    layer = MatrixConv2d(geometry)
    assert isinstance(layer, nn.Linear) and layer.weight.shape == (5, 18)
    x = torch.from_numpy(RNG.normal(size=(4, 3 * 7 * 6)).astype(np.float32))
    conv = nn.Conv2d(3, 5, (3, 2), (2, 1), (1, 0))
    with torch.no_grad():
        conv.weight.copy_(layer.weight.reshape(5, 3, 3, 2))
        conv.bias.copy_(layer.bias)
        expected = nn.functional.max_pool2d(conv(x.reshape(4, 3, 7, 6)), 2, (1, 2)).flatten(1)
        torch.testing.assert_close(layer(x), expected)
    assert expected.shape[1] == geometry.out_size


def test_a_conv_network_goes_to_torch_and_back_with_its_function():
    network = conv_network()
    model = network_to_torch(network)
    assert [type(m) for m in linear_layers(model)] == [MatrixConv2d, MatrixConv2d, nn.Linear]
    x = images(5)
    with torch.no_grad():
        ours = model(torch.from_numpy(x.astype(np.float32))).numpy()
    np.testing.assert_allclose(ours, network.forward(x), rtol=1e-4, atol=1e-5)
    back = torch_to_network(model, network)
    assert [type(layer) for layer in back.layers] == [Conv2d, Conv2d, Linear]
    assert back.layers[0].geometry == network.layers[0].geometry
    np.testing.assert_allclose(back.forward(x), network.forward(x), rtol=1e-5, atol=1e-6)


def test_pruning_masks_hold_on_kernels_through_retraining():
    network = conv_network()
    model = network_to_torch(network)
    x = images(64)
    y = np.random.default_rng(2).integers(0, 3, size=64)
    masks = prune_iteratively(model, Dataset(x.astype(np.float32), y), [0.5, 0.75, 0.5],
                              steps=2, epochs_per_step=1, final_epochs=1,
                              train_config=TrainConfig(epochs=1, seed=3))
    for layer, mask, target in zip(linear_layers(model), masks, [0.5, 0.75, 0.5]):
        weight = layer.weight.detach().numpy()
        assert mask.shape == weight.shape
        assert np.all(weight[~mask] == 0)
        assert abs((~mask).mean() - target) < 0.02


def test_filter_pruning_shrinks_the_kernel_and_the_next_layers_channels():
    network = conv_network()
    model = network_to_torch(network)
    x = torch.from_numpy(images(6).astype(np.float32))
    for index, keep in ((0, 2), (1, 3)):          # a conv before a conv, a conv before a Linear
        layers = linear_layers(model)
        norms = layers[index].weight.detach().abs().sum(dim=1).numpy()
        dropped = np.argsort(-norms, kind="stable")[keep:]
        with torch.no_grad():
            zeroed = network_to_torch(torch_to_network(model, network if index == 0 else
                                                       torch_to_network(model, network)))
            linear_layers(zeroed)[index].weight[dropped] = 0
            linear_layers(zeroed)[index].bias[dropped] = 0
            expected = zeroed(x)
        pruning = prune_neurons(model, index, keep)
        assert sorted(pruning.kept.tolist()) == sorted(set(range(len(norms))) - set(dropped))
        shrunk = linear_layers(model)
        assert shrunk[index].geometry.out_channels == keep
        assert shrunk[index].weight.shape[0] == keep
        with torch.no_grad():
            torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
    assert linear_layers(model)[1].geometry.in_channels == 2
    assert linear_layers(model)[2].in_features == 3 * 4      # 3 channels of a 2x2 map


def test_shared_kernels_train_their_centroids_as_a_linear_layers_do():
    network = conv_network()
    model = network_to_torch(network)
    masks = [magnitude_mask(layer.weight.detach().numpy(), 0.5)
             for layer in linear_layers(model)]
    to_shared(model, 8, masks)
    shared = [m for m in model.modules() if isinstance(m, SharedLinear)]
    assert shared[0].geometry == network.layers[0].geometry and shared[2].geometry is None
    x = torch.from_numpy(images(4).astype(np.float32))
    model(x).sum().backward()
    layer = shared[1]
    weight = layer.weight.detach().requires_grad_(True)
    from sparseforge.compiler.compress.convolution import conv_forward

    # The gradient of a centroid is the sum of the gradients of the weights that share it.
    torch.manual_seed(0)
    inputs = torch.relu(linear_layers(network_to_torch(network))[0](x)).detach()
    layer.centroids.grad = None
    conv_forward(inputs, layer.weight, layer.bias, layer.geometry).sum().backward()
    conv_forward(inputs, weight, layer.bias.detach(), layer.geometry).sum().backward()
    codes = layer.codes.numpy()
    expected = [weight.grad.numpy()[codes == c].sum() for c in range(1, 8)]
    np.testing.assert_allclose(layer.centroids.grad.numpy(), expected, rtol=1e-4, atol=1e-5)
    back = from_shared(model)
    assert back[0][0].shape == (4, 9) and len(np.unique(back[0][1])) <= 8


def test_quantized_convolutions_follow_the_float_network():
    network = conv_network()
    shared, books = share_network(network, 16)
    calibration = images(200, seed=4)
    quantized = quantize_network(shared, calibration, codebooks=books)
    assert [type(layer) for layer in quantized.layers][:2] == [QuantizedConv2d] * 2
    layer = quantized.layers[0]
    assert layer.codes.shape == (4, 9) and layer.in_features == 64 and layer.out_features == 64
    x = images(50, seed=5)
    integer = quantized.dequantize_output(quantized.forward(quantized.quantize_input(x)))
    reference = shared.forward(x)
    # Only the activations' and codebook's rounding errs: a few output steps, against
    # outputs of some eighty.
    step = 2.0 ** -quantized.output_format.frac
    assert np.abs(reference).max() > 60 * step
    assert np.abs(integer - reference).max() < 4 * step


def test_a_conv_layers_storage_is_its_kernels_whatever_its_positions():
    small = conv_network().layers[1]
    wide = Conv2d("c2", small.weight, small.bias, True,
                  ConvGeometry(4, 16, 16, 6, (3, 3), (2, 2), (1, 1)))
    reports = []
    for layer in (small, wide):
        net = Network((layer,))
        shared, books = share_network(net, 16)
        calibration = np.random.default_rng(6).uniform(0, 1, size=(20, layer.in_features))
        q = quantize_network(shared, calibration, codebooks=books)
        reports.append(account_layer(q.layers[0]))
    a, b = reports
    assert a.shape == b.shape == (6, 36)
    for figure in ("weights", "nnz", "padding", "compressed_bits", "huffman_bits",
                   "pointer_bits"):
        assert getattr(a, figure) == getattr(b, figure), figure


@pytest.fixture(scope="module")
def tiny_cnn_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 1, size=(96, 1, 6, 6)).astype(np.float32)
    y = (x.reshape(96, -1)[:, :12].sum(1) > 6).astype(np.int64) + (x[:, 0, 3, 3] > 0.5)
    return sf.compress(model, train=(x, y), sparsity=0.7, weight_bits=4, act_bits=8,
                       prune_steps=2, prune_epochs=1, final_epochs=1, share_epochs=1), x


def test_compress_takes_a_cnn_with_image_data_and_saves_it(tiny_cnn_model, tmp_path):
    cm, x = tiny_cnn_model
    assert [type(layer) for layer in cm.network.layers] == [QuantizedConv2d] * 2 + [
        type(cm.network.layers[2])]
    assert cm.network.layers[0].geometry.pool == Pool((2, 2), (2, 2))
    # The global average pooling was folded into the classifier (8 channels x 3 x 3).
    assert cm.network.layers[2].codes.shape == (3, 72)
    names = [row.name for row in cm.report.layers]
    assert names == ["0", "4", "8"]
    assert cm.report.layers[1].shape == (8, 36)
    path = cm.save(tmp_path / "cnn.sfm")
    loaded = load_compressed(path)
    assert loaded.network.layers[1].geometry == cm.network.layers[1].geometry
    np.testing.assert_array_equal(loaded.predict(x), cm.predict(x))
    assert cm.predict(x).shape == (96, 3)


def test_a_damaged_conv_geometry_is_refused(tiny_cnn_model, tmp_path):
    from sparseforge.compiler.compress.model import from_parts

    cm, _ = tiny_cnn_model
    manifest = cm.manifest()
    manifest["layers"][1]["conv"]["height"] = 5
    with pytest.raises(CompressedModelError, match=r"layers\[1\] \(4\): in_features 36 and "
                                                   r"out_features 72 are not the "
                                                   r"convolution's maps, 60 and 120"):
        from_parts(manifest, cm.arrays(), "m.sfm")
    manifest["layers"][1]["conv"] = {"kernel": 3}
    with pytest.raises(CompressedModelError, match=r"layers\[1\] \(4\).conv is not a "
                                                   r"convolution's geometry"):
        from_parts(manifest, cm.arrays(), "m.sfm")


def test_the_report_knows_the_model_a_conv_program_came_from(tiny_cnn_model, tmp_path):
    # Conv programs keep the model's rows (no balancing): the report's check that the model
    # is the program's must see that (`sparseforge demo --model cnn` failed at its report).
    from sparseforge.compiler.balance import row_orders
    from sparseforge.run_report import write_report

    model, x = tiny_cnn_model
    network = model.network
    orders = row_orders(network, network)
    assert orders is not None and all(np.array_equal(order, np.arange(layer.codes.shape[0]))
                                      for order, layer in zip(orders, network.layers))
    program = sf.compile(model, pes=2)
    assert write_report(tmp_path / "a", compressed=model, program=program,
                        inputs=x[:4]).is_file()
    # A conv layer's nonzero inputs are counted over its patches ("276.0 of 9" was the
    # count over every position against one patch's columns).
    from sparseforge.sim.reference.workload import workload

    first = workload(program, program.quantize_input(x[:4]))[0]
    table = (tmp_path / "a" / "report.md").read_text()
    assert first.positions > 1 and (f"{first.nonzero.mean():.1f} of "
                                    f"{first.positions * program.column_counts(0).shape[1]} "
                                    f"({first.positions} patches of "
                                    f"{program.column_counts(0).shape[1]})") in table
    layers = list(network.layers)
    layers[0] = dataclasses.replace(layers[0], bias=layers[0].bias + 1)
    other = dataclasses.replace(model, network=type(network)(tuple(layers)))
    with pytest.raises(ValueError, match="not the one the program was compiled from"):
        write_report(tmp_path / "b", compressed=other, program=program)


@pytest.mark.parametrize("activation", [nn.ReLU6(), nn.Hardtanh(-1.0, 1.0), nn.Tanh()],
                         ids=["relu6", "hardtanh", "tanh"])
def test_a_convolution_with_its_own_requantization_saves_and_loads(activation, tmp_path):
    """A clamp or a table after a convolution gives it per-row requantization, one value per
    output channel (not per output feature): the .sfm keeps them so, and loads them back."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), activation, nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(64, 3)).eval()
    x = images(60).astype(np.float32).reshape(-1, 1, 8, 8)
    y = np.arange(60) % 3
    compressed = sf.compress(model, (x, y), sparsity=0.5, prune_steps=1, prune_epochs=1,
                             final_epochs=1, share_epochs=1)
    assert compressed.network.layers[0].requant is not None
    assert compressed.network.layers[0].requant.multiplier.shape == (4,)
    loaded = load_compressed(compressed.save(tmp_path / "requant.sfm"))
    np.testing.assert_array_equal(loaded.network.layers[0].requant.multiplier,
                                  compressed.network.layers[0].requant.multiplier)
    np.testing.assert_array_equal(loaded.predict(x), compressed.predict(x))


def _gap_cnn(depthwise: bool):
    torch.manual_seed(0)
    middle = ([nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(), nn.Conv2d(8, 16, 1)]
              if depthwise else [nn.Conv2d(8, 16, 3, padding=1)])
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), *middle, nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)).eval()


@pytest.mark.parametrize("depthwise", [False, True], ids=["plain", "depthwise"])
def test_the_overall_sparsity_counts_the_models_weights(depthwise):
    """A global average pooling folded into the classifier repeats each of its weights over
    the map (Linear(16, 4) becomes 4 x 1024), and a depthwise kernel is stored as the full
    kernel, zero across channels: the overall sparsity counts the model's weights, so the
    classifier does not outweigh the convolutions (it was refused: "the last layer holds
    4096 of the 5528 weights") and a depthwise layer keeps its share of its own."""
    from sparseforge.compiler.compress.api import CompressionConfig, _sparsities
    from sparseforge.compiler.compress.convert import to_network

    network = to_network(_gap_cnn(depthwise), (1, 8, 8))
    classifier = network.layers[-1]
    assert classifier.weight.shape == (4, 16 * 64) and classifier.parameters == 64
    config = CompressionConfig(sparsity=0.8, min_weights_per_filter=0)
    sparsities = _sparsities(config, network, None, None)
    own = [layer.parameters or layer.weight.size for layer in network.layers]
    # The entries kept, in the model's weights (an entry of a repeat is 1/repeats of one).
    kept = [(1 - s) * layer.weight.size * count / np.count_nonzero(layer.weight)
            for s, layer, count in zip(sparsities, network.layers, own)]
    assert sum(kept) == pytest.approx(0.2 * sum(own), rel=1e-6)
    assert sparsities[-1] == pytest.approx(0.8)          # capped; each repeat keeps 20%
    if depthwise:
        kernel = network.layers[1]
        assert kernel.parameters == 72 and np.count_nonzero(kernel.weight) == 72
        assert round((1 - sparsities[1]) * kernel.weight.size) < 72      # pruned, not spared



def test_a_folded_average_poolings_copies_are_pruned_and_trained_as_one_weight():
    """Linear(16, 4) after a global average pooling of an 8 x 8 map is stored as 4 x 1024, each
    weight repeated over the 64 positions.  Each copy was pruned and trained on its own: the
    compressed network no longer averaged, and kept more nonzeros than the model had weights
    (a probe's: 1384 weights, 2154 nonzeros, "81% pruned").  Now each kept weight keeps all of
    its copies, equal."""
    x = images(96).astype(np.float32).reshape(-1, 1, 8, 8)
    y = np.arange(96) % 4
    compressed = sf.compress(_gap_cnn(False), (x, y), sparsity=0.8, min_weights_per_filter=0,
                             prune_steps=2, prune_epochs=2, final_epochs=2, share_epochs=2)
    classifier = compressed.network.layers[-1]
    codes = classifier.codes.reshape(4, 16, 64)
    # Every (class, channel) weight: all 64 copies pruned, or all kept with one code.
    assert np.all(codes == codes[:, :, :1])
    kept = np.count_nonzero(codes[:, :, 0])
    assert kept == round(0.2 * 64)                        # the last layer's cap, 0.8
    shared = compressed.float_network.layers[-1].weight.reshape(4, 16, 64)
    np.testing.assert_array_equal(shared, np.repeat(shared[:, :, :1], 64, axis=2))

def test_the_report_counts_the_models_weights_as_the_overall_sparsity_does(tmp_path):
    """The report counted the matrices' entries: a depthwise kernel's zeros across channels as
    pruned weights, and each of a folded classifier weight's 64 copies as a weight of its own,
    so a depthwise model warned "pruned to 0.808" and reported 0.759.  It counts the model's
    weights (336 here), each kept weight once, and its dense baseline is the model's."""
    x = images(96).astype(np.float32).reshape(-1, 1, 8, 8)
    y = np.arange(96) % 4
    compressed = sf.compress(_gap_cnn(True), (x, y), sparsity=0.8, min_weights_per_filter=0,
                             prune_steps=1, prune_epochs=1, final_epochs=1, share_epochs=1)
    report = compressed.report
    assert report.weights == 72 + 72 + 128 + 64
    kept = [np.count_nonzero(layer.codes) for layer in compressed.network.layers]
    kept[-1] = np.count_nonzero(compressed.network.layers[-1].codes.reshape(4, 16, 64)[..., 0])
    assert report.nnz == sum(kept)
    assert report.sparsity == pytest.approx(0.8, abs=0.01)
    depthwise, classifier = report.layers[1], report.layers[-1]
    assert (depthwise.weights, depthwise.model_weights) == (8 * 8 * 9, 72)
    assert classifier.dense_bits == 32 * (64 + 4)
    # A saved model's report is checked against its arrays with the counts it keeps.
    assert load_compressed(compressed.save(tmp_path / "dw.sfm")).report == report


def test_each_convolution_keeps_weights_for_its_filters_and_the_target_is_lowered_to_it():
    from sparseforge.compiler.compress.api import CompressionConfig, _sparsities
    from sparseforge.compiler.compress.convert import to_network
    from sparseforge.compiler.errors import InputWarning

    network = to_network(_gap_cnn(True), (1, 8, 8))         # 336 weights, 72 in the first
    with pytest.warns(InputWarning, match=r"overall sparsity 0.9 would leave convolutions "
                                          r"fewer than 2 weights per filter: pruned to "
                                          r"0\.\d+ instead"):
        sparsities = _sparsities(CompressionConfig(sparsity=0.9), network, None, None)
    for layer, sparsity in zip(network.layers[:-1], sparsities):
        assert round((1 - sparsity) * layer.weight.size) >= 2 * len(layer.weight) - 1
    # Where the floors do not bind, nothing changes; a Linear layer has none.
    assert _sparsities(CompressionConfig(sparsity=0.5), network, None, None) == _sparsities(
        CompressionConfig(sparsity=0.5, min_weights_per_filter=0), network, None, None)


def test_a_large_accuracy_loss_says_where_it_went_and_what_keeps_more():
    from sparseforge.compiler.compress.accounting import loss_hint

    x = images(64).astype(np.float32).reshape(-1, 1, 8, 8)
    y = np.arange(64) % 4
    report = sf.compress(_gap_cnn(False), (x, y), sparsity=0.5, prune_steps=1, prune_epochs=0,
                         final_epochs=0, share_epochs=0).report
    pruning = dataclasses.replace(report, accuracy_float=0.9, accuracy_shared=0.5,
                                  accuracy_quantized=0.5)
    assert "pruning and weight sharing: a lower --sparsity" in loss_hint(pruning)
    assert "pruning and weight sharing" in pruning.to_text()
    fixed_point = dataclasses.replace(pruning, accuracy_shared=0.89)
    assert "fixed point: wider activations" in loss_hint(fixed_point)
    assert loss_hint(dataclasses.replace(pruning, accuracy_quantized=0.86)) is None


@pytest.mark.parametrize("one_d", [False, True], ids=["images", "signals"])
def test_channels_last_data_for_an_onnx_cnn_is_refused_with_the_transpose(one_d, tmp_path):
    """An ONNX graph states its input's shape, so data of the same size in another layout
    would be read wrongly without a word: channels last is named, with its transpose."""
    import warnings

    from sparseforge.compiler.errors import InputError

    torch.manual_seed(0)
    conv = nn.Conv1d(3, 4, 3, padding=1) if one_d else nn.Conv2d(3, 4, 3, padding=1)
    shape = (3, 16) if one_d else (3, 6, 6)
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, *shape))
    path = tmp_path / "cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), torch.zeros(1, *shape), path, dynamo=False)
    x = np.random.default_rng(0).uniform(size=(40, *shape)).astype(np.float32)
    y = np.arange(40) % 2
    last = x.transpose(0, 2, 1) if one_d else x.transpose(0, 2, 3, 1)
    order = r"x\.transpose\(0, 2, 1\)" if one_d else r"x\.transpose\(0, 3, 1, 2\)"
    with pytest.raises(InputError, match=rf"the training data's samples are "
                                         rf"{' x '.join(map(str, last.shape[1:]))}, the model "
                                         rf"takes {' x '.join(map(str, shape))} .* channels "
                                         rf"last\? {order}"):
        sf.compress(path, (last, y), sparsity=0.5, prune_steps=1, prune_epochs=0,
                    final_epochs=0, share_epochs=0)
    compressed = sf.compress(path, (x, y), sparsity=0.5, prune_steps=1, prune_epochs=0,
                             final_epochs=0, share_epochs=0)
    # The compiled program's inputs (sim, run, reference) are checked the same way.
    program = sf.compile(compressed, pes=2)
    with pytest.raises(InputError, match=rf"channels last\? {order} puts them first"):
        sf.reference(program, last)
    np.testing.assert_array_equal(sf.reference(program, x),
                                  sf.reference(program, x.reshape(len(x), -1)))
