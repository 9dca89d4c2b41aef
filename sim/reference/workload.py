"""The cost model's work counts for a program and its inputs, and per-layer statistics.

For a layer and an input, ``E_k`` is the number of entries (padding included) PE ``k`` must
process: the sum over the nonzero input activations ``j`` of its column ``j``'s entry count.
The physical limit is ``ceil(sum_k E_k / N)``; a queue-based engine cannot beat ``max_k E_k``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["layer_work", "LayerStats", "layer_stats"]


def layer_work(program, layer: int, inputs: np.ndarray) -> np.ndarray:
    """``E``: batch x pes entries each PE processes for each input of ``layer``."""
    counts = program.column_counts(layer)                  # pes x in
    return (np.asarray(inputs) != 0).astype(np.int64) @ counts.T


@dataclass(frozen=True)
class LayerStats:
    name: str
    shape: tuple[int, int]            # (out, in)
    nnz: int
    padding: int
    entries_min: int
    entries_mean: float
    entries_max: int
    memory_bits: int                  # entries + pointers + biases of this layer, all PEs


def layer_stats(program) -> list[LayerStats]:
    config = program.config
    stats = []
    for index, layer in enumerate(program.network.layers):
        counts = program.column_counts(index)
        per_pe = counts.sum(axis=1)
        entries = int(per_pe.sum())
        rows = -(-layer.out_features // config.pes)
        bits = (entries * config.entry_bits
                + config.pes * (layer.in_features + 1) * config.pointer_bits
                + config.pes * rows * config.bias_bits)
        stats.append(LayerStats(layer.name, (layer.out_features, layer.in_features), layer.nnz,
                                entries - layer.nnz, int(per_pe.min()), float(per_pe.mean()),
                                int(per_pe.max()), bits))
    return stats
