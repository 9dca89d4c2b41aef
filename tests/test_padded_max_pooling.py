"""A max pooling with padding or in ceil mode (ResNet's stem, ``MaxPool2d(3, 2, padding=1)``;
``MaxPool2d(2, ceil_mode=True)`` on an odd map): ``passes.pad_max_pooling`` gives it a
convolution of its own that makes the padding, and the engine pools that map unpadded.  The
float network computes the model (modules and both ONNX exporters), the refusals name the
pooling, and a compressed network with two such poolings compiles to a program that
computes it, bit for bit."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import sparseforge as sf
from sparseforge.compiler.capture import capture
from sparseforge.compiler.errors import InputError
from sparseforge.compiler.passes import canonicalize
from tests.rtl_checks import assert_the_program_computes_the_network, digits_images, trained
from tests.test_capture_conv import torch_out

RNG = np.random.default_rng(29)


def pooled(pool, size, activation_first=True, channels=3):
    torch.manual_seed(29)
    activation = [nn.ReLU()]
    body = ([nn.Conv2d(2, channels, 3, padding=1)] + activation + [pool] if activation_first
            else [nn.Conv2d(2, channels, 3, padding=1), pool] + activation)
    model = nn.Sequential(*body, nn.Flatten(), nn.LazyLinear(4))
    model(torch.zeros(1, 2, size, size))
    return model.eval()


@pytest.mark.parametrize("pool", [
    nn.MaxPool2d(3, 2, padding=1),
    nn.MaxPool2d(2, ceil_mode=True),
    nn.MaxPool2d(3, 2, padding=1, ceil_mode=True),
    nn.MaxPool2d((3, 2), (2, 1), padding=(1, 0), ceil_mode=True),
    nn.MaxPool2d(2, 3, ceil_mode=True),
], ids=["stem", "ceil", "stem-ceil", "rectangular", "stride-past-window"])
@pytest.mark.parametrize("size", [7, 8])
@pytest.mark.parametrize("activation_first", [True, False], ids=["relu-pool", "pool-relu"])
def test_the_network_computes_the_padded_pooling(pool, size, activation_first):
    model = pooled(pool, size, activation_first)
    x = RNG.normal(size=(6, 2 * size * size))
    graph = capture(model, input_shape=(2, size, size))
    np.testing.assert_allclose(graph.run(x), torch_out(model, x.reshape(6, 2, size, size)),
                               rtol=1e-5, atol=1e-5)
    network = canonicalize(graph)
    np.testing.assert_allclose(network.forward(x), torch_out(model, x.reshape(6, 2, size, size)),
                               rtol=1e-5, atol=1e-5)
    names = [layer.name for layer in network.layers]
    padding = names[1] == "2 (padding)" if activation_first else names[1] == "1 (padding)"
    widens = network.layers[1].geometry.height if len(names) == 3 else size
    # Padding, or ceil mode that adds a window, costs the copy; ceil mode that adds none not.
    assert padding == (len(names) == 3), names
    if padding:
        copy = network.layers[1]
        assert copy.relu and copy.geometry.pool is not None
        assert np.count_nonzero(copy.weight) == 3 and widens == size


def test_ceil_mode_that_adds_no_window_costs_nothing():
    model = pooled(nn.MaxPool2d(2, ceil_mode=True), 8)
    network = canonicalize(capture(model, input_shape=(2, 8, 8)))
    assert [layer.name for layer in network.layers] == ["0", "4"]
    assert network.layers[0].geometry.pool.kernel == (2, 2)


def test_a_padded_pooling_of_values_that_can_be_negative_is_refused_by_name():
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.MaxPool2d(3, 2, padding=1),
                          nn.Flatten(), nn.LazyLinear(4))
    model(torch.zeros(1, 2, 8, 8))
    with pytest.raises(InputError, match=r"MaxPool2d '1' has padding \(1, 1\): .* only on "
                                         r"values that are never negative; it follows Conv2d "
                                         r"'0': put a ReLU right before or after the pooling"):
        canonicalize(capture(model.eval(), input_shape=(2, 8, 8)))


def test_an_average_pooling_in_ceil_mode_with_a_partial_window_is_refused():
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.AvgPool2d(3, 2, ceil_mode=True),
                          nn.Flatten())
    with pytest.raises(InputError, match=r"average pooling '1' in ceil mode on a 8x8 map adds "
                                         r"a partial window"):
        capture(model, input_shape=(2, 8, 8))
    fine = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.AvgPool2d(2, ceil_mode=True),
                         nn.Flatten())
    assert capture(fine, input_shape=(2, 8, 8)).ops[1].attrs["ceil_mode"]


class Stem(nn.Module):
    """A ResNet-like stem and a ceil-mode pooling, written as people write them."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(3, 2, padding=1)
        self.conv = nn.Conv2d(8, 12, 3, padding=1)
        self.fc = nn.Linear(12 * 2 * 2, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.bn(self.stem(x))))
        x = F.relu(F.max_pool2d(self.conv(x), 3, 2, ceil_mode=True))
        return self.fc(torch.flatten(x, 1))


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_onnx_exports_of_padded_poolings_compute_the_model(tmp_path, dynamo):
    model = Stem().eval()
    x = RNG.normal(size=(5, 1, 8, 8))
    path = tmp_path / "stem.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")         # the TorchScript exporter's deprecation
        torch.onnx.export(model, torch.zeros(1, 1, 8, 8), path, dynamo=dynamo)
    network = canonicalize(capture(path))
    assert [layer.name for layer in network.layers][1].endswith("(padding)")
    np.testing.assert_allclose(network.forward(x.reshape(5, -1)), torch_out(model, x),
                               rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def compressed_stem():
    x, y = digits_images()
    torch.manual_seed(0)
    model = trained(Stem(), x[:300], y[:300], steps=30)
    compressed = sf.compress(model, (x[:300], y[:300]), test=(x[300:], y[300:]),
                             sparsity=0.9, min_weights_per_filter=0, prune_steps=1,
                             prune_epochs=1, final_epochs=1, share_epochs=1)
    return compressed, x[300:]


def test_a_compressed_stem_compiles_to_a_program_that_computes_it(compressed_stem):
    compressed, x = compressed_stem
    assert [layer.name for layer in compressed.network.layers] == [
        "stem", "pool (padding)", "conv", "Stem.max_pool2d (padding)", "fc"]
    # The copies are neither pruned (at 90%, where the model's layers are) nor trained.
    for index, channels in ((1, 8), (3, 12)):
        copy = compressed.float_network.layers[index]
        assert copy.structural and np.count_nonzero(copy.weight) == channels
        np.testing.assert_array_equal(copy.weight[copy.weight != 0], 1.0)
        np.testing.assert_array_equal(copy.bias, 0.0)
        assert np.count_nonzero(compressed.network.layers[index].codes) == channels
    assert compressed.provenance["sparsities"][1] == round(1 - 1 / 8, 4)
    for board, pes in (("icebreaker", 1), ("ulx3s-85f", 8)):
        assert_the_program_computes_the_network(compressed, x[:20], pes, board)


@pytest.mark.cocotb
def test_a_padded_stem_is_bit_and_cycle_exact_on_the_rtl(compressed_stem, tmp_path):
    from tests.rtl_checks import assert_bit_and_cycle_exact

    compressed, x = compressed_stem
    program = sf.compile(compressed, pes=1, board="icebreaker")
    assert_bit_and_cycle_exact(program, compressed.network, x[:4], tmp_path / "rtl", "stem")


@pytest.mark.parametrize("pool", [nn.MaxPool1d(3, 2, padding=1), nn.MaxPool1d(2, ceil_mode=True)],
                         ids=["padding", "ceil"])
def test_a_one_dimensional_signal_pools_the_same(pool):
    torch.manual_seed(29)
    model = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), pool, nn.Flatten(),
                          nn.LazyLinear(3))
    model(torch.zeros(1, 2, 15))
    x = RNG.normal(size=(4, 2, 15))
    network = canonicalize(capture(model.eval(), input_shape=(2, 15)))
    assert network.layers[1].name == "2 (padding)"
    np.testing.assert_allclose(network.forward(x.reshape(4, -1)), torch_out(model, x),
                               rtol=1e-5, atol=1e-5)
