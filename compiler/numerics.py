"""The one definition of sparseforge's fixed-point arithmetic (docs/numerics.md).

The compression stage, the golden model and the engine all compute with these rules; the engine
implements them in gates (``hw/requantize.py``) and is checked bit for bit against this file.

* A fixed-point format is a signed width and a binary point: ``value = integer * 2**-frac``.
* Quantizing a real rounds half up (``floor(x * 2**frac + 0.5)``) and saturates to the width.
* A layer accumulates ``activation * codebook value`` products exactly (the accumulator is sized
  by :func:`accumulator_bits` so it never overflows), adds the bias (already at the accumulator's
  scale), multiplies by the row's integer multiplier ``M_i``, shifts right by the row's
  ``s_i`` rounding half up (or half to even), and clamps to the layer's output range
  (:func:`requantize_rows`, the gemmlowp / TFLite form).  Today's power-of-two case is
  ``M_i = 1`` with one shift per layer, the range being the activation width's (from 0 with
  ReLU): :func:`requantize`.
* A model's own quantization (an imported QONNX / ONNX model) keeps its real scales:
  :class:`ScaledFormat` holds an activation tensor's scale, zero point and integer range, and
  quantizes reals the way ONNX executors do (float32 division, round half to even).

Float inputs are quantized in float64 only; the torch helpers at the bottom are for training
(straight-through fake quantization) and are never used to produce a reported integer.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["FixedFormat", "ScaledFormat", "Rounding", "round_half_up", "saturate",
           "round_shift", "requantize", "requantize_rows", "choose_frac", "accumulator_bound",
           "accumulator_bits", "fake_quantize", "ceil_div", "signed_bits", "format_from_json"]

FRAC_LIMIT = 48


@dataclass(frozen=True)
class FixedFormat:
    """A signed fixed-point format: ``bits`` wide, value = integer * 2**-``frac``."""
    bits: int
    frac: int

    def __post_init__(self):
        if not isinstance(self.bits, int) or not 2 <= self.bits <= 48:
            raise ValueError(f"fixed-point width must be an integer from 2 to 48, "
                             f"not {self.bits!r}")
        if not isinstance(self.frac, int) or abs(self.frac) > FRAC_LIMIT:
            raise ValueError(f"fixed-point frac must be an integer within +-{FRAC_LIMIT}, "
                             f"not {self.frac!r}")

    @property
    def min(self) -> int:
        return -(1 << (self.bits - 1))

    @property
    def max(self) -> int:
        return (1 << (self.bits - 1)) - 1

    @property
    def scale(self) -> float:
        """The real value of one integer step."""
        return math.ldexp(1.0, -self.frac)

    def quantize(self, x) -> np.ndarray:
        """Reals to integers: round half up, then saturate (float64 throughout)."""
        x = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise ValueError("cannot quantize NaN or infinite values")
        return saturate(round_half_up(np.ldexp(x, self.frac)), self.bits)

    def dequantize(self, q) -> np.ndarray:
        return np.ldexp(np.asarray(q, dtype=np.float64), -self.frac)

    def to_json(self) -> dict:
        return {"bits": self.bits, "frac": self.frac}

    @classmethod
    def from_json(cls, obj: dict) -> FixedFormat:
        return cls(int(obj["bits"]), int(obj["frac"]))


class Rounding(enum.Enum):
    """How a value exactly halfway between two integers rounds."""
    HALF_UP = "half_up"         # towards +infinity: sparseforge's own quantization
    HALF_EVEN = "half_even"     # to the even neighbour: numpy, PyTorch, ONNX, QONNX's ROUND


@dataclass(frozen=True)
class ScaledFormat:
    """An activation tensor quantized by the model itself (an imported QONNX or ONNX model).

    The engine holds ``c = q - zero_point`` (``q`` the model's integer), ``low <= c <= high``,
    in ``bits``-wide signed activations (the network's activation width, which may be wider
    than the tensor needs); the real value is ``c * scale``, so ``c = 0`` is a real zero and
    the engine still skips it.  Quantizing a real follows the model's quantizer as ONNX
    executors compute it: ``x / scale`` in float32, rounded (``rounding``), and the zero point
    added before rounding (QONNX ``Quant``) or after (ONNX ``QuantizeLinear``); then clamped.
    """
    bits: int
    scale: float
    low: int
    high: int
    zero_point: int = 0
    rounding: Rounding = Rounding.HALF_EVEN
    zero_point_first: bool = True

    def __post_init__(self):
        if not isinstance(self.bits, int) or not 2 <= self.bits <= 48:
            raise ValueError(f"activation width must be an integer from 2 to 48, "
                             f"not {self.bits!r}")
        if not (isinstance(self.scale, float) and math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"a scale must be a positive finite float, not {self.scale!r}")
        if not (isinstance(self.low, int) and isinstance(self.high, int)
                and -(1 << (self.bits - 1)) <= self.low <= 0 <= self.high
                < (1 << (self.bits - 1))):
            raise ValueError(f"the integer range {self.low!r} .. {self.high!r} must hold 0 and "
                             f"fit {self.bits} signed bits")
        if not isinstance(self.zero_point, int):
            raise ValueError(f"a zero point must be an integer, not {self.zero_point!r}")
        if not isinstance(self.rounding, Rounding):
            raise ValueError(f"rounding must be a Rounding, not {self.rounding!r}")

    @property
    def min(self) -> int:
        return self.low

    @property
    def max(self) -> int:
        return self.high

    @property
    def frac(self):
        raise AttributeError("a ScaledFormat has a real scale, not a binary point")

    def quantize(self, x) -> np.ndarray:
        """Reals to the engine's integers, as the model's quantizer does (see the class)."""
        x = np.asarray(x, dtype=np.float32)
        if not np.all(np.isfinite(x)):
            raise ValueError("cannot quantize NaN or infinite values")
        y = x / np.float32(self.scale)
        if self.zero_point_first:
            y = y + np.float32(self.zero_point)
        y = _round(y.astype(np.float64), self.rounding)
        if not self.zero_point_first:
            y = y + self.zero_point
        return np.clip(y, self.low + self.zero_point, self.high + self.zero_point) \
            - self.zero_point

    def dequantize(self, q) -> np.ndarray:
        return np.asarray(q, dtype=np.float64) * self.scale

    def to_json(self) -> dict:
        return {"bits": self.bits, "scale": self.scale, "low": self.low, "high": self.high,
                "zero_point": self.zero_point, "rounding": self.rounding.value,
                "zero_point_first": self.zero_point_first}

    @classmethod
    def from_json(cls, obj: dict) -> ScaledFormat:
        return cls(int(obj["bits"]), float(obj["scale"]), int(obj["low"]), int(obj["high"]),
                   int(obj["zero_point"]), Rounding(obj["rounding"]),
                   bool(obj["zero_point_first"]))


def format_from_json(obj: dict) -> FixedFormat | ScaledFormat:
    """A format written by ``to_json``: a :class:`ScaledFormat` has a ``scale``."""
    if not isinstance(obj, dict):
        raise TypeError(f"a format must be an object, not {type(obj).__name__}")
    return ScaledFormat.from_json(obj) if "scale" in obj else FixedFormat.from_json(obj)


def _round(y: np.ndarray, rounding: Rounding) -> np.ndarray:
    if rounding is Rounding.HALF_EVEN:
        return np.round(y).astype(np.int64)
    return round_half_up(y)


def signed_bits(low: int, high: int) -> int:
    """The narrowest signed width (at least 2) holding ``low .. high``."""
    return max(2, max(high, 0).bit_length() + 1, (~min(low, 0)).bit_length() + 1)


def ceil_div(numerator, denominator):
    """``ceil(numerator / denominator)`` in exact integer arithmetic (elementwise on NumPy
    integer arrays): rows per PE, scan groups per layer, words per memory."""
    return -(-numerator // denominator)


def round_half_up(x) -> np.ndarray:
    """``floor(x + 0.5)`` as int64: ties go towards +infinity (the hardware's rounding)."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def saturate(q, bits: int) -> np.ndarray:
    """Clamp integers to the signed range of ``bits``."""
    return np.clip(np.asarray(q, dtype=np.int64), -(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def round_shift(v, shift: int) -> np.ndarray:
    """Arithmetic right shift by ``shift`` rounding half up: ``(v + 2**(shift-1)) >> shift``."""
    v = np.asarray(v, dtype=np.int64)
    if shift < 0:
        raise ValueError(f"the requantize shift must be >= 0, not {shift}")
    if shift == 0:
        return v
    return (v + (1 << (shift - 1))) >> shift


def requantize(acc, bias, shift: int, bits: int, relu: bool) -> np.ndarray:
    """A layer's output from its accumulators, the power-of-two case of
    :func:`requantize_rows`: bias, rounding shift (half up), saturation to ``bits``, ReLU."""
    if shift < 0:
        raise ValueError(f"the requantize shift must be >= 0, not {shift}")
    return requantize_rows(acc, bias, 1, shift, 0 if relu else -(1 << (bits - 1)),
                           (1 << (bits - 1)) - 1)


def requantize_rows(acc, bias, multiplier, shift, low: int, high: int, *, rounding=None,
                    half_even=False, leak: int = 0) -> np.ndarray:
    """A layer's output from its accumulators, per output row ``i`` (the last axis):

    ``t = (acc + bias_i) * M_i + rounding_i`` (``rounding_i`` defaults to ``2**(s_i - 1)``, 0
    when ``s_i`` is 0, which rounds ``(acc + bias_i) * M_i / 2**s_i`` half up); ``r = t >>
    s_i`` (arithmetic: floor); with ``half_even_i``, when the low ``s_i`` bits of ``t`` are all
    zero (``s_i > 0``: a tie, with the default rounding) and ``r`` is odd, ``r - 1`` instead;
    a negative ``r`` is shifted right by ``leak`` more (floor: a leaky ReLU's slope
    ``2**-leak``); the output is ``r`` clamped to ``low .. high`` (ReLU is ``low = 0``).
    ``bias``,
    ``multiplier`` (signed), ``shift`` (``>= 0``), ``rounding`` and ``half_even`` are scalars or
    one value per row.  Exact: computed in Python integers when a product could leave int64.
    """
    v = np.asarray(acc, dtype=np.int64) + np.asarray(bias, dtype=np.int64)
    multiplier = np.asarray(multiplier, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    half_even = np.asarray(half_even, dtype=bool)
    if shift.size and shift.min() < 0:
        raise ValueError(f"a requantize shift must be >= 0, not {int(shift.min())}")
    if rounding is None:
        rounding = np.where(shift > 0, np.left_shift(1, np.maximum(shift - 1, 0)), 0)
    rounding = np.asarray(rounding, dtype=np.int64)
    wide = (int(shift.max(initial=0)) > 61
            or (v.size and multiplier.size
                and int(np.abs(v).max()) * int(np.abs(multiplier).max())
                + int(np.abs(rounding).max(initial=0)) >= 1 << 62))
    if wide:
        v, multiplier, shift, rounding = (np.asarray(a, dtype=object)
                                          for a in (v, multiplier, shift, rounding))
    t = v * multiplier + rounding
    r = t >> shift
    low_bits = t & ((np.ones_like(shift) << shift) - 1)
    tie = half_even & (shift > 0) & (low_bits == 0) & ((r & 1) == 1)
    r = r - tie.astype(np.int64)
    if leak:
        r = np.where(r < 0, r >> leak, r)
    return np.clip(r, low, high).astype(np.int64)


def choose_frac(max_abs: float, bits: int) -> int:
    """The largest binary point at which ``max_abs`` still fits in ``bits`` after rounding."""
    if not math.isfinite(max_abs):
        raise ValueError(f"cannot choose a scale for a range of {max_abs}")
    if max_abs <= 0:
        return bits - 1
    top = (1 << (bits - 1)) - 1
    frac = math.floor(math.log2(top / max_abs))
    # log2 is not exact: step until round_half_up(max_abs * 2**frac) <= top < the next one.
    while frac > -FRAC_LIMIT and math.floor(math.ldexp(max_abs, frac) + 0.5) > top:
        frac -= 1
    while frac < FRAC_LIMIT and math.floor(math.ldexp(max_abs, frac + 1) + 0.5) <= top:
        frac += 1
    return max(-FRAC_LIMIT, min(FRAC_LIMIT, frac))


def accumulator_bound(weights, bias, act_bits: int, nonnegative_inputs: bool = False,
                      input_range: tuple[int, int] | None = None) -> int:
    """The largest |value| the accumulator of a layer can reach, over every possible input.

    Every partial sum is bounded by ``sum_j |w_ij| * 2**(act_bits-1)``.  When the inputs are
    known to be non-negative (they come from a layer with ReLU, whose write-back clamps at 0),
    a partial sum lies between ``-max_a * sum(w-)`` and ``max_a * sum(w+)`` with ``max_a =
    2**(act_bits-1) - 1``, about half as wide.  Bias and rounding constant are added at
    write-back.  With ``input_range = (low, high)`` (a real-scaled input's integers) a partial
    sum lies between the sums of each product's smallest and largest values over the range.
    """
    weights = np.asarray(weights, dtype=np.int64)
    bias = np.abs(np.asarray(bias, dtype=np.int64))
    if not weights.size:
        return int(bias.max()) if bias.size else 0
    if input_range is not None:
        low, high = (int(v) for v in input_range)
        ends = np.stack([weights * low, weights * high])
        positive = np.maximum(ends.max(axis=0), 0).sum(axis=1)
        negative = np.maximum(-ends.min(axis=0), 0).sum(axis=1)
        worst = np.maximum(positive, negative)
    elif nonnegative_inputs:
        largest = (1 << (act_bits - 1)) - 1
        positive = np.maximum(weights, 0).sum(axis=1)
        negative = np.maximum(-weights, 0).sum(axis=1)
        worst = np.maximum(positive, negative) * largest
    else:
        worst = np.abs(weights).sum(axis=1) * (1 << (act_bits - 1))
    worst = worst + (bias if bias.size else 0)
    return int(worst.max())


def accumulator_bits(bound: int) -> int:
    """Signed width that holds ``±bound`` (bias and rounding constant included), never below
    16: ``n`` bits hold ``±(2**(n-1) - 1)``."""
    return max(16, int(bound).bit_length() + 1)


def fake_quantize(x, fmt: FixedFormat):
    """Torch straight-through fake quantization with :meth:`FixedFormat.quantize`'s rule.

    For training only: the forward pass sees the fixed-point grid, the gradient passes through.
    """
    import torch

    scaled = torch.floor(x * (2.0 ** fmt.frac) + 0.5).clamp(fmt.min, fmt.max)
    quantized = scaled * (2.0 ** -fmt.frac)
    return x + (quantized - x).detach()
