"""The real-valued functions between a layer's matrix product and its output quantizer.

An imported layer computes, per output row ``i``, ``y = a_i * v + b_i`` on its integer
accumulator ``v = sum_j w_ij c_j`` (``a_i`` the input scale times the row's weight scale, times
any ``Mul`` / ``Div`` / ``BatchNormalization`` factor; ``b_i`` the bias and every offset after
it), then a chain of monotone ops (:class:`Relu`, :class:`Clip`), and a quantizer
(:class:`Quantizer`, optionally followed by :class:`Trunc`) that gives the layer's output
integer.  Each op is evaluated two ways: exactly, on :class:`fractions.Fraction` values (the
real-number meaning of the model's float parameters, which the fit in ``fit.py`` reproduces bit
for bit), and in float64 over NumPy arrays (fast, to find where the exact function steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

__all__ = ["Clip", "Quantizer", "Relu", "Trunc", "ROUNDING_MODES", "round_exact",
           "round_float"]

HALF = Fraction(1, 2)
# QONNX's rounding modes (qonnx.custom_op.general.quant.resolve_rounding_mode); every one is
# monotone, which is all the fit needs.
ROUNDING_MODES = ("ROUND", "HALF_EVEN", "HALF_UP", "HALF_DOWN", "CEIL", "FLOOR", "UP", "DOWN")


def round_exact(x: Fraction, mode: str) -> int:
    """``x`` rounded to an integer as QONNX's ``mode`` does (``ROUND`` is half to even;
    ``HALF_UP`` / ``HALF_DOWN`` are symmetric: ties away from / towards zero)."""
    floor = math.floor(x)
    rest = x - floor
    if mode in ("ROUND", "HALF_EVEN"):
        if rest != HALF:
            return floor + (rest > HALF)
        return floor + (floor % 2)
    if mode == "FLOOR":
        return floor
    if mode == "CEIL":
        return math.ceil(x)
    if mode == "DOWN":
        return math.trunc(x)
    if mode == "UP":
        return math.ceil(x) if x > 0 else floor
    if mode == "HALF_UP":
        return (math.floor(x + HALF) if x >= 0 else -math.floor(-x + HALF))
    if mode == "HALF_DOWN":
        return (math.ceil(x - HALF) if x >= 0 else -math.ceil(-x - HALF))
    raise ValueError(f"unknown rounding mode {mode!r}; known: {', '.join(ROUNDING_MODES)}")


def round_float(x: np.ndarray, mode: str) -> np.ndarray:
    """The float64 counterpart of :func:`round_exact` (numpy's functions, as QONNX uses)."""
    if mode in ("ROUND", "HALF_EVEN"):
        return np.round(x)
    if mode == "FLOOR":
        return np.floor(x)
    if mode == "CEIL":
        return np.ceil(x)
    if mode == "DOWN":
        return np.trunc(x)
    if mode == "UP":
        return np.sign(x) * np.ceil(np.abs(x))
    if mode == "HALF_UP":
        return np.sign(x) * np.floor(np.abs(x) + 0.5)
    if mode == "HALF_DOWN":
        return np.sign(x) * np.ceil(np.abs(x) - 0.5)
    raise ValueError(f"unknown rounding mode {mode!r}; known: {', '.join(ROUNDING_MODES)}")


@dataclass(frozen=True)
class Relu:
    """``max(y, 0)``."""
    node: str

    def exact(self, y: Fraction) -> Fraction:
        return y if y > 0 else Fraction(0)

    def approx(self, y: np.ndarray) -> np.ndarray:
        return np.maximum(y, 0.0)


@dataclass(frozen=True)
class Clip:
    """``min(max(y, low), high)`` (ONNX ``Clip`` on a real tensor; either bound may be None)."""
    node: str
    low: Fraction | None
    high: Fraction | None

    def exact(self, y: Fraction) -> Fraction:
        if self.low is not None and y < self.low:
            y = self.low
        if self.high is not None and y > self.high:
            y = self.high
        return y

    def approx(self, y: np.ndarray) -> np.ndarray:
        low = -np.inf if self.low is None else float(self.low)
        high = np.inf if self.high is None else float(self.high)
        return np.clip(y, low, high)


@dataclass(frozen=True)
class Quantizer:
    """A uniform quantizer: ``q = clamp(round(y / scale + zero_point), qmin, qmax)`` (QONNX
    ``Quant``: the zero point added before rounding) or ``clamp(round(y / scale) +
    zero_point, ...)`` (ONNX ``QuantizeLinear``, ``zero_point_first=False``); the value is
    ``(q - zero_point) * scale`` and the engine keeps ``c = q - zero_point``.  ``bipolar``:
    QONNX's ``BipolarQuant`` and 1-bit signed ``Quant`` (``+1`` for ``y / scale >= 0``,
    else ``-1``)."""
    node: str
    scale: Fraction
    zero_point: int
    qmin: int
    qmax: int
    rounding: str = "ROUND"
    zero_point_first: bool = True
    bipolar: bool = False

    @property
    def low(self) -> int:
        return self.qmin - self.zero_point

    @property
    def high(self) -> int:
        return self.qmax - self.zero_point

    def integer(self, y: Fraction) -> int:
        """The engine's integer ``c`` for a real ``y``."""
        u = y / self.scale
        if self.bipolar:
            return 1 if u + self.zero_point >= 0 else -1
        if self.zero_point_first:
            q = round_exact(u + self.zero_point, self.rounding)
        else:
            q = round_exact(u, self.rounding) + self.zero_point
        return min(max(q, self.qmin), self.qmax) - self.zero_point

    def exact(self, y: Fraction) -> Fraction:
        return self.integer(y) * self.scale

    def integer_approx(self, y: np.ndarray) -> np.ndarray:
        u = y / float(self.scale)
        if self.bipolar:
            return np.where(u + self.zero_point >= 0, 1.0, -1.0)
        if self.zero_point_first:
            q = round_float(u + self.zero_point, self.rounding)
        else:
            q = round_float(u, self.rounding) + self.zero_point
        return np.clip(q, self.qmin, self.qmax) - self.zero_point

    def approx(self, y: np.ndarray) -> np.ndarray:
        return self.integer_approx(y) * float(self.scale)


@dataclass(frozen=True)
class Trunc:
    """QONNX ``Trunc`` of a quantized tensor (its input is a :class:`Quantizer`'s output):
    ``q = round(y / scale + zero_point)``, then ``q' = clamp(rounding(q / 2**bits))`` (the
    version 2 op clamps to ``qmin .. qmax``; version 1 does not: ``qmin``, ``qmax`` None),
    and the value ``(q' - zero_point / 2**bits) * out_scale``."""
    node: str
    scale: Fraction
    zero_point: int
    bits: int                   # the truncated low bits
    out_scale: Fraction
    rounding: str = "FLOOR"
    qmin: int | None = None
    qmax: int | None = None

    @property
    def out_zero_point(self) -> Fraction:
        return Fraction(self.zero_point, 1 << self.bits)

    def integer(self, y: Fraction) -> int:
        q = round_exact(y / self.scale + self.zero_point, "ROUND")
        q = Fraction(q, 1 << self.bits)
        if self.qmin is not None:
            q = min(max(q, Fraction(self.qmin)), Fraction(self.qmax))
        return round_exact(q, self.rounding)

    def exact(self, y: Fraction) -> Fraction:
        return (self.integer(y) - self.out_zero_point) * self.out_scale

    def approx(self, y: np.ndarray) -> np.ndarray:
        q = np.round(y / float(self.scale) + self.zero_point) / float(1 << self.bits)
        if self.qmin is not None:
            q = np.clip(q, self.qmin, self.qmax)
        q = round_float(q, self.rounding)
        return (q - float(self.out_zero_point)) * float(self.out_scale)
