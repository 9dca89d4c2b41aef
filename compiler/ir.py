"""The compiler's IR: a network as a sequence of typed ops, float and quantized.

Three levels, each a frozen dataclass over NumPy arrays:

* :class:`Graph` -- what capture produced from an ``nn.Module`` or an ONNX file: a sequence of
  ops (Linear, ReLU, BatchNorm, Flatten, Identity, Softmax) with the module path of each.
* :class:`Network` -- the canonical float network the engine can run: Linear layers with ReLU
  fused in, everything else folded or erased (``compiler/passes.py`` gets there from a Graph).
* :class:`QuantizedNetwork` -- the integer network that compression produces and the compiler
  lowers: per layer a code matrix, a fixed-point codebook, an integer bias and formats, and for
  a model imported with its own quantization (``compiler/quantized``) a per-row requantization
  (:class:`RowRequant`: integer multiplier, shift, rounding, and the layer's output range).
  Its :meth:`QuantizedNetwork.forward` is the reference semantics the golden model and the
  engine must match bit for bit.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .numerics import FixedFormat, ScaledFormat, accumulator_bound, requantize_rows

__all__ = ["OpKind", "Op", "Graph", "Linear", "Network", "QuantizedLinear", "QuantizedNetwork",
           "RowRequant", "SUPPORTED_OPS"]


class OpKind(enum.Enum):
    LINEAR = "linear"
    RELU = "relu"
    BATCHNORM = "batchnorm"       # folded into the preceding Linear
    FLATTEN = "flatten"           # erased (inputs are flat vectors)
    IDENTITY = "identity"         # Dropout and Identity: erased at inference
    SOFTMAX = "softmax"           # dropped when last: argmax does not change


SUPPORTED_OPS = ("Linear", "ReLU", "BatchNorm1d", "Flatten", "Dropout", "Identity",
                 "Softmax (last layer only)")


@dataclass(frozen=True, eq=False)
class Op:
    """One captured op.  ``params`` holds its arrays (Linear: weight, bias; BatchNorm: mean,
    var, weight, bias; others: none) and ``attrs`` its scalars (BatchNorm: eps)."""
    kind: OpKind
    name: str                                   # module path or ONNX node name
    params: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Graph:
    """A captured network: ops in execution order over a flat input of ``input_size``."""
    ops: tuple[Op, ...]
    input_size: int
    source: str = ""

    def run(self, x: np.ndarray) -> np.ndarray:
        """Float64 interpreter, used to check that passes keep the function unchanged."""
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        for op in self.ops:
            if op.kind is OpKind.LINEAR:
                x = x @ op.params["weight"].T.astype(np.float64) + op.params["bias"]
                if op.attrs.get("relu"):
                    x = np.maximum(x, 0)
            elif op.kind is OpKind.RELU:
                x = np.maximum(x, 0)
            elif op.kind is OpKind.BATCHNORM:
                p = op.params
                x = (x - p["mean"]) / np.sqrt(p["var"] + op.attrs["eps"]) * p["weight"] + p["bias"]
            elif op.kind is OpKind.SOFTMAX:
                e = np.exp(x - x.max(axis=1, keepdims=True))
                x = e / e.sum(axis=1, keepdims=True)
        return x


@dataclass(frozen=True, eq=False)
class Linear:
    """A fully connected layer ``y = W x + b`` (W is out x in), optionally followed by ReLU."""
    name: str
    weight: np.ndarray
    bias: np.ndarray
    relu: bool

    def __post_init__(self):
        if self.weight.ndim != 2:
            raise ValueError(f"layer {self.name}: weight must be 2-D, not {self.weight.shape}")
        if self.bias.shape != (self.weight.shape[0],):
            raise ValueError(f"layer {self.name}: bias shape {self.bias.shape} does not match "
                             f"{self.weight.shape[0]} outputs")
        for what, array in (("weight", self.weight), ("bias", self.bias)):
            if not np.all(np.isfinite(array)):
                raise ValueError(f"layer {self.name}: {what} holds NaN or infinite values")

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]


@dataclass(frozen=True, eq=False)
class Network:
    """The canonical float network: a chain of :class:`Linear` layers with fused ReLU."""
    layers: tuple[Linear, ...]
    source: str = ""

    def __post_init__(self):
        if not self.layers:
            raise ValueError("a network needs at least one Linear layer")
        for before, after in zip(self.layers, self.layers[1:]):
            if before.out_features != after.in_features:
                raise ValueError(f"layer {after.name} takes {after.in_features} inputs but "
                                 f"{before.name} gives {before.out_features}")

    @property
    def input_size(self) -> int:
        return self.layers[0].in_features

    @property
    def output_size(self) -> int:
        return self.layers[-1].out_features

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        for layer in self.layers:
            x = x @ layer.weight.T.astype(np.float64) + layer.bias
            if layer.relu:
                x = np.maximum(x, 0)
        return x


@dataclass(frozen=True, eq=False)
class RowRequant:
    """A layer's per-row requantization (``numerics.requantize_rows``): row ``i``'s output is
    ``clamp(((acc_i + bias_i) * multiplier[i] + rounding[i]) >> shift[i], low, high)``, a tie
    going to the even neighbour where ``half_even[i]``.  ``rounding[i]`` (``0 <= rounding <
    |multiplier|`` or 0) carries the part of the row's offset finer than one accumulator step
    (a float bias, a folded BatchNorm); ``low .. high`` is the layer's output range (ReLU
    included: ``low >= 0``)."""
    multiplier: np.ndarray
    shift: np.ndarray
    rounding: np.ndarray
    half_even: np.ndarray
    low: int
    high: int

    def __post_init__(self):
        for name, kind in (("multiplier", "iu"), ("shift", "iu"), ("rounding", "iu"),
                           ("half_even", "b")):
            array = np.asarray(getattr(self, name))
            if array.ndim != 1 or array.dtype.kind not in kind:
                raise ValueError(f"requantization {name} must be a 1-D "
                                 f"{'boolean' if kind == 'b' else 'integer'} array, not "
                                 f"{array.dtype} {array.shape}")
            object.__setattr__(self, name, array.astype(bool if kind == "b" else np.int64))
        lengths = {name: len(getattr(self, name))
                   for name in ("multiplier", "shift", "rounding", "half_even")}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"requantization arrays differ in length: {lengths}")
        if self.shift.size and self.shift.min() < 0:
            raise ValueError(f"a requantization shift must be >= 0, not {int(self.shift.min())}")
        if self.rounding.size and self.rounding.min() < 0:
            raise ValueError(f"a requantization rounding must be >= 0, not "
                             f"{int(self.rounding.min())}")
        if not (isinstance(self.low, int) and isinstance(self.high, int)
                and self.low <= self.high):
            raise ValueError(f"the output range {self.low!r} .. {self.high!r} is empty or not "
                             f"integers")

    @classmethod
    def power_of_two(cls, rows: int, shift: int, low: int, high: int) -> RowRequant:
        """Today's requantization as rows: every multiplier 1, the layer's shift, half up."""
        return cls(np.ones(rows, np.int64), np.full(rows, shift, np.int64),
                   np.where(shift > 0, 1 << max(shift - 1, 0), 0) * np.ones(rows, np.int64),
                   np.zeros(rows, bool), low, high)

    @property
    def multiplier_bits(self) -> int:
        """The signed width of the widest multiplier."""
        from .numerics import signed_bits

        if not self.multiplier.size:
            return 2
        return signed_bits(int(self.multiplier.min()), int(self.multiplier.max()))


@dataclass(frozen=True, eq=False)
class QuantizedLinear:
    """One layer of the integer network.

    ``codes`` (out x in, uint8) index ``codebook`` (``2**code_bits`` integers in
    ``weight_format``); code 0 is the pruned zero and ``codebook[0] == 0``.  ``bias`` is at the
    accumulator's scale, ``2**-(input_format.frac + weight_format.frac)``, saturated to
    ``bias_bits``.  The output is ``requantize(acc + bias, shift)`` in ``output_format``.

    With ``requant`` (a model imported with its own quantization) the output is
    :class:`RowRequant`'s instead, and the formats may be ``ScaledFormat`` (real scales):
    ``bias`` is then at the accumulator's scale of each row, ``input scale x the row's weight
    scale``, and ``weight_format`` is the integer grid's width (``frac`` 0).
    """
    name: str
    codes: np.ndarray
    codebook: np.ndarray
    bias: np.ndarray
    code_bits: int
    input_format: FixedFormat
    weight_format: FixedFormat
    output_format: FixedFormat | ScaledFormat
    bias_bits: int
    relu: bool
    requant: RowRequant | None = None

    def __post_init__(self):
        where = f"layer {self.name}"
        if self.codes.ndim != 2 or self.codes.dtype != np.uint8:
            raise ValueError(f"{where}: codes must be a 2-D uint8 array, not "
                             f"{self.codes.dtype} {self.codes.shape}")
        if not 1 <= self.code_bits <= 8:
            raise ValueError(f"{where}: code_bits must be from 1 to 8, not {self.code_bits}")
        if self.codebook.shape != (1 << self.code_bits,):
            raise ValueError(f"{where}: codebook must hold {1 << self.code_bits} values for "
                             f"{self.code_bits}-bit codes, not {self.codebook.shape}")
        if self.codebook[0] != 0:
            raise ValueError(f"{where}: codebook[0] must be 0 (the pruned weight), "
                             f"not {self.codebook[0]}")
        if self.codes.size and int(self.codes.max()) >= (1 << self.code_bits):
            raise ValueError(f"{where}: code {int(self.codes.max())} is out of range for "
                             f"{self.code_bits}-bit codes")
        fmt = self.weight_format
        if self.codebook.min() < fmt.min or self.codebook.max() > fmt.max:
            raise ValueError(f"{where}: codebook values exceed the {fmt.bits}-bit weight format")
        if self.bias.shape != (self.codes.shape[0],):
            raise ValueError(f"{where}: bias shape {self.bias.shape} does not match "
                             f"{self.codes.shape[0]} outputs")
        lo, hi = -(1 << (self.bias_bits - 1)), (1 << (self.bias_bits - 1)) - 1
        if self.bias.size and (self.bias.min() < lo or self.bias.max() > hi):
            raise ValueError(f"{where}: bias exceeds {self.bias_bits} bits")
        if self.input_format.bits != self.output_format.bits:
            raise ValueError(f"{where}: input and output activations must share one width")
        if self.requant is not None:
            bits = self.output_format.bits
            if len(self.requant.multiplier) != self.codes.shape[0]:
                raise ValueError(f"{where}: {len(self.requant.multiplier)} requantization rows "
                                 f"for {self.codes.shape[0]} outputs")
            if not -(1 << (bits - 1)) <= self.requant.low <= self.requant.high < 1 << (bits - 1):
                raise ValueError(f"{where}: the output range {self.requant.low} .. "
                                 f"{self.requant.high} exceeds {bits}-bit activations")
        elif isinstance(self.input_format, ScaledFormat) or isinstance(self.output_format,
                                                                        ScaledFormat):
            raise ValueError(f"{where}: real-scaled formats need a per-row requantization")
        elif self.shift < 0:
            raise ValueError(f"{where}: output frac {self.output_format.frac} is finer than "
                             f"the accumulator's ({self.accumulator_frac}); shift would be "
                             f"{self.shift}")

    @property
    def in_features(self) -> int:
        return self.codes.shape[1]

    @property
    def out_features(self) -> int:
        return self.codes.shape[0]

    @property
    def accumulator_frac(self) -> int:
        return self.input_format.frac + self.weight_format.frac

    @property
    def shift(self) -> int:
        """The requantize shift from the accumulator's scale to the output format (with
        ``requant``: the largest row's)."""
        if self.requant is not None:
            return int(self.requant.shift.max(initial=0))
        return self.accumulator_frac - self.output_format.frac

    def row_requant(self) -> RowRequant:
        """This layer's requantization per row: ``requant``, or the power-of-two case (every
        multiplier 1, the layer's shift, half up, the activation width's range, from 0 with
        ReLU)."""
        if self.requant is not None:
            if self.relu and self.requant.low < 0:
                return RowRequant(self.requant.multiplier, self.requant.shift,
                                  self.requant.rounding, self.requant.half_even, 0,
                                  max(self.requant.high, 0))
            return self.requant
        fmt = self.output_format
        return RowRequant.power_of_two(self.out_features, self.shift,
                                       0 if self.relu else fmt.min, fmt.max)

    def power_of_two_form(self) -> tuple[int, bool] | None:
        """``(shift, relu)`` when this layer's requantization is the power-of-two write-back's
        (every multiplier 1, one shift, half up, the activation width's range, from 0 for
        ReLU), which an engine without ``multiplier_bits`` runs; else None."""
        if self.requant is None:
            return self.shift, self.relu
        rows, fmt = self.row_requant(), self.output_format
        shift = int(rows.shift[0]) if rows.shift.size else 0
        relu = rows.low == 0
        if rows.low not in (0, -(1 << (fmt.bits - 1))) or rows.high != (1 << (fmt.bits - 1)) - 1:
            return None
        expected = RowRequant.power_of_two(self.out_features, shift, rows.low, rows.high)
        same = all(np.array_equal(getattr(rows, name), getattr(expected, name))
                   for name in ("multiplier", "shift", "rounding", "half_even"))
        return (shift, relu) if same else None

    @property
    def weights(self) -> np.ndarray:
        """The decoded integer weights, out x in."""
        return self.codebook.astype(np.int64)[self.codes]

    @property
    def nnz(self) -> int:
        return int(np.count_nonzero(self.codes))

    def forward(self, x: np.ndarray) -> np.ndarray:
        acc = np.asarray(x, dtype=np.int64) @ self.weights.T
        rows = self.row_requant()
        return requantize_rows(acc, self.bias, rows.multiplier, rows.shift, rows.low,
                               rows.high, rounding=rows.rounding, half_even=rows.half_even)


