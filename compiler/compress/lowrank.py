"""Low-rank factorisation of Linear layers by truncated SVD (Denton et al. 2014): ``W`` (out x
in) becomes ``U_r diag(s_r)`` after ``V_r^T``, two Linear layers of ``r (in + out)`` weights."""

from __future__ import annotations

import numpy as np

__all__ = ["svd_factors", "factorize_linear"]


def svd_factors(weight: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray, float]:
    """``(A, B, error)`` with ``A @ B`` the best rank-``rank`` approximation of ``weight``
    (A: out x r, B: r x in) and ``error`` its Frobenius distance from ``weight``, which is the
    norm of the discarded singular values (Eckart-Young)."""
    weight = np.asarray(weight, dtype=np.float64)
    if not 1 <= rank <= min(weight.shape):
        raise ValueError(f"rank must be between 1 and {min(weight.shape)}, not {rank}")
    u, s, vt = np.linalg.svd(weight, full_matrices=False)
    a = u[:, :rank] * s[:rank]
    b = vt[:rank]
    return a, b, float(np.sqrt(np.sum(s[rank:] ** 2)))


def factorize_linear(layer, rank: int):
    """An ``nn.Sequential`` of two Linear layers (the first without bias) equal to ``layer``
    up to the rank-``rank`` truncation."""
    import torch
    import torch.nn as nn

    a, b, _ = svd_factors(layer.weight.detach().numpy(), rank)
    first = nn.Linear(layer.in_features, rank, bias=False)
    second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    with torch.no_grad():
        first.weight.copy_(torch.from_numpy(b.astype(np.float32)))
        second.weight.copy_(torch.from_numpy(a.astype(np.float32)))
        if layer.bias is not None:
            second.bias.copy_(layer.bias)
    return nn.Sequential(first, second)
