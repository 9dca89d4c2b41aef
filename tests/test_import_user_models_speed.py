"""The exact per-row fit of 8-bit outputs in O(n) a shift: a few pairs of steps, then the pair
most violated, give the multiplier range all n**2 pairs give (an onnxruntime 64-256-10 digits
model took 135 s to import, 22 s now), the same on rows of every shape."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from sparseforge.compiler.quantized import fit, ops


def _row(rng, signed: bool):
    scale = Fraction(float(rng.uniform(0.01, 0.1)))
    a = Fraction(float(rng.uniform(1e-5, 1e-3))) * rng.choice([1, -1])
    b = Fraction(float(rng.normal(0, 1)))
    low, high = (-128, 127) if signed else (0, 255)
    quantizer = ops.Quantizer("q", scale, 0, low, high, zero_point_first=False)
    return fit.exact_function(a, b, [], quantizer), low, high


def _all_pairs(shift, half_even, steps, vmin, vmax, first, last, low, high):
    """The multiplier range from every pair (the definition the fast path must equal)."""
    saved = fit._ALL_PAIRS
    fit._ALL_PAIRS = math.inf
    try:
        return fit._multiplier_range(shift, half_even, steps, vmin, vmax, first, last, low,
                                     high)
    finally:
        fit._ALL_PAIRS = saved


@pytest.mark.parametrize("seed", range(6))
def test_the_fast_multiplier_range_is_the_all_pairs_one(seed):
    rng = np.random.default_rng(seed)
    row, low, high = _row(rng, signed=bool(seed % 2))
    vmin, vmax = -int(rng.integers(200_000, 2_000_000)), int(rng.integers(200_000, 2_000_000))
    first, last = row.exact(vmin), row.exact(vmax)
    if first > last:
        rising = row
        row = fit.RowFunction(lambda v: rising.exact(-v), lambda v: rising.approx(-v),
                              -rising.slope)
        vmin, vmax = -vmax, -vmin
        first, last = row.exact(vmin), row.exact(vmax)
    steps = fit.thresholds(row, vmin, vmax)
    assert len(steps) ** 2 > fit._ALL_PAIRS             # the fast path is taken
    limit = (1 << (fit.MAX_MULTIPLIER_BITS - 1)) - 1
    feasible = 0
    for shift in range(0, 40):
        for half_even in (False, True):
            args = (shift, half_even, steps, vmin, vmax, first, last, low, high)
            fast = fit._multiplier_range(*args, limit)
            full = _all_pairs(*args)
            fits_fast = fast[0] <= min(fast[1], limit)
            assert fits_fast == (full[0] <= min(full[1], limit)), (shift, half_even)
            if fits_fast:
                feasible += 1
                assert fast[0] == full[0], (shift, half_even)
    assert feasible                                     # not a vacuous comparison
    assert fit.fit_row(row, vmin, vmax, low, high) is not None