@dataclass(frozen=True, eq=False)
class QuantizedNetwork:
    """The integer network: the compress stage's output and the compiler's input."""
    layers: tuple[QuantizedLinear, ...]

    def __post_init__(self):
        if not self.layers:
            raise ValueError("a quantized network needs at least one layer")
        for before, after in zip(self.layers, self.layers[1:]):
            if before.out_features != after.in_features:
                raise ValueError(f"layer {after.name} takes {after.in_features} inputs but "
                                 f"{before.name} gives {before.out_features}")
            if before.output_format != after.input_format:
                raise ValueError(f"layer {after.name}'s input format {after.input_format} is "
                                 f"not {before.name}'s output format {before.output_format}")

    @property
    def input_format(self) -> FixedFormat:
        return self.layers[0].input_format

    @property
    def output_format(self) -> FixedFormat:
        return self.layers[-1].output_format

    @property
    def act_bits(self) -> int:
        return self.input_format.bits

    def accumulator_bounds(self) -> list[int]:
        """Per layer, the largest |accumulator| any input can produce, rounding constant
        included: what ``acc_bits`` must hold (inputs after a ReLU layer are non-negative).
        With a per-row requantization the rounding constant is added after the multiplier,
        and a real-scaled input's integer range bounds the inputs."""
        bounds = []
        for index, layer in enumerate(self.layers):
            fmt = layer.input_format
            value_range = (fmt.low, fmt.high) if isinstance(fmt, ScaledFormat) else None
            bound = accumulator_bound(layer.weights, layer.bias, fmt.bits,
                                      nonnegative_inputs=index > 0 and self.layers[index - 1].relu,
                                      input_range=value_range)
            bounds.append(bound if layer.requant is not None
                          else bound + (1 << max(0, layer.shift - 1)))
        return bounds

    def quantize_input(self, x) -> np.ndarray:
        """Float inputs, batch x features (or batch x any shape of as many values), to the
        first layer's integers; anything else is refused with an :class:`InputError`."""
        return self.input_format.quantize(check_inputs(x, self.layers[0].in_features))

    def forward(self, x_int: np.ndarray) -> np.ndarray:
        """Integer inputs (batch x in) to integer outputs: the reference semantics."""
        x = np.asarray(x_int, dtype=np.int64)
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def dequantize_output(self, q) -> np.ndarray:
        return self.output_format.dequantize(q)


def check_inputs(x, features: int) -> np.ndarray:
    """``x`` as a float matrix of ``features`` columns (each row flattened), or an
    :class:`InputError` that says what is wrong with it."""
    array = np.asarray(x)
    if array.dtype.kind not in "biuf":
        raise InputError(f"inputs must be numbers, not {array.dtype} values")
    if array.ndim < 2:
        raise InputError(f"inputs must be batch x features (2-D or more), not of shape "
                         f"{array.shape}; one input is x[None]")
    if array.shape[0] == 0:
        raise InputError(f"inputs hold no rows (shape {array.shape})")
    array = array.reshape(len(array), -1).astype(np.float64)
    if array.shape[1] != features:
        raise InputError(f"inputs have {array.shape[1]} features per row, the model takes "
                         f"{features}")
    bad = ~np.isfinite(array)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise InputError(f"inputs hold NaN or infinite values (first at row {row}, feature "
                         f"{column}: {array[row, column]})")
    return array
