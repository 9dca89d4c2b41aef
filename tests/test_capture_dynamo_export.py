"""Models exported by PyTorch's default ONNX exporter (``torch.onnx.export(..., dynamo=True)``,
torch.export then onnxscript): what a user on a current PyTorch gets, read as the models
compute (a BatchNorm folded by the exporter, AdaptiveAvgPool as ``ReduceMean``, skip
connections as ``Add``)."""

import logging
import warnings

import pytest
import torch
from torch import nn

from sparseforge.compiler.capture import UnsupportedSettingError, capture
from tests.test_residual import (Block, ConvBlock, Net, PreActivationBlock,
                                 assert_the_export_computes_the_model, resnet)

pytest.importorskip("onnxscript")


def exported(model, path, shape):
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(2, *shape),), str(path), dynamo=True,
                          verbose=False)
    return path


CASES = {
    "MLP with BatchNorm": (lambda: nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(),
                                                 nn.Linear(8, 3)), (4,)),
    "MLP with GELU": (lambda: nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 3)), (4,)),
    "CNN, global average pooling": (lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(6, 3)), (1, 8, 8)),
    "1-D CNN, global max pooling": (lambda: nn.Sequential(
        nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool1d(1), nn.Flatten(),
        nn.Linear(4, 3)), (2, 16)),
    "ResNet blocks": (lambda: resnet(ConvBlock(4), ConvBlock(4, 8, stride=2)), (1, 8, 8)),
    "pre-activation blocks": (lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), PreActivationBlock(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)), (1, 8, 8)),
    "residual MLP": (lambda: Net([Block(where="pre"), Block(where="post")]), (4,)),
    "clamps one after another": (lambda: Clamps(), (4,)),
    "stem with a padded max pooling": (lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
        nn.Flatten(), nn.Linear(24, 3)), (1, 7, 7)),
}


class Clamps(nn.Module):
    """``clamp(x, 0, 1)`` then ``clamp(x, min=0)`` and ``clamp(x, max=2)``: the exporter writes
    the later ones as ``Max`` and ``Min`` with a constant (sharing the first Clip's 0)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        x = torch.clamp(self.fc2(torch.clamp(self.fc1(x), 0, 1)), min=0)
        return self.fc3(torch.clamp(x, max=2.0))


@pytest.mark.parametrize("make, shape", CASES.values(), ids=CASES.keys())
def test_a_dynamo_export_is_captured_as_the_model_computes(make, shape, tmp_path):
    assert_the_export_computes_the_model(make, shape, tmp_path / "m.onnx", exported)


class RowMean(nn.Module):
    def forward(self, x):
        return x.mean(2)


def test_a_reduction_that_is_not_global_pooling_is_refused_naming_its_axes(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), RowMean(), nn.Flatten(),
                          nn.Linear(32, 3)).eval()
    with pytest.raises(UnsupportedSettingError, match=r"ReduceMean\) has axes .*spatial axes "
                                                      r"\(2, 3\) is global average pooling"):
        capture(exported(model, tmp_path / "m.onnx", (1, 8, 8)))
