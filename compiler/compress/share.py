"""Weight sharing (Deep Compression, section 3): per-layer k-means over the surviving weights
with linear initialisation, code 0 reserved for the pruned zero, and trained quantization.

:class:`SharedLinear` computes its weight as ``codebook[codes]`` with the codebook's nonzero
entries as parameters, so autograd gives each centroid the sum of the gradients of the weights
that share it, which is exactly Deep Compression's centroid update.

Binary and ternary weights are the 2- and 3-entry codebooks of the same mechanism, with code 0
still the pruned zero:

* binary: 1-bit codes, codebook ``{0, c}`` -- a kept weight is ``c``, a pruned one 0;
* ternary: a 3-entry codebook ``{0, c-, c+}`` stored as 2-bit codes whose fourth slot is unused
  (padded with 0, never referenced).  k-means from linear initialisation starts ``c-`` and
  ``c+`` at the smallest and largest weight and settles at the means of the negative and
  positive weights; training then moves each on its own, as trained ternary quantization (Zhu
  et al. 2017) does with its two scales.  ``c- = -c+`` is not forced.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "SharedLinear",
    "from_shared",
    "kmeans_linear_init",
    "share_network",
    "share_weights",
    "to_shared",
]


def kmeans_linear_init(values: np.ndarray, clusters: int, iterations: int = 50) -> np.ndarray:
    """1-D k-means (Lloyd) from centroids spread evenly between the smallest and largest value
    (Deep Compression found linear initialisation best: it keeps the rare large weights)."""
    values = np.asarray(values, dtype=np.float64)
    if clusters < 1:
        raise ValueError(f"clusters must be at least 1, not {clusters}")
    if values.size == 0:
        return np.zeros(clusters)
    centroids = np.linspace(values.min(), values.max(), clusters)
    for _ in range(iterations):
        assignment = np.abs(values[:, None] - centroids[None, :]).argmin(axis=1)
        sums = np.bincount(assignment, weights=values, minlength=clusters)
        counts = np.bincount(assignment, minlength=clusters)
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.allclose(updated, centroids):
            break
        centroids = updated
    return centroids


def share_weights(weight: np.ndarray, mask: np.ndarray, levels: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Cluster the kept weights into ``levels - 1`` shared values.  Returns ``codes`` (uint8,
    0 where pruned) and the float codebook of ``levels`` entries, entry 0 being 0."""
    if not 2 <= levels <= 256:
        raise ValueError(f"a codebook needs 2 to 256 levels, not {levels}")
    weight = np.asarray(weight, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != weight.shape:
        raise ValueError(f"the mask has shape {mask.shape}, the weights {weight.shape}")
    kept = weight[mask]
    centroids = kmeans_linear_init(kept, levels - 1)
    codes = np.zeros(weight.shape, dtype=np.uint8)
    if kept.size:
        codes[mask] = np.abs(kept[:, None] - centroids[None, :]).argmin(axis=1) + 1
    return codes, np.concatenate(([0.0], centroids))


def share_network(network, levels: int):
    """k-means weight sharing of every layer of a float ``Network`` without training: the
    shared Network (each weight replaced by its centroid) and ``(codes, codebook)`` per layer,
    ready for :func:`.quantize.quantize_network`.  The kept weights are the nonzero ones."""
    from ..ir import Network
    from .convert import with_weights

    books, layers = [], []
    for layer in network.layers:
        codes, codebook = share_weights(layer.weight, layer.weight != 0, levels)
        books.append((codes, codebook))
        layers.append(with_weights(layer, codebook[codes]))
    return Network(tuple(layers), network.source), books


class SharedLinear(nn.Module):
    """A Linear layer whose weights are ``codebook[codes]``; the nonzero codebook entries and
    the bias are trained, the codes (and so the sparsity) are fixed.  With a ``geometry``
    (``compiler/conv.py``) the weights are a convolution's kernel matrix and the layer is that
    convolution on flat maps."""

    def __init__(self, codes: np.ndarray, codebook: np.ndarray, bias: np.ndarray,
                 geometry=None):
        super().__init__()
        self.register_buffer("codes", torch.from_numpy(codes.astype(np.int64)))
        self.centroids = nn.Parameter(torch.tensor(codebook[1:], dtype=torch.float32))
        self.bias = nn.Parameter(torch.tensor(bias, dtype=torch.float32))
        self.in_features, self.out_features = codes.shape[1], codes.shape[0]
        self.geometry = geometry

    @property
    def codebook(self):
        return torch.cat([self.centroids.new_zeros(1), self.centroids])

    @property
    def weight(self):
        return self.codebook[self.codes]

    def forward(self, x):
        if self.geometry is not None:
            from .convolution import conv_forward

            return conv_forward(x, self.weight, self.bias, self.geometry)
        return F.linear(x, self.weight, self.bias)


def to_shared(model, levels: int, masks=None) -> list[np.ndarray]:
    """Replace every Linear of ``model`` by a SharedLinear with ``levels`` codebook entries,
    in place; returns the codes."""
    from .prune import _replace_module, linear_layers

    all_codes = []
    for index, layer in enumerate(linear_layers(model)):
        weight = layer.weight.detach().numpy()
        mask = masks[index] if masks is not None else weight != 0
        codes, codebook = share_weights(weight, mask, levels)
        bias = (layer.bias.detach().numpy() if layer.bias is not None
                else np.zeros(layer.out_features))
        _replace_module(model, layer, SharedLinear(codes, codebook, bias,
                                                   getattr(layer, "geometry", None)))
        all_codes.append(codes)
    return all_codes


def from_shared(model) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(codes, float codebook, bias) of every SharedLinear, in order."""
    return [(m.codes.numpy().astype(np.uint8), m.codebook.detach().numpy().astype(np.float64),
             m.bias.detach().numpy().astype(np.float64))
            for m in model.modules() if isinstance(m, SharedLinear)]
