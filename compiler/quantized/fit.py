"""Per-row requantization that reproduces a model's own quantizer bit for bit.

A layer of an imported model maps each row's integer accumulator ``v`` to an output integer
through real arithmetic: ``f(v) = Q(ops(a * v + b))`` (``ops.py``).  The engine computes
``g(v) = clamp(((v + B) * M + R) >> s)`` (``numerics.requantize_rows``) with integers ``B``
(the bias), ``M`` (the multiplier), ``R`` (the rounding term) and ``s`` (the shift), a tie
going to the even neighbour where asked.  Both are monotone step functions of ``v``, so
``g == f`` on every accumulator value the row can reach (``vmin .. vmax``, from its weights and
its input's integer range) exactly when they step at the same ``v`` (the "thresholds" FINN's
MultiThreshold stores).  :func:`fit_row` finds the thresholds ``T_k`` of ``f`` exactly
(rational arithmetic on the model's float parameters), and for each shift, from the smallest,
the narrowest multiplier for which some offset ``C = B * M + R`` puts every step of ``g`` on
them: ``g >= k`` exactly from ``v * M + C >= k * 2**s`` (plus one for odd ``k`` with half to
even), so each ``T_k`` bounds ``C`` to ``[k 2**s - M T_k, k 2**s - M T_k + M)`` and the
steps agree when those intervals meet.  The result is exact, not approximately so: a float
scale ratio has no short binary expansion, but over a bounded range of integers a multiplier a
few bits wider than the output reproduces every step.  When no multiplier within the engine's
width does, :func:`approximate_row` gives the nearest one and its worst-case error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..numerics import requantize_rows

__all__ = ["RowFit", "RowFunction", "approximate_row", "exact_function", "fit_row",
           "thresholds", "MAX_MULTIPLIER_BITS", "MAX_SHIFT"]

MAX_MULTIPLIER_BITS = 25    # the widest multiplier the engine's requantizers take
MAX_SHIFT = 63              # the engine's 6-bit shift field


@dataclass(frozen=True)
class RowFunction:
    """One row's real function from accumulator to output integer: ``exact(v)`` with rational
    arithmetic (the definition), ``approx(v)`` in float64 over an array (to search quickly),
    ``slope`` about how many output steps one accumulator step makes."""
    exact: Callable[[int], int]
    approx: Callable[[np.ndarray], np.ndarray]
    slope: float


@dataclass(frozen=True)
class RowFit:
    """``g(v) = clamp(((v + bias) * multiplier + rounding) >> shift)``, a tie to even where
    ``half_even``.  ``error`` is the largest ``|g - f|`` over the row's accumulator range (0
    for an exact fit), ``at`` an accumulator value where it occurs."""
    bias: int
    multiplier: int
    shift: int
    rounding: int
    half_even: bool
    error: int = 0
    at: int | None = None

    @classmethod
    def from_offset(cls, multiplier: int, offset: int, shift: int, half_even: bool,
                    **extra) -> RowFit:
        """Split ``offset = bias * multiplier + rounding`` with ``0 <= rounding < |M|``."""
        if multiplier == 0:
            return cls(0, 0, shift, offset, half_even, **extra)
        rounding = offset % abs(multiplier)
        return cls((offset - rounding) // multiplier, multiplier, shift, rounding, half_even,
                   **extra)

    def __call__(self, v, low: int, high: int) -> np.ndarray:
        return requantize_rows(np.asarray(v, dtype=np.int64), self.bias, self.multiplier,
                               self.shift, low, high, rounding=self.rounding,
                               half_even=self.half_even)


def thresholds(row: RowFunction, vmin: int, vmax: int) -> dict[int, int]:
    """For a non-decreasing ``row`` on ``vmin .. vmax``: every output ``k`` in ``f(vmin) <
    k <= f(vmax)`` -> the smallest ``v`` with ``f(v) >= k``.  Found by bisection in float64
    over all ``k`` at once, then checked (and if need be found again) with the exact
    function."""
    first, last = row.exact(vmin), row.exact(vmax)
    ks = np.arange(first + 1, last + 1)
    if not ks.size:
        return {}
    lo = np.full(ks.shape, vmin, dtype=np.int64)          # f(lo) < k
    hi = np.full(ks.shape, vmax, dtype=np.int64)          # f(hi) >= k
    while np.any(hi - lo > 1):
        mid = (lo + hi) // 2
        up = row.approx(mid.astype(np.float64)) >= ks
        hi = np.where(up, mid, hi)
        lo = np.where(up, lo, mid)
    found = {}
    for k, v in zip(ks.tolist(), hi.tolist()):
        if not (row.exact(v) >= k > row.exact(v - 1)):
            low, high = vmin, vmax                  # f(low) < k <= f(high)
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (low, middle) if row.exact(middle) >= k else (middle, high)
            v = high
        found[k] = v
    return found


def _offsets(multiplier: int, shift: int, half_even: bool, steps, vmin: int, vmax: int,
             first: int, last: int, low: int, high: int) -> tuple[int, int]:
    """The offsets ``C`` (``lowest <= C < beyond``) for which ``g`` has the steps of ``f``
    with this multiplier and shift: ``g(v) >= k`` exactly when ``v * M + C >= theta_k``."""
    def theta(k):
        return (k << shift) + (1 if half_even and shift and k % 2 else 0)

    lowest, beyond = -math.inf, math.inf
    for k, position in steps.items():          # g(position) >= k > g(position - 1)
        bound = theta(k) - multiplier * position
        lowest = max(lowest, bound)
        beyond = min(beyond, bound + multiplier)
    if first > low:                             # g(vmin) >= f(vmin)
        lowest = max(lowest, theta(first) - multiplier * vmin)
    if last < high:                             # g(vmax) < f(vmax) + 1
        beyond = min(beyond, theta(last + 1) - multiplier * vmax)
    return lowest, beyond


def _multiplier_range(shift: int, half_even: bool, steps, vmin: int, vmax: int,
                      first: int, last: int, low: int, high: int,
                      limit: float = math.inf) -> tuple[int, float]:
    """The multipliers for which the offsets of :func:`_offsets` meet: ``C`` must be at least
    ``theta_l - M T_l`` for every lower point ``l`` (each step, and ``vmin`` when ``f(vmin) >
    low``) and below ``theta_u - M T_u + M`` for every upper point ``u`` (each step, and
    ``vmax + 1`` when ``f(vmax) < high``), so for every pair ``theta_l - theta_u < M (T_l -
    T_u + 1)``: a lower bound on ``M`` where ``T_l - T_u + 1 > 0``, an upper one where it is
    negative.  Returns (lowest, highest) integer multiplier (highest may be infinite); above
    ``limit`` (the widest multiplier wanted) ``lowest`` may be any bound past it."""
    # The points as arrays: (output k, position T) of each step, then the ends.
    ks, ts = steps if isinstance(steps, tuple) else _step_arrays(steps)
    ends_k, ends_t, lower_end, upper_end = [], [], first > low, last < high
    if lower_end:
        ends_k.append(first)
        ends_t.append(vmin)
    if upper_end:
        ends_k.append(last + 1)
        ends_t.append(vmax + 1)
    if not len(ks) and not (lower_end and upper_end):
        return 1, math.inf
    every_k = np.concatenate([ks, np.array(ends_k, dtype=np.int64)])
    every_t = np.concatenate([ts, np.array(ends_t, dtype=np.int64)])
    # Differences of thetas and of positions only: int64 unless they could overflow.
    top = max(int(np.abs(every_k).max()) + 1 << shift, int(np.abs(every_t).max()))
    if top >= 1 << 60:
        theta = np.array([(k << shift) + (1 if half_even and shift and k % 2 else 0)
                          for k in every_k.tolist()], dtype=object)
        every_t = every_t.astype(object)
    else:
        theta = (every_k << shift) + (every_k % 2 if half_even and shift else 0)
    n = len(ks)
    lower = np.r_[np.arange(n), [n] if lower_end else []].astype(np.int64)
    upper = np.r_[np.arange(n), [n + lower_end] if upper_end else []].astype(np.int64)
    theta_l, t_l, theta_u, t_u = theta[lower], every_t[lower], theta[upper], every_t[upper]
    if len(theta_l) * len(theta_u) > _ALL_PAIRS:
        # Every pair's bound is necessary, so a few pairs (each point with its neighbours and
        # with both ends: O(n)) give a multiplier no larger than the lowest; then the pair
        # most violated at it raises it (or caps it below itself: none) until every pair
        # holds -- O(n) a round, where all n**2 pairs took seconds a row for 8-bit outputs.
        li, ui = _some_pairs(len(theta_l), len(theta_u))
        lowest, highest = _pair_bounds(theta_l[li] - theta_u[ui], t_l[li] - t_u[ui] + 1)
        # The rounds take products M * T (M up to `limit`): in int64 only when they fit.
        wide = limit == math.inf or limit * (int(np.abs(every_t).max()) + 1) + top >= 1 << 62
        tl, tu = (t_l.astype(object), t_u.astype(object)) if wide else (t_l, t_u)
        hl, hu = (theta_l.astype(object), theta_u.astype(object)) if wide else (theta_l, theta_u)
        for _ in range(_ROUNDS):
            if lowest > highest or lowest > limit:
                return lowest, highest
            at_least = hl - lowest * tl                 # C >= each
            below = hu - lowest * tu + lowest           # C < each
            l, u = int(np.argmax(at_least)), int(np.argmin(below))
            if at_least[l] < below[u]:
                return lowest, highest                  # every pair holds at `lowest`
            rise, run = int(hl[l]) - int(hu[u]), int(tl[l]) - int(tu[u]) + 1
            if run > 0:
                lowest = int(rise // run) + 1
            elif run < 0:
                highest = min(highest, int(-((-rise) // run)) - 1)
            else:
                return 1, 0
    return _pair_bounds(theta_l[:, None] - theta_u[None, :], t_l[:, None] - t_u[None, :] + 1)


_ALL_PAIRS = 4096           # more pairs than this: try a few first (_multiplier_range)
_ROUNDS = 64                # rounds of the most violated pair before all pairs are checked


def _step_arrays(steps: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The steps (output ``k`` -> its threshold ``T_k``) as two int64 arrays."""
    return (np.fromiter(steps.keys(), dtype=np.int64, count=len(steps)),
            np.fromiter(steps.values(), dtype=np.int64, count=len(steps)))


