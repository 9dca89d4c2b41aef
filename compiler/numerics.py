"""The one definition of sparseforge's fixed-point arithmetic (docs/numerics.md).

The compression stage, the golden model and the engine all compute with these rules; the engine
implements them in gates (``hw/requantize.py``) and is checked bit for bit against this file.

* A fixed-point format is a signed width and a binary point: ``value = integer * 2**-frac``.
* Quantizing a real rounds half up (``floor(x * 2**frac + 0.5)``) and saturates to the width.
* A layer accumulates ``activation * codebook value`` products exactly (the accumulator is sized
  by :func:`accumulator_bits` so it never overflows), adds the bias (already at the accumulator's
  scale), shifts right by ``shift`` rounding half up, saturates to the activation width, and
  applies ReLU when the layer has one.

Float inputs are quantized in float64 only; the torch helpers at the bottom are for training
(straight-through fake quantization) and are never used to produce a reported integer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["FixedFormat", "round_half_up", "saturate", "round_shift", "requantize",
           "choose_frac", "accumulator_bound", "accumulator_bits", "fake_quantize", "ceil_div"]

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
    """A layer's output from its accumulators: bias, rounding shift, saturation, ReLU."""
    out = saturate(round_shift(np.asarray(acc, dtype=np.int64) + np.asarray(bias, np.int64),
                               shift), bits)
    return np.maximum(out, 0) if relu else out


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


def accumulator_bound(weights, bias, act_bits: int, nonnegative_inputs: bool = False) -> int:
    """The largest |value| the accumulator of a layer can reach, over every possible input.

    Every partial sum is bounded by ``sum_j |w_ij| * 2**(act_bits-1)``.  When the inputs are
    known to be non-negative (they come from a layer with ReLU, whose write-back clamps at 0),
    a partial sum lies between ``-max_a * sum(w-)`` and ``max_a * sum(w+)`` with ``max_a =
    2**(act_bits-1) - 1``, about half as wide.  Bias and rounding constant are added at
    write-back.
    """
    weights = np.asarray(weights, dtype=np.int64)
    bias = np.abs(np.asarray(bias, dtype=np.int64))
    if not weights.size:
        return int(bias.max()) if bias.size else 0
    if nonnegative_inputs:
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
