"""``sf.compress`` takes training data as PyTorch code holds it: a ``Dataset`` of ``(x, label)``
samples or a ``DataLoader`` of batches, collected into the arrays a pair would give."""

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import sparseforge as sf
from sparseforge.compiler.compress.training import as_pair
from sparseforge.compiler.errors import InputError

FAST = dict(sparsity=0.5, prune_steps=1, prune_epochs=1, final_epochs=1, share_epochs=1)


class Images(Dataset):
    """A map-style data set as torchvision's are: an image tensor and an int label each."""

    def __init__(self, count=40):
        generator = torch.Generator().manual_seed(0)
        self.images = torch.rand(count, 1, 6, 6, generator=generator)
        self.labels = torch.randint(0, 3, (count,), generator=generator)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.images[index], int(self.labels[index])


def test_a_dataset_and_a_loader_give_the_arrays_of_their_samples():
    images = Images()
    x, y = as_pair(images, "train")
    np.testing.assert_array_equal(x, images.images.numpy())
    np.testing.assert_array_equal(y, images.labels.numpy())
    loader = DataLoader(TensorDataset(images.images, images.labels), batch_size=16)
    x, y = as_pair(loader, "train")
    assert x.shape == (40, 1, 6, 6) and y.shape == (40,)
    np.testing.assert_array_equal(y, images.labels.numpy())
    pair = (x, y)
    assert as_pair(pair, "train") is pair


def test_samples_that_are_not_pairs_are_refused():
    class Records(Images):
        def __getitem__(self, index):
            return {"image": self.images[index], "label": int(self.labels[index])}

    with pytest.raises(InputError, match=r"train: a Records must give \(x, label\) pairs, not "
                                         r"dict"):
        as_pair(Records(), "train")
    with pytest.raises(InputError, match="val: the Images holds no samples"):
        as_pair(Images(count=0), "val")


def test_compress_takes_them_and_a_cnn_gets_its_input_shape_from_them():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))
    images = Images()
    compressed = sf.compress(model, train=images,
                             test=DataLoader(images, batch_size=8), **FAST)
    assert compressed.network.layers[0].geometry.in_channels == 1
    assert compressed.provenance["train_samples"] == 40
    assert compressed.provenance["test_samples"] == 40


def test_the_golden_model_takes_a_dataset_and_its_labels():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))
    images = Images()
    compressed = sf.compress(model, train=images, **FAST)
    program = sf.compile(compressed, pes=2)
    np.testing.assert_array_equal(sf.reference(program, DataLoader(images, batch_size=8)),
                                  sf.reference(program, images.images.numpy()))