def _some_pairs(lowers: int, uppers: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (lower, upper): each lower point with the upper points at its own index,
    beside it and at both ends, and both end lower points with every upper point."""
    index = np.arange(lowers)
    near = np.stack([index - 1, index, index + 1, np.zeros_like(index),
                     np.full_like(index, uppers - 1)], axis=1)
    ends = np.unique([0, lowers - 1])
    li = np.concatenate([np.repeat(index, near.shape[1]), np.repeat(ends, uppers)])
    ui = np.concatenate([near.ravel(), np.tile(np.arange(uppers), len(ends))])
    keep = (ui >= 0) & (ui < uppers)
    return li[keep], ui[keep]


def _pair_bounds(rise, run) -> tuple[int, float]:
    """(lowest, highest) integer multiplier with ``rise < M * run`` for every pair."""
    lowest, highest = 1, math.inf
    positive, negative, zero = run > 0, run < 0, run == 0
    if np.any(zero & (rise >= 0)):
        return 1, 0                                 # no multiplier separates those steps
    if np.any(positive):
        lowest = max(lowest, int(np.max(rise[positive] // run[positive])) + 1)
    if np.any(negative):
        # M < rise / run with run < 0: M <= ceil(rise / run) - 1
        highest = int(np.min(-((-rise[negative]) // run[negative]))) - 1
    return lowest, highest


def fit_row(row: RowFunction, vmin: int, vmax: int, low: int, high: int, *,
            max_multiplier_bits: int = MAX_MULTIPLIER_BITS,
            max_shift: int = MAX_SHIFT) -> RowFit | None:
    """The integer requantization with the smallest shift (then multiplier) whose output
    equals ``row.exact`` on every accumulator value ``vmin .. vmax``, clamped to ``low ..
    high`` (the layer's output range), or None when none has a multiplier within
    ``max_multiplier_bits`` (signed) and a shift within ``max_shift``."""
    first, last = row.exact(vmin), row.exact(vmax)
    if vmin == vmax:
        return RowFit(first - vmin, 1, 0, 0, False)
    if first > last:                    # decreasing: fit v -> f(-v), then negate M
        mirrored = RowFunction(lambda v: row.exact(-v), lambda v: row.approx(-v), -row.slope)
        fit = fit_row(mirrored, -vmax, -vmin, low, high,
                      max_multiplier_bits=max_multiplier_bits, max_shift=max_shift)
        if fit is None:
            return None
        offset = fit.bias * fit.multiplier + fit.rounding
        return RowFit.from_offset(-fit.multiplier, offset, fit.shift, fit.half_even)
    steps = thresholds(row, vmin, vmax)
    arrays = _step_arrays(steps)
    limit = (1 << (max_multiplier_bits - 1)) - 1
    for shift in range(max_shift + 1):
        too_wide = True
        for half_even in (False, True):
            lowest, highest = _multiplier_range(shift, half_even, arrays, vmin, vmax, first,
                                                last, low, high, limit)
            too_wide &= lowest > limit
            if lowest > min(highest, limit):
                continue
            start, beyond = _offsets(lowest, shift, half_even, steps, vmin, vmax, first, last,
                                     low, high)
            assert start < beyond, "the multiplier range promised an offset"
            offset = start if start != -math.inf else (beyond - 1 if beyond != math.inf else 0)
            fit = RowFit.from_offset(lowest, int(offset), shift, half_even)
            assert _reproduces(fit, steps, vmin, vmax, first, low, high)
            return fit
        if too_wide and shift >= max_multiplier_bits:
            break                       # the slope only needs wider multipliers from here
    return None


def _reproduces(fit: RowFit, steps: dict[int, int], vmin: int, vmax: int, first: int,
                low: int, high: int) -> bool:
    """Whether ``g`` equals ``f`` on ``vmin .. vmax``: both are monotone, so at both ends and
    on both sides of every step of ``f`` suffice (``f(v)`` is ``first`` plus the steps at or
    below ``v``)."""
    points = np.array(sorted({vmin, vmax} | set(steps.values())
                             | {v - 1 for v in steps.values()}), dtype=np.int64)
    positions = np.sort(np.fromiter(steps.values(), dtype=np.int64, count=len(steps)))
    expected = first + np.searchsorted(positions, points, side="right")
    return bool(np.array_equal(fit(points, low, high), expected))


def approximate_row(row: RowFunction, vmin: int, vmax: int, low: int, high: int, *,
                    multiplier_bits: int = 16) -> RowFit:
    """The nearest requantization with a ``multiplier_bits`` multiplier (``M / 2**s`` the
    row's slope, the offset where ``f`` crosses its middle), and its worst-case error ``|g -
    f|`` over ``vmin .. vmax``."""
    first, last = row.exact(vmin), row.exact(vmax)
    sign = -1 if first > last else 1
    slope = abs(row.slope) or 1e-30
    shift = max(0, min(MAX_SHIFT, (multiplier_bits - 2) - math.floor(math.log2(slope))))
    multiplier = sign * max(1, round(slope * math.ldexp(1.0, shift)))
    # g(v) = (v M + C) / 2**s should equal the real a v + b; the real crosses (first + last) / 2
    # at `centre`.  f is the real rounded: the accumulators where f is nearest the middle are
    # one step of it (two, when the middle falls between two integers), and the real crosses
    # the middle at their centre -- not at the step's first accumulator, which would put the
    # fit half a step high everywhere.
    middle = (first + last) / 2
    if vmax - vmin <= 1 << 20:
        span = np.arange(vmin, vmax + 1)
        distance = np.abs(row.approx(span.astype(np.float64)) - middle)
        nearest = np.flatnonzero(distance == distance.min())
        centre = (int(span[nearest[0]]) + int(span[nearest[-1]])) / 2
    else:
        # Too wide to list: f is monotonic, so bisection finds the same accumulators (the
        # middle of the accumulator range is not where f crosses its middle value: a row
        # that saturates over most of its range put the fit tens of steps off).
        centre = _nearest_centre(row, vmin, vmax, middle, sign)
    offset = round(middle * math.ldexp(1.0, shift) - multiplier * centre) \
        + ((1 << (shift - 1)) if shift else 0)
    fit = RowFit.from_offset(multiplier, offset, shift, False)
    error, at = _worst_error(row, fit, vmin, vmax, low, high)
    return RowFit(fit.bias, fit.multiplier, fit.shift, fit.rounding, False, error, at)


def _nearest_centre(row: RowFunction, vmin: int, vmax: int, middle: float, sign: int) -> float:
    """The centre of the accumulators ``v`` where the monotonic ``f`` (``sign``: +1 rising,
    -1 falling) is nearest ``middle``, found by bisection."""
    def value(v: int) -> float:
        return sign * float(row.approx(np.array([v], dtype=np.float64))[0])

    def first_at_least(target: float) -> int:       # the first v with value(v) >= target
        lo, hi = vmin, vmax
        while lo < hi:
            mid = (lo + hi) // 2
            if value(mid) >= target:
                hi = mid
            else:
                lo = mid + 1
        return lo

    crossing = first_at_least(sign * middle)
    candidates = {value(crossing)} | ({value(crossing - 1)} if crossing > vmin else set())
    best = min(abs(c - sign * middle) for c in candidates)
    nearest = sorted(c for c in candidates if abs(c - sign * middle) == best)
    start = first_at_least(nearest[0])
    after = first_at_least(math.nextafter(nearest[-1], math.inf)) if value(vmax) > nearest[-1] \
        else vmax + 1
    return (start + after - 1) / 2


def _worst_error(row: RowFunction, fit: RowFit, vmin: int, vmax: int, low: int, high: int):
    """The largest ``|g(v) - f(v)|``: both are monotone steps, so it is reached next to a step
    of one of them (or at an end)."""
    if vmin > vmax - 2:
        points = np.arange(vmin, vmax + 1)
    else:
        steps_f = np.array(list(thresholds(row, vmin, vmax).values()), dtype=np.int64)
        span = (np.arange(vmin, vmax + 1) if vmax - vmin <= 1 << 20
                else np.linspace(vmin, vmax, 1 << 16).astype(np.int64))
        got = fit(span, low, high)
        steps_g = span[1:][np.diff(got) != 0]
        points = np.unique(np.concatenate([[vmin, vmax], steps_f, steps_f - 1, steps_g,
                                           steps_g - 1]))
        points = points[(points >= vmin) & (points <= vmax)]
    got = fit(points, low, high)
    errors = [abs(int(g) - row.exact(int(v))) for v, g in zip(points, got)]
    index = int(np.argmax(errors))
    return errors[index], int(points[index])


def exact_function(a: Fraction, b: Fraction, ops, final, *,
                   clamp_low: int | None = None) -> RowFunction:
    """A row's :class:`RowFunction` from its affine part ``a * v + b``, the monotone ``ops``
    after it and the ``final`` quantizer (``ops.Quantizer`` or ``ops.Trunc``), whose integer is
    the output (at least ``clamp_low``: a ReLU on the quantized output)."""
    a_float, b_float = float(a), float(b)

    def exact(v: int) -> int:
        y = a * v + b
        for op in ops:
            y = op.exact(y)
        out = _final_integer(final, y)
        return out if clamp_low is None else max(out, clamp_low)

    def approx(v: np.ndarray) -> np.ndarray:
        y = a_float * v + b_float
        for op in ops:
            y = op.approx(y)
        out = _final_integer_approx(final, y)
        return out if clamp_low is None else np.maximum(out, clamp_low)

    scale = float(getattr(final, "out_scale", None) or final.scale)
    return RowFunction(exact, approx, a_float / scale)


def _final_integer(final, y: Fraction) -> int:
    if hasattr(final, "out_scale"):         # Trunc: its integer, less its zero point
        return final.integer(y) - int(final.out_zero_point)
    return final.integer(y)


def _final_integer_approx(final, y: np.ndarray) -> np.ndarray:
    if hasattr(final, "out_scale"):
        return np.round(final.approx(y) / float(final.out_scale))
    return final.integer_approx(y)
