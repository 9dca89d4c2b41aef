"""ResNet for CIFAR as its widely copied implementation writes it (He et al.'s "option A":
the shortcut that halves the map samples every other pixel, ``x[:, :, ::2, ::2]``, and pads
the new channels with zeros, ``F.pad(..., (0, 0, 0, 0, p, p))``; the head pools with
``F.avg_pool2d(out, out.size()[3])``): captured from the module and from both ONNX
exporters as the network it computes, and compiled to a program that computes it."""

import logging
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import sparseforge as sf
from sparseforge.compiler.capture import UnsupportedLayerError, capture
from sparseforge.compiler.errors import InputError
from sparseforge.compiler.passes import canonicalize
from tests.rtl_checks import assert_the_program_computes_the_network, digits_images, trained
from tests.test_capture_conv import randomised_batchnorms, torch_out


class LambdaLayer(nn.Module):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x)


class BasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = LambdaLayer(lambda x: F.pad(x[:, :, ::2, ::2],
                                                        (0, 0, 0, 0, planes // 4, planes // 4),
                                                        "constant", 0))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class ResNet(nn.Module):
    def __init__(self, widths=(4, 8, 16), classes=10, channels=3):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        blocks, planes = [], widths[0]
        for index, width in enumerate(widths):
            blocks.append(BasicBlock(planes, width, 1 if index == 0 else 2))
            planes = width
        self.layers = nn.Sequential(*blocks)
        self.linear = nn.Linear(widths[-1], classes)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        out = F.avg_pool2d(out, out.size()[3])
        return self.linear(out.view(out.size(0), -1))


def randomised(model):
    torch.manual_seed(3)
    return randomised_batchnorms(model)


@pytest.mark.parametrize("source", ["module", "torchscript", "dynamo"])
def test_option_a_shortcuts_are_captured_as_the_network_computes(source, tmp_path):
    torch.manual_seed(3)
    model = randomised(ResNet())
    x = np.random.default_rng(3).normal(size=(5, 3, 8, 8))
    if source == "module":
        graph = capture(model, input_shape=(3, 8, 8))
    else:
        path = tmp_path / "resnet.onnx"
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, torch.zeros(1, 3, 8, 8), path, dynamo=source == "dynamo")
        graph = capture(path)
    network = canonicalize(graph)
    assert len(network.layers) == 8                # the stem, three blocks of two, the head
    np.testing.assert_allclose(network.forward(x.reshape(5, -1)), torch_out(model, x),
                               rtol=1e-5, atol=1e-5)


class Sampled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 2, 3, padding=1), nn.Linear(32, 3)

    def forward(self, x):
        return self.fc(self.conv(x)[:, :, ::2, ::2].flatten(1))


class OblongHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 2, 3, padding=1), nn.Linear(2, 3)

    def forward(self, x):
        out = self.conv(x)
        return self.fc(F.avg_pool2d(out, out.size(3)).flatten(1))


def test_sampling_outside_a_shortcut_and_an_oblong_map_pooled_by_its_width_are_refused():
    with pytest.raises(UnsupportedLayerError, match=r"'Sampled.getitem' cannot run on the "
                                                    r"engine \(sampling\).*supported in a skip "
                                                    r"connection's shortcut"):
        capture(Sampled(), input_shape=(1, 8, 8))
    with pytest.raises(InputError, match=r"takes a window of the map's columns on each side "
                                         r"\(x.size\(3\)\), global pooling only on a square "
                                         r"map, not 8x4"):
        capture(OblongHead(), input_shape=(1, 8, 4))
    square = OblongHead().eval()
    network = canonicalize(capture(square, input_shape=(1, 6, 6)))
    x = np.random.default_rng(0).normal(size=(3, 1, 6, 6))
    np.testing.assert_allclose(network.forward(x.reshape(3, -1)), torch_out(square, x),
                               rtol=1e-5, atol=1e-5)


def test_an_option_a_resnet_compiles_to_a_program_that_computes_it():
    x, y = digits_images()
    torch.manual_seed(0)
    model = trained(ResNet(channels=1), x[:300], y[:300], steps=20)
    compressed = sf.compress(model, (x[:300], y[:300]), test=(x[300:], y[300:]),
                             sparsity=0.5, prune_steps=1, prune_epochs=1, final_epochs=1,
                             share_epochs=1)
    assert_the_program_computes_the_network(compressed, x[300:316], 1, "icebreaker")
