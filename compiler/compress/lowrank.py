"""Low-rank factorisation of Linear layers by truncated SVD (Denton et al. 2014).

``W`` (out x in) becomes ``A @ B`` with ``A = U_r diag(s_r)`` (out x r) and ``B = V_r^T``
(r x in): two Linear layers of ``r (in + out)`` weights instead of ``in x out``, which pays when
``r < in out / (in + out)``.  The first layer computes ``B x`` (no bias, no ReLU), the second
``A (B x) + b`` with the original bias and ReLU.  By Eckart-Young the Frobenius error
``||W - A B||_F`` is the norm of the discarded singular values, the least any rank-``r``
matrix achieves.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..ir import Linear, Network

__all__ = ["factorize_linear", "factorize_network", "rank_for_energy", "svd_factors"]


def svd_factors(weight: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray, float]:
    """``(A, B, error)`` with ``A @ B`` the best rank-``rank`` approximation of ``weight``
    (A: out x r, B: r x in) and ``error`` its Frobenius distance from ``weight``, which is the
    norm of the discarded singular values."""
    weight = np.asarray(weight, dtype=np.float64)
    if weight.ndim != 2:
        raise ValueError(f"svd_factors takes a 2-D weight, not shape {weight.shape}")
    if not isinstance(rank, int) or not 1 <= rank <= min(weight.shape):
        raise ValueError(f"rank must be between 1 and {min(weight.shape)}, not {rank!r}")
    u, s, vt = np.linalg.svd(weight, full_matrices=False)
    return u[:, :rank] * s[:rank], vt[:rank], float(np.sqrt(np.sum(s[rank:] ** 2)))


def rank_for_energy(weight: np.ndarray, energy: float) -> int:
    """The smallest rank whose singular values keep ``energy`` (0..1] of ``||W||_F**2``."""
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1], not {energy}")
    s = np.linalg.svd(np.asarray(weight, dtype=np.float64), compute_uv=False)
    kept = np.cumsum(s ** 2) / max(float(np.sum(s ** 2)), np.finfo(float).tiny)
    return int(min(len(s), np.searchsorted(kept, energy - 1e-12) + 1))


def factorize_network(network: Network, ranks: dict[str, int]) -> Network:
    """The network with each layer named in ``ranks`` split into two: ``<name>.v`` (``B``, no
    bias, no ReLU) then ``<name>.u`` (``A``, the layer's bias and activation)."""
    unknown = sorted(set(ranks) - {layer.name for layer in network.layers})
    if unknown:
        raise ValueError(f"no layer named {', '.join(unknown)}; the layers are "
                         f"{', '.join(layer.name for layer in network.layers)}")
    layers = []
    for layer in network.layers:
        if layer.name not in ranks:
            layers.append(layer)
            continue
        a, b, _ = svd_factors(layer.weight, ranks[layer.name])
        # The first of the two takes the inputs, and their scaling with them.
        layers.append(Linear(f"{layer.name}.v", b, np.zeros(len(b)), False,
                             input_scaling=layer.input_scaling))
        layers.append(dataclasses.replace(layer, name=f"{layer.name}.u", weight=a,
                                          input_scaling=None))
    return Network(tuple(layers), network.source)


def factorize_linear(layer, rank: int):
    """An ``nn.Sequential`` of two ``nn.Linear`` (the first without bias) equal to ``layer``
    up to the rank-``rank`` truncation."""
    import torch
    import torch.nn as nn

    a, b, _ = svd_factors(layer.weight.detach().cpu().numpy(), rank)
    first = nn.Linear(layer.in_features, rank, bias=False)
    second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    with torch.no_grad():
        first.weight.copy_(torch.from_numpy(b.astype(np.float32)))
        second.weight.copy_(torch.from_numpy(a.astype(np.float32)))
        if layer.bias is not None:
            second.bias.copy_(layer.bias)
    return nn.Sequential(first, second)
