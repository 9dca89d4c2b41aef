"""The cost model's work counts for a program and its inputs, and per-layer statistics.

DESIGN.md's yardstick, stated on the program image: for a layer and one input, ``E_k`` is the
number of entries (padding included) PE ``k`` must process -- the sum, over the columns ``j``
whose input activation is nonzero, of ``p_k[j+1] - p_k[j]``.  The physical limit is
``ceil(sum_k E_k / N)`` cycles (perfect balance, one MAC per PE per cycle); a queue-based engine
cannot beat ``max_k E_k``.  Everything here is vectorised over the batch: ``E`` is one integer
matrix product ``(a != 0) @ counts.T``.  The cycle model (``cycles.py``) and the reports import
these.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparseforge.compiler import isa
from sparseforge.compiler.numerics import ceil_div

from .golden import run_image

__all__ = ["LayerStats", "LayerWork", "layer_stats", "layer_work", "work_of", "workload"]


@dataclass(frozen=True, eq=False)
class LayerWork:
    """One layer's work for a batch of inputs."""
    work: np.ndarray            # batch x pes: E_k
    nonzero: np.ndarray         # batch: nonzero input activations (over the positions)
    positions: int = 1          # conv mode: the patches walked, each of the layer's columns

    @property
    def pes(self) -> int:
        return self.work.shape[1]

    @property
    def total(self) -> np.ndarray:
        """batch: ``sum_k E_k``, the MACs (padding included) the layer costs."""
        return self.work.sum(axis=1)

    @property
    def limit(self) -> np.ndarray:
        """batch: ``ceil(sum_k E_k / N)``, the physical limit in cycles."""
        return ceil_div(self.total, self.pes)

    @property
    def bound(self) -> np.ndarray:
        """batch: ``max_k E_k``, what a queue-based engine cannot beat."""
        return self.work.max(axis=1)

    @property
    def balance(self) -> np.ndarray:
        """batch: ``(sum_k E_k / N) / max_k E_k``, the best load-balance efficiency the
        encoding allows (1 when every PE has the same work; 1 for no work at all)."""
        bound = self.bound
        return np.where(bound > 0, self.total / self.pes / np.maximum(bound, 1), 1.0)


def work_of(counts: np.ndarray, inputs: np.ndarray) -> LayerWork:
    """The work for ``counts`` (pes x in: entries of each PE's column, padding included) and
    integer ``inputs`` (batch x in, or one input)."""
    counts = np.asarray(counts, dtype=np.int64)
    active = (np.atleast_2d(np.asarray(inputs)) != 0)
    if active.shape[1] != counts.shape[1]:
        raise ValueError(f"inputs have {active.shape[1]} features, the layer takes "
                         f"{counts.shape[1]}")
    return LayerWork(active.astype(np.int64) @ counts.T, active.sum(axis=1))


def layer_work(program, layer: int, inputs) -> LayerWork:
    """The work of layer ``layer`` of ``program`` for that layer's integer ``inputs``."""
    return work_of(program.column_counts(layer), inputs)


def workload(program, x_int) -> list[LayerWork]:
    """Every layer's work for integer network inputs ``x_int`` (batch x in): each layer's
    inputs come from the golden model, so activation sparsity after ReLU is counted.  In conv
    mode a layer's work is summed over its positions (each position's patch: the activations
    offered, nonzero and inside the map), and ``nonzero`` counts them over the positions."""
    if program.config.conv:
        from .golden import run_conv_image

        _, patches = run_conv_image(program.config, program.image,
                                    np.atleast_2d(np.asarray(x_int, dtype=np.int64)),
                                    return_patches=True)
        return [LayerWork(np.einsum("bpk,nk->bn", active.astype(np.int64),
                                    program.column_counts(index)),
                          active.sum(axis=(1, 2)), active.shape[1])
                for index, active in enumerate(patches)]
    activations = run_image(program.config, program.image, x_int, return_layers=True)
    return [layer_work(program, index, activations[index])
            for index in range(program.layer_count)]


@dataclass(frozen=True)
class LayerStats:
    """What one layer costs in the image."""
    name: str
    shape: tuple[int, int]            # (out, in)
    nnz: int
    padding: int                      # padding entries (zero runs wider than max_run)
    entries_min: int                  # entries per PE (padding included)
    entries_mean: float
    entries_max: int
    memory_bits: int                  # see layer_stats
    activation: str = ""              # QuantizedLinear.activation_text

    @property
    def density(self) -> float:
        return self.nnz / (self.shape[0] * self.shape[1])

    @property
    def imbalance(self) -> float:
        """``max / mean`` entries per PE: 1 is perfect static balance."""
        return self.entries_max / self.entries_mean if self.entries_mean else 1.0

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "nnz": self.nnz,
                "density": round(self.density, 6), "padding": self.padding,
                "entries_per_pe": {"min": self.entries_min,
                                   "mean": round(self.entries_mean, 3),
                                   "max": self.entries_max},
                "memory_bits": self.memory_bits, "activation": self.activation}


def layer_stats(program) -> list[LayerStats]:
    """Per layer: shape, nnz, padding entries, per-PE entry count min/mean/max, and the bits
    it occupies in the engine's memories: its entries (``entry_bits`` each), its column words
    and biases (``N * (in + 1 + ceil(out / N))`` words of the parameter memory), its occupancy
    words, its codebook and its descriptor.  In conv mode a layer is as the engine stores it
    (a convolution's kernel matrix, columns in the walk's order: its figures do not depend on
    the number of output positions)."""
    config = program.config
    parameter_bits = isa.parameter_bits(config)
    occupancy_bits = isa.occupancy_layout(config).size
    descriptor_bits = isa.descriptor_layout(config).size
    stats = []
    for index, layer in enumerate(program.engine_layers):
        per_pe = program.column_counts(index).sum(axis=1)
        entries = int(per_pe.sum())
        rows = ceil_div(layer.out_features, config.pes)
        groups = ceil_div(layer.in_features, config.scan_lanes)
        bits = (entries * config.entry_bits
                + config.pes * (layer.in_features + 1 + rows) * parameter_bits
                + groups * occupancy_bits + config.codebook_size * config.coef_bits
                + descriptor_bits)
        stats.append(LayerStats(layer.name, (layer.out_features, layer.in_features), layer.nnz,
                                entries - layer.nnz, int(per_pe.min()), float(per_pe.mean()),
                                int(per_pe.max()), bits, layer.activation_text()))
    return stats
