"""Arithmetic by constants in a forward or an ONNX graph (input normalisation written as
``(x - self.mean) / self.std``, ``x / 255``): captured as the affine map it is and folded into
the layer next to it, with the module's outputs; refused, saying why, where it cannot fold."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from sparseforge.compiler.compress.convert import to_network
from sparseforge.compiler.errors import InputError


class Normalised(nn.Module):
    """An MLP that normalises its raw input itself, with buffers."""

    def __init__(self, features=10):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("mean", torch.randn(features, generator=generator))
        self.register_buffer("std", torch.rand(features, generator=generator) + 0.5)
        self.net = nn.Sequential(nn.Linear(features, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


class Arithmetic(nn.Module):
    """Every way of writing a scale and a shift, one after the other."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.full((1, 6), 0.5))
        self.net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))

    def forward(self, x):
        x = 2 - x
        x = x * self.scale + 1
        x = torch.sub(x, 0.25, alpha=2)
        x = x.div(3.0)
        return self.net(x)


class ScaledCNN(nn.Module):
    """Pixels scaled to [0, 1] before a padded convolution: a scale keeps the padding zero."""

    def __init__(self, padding=1, shift=0.0, per_channel=False):
        super().__init__()
        self.shift, self.per_channel = shift, per_channel
        self.register_buffer("channel_mean", torch.tensor([0.1, 0.2]).reshape(1, 2, 1, 1))
        self.conv = nn.Conv2d(2, 4, 3, padding=padding)
        self.fc = nn.Linear(4 * (8 if padding else 6) ** 2, 3)

    def forward(self, x):
        x = x / 255
        if self.per_channel:
            x = x - self.channel_mean
        x = x - self.shift
        return self.fc(torch.flatten(F.relu(self.conv(x)), 1))


def outputs(module, x):
    with torch.no_grad():
        return module.eval()(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("module, shape", [(Normalised(), (10,)), (Arithmetic(), (6,)),
                                           (ScaledCNN(), (2, 8, 8)),
                                           (ScaledCNN(padding=0, per_channel=True), (2, 8, 8)),
                                           (ScaledCNN(padding=0, shift=0.5), (2, 8, 8)),
                                           # Padded: the host scales the inputs, the
                                           # padding is the scaled map's, as in the model.
                                           (ScaledCNN(shift=0.5), (2, 8, 8))])
def test_the_folded_network_computes_what_the_module_does(module, shape):
    x = np.random.default_rng(1).uniform(0, 255 if len(shape) == 3 else 3,
                                         size=(5, *shape)).astype(np.float32)
    network = to_network(module, shape if len(shape) == 3 else None)
    np.testing.assert_allclose(network.forward(x.reshape(5, -1)), outputs(module, x),
                               rtol=1e-4, atol=1e-4)


def test_what_cannot_fold_is_refused_saying_why():
    class PerPixel(ScaledCNN):
        def __init__(self):
            super().__init__()
            self.register_buffer("pixels", torch.ones(1, 1, 8, 8))

        def forward(self, x):
            return self.fc(torch.flatten(F.relu(self.conv(x * self.pixels)), 1))

    module = PerPixel()
    with pytest.raises(InputError, match=r"mul by a constant of shape \(1, 1, 8, 8\)\) after the "
                                         r"input, whose output is 2 x 8 x 8: an elementwise "
                                         r"constant is supported as one number or one per "
                                         r"channel, shape \(2, 1, 1\)"):
        to_network(module, (2, 8, 8))


def test_onnx_arithmetic_by_constants(tmp_path):
    module = Normalised()
    path = tmp_path / "normalised.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, torch.zeros(1, 10), str(path), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    x = np.random.default_rng(2).normal(size=(5, 10)).astype(np.float32)
    np.testing.assert_allclose(to_network(str(path)).forward(x), outputs(module, x),
                               rtol=1e-4, atol=1e-4)
