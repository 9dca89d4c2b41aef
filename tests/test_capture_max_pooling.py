"""Global and adaptive max pooling (``AdaptiveMaxPool2d``, ``F.adaptive_max_pool2d``,
``x.amax((2, 3))``, ``AdaptiveMaxPool1d(1)``, ONNX ``GlobalMaxPool``): captured as the max
pooling window they make on the map, fused into the convolution before it, with the module's
outputs; the program's golden model runs them as the compressed network does.  And the
``squeeze`` that often follows a global pooling, a flatten of its 1 x 1 map."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import sparseforge as sf
from sparseforge.compiler.capture import UnsupportedSettingError
from sparseforge.compiler.compress.convert import to_network
from sparseforge.compiler.errors import InputError


class Pooled(nn.Module):
    """A convolution, then a max pooling written the given way, then a classifier."""

    def __init__(self, pooling: str, channels=2):
        super().__init__()
        self.pooling = pooling
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.adaptive = nn.AdaptiveMaxPool2d(1 if pooling == "module" else (2, 3))
        self.fc = nn.Linear(4 * (6 if pooling == "adaptive" else 1), 3)

    def forward(self, x):
        x = F.relu(self.conv(x))
        if self.pooling in ("module", "adaptive"):
            x = torch.flatten(self.adaptive(x), 1)
        elif self.pooling == "function":
            x = F.adaptive_max_pool2d(x, 1).flatten(1)
        else:
            x = x.amax(dim=(2, 3))
        return self.fc(x)


def outputs(module, x):
    with torch.no_grad():
        return module.eval()(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("pooling", ["module", "function", "amax", "adaptive"])
def test_the_network_computes_what_the_module_does(pooling):
    module = Pooled(pooling)
    x = np.random.default_rng(0).normal(size=(4, 2, 6, 6)).astype(np.float32)
    network = to_network(module, (2, 6, 6))
    assert network.layers[0].geometry.pool.kernel == ((6, 6) if pooling != "adaptive" else (3, 2))
    np.testing.assert_allclose(network.forward(x.reshape(4, -1)), outputs(module, x),
                               rtol=1e-5, atol=1e-5)


def test_a_1d_global_max_pooling_and_onnx_global_max_pool(tmp_path):
    module = nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.AdaptiveMaxPool1d(1),
                           nn.Flatten(), nn.Linear(4, 3))
    x = np.random.default_rng(1).normal(size=(4, 2, 10)).astype(np.float32)
    np.testing.assert_allclose(to_network(module, (2, 10)).forward(x.reshape(4, -1)),
                               outputs(module, x), rtol=1e-5, atol=1e-5)
    onnx_module = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.AdaptiveMaxPool2d(1),
                                nn.Flatten(), nn.Linear(4, 3))
    path = tmp_path / "global_max.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(onnx_module, torch.zeros(1, 2, 6, 6), str(path), dynamo=False)
    images = np.random.default_rng(2).normal(size=(4, 2, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(to_network(str(path)).forward(images.reshape(4, -1)),
                               outputs(onnx_module, images), rtol=1e-5, atol=1e-5)


def test_settings_the_engine_does_not_run_are_named():
    with pytest.raises(UnsupportedSettingError, match="return_indices"):
        to_network(nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveMaxPool2d(1, return_indices=True),
                                 nn.Flatten(), nn.Linear(2, 2)), (1, 5, 5))
    with pytest.raises(ValueError, match=r"adaptive pooling 'adaptive' to 2x3 on a 5x5 map"):
        to_network(Pooled("adaptive"), (2, 5, 5))


def test_the_compiled_program_pools_as_the_network_does():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 2, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, 60)
    compressed = sf.compress(Pooled("amax"), train=(x, y), sparsity=0.5, prune_steps=1,
                             prune_epochs=1, final_epochs=1, share_epochs=1)
    program = sf.compile(compressed, pes=2)
    np.testing.assert_array_equal(
        sf.reference(program, x[:8]),
        compressed.network.forward(compressed.network.quantize_input(x[:8].reshape(8, -1))))


class Squeezed(nn.Module):
    """Global pooling, then ``squeeze`` to the classifier's vector, as many forwards write it."""

    def __init__(self, everything: bool):
        super().__init__()
        self.everything = everything
        self.conv = nn.Conv2d(1, 4, 3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.pool(F.relu(self.conv(x)))
        x = x.squeeze() if self.everything else x.squeeze(-1).squeeze(-1)
        return self.fc(x)


@pytest.mark.parametrize("everything", [False, True])
def test_a_squeeze_after_global_pooling_is_a_flatten(tmp_path, everything):
    module = Squeezed(everything)
    x = np.random.default_rng(4).normal(size=(3, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(to_network(module, (1, 8, 8)).forward(x.reshape(3, -1)),
                               outputs(module, x), rtol=1e-5, atol=1e-5)
    path = tmp_path / "squeezed.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, torch.zeros(1, 1, 8, 8), str(path), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    np.testing.assert_allclose(to_network(str(path)).forward(x.reshape(3, -1)),
                               outputs(module, x), rtol=1e-5, atol=1e-5)


def test_a_squeeze_of_a_map_larger_than_one_pixel_is_refused():
    class Unpooled(Squeezed):
        def forward(self, x):
            return self.fc(F.relu(self.conv(x)).squeeze())

    with pytest.raises(InputError, match=r"'Unpooled.squeeze' squeezes 'conv''s 4 x 6 x 6 map, "
                                         r"whose rows and columns are not 1"):
        to_network(Unpooled(True), (1, 8, 8))



class TwicePooled(nn.Module):
    """``self.second(self.pool(x))``, as people write a pooling by four."""

    def __init__(self, second, features):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.second = second
        self.fc = nn.Linear(4 * features, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.second(self.pool(F.relu(self.conv(x)))), 1))


@pytest.mark.parametrize("second,features", [(lambda: nn.MaxPool2d(2), 9),
                                             (lambda: nn.MaxPool2d(3), 4),
                                             (lambda: nn.AdaptiveMaxPool2d(1), 1)])
@pytest.mark.parametrize("size", [12, 13])
def test_two_max_poolings_in_a_row_are_the_one_they_make(second, features, size):
    # It said "MaxPool2d 'second' follows MaxPool2d 'pool', not a convolution that does not
    # pool yet".  A 13 x 13 map loses its last row and column to both, as to the one.
    model = TwicePooled(second(), features).eval()
    network = to_network(model, input_shape=(1, size, size))
    x = np.random.default_rng(1).normal(size=(6, size * size))
    with torch.no_grad():
        expected = model(torch.tensor(x, dtype=torch.float32).reshape(6, 1, size, size))
    np.testing.assert_allclose(network.forward(x), expected.numpy(), rtol=1e-5, atol=1e-5)
    assert network.layers[0].geometry.pool is not None and len(network.layers) == 2
