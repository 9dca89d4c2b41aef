"""The compiler's IR: a network as a sequence of typed ops, float and quantized.

Three levels, each a frozen dataclass over NumPy arrays:

* :class:`Graph` -- what capture produced from an ``nn.Module`` or an ONNX file: a sequence of
  ops (Linear, Conv, ReLU, BatchNorm, max and average pooling, Flatten, Identity, Softmax) with
  the module path of each.
* :class:`Network` -- the canonical float network the engine can run: Linear and
  :class:`Conv2d` layers with ReLU (and a convolution's max pooling) fused in, everything else
  folded or erased (``compiler/passes.py`` gets there from a Graph).
* :class:`QuantizedNetwork` -- the integer network that compression produces and the compiler
  lowers: per layer a code matrix, a fixed-point codebook, an integer bias and formats, and for
  a model imported with its own quantization (``compiler/quantized``) a per-row requantization
  (:class:`RowRequant`: integer multiplier, shift, rounding, and the layer's output range).
  Its :meth:`QuantizedNetwork.forward` is the reference semantics the golden model and the
  engine must match bit for bit.  A convolution (:class:`QuantizedConv2d`) is a layer whose
  code matrix is its kernel, ``out_channels x (in_channels * kh * kw)``, applied at every
  output position (``compiler/conv.py``).

Activations are flat vectors at every level; a feature map is flattened in PyTorch's order
(channel, row, column), so Flatten is the identity.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field

import numpy as np

from .activations import Function
from .conv import ConvGeometry, Pool, avg_pool_matrix, im2col, max_pool, pair
from .errors import InputError
from .numerics import FixedFormat, ScaledFormat, accumulator_bound, requantize_rows

__all__ = ["ENGINE_ACTIVATIONS", "MAX_LEAK", "InputScaling", "OpKind", "Op", "Graph", "Linear",
           "Conv2d", "Network", "QuantizedLinear", "QuantizedConv2d", "QuantizedNetwork",
           "RowRequant", "SUPPORTED_OPS", "op_geometry", "op_output_shape", "pool_overhang",
           "check_finite", "check_inputs"]


class OpKind(enum.Enum):
    LINEAR = "linear"
    RELU = "relu"
    # ReLU6, Hardtanh, clamp(min, max): attrs low and high (either None: unbounded there); fused
    # into the layer before it as its output range, which the write-back saturates to.
    CLAMP = "clamp"
    # LeakyReLU: attrs slope; fused into the layer before it as its leak (a slope of 2**-leak).
    LEAKY = "leaky"
    # Tanh, GELU, SiLU, ... (attrs function: an activations.Function): fused into the layer
    # before it, which the engine runs with a table of the function's values.
    FUNCTION = "function"
    BATCHNORM = "batchnorm"       # folded into the preceding Linear
    FLATTEN = "flatten"           # erased (inputs are flat vectors)
    IDENTITY = "identity"         # Dropout and Identity: erased at inference
    SOFTMAX = "softmax"           # dropped when last: argmax does not change
    SIGMOID = "sigmoid"           # dropped when last: each output's order is kept
    CONV = "conv"                 # Conv2d: weight out x in x kh x kw, stride, padding
    MAXPOOL = "maxpool"           # fused into the convolution before it
    AVGPOOL = "avgpool"           # folded into the Linear after it, or a convolution of its own
    # A view of the input as a (channels, rows, columns) map (nn.Unflatten, x.view(-1, C, H, W)):
    # capture takes it as the input's map and no Graph holds it.
    RESHAPE = "reshape"


# The largest leak (a leaky ReLU's slope 2**-leak) a layer may have: the descriptor's field.
MAX_LEAK = 15

# What the engine's write-back computes, for the messages that refuse anything else.
ENGINE_ACTIVATIONS = ("the engine's activations are ReLU, LeakyReLU (a slope of 2**-k), "
                      "clamps (ReLU6, Hardtanh) and, with 8-bit activations, elementwise "
                      "functions as tables (Tanh, Sigmoid, GELU, SiLU, ELU, SELU, CELU, "
                      "Softplus, Mish, Hardswish, Hardsigmoid, Softsign, Tanhshrink, "
                      "LogSigmoid)")

SUPPORTED_OPS = ("Linear", "Conv2d and Conv1d (grouped and depthwise too)", "ReLU",
                 "LeakyReLU and PReLU (one slope)", "ReLU6, Hardtanh and clamp",
                 "Tanh, Sigmoid, GELU, SiLU, ELU, SELU, CELU, Softplus, Mish, Hardswish, "
                 "Hardsigmoid, Softsign, Tanhshrink, LogSigmoid (as tables, 8-bit)",
                 "BatchNorm1d", "BatchNorm2d",
                 "MaxPool2d, MaxPool1d and AdaptiveMaxPool (after a convolution)",
                 "AvgPool2d", "AvgPool1d", "AdaptiveAvgPool2d (a size dividing the map)",
                 "AdaptiveAvgPool1d(1)",
                 "Flatten", "Unflatten (first layer only)", "Dropout", "Identity",
                 "ZeroPad2d, ZeroPad1d, F.pad and ONNX Pad of zeros (before a convolution)",
                 "skip connections (x + F(x), or a projection shortcut of Linear layers or 1 x 1 "
                 "convolutions) around Linear layers or convolutions, and a value "
                 "concatenated back (torch.cat([x, F(x)], 1): DenseNet, wide and deep)",
                 "+, -, *, / by a constant (input normalisation)",
                 "Softmax (last layer only)",
                 "a final Sigmoid (dropped: the argmax is the logits')")


@dataclass(frozen=True, eq=False)
class Op:
    """One captured op.  ``params`` holds its arrays (Linear: weight, bias; Conv: weight out x
    in x kh x kw, bias; BatchNorm: mean, var, weight, bias; others: none) and ``attrs`` its
    settings (BatchNorm: eps; Conv: stride, padding, and once fused relu and pool (a
    :class:`~.conv.Pool`); MaxPool: kernel, stride; AvgPool: kernel, stride, padding, or
    ``global``; Softmax: axis, batch first, and ``flatten`` when it normalises that axis and
    every later one together, as ONNX before opset 13 does)."""
    kind: OpKind
    name: str                                   # module path or ONNX node name
    params: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, object] = field(default_factory=dict)


def op_geometry(op: Op, shape: tuple[int, ...]) -> ConvGeometry:
    """The geometry of a CONV op on an input map of ``shape`` (channels, rows, columns)."""
    if len(shape) != 3:
        raise ValueError(f"Conv2d {op.name!r} needs a feature map (channels x rows x "
                         f"columns), not an input of shape {shape}")
    out_channels, in_channels, kh, kw = op.params["weight"].shape
    if in_channels != shape[0]:
        hint = (" (images channels last? x.transpose(0, 3, 1, 2) puts the channels first, "
                "as PyTorch's Conv2d takes them)" if shape[-1] == in_channels else "")
        raise InputError(f"Conv2d {op.name!r} takes {in_channels} channels but its input has "
                         f"{shape[0]}{hint}")
    return ConvGeometry(shape[0], shape[1], shape[2], out_channels, (kh, kw),
                        op.attrs.get("stride", (1, 1)), op.attrs.get("padding", (0, 0)),
                        op.attrs.get("pool"))


def adaptive_window(op: Op, shape: tuple[int, ...]) -> tuple[int, int]:
    """An adaptive average pooling's window on a map of ``shape``: the output size divides
    the map, so every window is the same (PyTorch's windows differ in size otherwise, which
    a pooling of one window size cannot do)."""
    rows, columns = op.attrs["adaptive"]
    if shape[1] % rows or shape[2] % columns:
        raise ValueError(f"adaptive pooling {op.name!r} to {rows}x{columns} on a "
                         f"{shape[1]}x{shape[2]} map: its windows would differ in size; the "
                         f"engine pools where the output size divides the map (or to 1x1)")
    return shape[1] // rows, shape[2] // columns


def _pooling(op: Op, shape: tuple[int, ...]) -> tuple:
    """A pooling op's (kernel, stride, padding) on a map of ``shape``."""
    if len(shape) != 3:
        raise ValueError(f"pooling {op.name!r} needs a feature map (channels x rows x "
                         f"columns), not an input of shape {shape}")
    if op.attrs.get("global"):
        if "square_of" in op.attrs and shape[1] != shape[2]:
            side = "columns" if op.attrs["square_of"] == 3 else "rows"
            raise ValueError(f"pooling {op.name!r} takes a window of the map's {side} on each "
                             f"side (x.size({op.attrs['square_of']})), global pooling only on "
                             f"a square map, not {shape[1]}x{shape[2]}: use "
                             f"F.adaptive_avg_pool2d(x, 1) or a window of numbers")
        return shape[1:], shape[1:], (0, 0)
    if "adaptive" in op.attrs:
        window = adaptive_window(op, shape)
        return window, window, (0, 0)
    kernel = pair(op.attrs["kernel"], "kernel")
    stride = pair(op.attrs.get("stride", kernel), "stride")
    padding = pair(op.attrs.get("padding", 0), "padding")
    if (shape[1] + 2 * padding[0] < kernel[0]) or (shape[2] + 2 * padding[1] < kernel[1]):
        raise ValueError(f"pooling {op.name!r}: a {kernel[0]}x{kernel[1]} window does not fit "
                         f"its {shape[1]}x{shape[2]} input")
    if any(2 * p > k for p, k in zip(padding, kernel)):
        raise ValueError(f"pooling {op.name!r}: padding {padding} is more than half its "
                         f"{kernel[0]}x{kernel[1]} window (a window of padding alone)")
    return kernel, stride, padding


