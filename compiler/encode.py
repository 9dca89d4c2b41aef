"""EIE encoding of a layer for N processing elements, and its exact inverse.

Pure functions over NumPy arrays, vectorised over nonzeros (no Python loop over entries), as
docs/architecture.md states the format (Han et al., EIE, section III-B):

* row ``i`` belongs to PE ``i mod N`` as local row ``i div N`` (:func:`interleave_rows`);
* a PE stores its nonzeros column by column, each as (zero run, code), the zero run counting the
  zero rows since the previous entry of the column; a gap wider than ``max_run`` is bridged by
  padding entries ``(max_run, 0)`` that advance ``max_run + 1`` rows and add nothing
  (:func:`encode_csc`);
* pointers ``p[0..in]``: column ``j`` holds entries ``p[j] .. p[j+1]-1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PECSC", "interleave_rows", "encode_csc", "decode_csc", "encode_layer",
           "decode_layer", "occupancy_bits"]


@dataclass(frozen=True, eq=False)
class PECSC:
    """One PE's slice of one layer: entries as (zero run, code) and column pointers."""
    zero_runs: np.ndarray        # int64, one per entry (padding included)
    codes: np.ndarray            # int64, 0 for padding
    pointers: np.ndarray         # int64, in_features + 1, starting at 0

    @property
    def padding(self) -> int:
        return int(np.count_nonzero(self.codes == 0))

    @property
    def column_counts(self) -> np.ndarray:
        return np.diff(self.pointers)


def interleave_rows(matrix: np.ndarray, pes: int) -> list[np.ndarray]:
    """The rows each PE owns: PE ``k`` gets rows ``k, k+N, k+2N, ...`` in that order."""
    if not 1 <= pes <= 64:
        raise ValueError(f"pes must be between 1 and 64, not {pes}")
    return [matrix[k::pes] for k in range(pes)]


def encode_csc(codes: np.ndarray, max_run: int) -> PECSC:
    """CSC with relative indices of one PE's rows (``rows x in`` codes, 0 = zero weight)."""
    codes = np.asarray(codes)
    in_features = codes.shape[1]
    columns, rows = np.nonzero(codes.T)             # column-major: sorted by column, then row
    values = codes.T[columns, rows].astype(np.int64)
    first = np.ones(len(rows), dtype=bool)
    first[1:] = columns[1:] != columns[:-1]
    previous = np.where(first, -1, np.concatenate(([-1], rows[:-1])))
    gaps = rows - previous - 1
    pads = gaps // (max_run + 1)                    # padding entries before each nonzero
    zero_runs_real = gaps - pads * (max_run + 1)
    per_nonzero = pads + 1
    total = int(per_nonzero.sum())
    zero_runs = np.full(total, max_run, dtype=np.int64)
    entry_codes = np.zeros(total, dtype=np.int64)
    real = np.cumsum(per_nonzero) - 1
    zero_runs[real] = zero_runs_real
    entry_codes[real] = values
    counts = np.bincount(columns, weights=per_nonzero, minlength=in_features).astype(np.int64)
    pointers = np.concatenate(([0], np.cumsum(counts)))
    return PECSC(zero_runs, entry_codes, pointers)


def decode_csc(csc: PECSC, rows: int) -> np.ndarray:
    """The inverse of :func:`encode_csc`: the ``rows x in`` code matrix."""
    in_features = len(csc.pointers) - 1
    counts = np.diff(csc.pointers)
    if np.any(counts < 0):
        raise ValueError("pointers must not decrease")
    columns = np.repeat(np.arange(in_features), counts)
    steps = csc.zero_runs + 1
    running = np.cumsum(steps)
    starts = np.concatenate(([0], running))[csc.pointers[:-1]]     # running sum before column
    positions = running - np.repeat(starts, counts) - 1
    out = np.zeros((rows, in_features), dtype=np.int64)
    keep = csc.codes != 0
    if np.any(positions[keep] >= rows) or np.any(positions < 0):
        raise ValueError(f"an entry lands outside the PE's {rows} rows")
    out[positions[keep], columns[keep]] = csc.codes[keep]
    return out


def encode_layer(codes: np.ndarray, pes: int, max_run: int) -> list[PECSC]:
    """Every PE's slice of a layer's code matrix (``out x in``)."""
    return [encode_csc(part, max_run) for part in interleave_rows(np.asarray(codes), pes)]


def decode_layer(slices: list[PECSC], out_features: int) -> np.ndarray:
    """The inverse of :func:`encode_layer`."""
    pes = len(slices)
    in_features = len(slices[0].pointers) - 1
    out = np.zeros((out_features, in_features), dtype=np.int64)
    for k, csc in enumerate(slices):
        rows = len(range(k, out_features, pes))
        out[k::pes] = decode_csc(csc, rows)
    return out


def occupancy_bits(slices: list[PECSC]) -> np.ndarray:
    """``pes x in`` booleans: PE ``k`` holds at least one entry in column ``j``."""
    return np.stack([s.column_counts > 0 for s in slices])