def pool_overhang(op: Op, shape: tuple[int, ...]) -> tuple[int, int]:
    """The rows and columns a pooling in ceil mode (``attrs['ceil_mode']``) reaches past its
    padded map on a map of ``shape``: PyTorch's (and ONNX's) rule keeps a last, partial window
    that starts inside the map or its first padding.  (0, 0) in floor mode, or where ceil mode
    adds no window."""
    if not op.attrs.get("ceil_mode"):
        return 0, 0
    kernel, stride, padding = _pooling(op, shape)
    overhang = []
    for size, k, s, p in zip(shape[1:], kernel, stride, padding):
        windows = -(-(size + 2 * p - k) // s) + 1
        if (windows - 1) * s >= size + p:
            windows -= 1
        overhang.append(max(0, (windows - 1) * s + k - (size + 2 * p)))
    if op.kind is OpKind.AVGPOOL and any(overhang):
        raise ValueError(f"average pooling {op.name!r} in ceil mode on a {shape[1]}x{shape[2]} "
                         f"map adds a partial window, which PyTorch averages over fewer values; "
                         f"the engine's average divides by the window's size: use ceil_mode="
                         f"False (or a map the windows tile)")
    return overhang[0], overhang[1]


def op_output_shape(op: Op, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape an op gives for an input of ``shape`` (a feature map's (channels, rows,
    columns) or a vector's (features,))."""
    if op.kind is OpKind.LINEAR:
        return (op.params["weight"].shape[0],)
    if op.kind is OpKind.CONV:
        return op_geometry(op, shape).out_shape
    if op.kind in (OpKind.MAXPOOL, OpKind.AVGPOOL):
        (kh, kw), (sh, sw), (ph, pw) = _pooling(op, shape)
        eh, ew = pool_overhang(op, shape)
        return (shape[0], (shape[1] + 2 * ph + eh - kh) // sh + 1,
                (shape[2] + 2 * pw + ew - kw) // sw + 1)
    if op.kind is OpKind.FLATTEN:
        return (int(np.prod(shape)),)
    return shape


def _run_op(op: Op, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if op.attrs.get("input_scaling") is not None:
        x = x * op.attrs["input_scaling"][0] + op.attrs["input_scaling"][1]
    if op.kind is OpKind.LINEAR:
        x = x @ op.params["weight"].T.astype(np.float64) + op.params["bias"]
    elif op.kind is OpKind.CONV:
        geometry = op_geometry(op, shape)
        return Conv2d(op.name, op.params["weight"].reshape(geometry.out_channels, -1),
                      op.params["bias"], bool(op.attrs.get("relu")), geometry,
                      clamp=op.attrs.get("clamp"), leak=op.attrs.get("leak", 0),
                      function=op.attrs.get("function")).forward(x)
    elif op.kind is OpKind.BATCHNORM:
        p = op.params
        maps = x.reshape(len(x), shape[0], -1)
        scale = (p["weight"] / np.sqrt(p["var"] + op.attrs["eps"]))[:, None]
        x = ((maps - p["mean"][:, None]) * scale + p["bias"][:, None]).reshape(len(x), -1)
    elif op.kind is OpKind.MAXPOOL:
        kernel, stride, (ph, pw) = _pooling(op, shape)
        eh, ew = pool_overhang(op, shape)
        maps = np.pad(x.reshape(len(x), *shape), ((0, 0), (0, 0), (ph, ph + eh), (pw, pw + ew)),
                      constant_values=-np.inf)
        x = max_pool(Pool(kernel, stride), maps).reshape(len(x), -1)
    elif op.kind is OpKind.AVGPOOL:
        x = x @ avg_pool_matrix(shape, *_pooling(op, shape)).T
    elif op.kind is OpKind.SOFTMAX:
        e = np.exp(x - x.max(axis=1, keepdims=True))
        x = e / e.sum(axis=1, keepdims=True)
    elif op.kind is OpKind.SIGMOID:
        x = 1 / (1 + np.exp(-x))
    if op.kind in (OpKind.RELU,) or op.attrs.get("relu"):
        x = np.maximum(x, 0)
    if op.kind is OpKind.LEAKY:
        x = np.where(x < 0, x * op.attrs["slope"], x)
    if op.kind is OpKind.FUNCTION or op.attrs.get("function") is not None:
        x = op.attrs["function"](x)
    if op.attrs.get("leak"):
        x = np.where(x < 0, np.ldexp(x, -op.attrs["leak"]), x)
    if op.kind is OpKind.CLAMP:
        x = clamped(x, (op.attrs.get("low"), op.attrs.get("high")))
    elif op.attrs.get("clamp") is not None:
        x = clamped(x, op.attrs["clamp"])
    return x


def _only_first_scales(layers) -> None:
    for layer in layers[1:]:
        if layer.input_scaling is not None:
            raise ValueError(f"layer {layer.name}: only the first layer scales the inputs")


def _check_scaling(layer) -> None:
    scaling = layer.input_scaling
    if scaling is not None and (not isinstance(scaling, InputScaling)
                                or scaling.features != layer.in_features):
        raise ValueError(f"layer {layer.name}: input scaling must be an InputScaling of its "
                         f"{layer.in_features} inputs, not {scaling!r}")


def clamped(x: np.ndarray, bounds: tuple[float | None, float | None]) -> np.ndarray:
    """``x`` limited to ``bounds`` (low, high; None leaves that side open)."""
    low, high = bounds
    return np.clip(x, -np.inf if low is None else low, np.inf if high is None else high)


@dataclass(frozen=True, eq=False)
class Graph:
    """A captured network: ops in execution order over a flat input of ``input_size``, which
    is a feature map of ``input_shape`` (channels, rows, columns) for a network with
    convolutions (else None)."""
    ops: tuple[Op, ...]
    input_size: int
    source: str = ""
    input_shape: tuple[int, ...] | None = None

    def run(self, x: np.ndarray) -> np.ndarray:
        """Float64 interpreter, used to check that passes keep the function unchanged."""
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        shape = self.input_shape or (self.input_size,)
        for op in self.ops:
            x = _run_op(op, x, shape)
            shape = op_output_shape(op, shape)
        return x


@dataclass(frozen=True, eq=False)
class InputScaling:
    """A scale and shift per input feature, ``x * scale + shift``, that the host applies to a
    model's inputs before they are quantized: a normalisation in front of the first layer (an
    input BatchNorm, ``(x - mean) / std`` in a forward, a scikit-learn scaler) kept out of the
    first layer's weights, so that the engine's one input format sees features of the sizes
    the model does (docs/numerics.md "Formats")."""
    scale: np.ndarray
    shift: np.ndarray

    def __post_init__(self):
        for name in ("scale", "shift"):
            array = np.asarray(getattr(self, name), dtype=np.float64)
            if array.ndim != 1 or not np.all(np.isfinite(array)):
                raise ValueError(f"input scaling {name} must be a 1-D array of finite numbers")
            object.__setattr__(self, name, array)
        if self.scale.shape != self.shift.shape:
            raise ValueError(f"input scaling of {len(self.scale)} scales and "
                             f"{len(self.shift)} shifts")

    # By value: a model loaded from its .sfm holds equal arrays, not the same ones (the report
    # matches a program to the model it was compiled from by its layers' fields).
    def __eq__(self, other) -> bool:
        return (isinstance(other, InputScaling) and np.array_equal(self.scale, other.scale)
                and np.array_equal(self.shift, other.shift))

    def __hash__(self) -> int:
        return hash((self.scale.tobytes(), self.shift.tobytes()))

    @property
    def features(self) -> int:
        return len(self.scale)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """The scaled inputs (batch x features, float64)."""
        return np.asarray(x, dtype=np.float64) * self.scale + self.shift

    def take(self, columns) -> InputScaling:
        """The scaling of the features ``columns`` only."""
        columns = list(columns)
        return InputScaling(self.scale[columns], self.shift[columns])


@dataclass(frozen=True, eq=False)
class Linear:
    """A fully connected layer ``y = W x + b`` (W is out x in), optionally followed by ReLU or
    a leaky ReLU of slope ``2**-leak``, and by a ``clamp`` to ``(low, high)`` (ReLU6,
    Hardtanh; None leaves a side open)."""
    name: str
    weight: np.ndarray
    bias: np.ndarray
    relu: bool
    clamp: tuple[float | None, float | None] | None = field(default=None, kw_only=True)
    leak: int = field(default=0, kw_only=True)
    # An elementwise activation run as a table (activations.Function), before the clamp.
    function: Function | None = field(default=None, kw_only=True)
    # The first layer's only: the inputs' scaling, applied by Network.forward (not here).
    input_scaling: InputScaling | None = field(default=None, kw_only=True)
    # Made by the passes, not the model (a max pooling's padding, an average pooling): its
    # weights are what it computes, so compression neither prunes nor trains them.
    structural: bool = field(default=False, kw_only=True)
    # The weights the model has for this layer where the matrix holds more entries (a
    # depthwise kernel, zero across channels; an average pooling folded into a Linear, each
    # weight repeated over the window): what the overall sparsity counts.  None: weight.size.
    parameters: int | None = field(default=None, kw_only=True)
    # An average pooling folded into this Linear whose windows tile the map: input feature i
    # holds a copy of the model's weight for pooled feature ``tied_columns[i]``.  Compression
    # keeps the copies equal (pruned and trained as the one weight they are).
    tied_columns: np.ndarray | None = field(default=None, kw_only=True)

    def __post_init__(self):
        _check_scaling(self)
        if self.tied_columns is not None:
            columns = np.asarray(self.tied_columns, dtype=np.int64)
            if columns.shape != (self.weight.shape[1],) or np.any(columns < 0):
                raise ValueError(f"layer {self.name}: tied_columns must give each of the "
                                 f"{self.weight.shape[1]} inputs its pooled feature")
            object.__setattr__(self, "tied_columns", columns)
        if not (isinstance(self.leak, int) and 0 <= self.leak <= MAX_LEAK) or (
                self.leak and self.relu):
            raise ValueError(f"layer {self.name}: leak must be an integer from 0 to "
                             f"{MAX_LEAK}, and 0 with ReLU; not {self.leak!r}")
        if self.function is not None and (not isinstance(self.function, Function)
                                          or self.relu or self.leak):
            raise ValueError(f"layer {self.name}: an activation function is a Function, "
                             f"without ReLU or a leak; not {self.function!r}")
        if self.clamp is not None:
            low, high = self.clamp
            if (low is None and high is None) or not all(
                    bound is None or np.isfinite(bound) for bound in self.clamp) or (
                    low is not None and high is not None and not low < high):
                raise ValueError(f"layer {self.name}: clamp bounds must be finite numbers or "
                                 f"None (open), at least one given, low < high; not "
                                 f"{self.clamp}")
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

    def forward(self, x: np.ndarray, weight: np.ndarray | None = None,
                bias: np.ndarray | None = None) -> np.ndarray:
        """The layer on a batch of flat inputs (float64), with another ``weight`` (out x in)
        and ``bias`` of the same shapes when given (compression tries shared weights)."""
        weight = self.weight if weight is None else weight
        bias = self.bias if bias is None else bias
        y = np.asarray(x, dtype=np.float64).reshape(len(x), -1) @ weight.T.astype(np.float64)
        y = y + bias
        return self.activation(y)

    def activation(self, y: np.ndarray) -> np.ndarray:
        """The layer's ReLU or leaky ReLU (slope ``2**-leak``), then its clamp, on its sums
        ``y``."""
        y = np.maximum(y, 0) if self.relu else y
        if self.leak:
            y = np.where(y < 0, np.ldexp(y, -self.leak), y)
        if self.function is not None:
            y = self.function(y)
        return y if self.clamp is None else clamped(y, self.clamp)


class _MapSizes:
    """A convolution's sizes are its maps' (``geometry``), not its kernel matrix's."""

    @property
    def in_features(self) -> int:
        return self.geometry.in_size

    @property
    def out_features(self) -> int:
        return self.geometry.out_size


@dataclass(frozen=True, eq=False)
class Conv2d(_MapSizes, Linear):
    """A convolution: ``weight`` is its kernel as a matrix, ``out_channels x (in_channels * kh
    * kw)`` (``compiler/conv.py``), applied at every output position of ``geometry``, then the
    bias, ReLU and the geometry's max pooling.  Inputs and outputs are flat maps."""
    geometry: ConvGeometry | None = None

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.geometry, ConvGeometry):
            raise ValueError(f"layer {self.name}: a convolution needs its geometry")
        expected = (self.geometry.out_channels, self.geometry.patch_size)
        if self.weight.shape != expected:
            raise ValueError(f"layer {self.name}: a kernel matrix of {expected} (out x "
                             f"in * kh * kw), not {self.weight.shape}")

    def forward(self, x: np.ndarray, weight: np.ndarray | None = None,
                bias: np.ndarray | None = None) -> np.ndarray:
        g = self.geometry
        weight = self.weight if weight is None else weight
        bias = self.bias if bias is None else bias
        patches = im2col(g, np.asarray(x, dtype=np.float64))
        # batch, position, channel
        y = self.activation(patches @ weight.T.astype(np.float64) + bias)
        maps = y.transpose(0, 2, 1).reshape(len(y), g.out_channels, g.conv_height,
                                            g.conv_width)
        return max_pool(g.pool, maps).reshape(len(y), -1)


@dataclass(frozen=True, eq=False)
class Network:
    """The canonical float network: a chain of :class:`Linear` and :class:`Conv2d` layers with
    fused ReLU (and max pooling)."""
    layers: tuple[Linear, ...]
    source: str = ""

    def __post_init__(self):
        if not self.layers:
            raise ValueError("a network needs at least one Linear layer")
        for before, after in zip(self.layers, self.layers[1:]):
            if before.out_features != after.in_features:
                raise ValueError(f"layer {after.name} takes {after.in_features} inputs but "
                                 f"{before.name} gives {before.out_features}")
        _only_first_scales(self.layers)

    @property
    def input_size(self) -> int:
        return self.layers[0].in_features

    @property
    def output_size(self) -> int:
        return self.layers[-1].out_features

    @property
    def input_scaling(self) -> InputScaling | None:
        return self.layers[0].input_scaling

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        if self.input_scaling is not None:
            x = self.input_scaling.apply(x)
        for layer in self.layers:
            x = layer.forward(x)
        return x


@dataclass(frozen=True, eq=False)
class RowRequant:
    """A layer's per-row requantization (``numerics.requantize_rows``): row ``i``'s output is
    ``clamp(((acc_i + bias_i) * multiplier[i] + rounding[i]) >> shift[i], low, high)``, a tie
    going to the even neighbour where ``half_even[i]``.  ``rounding[i]`` (``0 <= rounding <
    |multiplier|`` or 0) carries the part of the row's offset finer than one accumulator step
    (a float bias, a folded BatchNorm); ``low .. high`` is the layer's output range (ReLU
    included: ``low >= 0``); ``leak`` (power-of-two rows only) shifts a negative ``r`` right
    by that many bits more before the clamp: a leaky ReLU of slope ``2**-leak``."""
    multiplier: np.ndarray
    shift: np.ndarray
    rounding: np.ndarray
    half_even: np.ndarray
    low: int
    high: int
    leak: int = field(default=0, kw_only=True)
    # An activation's table (power-of-two rows only): the output for each requantized value
    # r of the activation width, at r + 2**(bits-1) (docs/numerics.md "Activations as tables").
    table: np.ndarray | None = field(default=None, kw_only=True)

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
        if not (isinstance(self.leak, int) and 0 <= self.leak <= MAX_LEAK):
            raise ValueError(f"leak must be an integer from 0 to {MAX_LEAK}, not {self.leak!r}")
        if self.table is not None:
            table = np.asarray(self.table)
            size = len(table)
            if (table.ndim != 1 or table.dtype.kind not in "iu" or size < 4
                    or size & (size - 1) or self.leak
                    or (self.low, self.high) != (-(size >> 1), (size >> 1) - 1)
                    or table.min() < self.low or table.max() > self.high):
                raise ValueError("an activation table is 2**bits integers of bits-wide "
                                 "values, one for each bits-wide value, without a leak")
            object.__setattr__(self, "table", table.astype(np.int64))

    @classmethod
    def power_of_two(cls, rows: int, shift: int, low: int, high: int, *,
                     leak: int = 0, table: np.ndarray | None = None) -> RowRequant:
        """Today's requantization as rows: every multiplier 1, the layer's shift, half up."""
        return cls(np.ones(rows, np.int64), np.full(rows, shift, np.int64),
                   np.where(shift > 0, 1 << max(shift - 1, 0), 0) * np.ones(rows, np.int64),
                   np.zeros(rows, bool), low, high, leak=leak, table=table)

    def apply(self, acc: np.ndarray, bias: np.ndarray) -> np.ndarray:
        """The rows' outputs for accumulators ``acc`` (..., rows) and biases."""
        r = requantize_rows(acc, bias, self.multiplier, self.shift, self.low, self.high,
                            rounding=self.rounding, half_even=self.half_even, leak=self.leak)
        return r if self.table is None else self.table[r - self.low]

    @property
    def power_of_two_shift(self) -> int | None:
        """The layer's one shift when these rows are the power-of-two form (every multiplier
        1, one shift, half up), else None."""
        shift = int(self.shift[0]) if self.shift.size else 0
        expected = RowRequant.power_of_two(len(self.shift), shift, self.low, self.high)
        same = all(np.array_equal(getattr(self, name), getattr(expected, name))
                   for name in ("multiplier", "shift", "rounding", "half_even"))
        return shift if same else None

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
    # The first layer's only: the inputs' scaling, which QuantizedNetwork.quantize_input
    # applies before quantizing (the host's work, not the engine's).
    input_scaling: InputScaling | None = field(default=None, kw_only=True)
    # The activation function whose table ``requant.table`` is (for people: the table is the
    # definition).
    function: Function | None = field(default=None, kw_only=True)

    def __post_init__(self):
        _check_scaling(self)
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
            if self.relu and self.requant.low < 0 and self.requant.table is None:
                return dataclasses.replace(self.requant, low=0, high=max(self.requant.high, 0))
            return self.requant
        fmt = self.output_format
        return RowRequant.power_of_two(self.codes.shape[0], self.shift,
                                       0 if self.relu else fmt.min, fmt.max)

    def power_of_two_form(self) -> tuple[int, bool] | None:
        """``(shift, relu)`` when this layer's requantization is the power-of-two write-back's
        (every multiplier 1, one shift, half up, the activation width's range, from 0 for
        ReLU, no leak), which an engine without ``multiplier_bits`` runs; else None."""
        if self.requant is None:
            return self.shift, self.relu
        form = self.activation_form()
        fmt = self.output_format
        if form is None or form[3] or form[1] not in (0, -(1 << (fmt.bits - 1))) \
                or form[2] != (1 << (fmt.bits - 1)) - 1:
            return None
        return form[0], form[1] == 0

    def activation_text(self) -> str:
        """The layer's activation as a person reads it: ``ReLU``, ``leaky 2**-3``, ``none``,
        and an output range narrower than the activations' in real numbers (``ReLU, clamp
        0 .. 6``); a model's per-row requantization by its range."""
        form = self.activation_form()
        fmt = self.output_format
        rows = self.row_requant()
        low, high, leak = (rows.low, rows.high, rows.leak) if form is None else form[1:]
        if rows.table is not None:
            return f"{self.function or 'function'} (table)"
        kind = f"leaky 2**-{leak}" if leak else "ReLU" if low == 0 else "none"
        if (low in (0, fmt.min)) and high == fmt.max:
            return kind
        if isinstance(fmt, FixedFormat):
            bounds = f"{float(fmt.dequantize(low)):g} .. {float(fmt.dequantize(high)):g}"
        else:
            bounds = f"{low} .. {high} (integers)"
        return f"{kind}, clamp {bounds}" if kind != "none" else f"clamp {bounds}"

    @property
    def table(self) -> np.ndarray | None:
        """The activation's table (``RowRequant.table``), or None."""
        return None if self.requant is None else self.requant.table

    def activation_form(self) -> tuple[int, int, int, int] | None:
        """``(shift, low, high, leak)`` when this layer's requantization is the power-of-two
        write-back's with any output range and leak (``EngineConfig.layer_activation``);
        else None (per-row scales)."""
        if self.requant is None:
            fmt = self.output_format
            return self.shift, 0 if self.relu else fmt.min, fmt.max, 0
        rows = self.row_requant()
        shift = rows.power_of_two_shift
        return None if shift is None else (shift, rows.low, rows.high, rows.leak)

    @property
    def weights(self) -> np.ndarray:
        """The decoded integer weights, out x in."""
        return self.codebook.astype(np.int64)[self.codes]

    @property
    def nnz(self) -> int:
        return int(np.count_nonzero(self.codes))

    def forward(self, x: np.ndarray) -> np.ndarray:
        acc = np.asarray(x, dtype=np.int64) @ self.weights.T
        return self.row_requant().apply(acc, self.bias)


@dataclass(frozen=True, eq=False)
class QuantizedConv2d(_MapSizes, QuantizedLinear):
    """A convolution of the integer network: ``codes`` is its kernel matrix, ``out_channels x
    (in_channels * kh * kw)`` (``compiler/conv.py``), applied at every output position of
    ``geometry``; each position's outputs are requantized as a :class:`QuantizedLinear`'s
    rows are, then the geometry's max pooling takes the largest of each window.  Inputs and
    outputs are flat maps (``in_features``, ``out_features``: their sizes)."""
    geometry: ConvGeometry | None = None

    def __post_init__(self):
        if not isinstance(self.geometry, ConvGeometry):
            raise ValueError(f"layer {self.name}: a convolution needs its geometry")
        expected = (self.geometry.out_channels, self.geometry.patch_size)
        if self.codes.shape != expected:
            raise ValueError(f"layer {self.name}: codes of shape {self.codes.shape}, not the "
                             f"kernel matrix's {expected} (out x in * kh * kw)")
        super().__post_init__()

    def forward(self, x: np.ndarray) -> np.ndarray:
        g = self.geometry
        patches = im2col(g, np.asarray(x, dtype=np.int64))
        acc = (patches @ self.weights.T).reshape(-1, g.out_channels)
        y = self.row_requant().apply(acc, self.bias)
        maps = y.reshape(len(x), g.positions, g.out_channels).transpose(0, 2, 1)
        maps = maps.reshape(len(x), g.out_channels, g.conv_height, g.conv_width)
        return max_pool(g.pool, maps).reshape(len(x), -1)


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
        _only_first_scales(self.layers)

    @property
    def input_scaling(self) -> InputScaling | None:
        return self.layers[0].input_scaling

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

    @property
    def input_map_shape(self) -> tuple[int, int, int] | None:
        """(channels, rows, columns) of the input map when the first layer is a
        convolution, else None."""
        first = self.layers[0]
        if isinstance(first, QuantizedConv2d):
            g = first.geometry
            return (g.in_channels, g.height, g.width)
        return None

    def quantize_input(self, x) -> np.ndarray:
        """Float inputs, batch x features (or batch x any shape of as many values; maps of a
        convolutional network in its channels, rows, columns order), to the first layer's
        integers; anything else is refused with an :class:`InputError`."""
        x = check_inputs(x, self.layers[0].in_features, self.input_map_shape)
        if self.input_scaling is not None:
            x = self.input_scaling.apply(x)
        return self.input_format.quantize(x)

    def forward(self, x_int: np.ndarray) -> np.ndarray:
        """Integer inputs (batch x in) to integer outputs: the reference semantics."""
        x = np.asarray(x_int, dtype=np.int64)
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def dequantize_output(self, q) -> np.ndarray:
        return self.output_format.dequantize(q)


def check_inputs(x, features: int, map_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``x`` as a float matrix of ``features`` columns (each row flattened), or an
    :class:`InputError` that says what is wrong with it.  With ``map_shape`` (a
    convolutional network's input map: channels, rows, columns) a batch of maps must have
    that shape: the same values in another layout (channels last) would flatten to the
    same width and give wrong answers silently."""
    array = np.asarray(x)
    if array.dtype.kind not in "biuf":
        raise InputError(f"inputs must be numbers, not {array.dtype} values")
    if array.ndim < 2:
        raise InputError(f"inputs must be batch x features (2-D or more), not of shape "
                         f"{array.shape}; one input is x[None]")
    signal = None if map_shape is None or map_shape[1] != 1 else (map_shape[0], map_shape[2])
    if signal is not None and array.ndim == 3 and tuple(array.shape[1:]) != signal:
        # A 1-D network's signal, given as batch x channels x samples.
        hint = (" (channels last? x.transpose(0, 2, 1) puts them first)"
                if tuple(array.shape[1:]) == signal[::-1] else "")
        raise InputError(f"inputs are of shape {tuple(array.shape[1:])}, the model takes "
                         f"signals of {signal[0]} channels x {signal[1]} samples{hint}")
    if (map_shape is not None and array.ndim == len(map_shape) + 1
            and tuple(array.shape[1:]) != tuple(map_shape)):
        hint = (" (channels last? x.transpose(0, 3, 1, 2) puts them first)"
                if sorted(array.shape[1:]) == sorted(map_shape) else "")
        if signal is not None and tuple(array.shape[1:]) == (1, *signal):
            hint = (f" (signals of {signal[0]} channels x {signal[1]} samples: x[:, 0] drops "
                    f"the extra axis)")
        raise InputError(f"inputs are maps of shape {tuple(array.shape[1:])}, the model takes "
                         f"maps of {tuple(map_shape)} (channels, rows, columns){hint}")
    if array.shape[0] == 0:
        raise InputError(f"inputs hold no rows (shape {array.shape})")
    array = array.reshape(len(array), -1).astype(np.float64)
    if array.shape[1] != features:
        raise InputError(f"inputs have {array.shape[1]} features per row, the model takes "
                         f"{features}")
    check_finite(array, "inputs hold")
    return array


def check_finite(array: np.ndarray, what: str) -> None:
    """Refuse a samples x features ``array`` holding NaN or infinite values, naming the
    first: ``"<what> NaN or infinite values (first at row r, feature c: value)"``."""
    bad = ~np.isfinite(array)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise InputError(f"{what} NaN or infinite values (first at row {row}, feature "
                         f"{column}: {array[row, column]})")
