"""Network capture: an ``nn.Module`` or an ONNX file as a :class:`Graph` of typed ops.

Modules are walked in execution order: ``nn.Sequential`` (nested to any depth) child by child,
a leaf module of a known type as one op (the table :func:`_module_handlers`), and any other
container with ``torch.fx`` (its forward must be a chain: each op takes one value computed
before it, and two values meet only in a skip connection's sum). Parameters are read as
evaluation mode sees them: BatchNorm's running statistics, and for a model pruned with
``torch.nn.utils.prune`` the effective ``weight_orig * weight_mask``. ONNX graphs are read with
the ``onnx`` package: Gemm (``transB``, ``alpha``, ``beta``), MatMul followed by Add, Conv,
MaxPool, AveragePool, GlobalAveragePool, Relu, Flatten/Reshape to a vector, BatchNormalization,
Dropout/Identity and a final Softmax; an Identity that reads an initializer or a Constant
(``torch.onnx.export`` reads a deduplicated initializer's copies through one) is that constant
under another name.
Anything else is refused with :class:`UnsupportedLayerError` naming the module path (or node
name), its type, and what is supported (``ir.SUPPORTED_OPS``); a supported layer with a
setting the engine does not run (a dilated or asymmetrically padded convolution, an average
pooling in ceil mode that adds a partial window)
with :class:`UnsupportedSettingError` naming the setting and its value.

A skip connection (a sum of the chain's last output and an earlier one, ``x + F(x)``, or an
ONNX ``Add`` of the two) is marked where it leaves and where it is added back, in whichever
module it was traced, and ``residual.merge_skip_connections`` carries it through the block as
extra rows, which makes the chain the rest of the compiler runs.

A grouped convolution (depthwise: ``groups == in_channels``) is captured as the ordinary
convolution it equals: a kernel that is zero between groups, which the sparse engine never
stores.

A network with convolutions needs its input's shape (channels, rows, columns): an ONNX graph
states it; for an ``nn.Module`` pass ``input_shape`` (``sf.compress`` takes it from data
shaped batch x channels x rows x columns).

Every captured graph is checked (:func:`check_graph`): a Linear whose ``in_features`` does not
match what reaches it is an error naming both, NaN or infinite parameters are refused, and so
is a Softmax or LogSoftmax over any axis but each sample's outputs (``nn.Softmax(dim=0)``
normalises over the batch: dropping it as the class softmax would change the predictions).
"""

from __future__ import annotations

import collections
import functools
import math
from pathlib import Path

import numpy as np

from .errors import InputError
from .activations import Function
from .onnx_activations import FUNCTION_DOMAIN, function_regions
from .ir import ENGINE_ACTIVATIONS, SUPPORTED_OPS, Graph, Op, OpKind, op_output_shape
from .residual import is_shortcut, merge_skip_connections, source_marker, sum_marker

__all__ = ["SWAPPABLE_ACTIVATIONS", "SWAP_HINT", "UnsupportedLayerError", "UnsupportedSettingError",
           "capture", "capture_module", "capture_onnx", "check_graph", "is_swappable_activation"]

_SPATIAL = (OpKind.CONV, OpKind.MAXPOOL, OpKind.AVGPOOL)


# Activations besides the engine's own (ReLU, a leaky ReLU, clamps), as module and function
# names in lower case without underscores: the ones swap_activations replaces by ReLU.  Most
# run as tables (activations.py) with 8-bit activations; where they do not (a PReLU per
# channel, RReLU, 16-bit activations) their refusal says how to have ReLU in their place.
SWAPPABLE_ACTIVATIONS = {"prelu", "rrelu", "elu", "selu", "celu", "gelu", "silu",
                         "swish", "mish", "tanh", "sigmoid", "hardswish",
                         "hardsigmoid", "softplus", "softsign", "logsigmoid", "tanhshrink"}


def is_swappable_activation(kind: str) -> bool:
    """Whether a layer, function or ONNX op named ``kind`` is an activation besides the
    engine's own, which swap_activations replaces (:data:`SWAPPABLE_ACTIVATIONS`, compared
    without case and underscores)."""
    return kind.lower().replace("_", "") in SWAPPABLE_ACTIVATIONS


SWAP_HINT = (f"{ENGINE_ACTIVATIONS}: build the model with nn.ReLU in its place and train it "
             f"again, or let compress swap it and retrain (sf.compress(..., "
             f"swap_activations=True), --swap-activations)")


class UnsupportedLayerError(InputError):
    """A layer the engine cannot run; the message names it and lists what is supported."""

    def __init__(self, where: str, kind: str, hint: str | None = None):
        # hint: what to do instead; by default, for an activation the engine does not have,
        # how to have ReLU in its place.
        if hint is None and is_swappable_activation(kind):
            hint = SWAP_HINT
        super().__init__(f"{where} cannot run on the engine ({kind}); supported: "
                         f"{', '.join(SUPPORTED_OPS)}" + (f"; {hint}" if hint else ""))
        self.where, self.kind = where, kind


class UnsupportedSettingError(InputError):
    """A supported layer with a setting the engine does not run; the message names the layer,
    the setting, its value and what is supported."""

    def __init__(self, where: str, kind: str, setting: str, value, supported: str):
        super().__init__(f"{where} ({kind}) has {setting} {value}, which the engine does not "
                         f"run; {supported}")
        self.where, self.kind, self.setting = where, kind, setting


def capture(model, input_shape=None) -> Graph:
    """Capture an ``nn.Module``, an ONNX model (a file given by its path, ``.onnx``, or an
    ``onnx.ModelProto``) or a scikit-learn MLP (``sklearn_capture.py``).
    ``input_shape`` (channels, rows, columns) is a module's input map, which a network with
    convolutions needs (an ONNX file states its own)."""
    if type(model).__name__ == "ModelProto" and type(model).__module__.startswith("onnx"):
        return capture_onnx(model)
    if isinstance(model, (str, Path)):
        path = Path(model)
        if path.suffix.lower() != ".onnx":
            raise ValueError(f"{path}: capture reads ONNX files (.onnx); for a PyTorch "
                             f"checkpoint build the module and pass it")
        return capture_onnx(path)
    from .sklearn_capture import capture_sklearn, is_sklearn_model

    if is_sklearn_model(model):
        return capture_sklearn(model)
    import torch

    if isinstance(model, torch.nn.Module):
        _refuse_brevitas(model)
        return capture_module(model, input_shape)
    raise TypeError(f"capture takes an nn.Module, a path to an ONNX file or a scikit-learn "
                    f"MLP, not {type(model).__name__}")


def check_graph(ops, input_size: int, source: str = "", input_shape=None) -> Graph:
    """The Graph of ``ops`` over ``input_size`` inputs (a map of ``input_shape``, channels x
    rows x columns, when given), after checking it: every Linear, convolution, pooling and
    BatchNorm gets the shape it expects (Flatten makes a vector; ReLU, Identity and Softmax
    keep the shape), a Linear takes a vector (a Flatten after a map), a Softmax normalises each
    sample's outputs (its ``axis`` attribute), and no parameter holds NaN or infinity."""
    if input_shape is not None:
        input_shape = tuple(int(d) for d in input_shape)
        if len(input_shape) != 3 or min(input_shape) < 1 or np.prod(input_shape) != input_size:
            raise ValueError(f"the input shape must be (channels, rows, columns) of "
                             f"{input_size} values, not {input_shape}")
    shape, produced_by = input_shape or (input_size,), "the input"
    kept = []
    for op in ops:
        if op.kind is OpKind.IDENTITY and ("sample" in op.attrs or "pad_channels" in op.attrs):
            what = ("sampling" if "sample" in op.attrs else "channel padding")
            raise UnsupportedLayerError(f"{op.name!r}", what, f"{what} is supported in a skip "
                                        f"connection's shortcut (ResNet's option A: "
                                        f"F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p)))")
        if op.kind is OpKind.RESHAPE:
            target = _as_map(op.attrs["shape"])
            size = int(np.prod(shape))
            known = int(np.prod([d for d in target if d != -1]))
            if -1 in target and size % known == 0:
                target = tuple(size // known if d == -1 else d for d in target)
            if target != tuple(shape):
                raise UnsupportedLayerError(
                    f"layer {op.name!r} (a view of {produced_by}'s "
                    f"{' x '.join(map(str, shape))} map as "
                    f"{' x '.join(map(str, op.attrs['shape']))}: "
                    f"the engine keeps each map's layout; a view that makes the input a map "
                    f"is supported before the first layer, and one that makes a vector is a "
                    f"Flatten)", "view")
            continue                                    # a view that changes nothing
        kept.append(op)
        for name, values in op.params.items():
            if not np.all(np.isfinite(values)):
                raise ValueError(f"{op.kind.value} {op.name!r}: {name} holds NaN or infinite "
                                 f"values")
        if op.kind is OpKind.LINEAR:
            weight = op.params["weight"]
            if weight.ndim != 2:
                raise ValueError(f"Linear {op.name!r}: weight must be 2-D, not {weight.shape}")
            if 0 in weight.shape:
                raise InputError(f"Linear {op.name!r} has shape {weight.shape} (out x in): a "
                                 f"layer without inputs or outputs cannot run")
            if len(shape) != 1:
                raise ValueError(f"Linear {op.name!r} follows {produced_by}'s feature map "
                                 f"{shape} without a Flatten")
            if weight.shape[1] != shape[0]:
                raise ValueError(f"Linear {op.name!r} takes {weight.shape[1]} inputs but "
                                 f"{produced_by} gives {shape[0]}")
            if op.params["bias"].shape != (weight.shape[0],):
                raise ValueError(f"Linear {op.name!r}: bias shape {op.params['bias'].shape} "
                                 f"does not match {weight.shape[0]} outputs")
        elif op.kind is OpKind.BATCHNORM:
            if "mean" not in op.params:        # arithmetic by a constant, as written
                op = kept[-1] = _per_channel(op, shape, produced_by)
            for name, values in op.params.items():
                if values.shape != (shape[0],):
                    raise ValueError(f"BatchNorm {op.name!r} has {name} of shape "
                                     f"{values.shape} but {produced_by} gives {shape[0]} "
                                     f"{'channels' if len(shape) == 3 else 'features'}")
        elif op.kind is OpKind.CONV:
            weight = op.params["weight"]
            if weight.ndim != 4 or op.params["bias"].shape != (weight.shape[0],):
                raise ValueError(f"Conv2d {op.name!r}: weight {weight.shape} and bias "
                                 f"{op.params['bias'].shape} are not out x in x kh x kw and "
                                 f"out")
        elif op.kind is OpKind.SOFTMAX:
            _check_softmax(op, shape)
        elif op.kind is OpKind.FLATTEN and op.attrs.get("squeeze") and len(shape) == 3 \
                and shape[1:] != (1, 1):
            raise InputError(f"{op.name!r} squeezes {produced_by}'s "
                             f"{' x '.join(map(str, shape))} map, whose rows and columns are "
                             f"not 1: a squeeze is supported after a global pooling (a 1 x 1 "
                             f"map); flatten with torch.flatten(x, 1)")
        elif op.kind in _SPATIAL and len(shape) != 3:
            raise ValueError(f"{op.kind.value} {op.name!r} needs a feature map but "
                             f"{produced_by} gives a vector of {shape[0]}")
        try:
            shape = op_output_shape(op, shape)
        except ValueError as error:
            raise InputError(f"{error} (after {produced_by})") from None
        if op.kind in (OpKind.LINEAR, OpKind.CONV, OpKind.MAXPOOL, OpKind.AVGPOOL):
            produced_by = f"{op.name!r}"
    # A Sigmoid is dropped where it ends a classifier (passes.drop_final_softmax); inside the
    # network it is an activation function like Tanh, which the engine runs as a table.
    for index, op in enumerate(kept):
        if op.kind is OpKind.SIGMOID and any(later.kind is not OpKind.SOFTMAX
                                             for later in kept[index + 1:]):
            kept[index] = Op(OpKind.FUNCTION, op.name, {}, {"function": Function("sigmoid")})
    return Graph(tuple(kept), input_size, source, input_shape)


def _per_channel(op: Op, shape: tuple[int, ...], produced_by: str) -> Op:
    """An elementwise affine op (:func:`_affine`) as a BatchNorm of one scale and shift per
    feature of a vector or per channel of a map (``shape``), the form the passes fold; its
    constant must be one value, or one per feature (``(F,)``) or channel (``(C, 1, 1)``, a
    1-D signal's ``(C, 1)``)."""
    channels = shape[0]

    def spread(written: np.ndarray) -> np.ndarray:
        value = written
        while value.ndim > len(shape) and value.shape[0] == 1:      # the batch's axis
            value = value[0]
        if value.size == 1:
            return np.full(channels, float(value.reshape(-1)[0]))
        if len(shape) == 1 and value.shape == (channels,):
            return value
        if len(shape) == 3 and value.ndim in (2, 3) and value.shape[0] == channels \
                and all(d == 1 for d in value.shape[1:]):
            return value.reshape(-1)
        each, form = (("feature", f"({channels},)") if len(shape) == 1
                      else ("channel", f"({channels}, 1, 1)"))
        raise InputError(f"{op.name!r} ({op.attrs['elementwise']} by a constant of shape "
                         f"{written.shape}) after {produced_by}, whose output is "
                         f"{' x '.join(map(str, shape))}: an elementwise constant is "
                         f"supported as one number or one per {each}, shape {form}")

    scale, shift = (spread(op.params[name]) for name in ("weight", "bias"))
    return Op(OpKind.BATCHNORM, op.name, {"weight": scale, "bias": shift,
                                          "mean": np.zeros(channels), "var": np.ones(channels)},
              {"eps": 0.0, "elementwise": op.attrs["elementwise"]})


def _check_softmax(op: Op, shape: tuple[int, ...]) -> None:
    """A Softmax (or LogSoftmax) must normalise all of each sample's outputs together: only
    that one leaves every sample's largest output where it is, so that the passes may drop
    it at the end.  Over the batch axis it mixes the samples, over a feature map's channels
    it is one softmax per position; either can change the prediction."""
    ndim = len(shape) + 1                       # the tensor's axes, the batch first
    axis, flatten = int(op.attrs.get("axis", 1)), bool(op.attrs.get("flatten"))
    names = (["the batch", "the classes"] if ndim == 2 else
             ["the batch", "the channels at each position", "the rows", "the columns"])
    if -ndim <= axis < ndim:
        if axis % ndim == 1 and (ndim == 2 or flatten):
            return
        # ONNX before opset 13 normalises the axis and every later one together
        over = names[axis % ndim:] if flatten else names[axis % ndim:axis % ndim + 1]
        span = f"over {' and '.join(over)}"
    else:
        span = f"not an axis of a {ndim}-D tensor"
    dims = " x ".join(["batch", *(str(d) for d in shape)])
    raise UnsupportedSettingError(f"layer {op.name!r}", "Softmax", "axis",
                                  f"{axis} ({span}; its input is {dims})",
                                  "a final Softmax or LogSoftmax is dropped only over each "
                                  "sample's classes (dim=1 or dim=-1 of a batch x classes "
                                  "output), where it keeps the prediction")


# ---- PyTorch ----------------------------------------------------------------------------------

def _array(tensor) -> np.ndarray:
    return tensor.detach().cpu().to(dtype=tensor.dtype).numpy().astype(np.float64)


def _effective(module, name: str) -> np.ndarray | None:
    """A parameter as the module computes with it: ``torch.nn.utils.prune`` keeps
    ``<name>_orig`` and ``<name>_mask`` and recomputes ``<name>`` only in a forward pre-hook,
    so after training ``module.weight`` can be stale; the product never is."""
    original = getattr(module, f"{name}_orig", None)
    mask = getattr(module, f"{name}_mask", None)
    if original is not None and mask is not None:
        return _array(original) * _array(mask)
    value = getattr(module, name, None)
    return None if value is None else _array(value)


@functools.cache
def _module_handlers():
    """Leaf module type -> function(module, path) -> ops.  Exact types: a subclass may
    override ``forward``, so it is traced instead."""
    from torch import nn

    def linear(module, name):
        bias = _effective(module, "bias")
        return [Op(OpKind.LINEAR, name, {
            "weight": _effective(module, "weight"),
            "bias": bias if bias is not None else np.zeros(module.out_features)})]

    def batchnorm(module, name):
        if module.running_mean is None or module.running_var is None:
            kind = type(module).__name__
            raise UnsupportedLayerError(f"layer {name!r} ({kind} without running "
                                        f"statistics, track_running_stats=False)", kind)
        features = module.num_features
        weight = _effective(module, "weight") if module.affine else np.ones(features)
        bias = _effective(module, "bias") if module.affine else np.zeros(features)
        return [Op(OpKind.BATCHNORM, name,
                   {"mean": _array(module.running_mean), "var": _array(module.running_var),
                    "weight": weight, "bias": bias}, {"eps": float(module.eps)})]

    def simple(kind):
        return lambda module, name: [Op(kind, name)]

    def unflatten(module, name):
        size = tuple(module.unflattened_size)
        if module.dim not in (1, -1) or len(size) not in (2, 3):
            raise UnsupportedSettingError(
                f"layer {name!r}", "Unflatten", "dim and unflattened_size",
                f"{module.dim} and {size}", "a vector made a (channels, rows, columns) map, "
                "Unflatten(1, (C, H, W)), or a (channels, length) signal, Unflatten(1, (C, "
                "L)), is supported as the network's first layer")
        return [Op(OpKind.RESHAPE, name, {}, {"shape": size})]

    def clamp(module, name):
        # An infinite bound (a one-sided clamp as a Hardtanh) is an open side.
        low, high = float(module.min_val), float(module.max_val)
        return [Op(OpKind.CLAMP, name, {}, {"low": low if math.isfinite(low) else None,
                                            "high": high if math.isfinite(high) else None})]

    def function(kind, *settings):
        # GELU's `approximate` is "none" or "tanh"; the others' settings are numbers.
        def capture(module, name):
            given = {setting: getattr(module, setting) for setting in settings}
            if "approximate" in given:
                given = {"tanh": float(given.pop("approximate") == "tanh")}
            return [Op(OpKind.FUNCTION, name, {}, {"function": Function.of(kind, **given)})]
        return capture

    def prelu(module, name):
        # One learned slope is a leaky ReLU; a slope per channel the engine does not have.
        if module.num_parameters != 1:
            raise UnsupportedSettingError(
                f"layer {name!r}", "PReLU", "num_parameters", module.num_parameters,
                "one slope for the layer (PReLU()), which runs as a leaky ReLU; the engine "
                "has no slope per channel (swap_activations=True retrains with ReLU)")
        return [Op(OpKind.LEAKY, name, {}, {"slope": float(_effective(module, "weight")[0])})]

    def softmax(module, name):
        return [Op(OpKind.SOFTMAX, name, {}, {"axis": _softmax_dim(module.dim, name)})]

    def pad(module, name):
        return [_padding_op(tuple(module.padding), getattr(module, "value", 0.0), name,
                            type(module).__name__)]

    return {
        nn.Linear: linear,
        nn.Conv2d: _conv_module,
        nn.MaxPool2d: _max_pool_module,
        nn.AvgPool2d: _avg_pool_module,
        nn.AdaptiveAvgPool2d: _adaptive_pool_module,
        nn.AdaptiveMaxPool2d: _adaptive_pool_module,
        nn.AdaptiveMaxPool1d: _pool1d_module,
        nn.Conv1d: _conv1d_module,
        nn.MaxPool1d: _pool1d_module,
        nn.AvgPool1d: _pool1d_module,
        nn.AdaptiveAvgPool1d: _pool1d_module,
        nn.BatchNorm2d: batchnorm,
        nn.ReLU: simple(OpKind.RELU),
        nn.ReLU6: clamp,
        nn.Hardtanh: clamp,
        nn.LeakyReLU: lambda module, name: [Op(OpKind.LEAKY, name, {},
                                               {"slope": float(module.negative_slope)})],
        nn.PReLU: prelu,
        **{module: function(name, *params) for module, name, params in (
            (nn.Tanh, "tanh", ()), (nn.GELU, "gelu", ("approximate",)), (nn.SiLU, "silu", ()),
            (nn.ELU, "elu", ("alpha",)), (nn.SELU, "selu", ()), (nn.CELU, "celu", ("alpha",)),
            (nn.Softplus, "softplus", ("beta", "threshold")), (nn.Mish, "mish", ()),
            (nn.Hardswish, "hardswish", ()), (nn.Hardsigmoid, "hardsigmoid", ()),
            (nn.Softsign, "softsign", ()), (nn.Tanhshrink, "tanhshrink", ()),
            (nn.LogSigmoid, "logsigmoid", ()))},
        nn.BatchNorm1d: batchnorm,
        nn.Flatten: simple(OpKind.FLATTEN),
        nn.Unflatten: unflatten,
        nn.Dropout: simple(OpKind.IDENTITY),
        nn.Dropout1d: simple(OpKind.IDENTITY),
        nn.Dropout2d: simple(OpKind.IDENTITY),
        nn.AlphaDropout: simple(OpKind.IDENTITY),
        nn.Identity: simple(OpKind.IDENTITY),
        nn.Softmax: softmax,
        nn.LogSoftmax: softmax,
        nn.ZeroPad2d: pad,
        nn.ConstantPad2d: pad,
        nn.ZeroPad1d: pad,
        nn.ConstantPad1d: pad,
        nn.Sigmoid: simple(OpKind.SIGMOID),
    }


def _sampling_op(index, name: str) -> Op:
    """``x[:, :, ::s, ::t]`` (ResNet's "option A" shortcut samples every other pixel): an op
    that samples a map with strides ``(s, t)``, which a skip connection's shortcut takes as a
    1 x 1 convolution's stride (``residual._shortcut``); any other indexing is refused."""
    whole = slice(None)
    steps = None
    if isinstance(index, tuple) and len(index) in (3, 4) and index[:2] == (whole, whole) \
            and all(isinstance(i, slice) and i.start in (None, 0) and i.stop is None
                    and (i.step is None or isinstance(i.step, int) and i.step >= 1)
                    for i in index[2:]):
        steps = tuple(i.step or 1 for i in index[2:])
        steps = (1, *steps) if len(steps) == 1 else steps
    if steps is None:
        raise UnsupportedLayerError(f"{name!r} (indexing {index!r})", "getitem",
                                    "indexing is supported as x[:, :, ::s, ::t], a skip "
                                    "connection's shortcut sampling the map")
    return Op(OpKind.IDENTITY, name, {}, {"sample": steps})


def _padding_op(padding: tuple, value, name: str, kind: str) -> Op:
    """A zero padding (``nn.ZeroPad2d``, ``F.pad(x, (left, right, top, bottom))``, an ONNX
    ``Pad``): an identity op holding (top, bottom, left, right), which
    :func:`fold_padding` adds to the convolution after it."""
    if not isinstance(value, (int, float)) or value != 0:
        raise UnsupportedSettingError(f"layer {name!r}", kind, "value", repr(value),
                                      "zero padding before a convolution is supported")
    if len(padding) not in (2, 4) or not all(isinstance(p, int) and p >= 0 for p in padding):
        raise UnsupportedSettingError(f"layer {name!r}", kind, "padding", repr(padding),
                                      "(left, right) of a signal or (left, right, top, "
                                      "bottom) of a map, none negative, is supported")
    left, right, top, bottom = (*padding, 0, 0)[:4]
    return Op(OpKind.IDENTITY, name, {}, {"pad": (top, bottom, left, right), "kind": kind})


def fold_padding(ops: list[Op]) -> list[Op]:
    """Every zero padding (:func:`_padding_op`) added to the padding of the convolution right
    after it, which pads with zeros too; one anywhere else, or one that makes the
    convolution's padding differ between two sides, is refused naming it."""
    out: list[Op] = []
    pending = None
    for op in ops:
        if pending is not None and op.kind is OpKind.IDENTITY and not op.attrs:
            out.append(op)                                  # a Dropout between
            continue
        if pending is not None:
            top, bottom, left, right = pending.attrs["pad"]
            rows, columns = (tuple(op.attrs.get("padding", (0, 0))) if op.kind is OpKind.CONV
                             else (0, 0))
            if op.kind is not OpKind.CONV or top != bottom or left != right:
                raise UnsupportedSettingError(
                    f"layer {pending.name!r}", pending.attrs["kind"], "padding",
                    f"(top {top}, bottom {bottom}, left {left}, right {right})",
                    "a zero padding is supported right before a convolution, the same on "
                    "both sides of each axis (it becomes the convolution's padding)"
                    + ("" if op.kind is OpKind.CONV else f"; {op.name!r} follows it"))
            op = Op(op.kind, op.name, op.params,
                    {**op.attrs, "padding": (rows + top, columns + left)})
            pending = None
        if op.kind is OpKind.IDENTITY and "pad" in op.attrs:
            pending = op
            continue
        out.append(op)
    if pending is not None:
        raise UnsupportedSettingError(f"layer {pending.name!r}", pending.attrs["kind"],
                                      "padding", repr(pending.attrs["pad"]),
                                      "a zero padding is supported right before a "
                                      "convolution (it becomes the convolution's padding)")
    return out


def _softmax_dim(dim, name: str) -> int:
    """A softmax's ``dim`` as an axis; ``None`` is torch's implicit choice, 1 for the batch x
    features and batch x channels x rows x columns tensors a network gives."""
    if dim is None:
        return 1
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise UnsupportedSettingError(f"layer {name!r}", "Softmax", "dim", repr(dim),
                                      "give the class axis as a number (dim=1 or dim=-1)")
    return dim


def _refuse_brevitas(model) -> None:
    """A module quantized with Brevitas (its quantizers trace as rounding, not layers): say
    how such a model comes in with its own quantization."""
    found = next(((name, module) for name, module in model.named_modules()
                  if type(module).__module__.startswith("brevitas.")), None)
    if found is None:
        return
    name, module = found
    where = f"layer {name!r} is a {type(module).__name__}" if name else \
        f"it is a {type(module).__name__}"
    raise InputError(f"the model is quantized with Brevitas ({where}): export it with "
                     f"brevitas.export.export_qonnx(model, torch.randn(1, inputs), "
                     f"'model.onnx') and bring it in with its own quantization, "
                     f"sf.load_quantized('model.onnx') (sparseforge import); compress takes a "
                     f"float model")


def capture_module(model, input_shape=None) -> Graph:
    """``model`` (evaluation-mode parameters) as a shape-checked Graph; ``input_shape``
    (channels, rows, columns) is its input map, needed when it has convolutions or pooling.

    An ``nn.Sequential`` is walked child by child (nested Sequentials too); any other
    container is traced with ``torch.fx`` and must be a chain.  Op names are module paths
    (``"0"``, ``"encoder.fc1"``), so errors point at the module to change.
    """
    from torch import nn

    if not isinstance(model, nn.Module):
        raise TypeError(f"capture_module takes an nn.Module, not {type(model).__name__}")
    try:
        ops = merge_skip_connections(fold_padding(_capture(model, "")))
    except UnsupportedLayerError as refusal:
        lacking = _layer_the_engine_lacks(model)
        if lacking is None or f"{lacking[0]!r}" in str(refusal):
            raise
        # A trace stops at the first call it cannot read, often the helper in front of the
        # layer (an embedding's x.long()): name the layer.
        raise UnsupportedLayerError(f"layer {lacking[0]!r}", lacking[1]) from refusal
    layers = [op for op in ops if op.kind in (OpKind.LINEAR, OpKind.CONV)]
    if not layers:
        raise ValueError(f"the model ({type(model).__name__}) has no Linear or Conv2d layer "
                         f"to run")
    ops, input_shape = _input_map(ops, input_shape, type(model).__name__)
    spatial = next((op for op in ops if op.kind in _SPATIAL), None)
    if input_shape is not None and len(input_shape) == 2 and spatial is not None:
        # Batch x channels x length: a 1-D network's signal, which runs as a map of one row.
        one_d = (nn.Conv1d, nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d,
                 nn.AdaptiveMaxPool1d)
        first = next((op for op in ops if op.kind is OpKind.CONV), None)
        if any(isinstance(module, one_d) for module in model.modules()):
            input_shape = (input_shape[0], 1, input_shape[1])
        elif first is not None and first.params["weight"].shape[1] == 1:
            # Batch x rows x columns for a first Conv2d of one input channel: grey images
            # kept without their channel axis (MNIST as NumPy holds them).
            input_shape = (1, *input_shape)
        else:
            raise InputError(f"layer {spatial.name!r} works on 2-D feature maps but the data is "
                             f"batch x {input_shape[0]} x {input_shape[1]}: give it as batch x "
                             f"channels x rows x columns")
    if input_shape is None:
        if spatial is not None:
            first = next((op for op in ops if op.kind is OpKind.CONV), None)
            channels = (first.params["weight"].shape[1] if first is not None
                        else "channels")
            raise InputError(f"layer {spatial.name!r} works on feature maps: give the data as "
                             f"batch x channels x rows x columns, x.reshape(len(x), {channels}, "
                             f"rows, columns) (sf.compress reads the map's shape from it; "
                             f"capture and to_network take input_shape=(channels, rows, "
                             f"columns))")
        return check_graph(ops, layers[0].params["weight"].shape[1], type(model).__name__)
    input_shape = tuple(int(d) for d in input_shape)
    if spatial is None and len(input_shape) != 3:
        return check_graph(ops, int(np.prod(input_shape)), type(model).__name__)
    return check_graph(ops, int(np.prod(input_shape)), type(model).__name__, input_shape)


def _layer_the_engine_lacks(model) -> tuple[str, str] | None:
    """The path and type of the first submodule of a kind the engine never runs (an
    embedding, a recurrent layer, a LayerNorm, attention, an upsampling), or None."""
    from torch import nn

    lacking = (nn.Embedding, nn.EmbeddingBag, nn.RNNBase, nn.LayerNorm, nn.GroupNorm,
               nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer,
               nn.Upsample)
    return next(((name, type(module).__name__) for name, module in model.named_modules()
                 if name and isinstance(module, lacking)), None)


def _input_map(ops: list[Op], input_shape, source: str):
    """``ops`` without the view that makes the input a map (nn.Unflatten, ``x.view(-1, C, H,
    W)``) before any layer, and the input's shape: that view's, which data of as many values
    per sample (flat, or maps of any shape) may feed.  A view to a map anywhere else is
    left to :func:`check_graph`, which drops one that changes nothing and refuses any other
    (the engine keeps each map's layout)."""
    first = next((i for i, op in enumerate(ops) if op.kind is not OpKind.IDENTITY), None)
    if first is not None and ops[first].kind is OpKind.RESHAPE:
        view = ops[first]
        shape = _as_map(view.attrs["shape"])
        if input_shape is not None and -1 not in shape \
                and int(np.prod(input_shape)) != int(np.prod(shape)):
            raise InputError(f"{source}: layer {view.name!r} views the input as a map of "
                             f"{' x '.join(map(str, shape))} ({int(np.prod(shape))} values) "
                             f"but the data has {int(np.prod(input_shape))} values per sample "
                             f"({' x '.join(map(str, input_shape))})")
        if shape.count(-1) == 1 and input_shape is not None:
            known = int(np.prod([d for d in shape if d != -1]))
            total = int(np.prod(input_shape))
            if total % known:
                raise InputError(f"{source}: layer {view.name!r} views the input as a map of "
                                 f"{shape}, which {total} values per sample do not make")
            shape = tuple(total // known if d == -1 else d for d in shape)
        if min(shape) < 1:
            raise InputError(f"{source}: layer {view.name!r} views the input as a map of "
                             f"{shape}: give its channels, rows and columns as numbers, or "
                             f"pass data shaped batch x channels x rows x columns")
        ops = ops[:first] + ops[first + 1:]
        input_shape = shape
    return ops, input_shape


def _as_map(shape) -> tuple[int, ...]:
    """A view's (channels, rows, columns), or a 1-D network's (channels, length) as the map of
    one row it runs as."""
    shape = tuple(int(d) for d in shape)
    return (shape[0], 1, shape[1]) if len(shape) == 2 else shape


def _conv1d_module(module, name) -> list[Op]:
    """A ``Conv1d`` as the convolution of one-row maps it equals: kernel 1 x k, stride 1 x s,
    padding 0 x p (the input's (channels, length) runs as (channels, 1, length))."""
    where, kind = f"layer {name!r}", "Conv1d"
    if tuple(module.dilation) != (1,):
        raise UnsupportedSettingError(where, kind, "dilation", module.dilation[0],
                                      "the engine runs dilation 1")
    if module.padding_mode != "zeros":
        raise UnsupportedSettingError(where, kind, "padding_mode", repr(module.padding_mode),
                                      "the engine pads with zeros")
    kernel = int(module.kernel_size[0])
    if module.padding == "same" and kernel % 2 == 0:
        raise UnsupportedSettingError(where, kind, "padding", f"'same' with the even kernel "
                                      f"{kernel}", "that padding is asymmetric; the engine "
                                      "pads symmetrically")
    padding = (0 if module.padding == "valid" else kernel // 2 if module.padding == "same"
               else int(module.padding[0]))
    weight = _effective(module, "weight")[:, :, None, :]
    bias = _effective(module, "bias")
    return [Op(OpKind.CONV, name, {
        "weight": _ungrouped(weight, module.groups, module.in_channels, where, kind),
        "bias": bias if bias is not None else np.zeros(module.out_channels)},
        {"stride": (1, int(module.stride[0])), "padding": (0, padding),
         **_parameters(weight, module.groups)})]


def _pool1d_module(module, name) -> list[Op]:
    """``MaxPool1d``, ``AvgPool1d`` and ``AdaptiveAvgPool1d`` as the pooling of one-row maps
    they equal (window 1 x k, stride 1 x s, padding 0 x p), checked by the 2-D rules."""
    from torch import nn

    def row(value):
        value = value[0] if isinstance(value, (tuple, list)) else value
        return (1, int(value)) if isinstance(value, int) else value

    def flat(value):
        value = value[0] if isinstance(value, (tuple, list)) else value
        return (0, int(value))

    if isinstance(module, (nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d)):
        kind = type(module).__name__
        size = module.output_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        if size != 1:
            raise UnsupportedSettingError(f"layer {name!r}", kind, "output_size", size,
                                          "the engine runs global pooling (output_size 1)")
        if getattr(module, "return_indices", False):
            raise UnsupportedSettingError(f"layer {name!r}", kind, "return_indices", True,
                                          "the engine returns the pooled values only")
        op_kind = OpKind.MAXPOOL if isinstance(module, nn.AdaptiveMaxPool1d) else OpKind.AVGPOOL
        return [Op(op_kind, name, {}, {"global": True})]
    kernel = row(module.kernel_size)
    stride = row(module.stride) if module.stride not in (None, ()) else kernel
    if isinstance(module, nn.MaxPool1d):
        dilation = module.dilation[0] if isinstance(module.dilation, tuple) else module.dilation
        if dilation != 1:
            raise UnsupportedSettingError(f"layer {name!r}", "MaxPool1d", "dilation", dilation,
                                          "the engine pools with dilation 1")
        equal = nn.MaxPool2d(kernel, stride, flat(module.padding), 1,
                             return_indices=module.return_indices, ceil_mode=module.ceil_mode)
        return _max_pool_module(equal, name)
    equal = nn.AvgPool2d(kernel, stride, flat(module.padding), ceil_mode=module.ceil_mode,
                         count_include_pad=module.count_include_pad)
    return _avg_pool_module(equal, name)


def _conv_module(module, name) -> list[Op]:
    """A ``Conv2d`` as a CONV op: zero padding, dilation 1, any groups (a grouped kernel
    written out as the full one it equals, zero between groups)."""
    where, kind = f"layer {name!r}", "Conv2d"
    if tuple(module.dilation) != (1, 1):
        raise UnsupportedSettingError(where, kind, "dilation", tuple(module.dilation),
                                      "the engine runs dilation 1")
    if module.padding_mode != "zeros":
        raise UnsupportedSettingError(where, kind, "padding_mode", repr(module.padding_mode),
                                      "the engine pads with zeros")
    padding = _conv_padding(module.padding, module.kernel_size, where, kind)
    weight = _effective(module, "weight")
    bias = _effective(module, "bias")
    return [Op(OpKind.CONV, name, {
        "weight": _ungrouped(weight, module.groups, module.in_channels, where, kind),
        "bias": bias if bias is not None else np.zeros(module.out_channels)},
        {"stride": tuple(module.stride), "padding": padding,
         **_parameters(weight, module.groups)})]


def _conv_padding(padding, kernel, where: str, kind: str) -> tuple[int, int]:
    if padding == "valid":
        return 0, 0
    if padding == "same":
        if any(k % 2 == 0 for k in kernel):
            raise UnsupportedSettingError(where, kind, "padding", "'same' with the even kernel "
                                          f"{tuple(kernel)}", "that padding is asymmetric; "
                                          "the engine pads symmetrically")
        return kernel[0] // 2, kernel[1] // 2
    return int(padding[0]), int(padding[1])


def _parameters(weight: np.ndarray, groups: int) -> dict:
    """A grouped convolution's ``parameters`` attribute: the weights the model has, fewer
    than the full kernel :func:`_ungrouped` makes (the overall sparsity counts these)."""
    return {"parameters": int(weight.size)} if groups != 1 else {}


def _ungrouped(weight: np.ndarray, groups: int, in_channels: int, where: str,
               kind: str) -> np.ndarray:
    """A grouped kernel (out x in/groups x kh x kw) as the full kernel it equals, zero
    between groups: group g's outputs read group g's inputs only (depthwise: groups ==
    in_channels, each output one channel)."""
    if groups == 1:
        return weight
    out_channels, inputs_per_group = weight.shape[0], weight.shape[1]
    if out_channels % groups or inputs_per_group * groups != in_channels:
        raise UnsupportedSettingError(where, kind, "groups", groups,
                                      f"groups must divide the {in_channels} input and "
                                      f"{out_channels} output channels")
    full = np.zeros((out_channels, in_channels, *weight.shape[2:]))
    outputs_per_group = out_channels // groups
    for o in range(out_channels):
        first = (o // outputs_per_group) * inputs_per_group
        full[o, first:first + inputs_per_group] = weight[o]
    return full


def _pool_settings(module, name, kind) -> dict:
    where = f"layer {name!r}"
    if kind == "MaxPool2d":
        if module.dilation not in (1, (1, 1)):
            raise UnsupportedSettingError(where, kind, "dilation", module.dilation,
                                          "the engine pools with dilation 1")
        if module.return_indices:
            raise UnsupportedSettingError(where, kind, "return_indices", True,
                                          "the engine returns the pooled values only")
    kernel = module.kernel_size
    stride = module.stride if module.stride not in (None, ()) else kernel
    # Padding and ceil mode: an average pooling counts the padding's zeros; a max pooling's
    # padding and ceil mode's last window become a convolution of their own in front of it
    # (passes.pad_max_pooling); ceil mode is checked against the map in check_graph.
    return {"kernel": _as_pair(kernel), "stride": _as_pair(stride),
            "padding": _as_pair(getattr(module, "padding", 0)),
            "ceil_mode": bool(getattr(module, "ceil_mode", False))}


def _as_pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else tuple(int(v) for v in value)


def _max_pool_module(module, name) -> list[Op]:
    return [Op(OpKind.MAXPOOL, name, {}, _pool_settings(module, name, "MaxPool2d"))]


def _avg_pool_module(module, name) -> list[Op]:
    settings = _pool_settings(module, name, "AvgPool2d")
    where = f"layer {name!r}"
    if module.divisor_override is not None:
        raise UnsupportedSettingError(where, "AvgPool2d", "divisor_override",
                                      module.divisor_override,
                                      "the engine divides by the window's size")
    if not module.count_include_pad and settings["padding"] != (0, 0):
        raise UnsupportedSettingError(where, "AvgPool2d", "count_include_pad", False,
                                      "with padding the engine counts the padding zeros")
    return [Op(OpKind.AVGPOOL, name, {}, settings)]


def _adaptive_pool_module(module, name) -> list[Op]:
    """``AdaptiveAvgPool2d`` and ``AdaptiveMaxPool2d``: global pooling, or windows of one size
    where the output size divides the map (checked against the map in check_graph); the max
    pooling's window is worked out there too, and it fuses into the convolution before it as
    a MaxPool2d of that window does."""
    from torch import nn

    kind = type(module).__name__
    op_kind = OpKind.MAXPOOL if isinstance(module, nn.AdaptiveMaxPool2d) else OpKind.AVGPOOL
    if getattr(module, "return_indices", False):
        raise UnsupportedSettingError(f"layer {name!r}", kind, "return_indices", True,
                                      "the engine returns the pooled values only")
    size = module.output_size
    if size in (1, (1, 1)):
        return [Op(op_kind, name, {}, {"global": True})]
    size = (size, size) if isinstance(size, int) else tuple(size)
    if any(not isinstance(d, int) or d < 1 for d in size):
        raise UnsupportedSettingError(f"layer {name!r}", kind, "output_size",
                                      module.output_size, "give the output's rows and "
                                      "columns as numbers")
    return [Op(op_kind, name, {}, {"adaptive": size})]


def _capture(module, name) -> list[Op]:
    from torch import nn

    handler = _module_handlers().get(_unparametrized_type(module))
    if handler is not None:
        return handler(module, name or type(module).__name__)
    if type(module) is nn.Sequential:
        ops = []
        for child_name, child in module.named_children():
            ops += _capture(child, f"{name}.{child_name}" if name else child_name)
        return ops
    if type(module).__module__.startswith("torch.nn"):
        # A library layer we do not lower (Conv2d, Tanh, LSTM, ...): tracing would only
        # break it into functions we do not lower either.
        raise UnsupportedLayerError(f"layer {name or type(module).__name__!r}",
                                    type(module).__name__)
    return _trace(module, name)


def _unparametrized_type(module) -> type:
    """The module's class; for one with ``torch.nn.utils.parametrize`` parametrizations
    (``weight_norm``, ``spectral_norm`` from ``torch.nn.utils.parametrizations``), the class it
    was (PyTorch makes a ``ParametrizedLinear`` subclass), whose handler reads the weight
    the parametrization computes, as the forward does."""
    from torch.nn.utils import parametrize

    if parametrize.is_parametrized(module):
        return type(module).__bases__[0]
    return type(module)


def _is_shape_query(node, kinds, shape_queries) -> bool:
    """Whether ``node`` reads a tensor's shape: ``x.size(...)``, ``x.dim()``, ``x.shape``, or
    an item of one (``x.shape[0]``, ``x.size()[0]``)."""
    import operator

    if node.op == "call_method":
        return node.target in kinds and kinds[node.target] is None
    if node.op != "call_function":
        return False
    if node.target is getattr:
        return len(node.args) == 2 and node.args[1] == "shape"
    return (node.target is operator.getitem and bool(node.args)
            and node.args[0] in shape_queries)


# call_function / call_method targets -> op kind; None marks a shape query (``x.size(0)``)
# whose result only feeds a reshape's arguments.
@functools.cache
def _function_kinds():
    import torch
    import torch.nn.functional as F

    return {torch.relu: OpKind.RELU, F.relu: OpKind.RELU, "relu": OpKind.RELU,
            torch.relu_: OpKind.RELU, F.relu_: OpKind.RELU, "relu_": OpKind.RELU,
            torch.flatten: OpKind.FLATTEN, "flatten": OpKind.FLATTEN, "view": OpKind.FLATTEN,
            "reshape": OpKind.FLATTEN, torch.reshape: OpKind.FLATTEN,
            # x.squeeze() after a global pooling: checked in check_graph to meet a 1x1 map.
            "squeeze": OpKind.FLATTEN, torch.squeeze: OpKind.FLATTEN,
            F.dropout: OpKind.IDENTITY, F.dropout1d: OpKind.IDENTITY,
            F.dropout2d: OpKind.IDENTITY, F.alpha_dropout: OpKind.IDENTITY,
            "contiguous": OpKind.IDENTITY,
            torch.softmax: OpKind.SOFTMAX, F.softmax: OpKind.SOFTMAX,
            F.log_softmax: OpKind.SOFTMAX, "softmax": OpKind.SOFTMAX,
            "log_softmax": OpKind.SOFTMAX, "size": None, "dim": None,
            torch.sigmoid: OpKind.SIGMOID, F.sigmoid: OpKind.SIGMOID, "sigmoid": OpKind.SIGMOID,
            # Casts to a float type and device moves change nothing the engine computes
            # (checked by _cast); clamp(min=0) is a ReLU, other bounds a CLAMP (_clamp).
            "float": OpKind.IDENTITY, "double": OpKind.IDENTITY, "to": OpKind.IDENTITY,
            "type": OpKind.IDENTITY, "cpu": OpKind.IDENTITY,
            **{target: OpKind.CLAMP for target in _clamp_calls(torch, F)},
            F.leaky_relu: OpKind.LEAKY,
            **{target: OpKind.FUNCTION for target in _function_calls(torch, F)}}


def _function_calls(torch, F) -> dict:
    """Activation functions called in a forward -> (their name, their settings after the
    input, in the call's order)."""
    return {torch.tanh: ("tanh", ()), F.tanh: ("tanh", ()), "tanh": ("tanh", ()),
            F.gelu: ("gelu", ("approximate",)), F.silu: ("silu", ()),
            F.elu: ("elu", ("alpha",)), F.selu: ("selu", ()), F.celu: ("celu", ("alpha",)),
            F.softplus: ("softplus", ("beta", "threshold")), F.mish: ("mish", ()),
            F.hardswish: ("hardswish", ()), F.hardsigmoid: ("hardsigmoid", ()),
            F.softsign: ("softsign", ()), F.tanhshrink: ("tanhshrink", ()),
            F.logsigmoid: ("logsigmoid", ())}


def _clamp_calls(torch, F):
    """The calls that limit a tensor to bounds: clamp and clip (functions and methods, and
    their one-sided forms), ReLU6 and Hardtanh as functions."""
    return (torch.clamp, "clamp", torch.clamp_min, "clamp_min", torch.clamp_max, "clamp_max",
            torch.clip, "clip", F.relu6, F.hardtanh, "relu6", "hardtanh")


def _pooling_functions():
    """Pooling written as a function call in a forward: the module it is, and the names of
    its arguments after the input (the functions' own order), so the call becomes that module
    and is captured as one (``F.max_pool2d(x, 2)`` is ``nn.MaxPool2d(2)``)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    max_pool = (nn.MaxPool2d, ("kernel_size", "stride", "padding", "dilation", "ceil_mode",
                               "return_indices"))
    avg_pool = (nn.AvgPool2d, ("kernel_size", "stride", "padding", "ceil_mode",
                               "count_include_pad", "divisor_override"))
    adaptive = (nn.AdaptiveAvgPool2d, ("output_size",))
    adaptive_max = (nn.AdaptiveMaxPool2d, ("output_size", "return_indices"))
    calls = {F.max_pool2d: max_pool, F.avg_pool2d: avg_pool, F.adaptive_avg_pool2d: adaptive,
             F.adaptive_max_pool2d: adaptive_max,
             F.adaptive_max_pool1d: (nn.AdaptiveMaxPool1d, adaptive_max[1]),
             F.max_pool1d: (nn.MaxPool1d, max_pool[1]),
             F.avg_pool1d: (nn.AvgPool1d, ("kernel_size", "stride", "padding", "ceil_mode",
                                           "count_include_pad")),
             F.adaptive_avg_pool1d: (nn.AdaptiveAvgPool1d, adaptive[1])}
    # torch's own names for them, where this version has them.
    for name, found in (("max_pool2d", max_pool), ("adaptive_avg_pool2d", adaptive)):
        if hasattr(torch, name):
            calls[getattr(torch, name)] = found
    return calls


def _pooling_call(node, path: str, pooling) -> list[Op] | None:
    """The ops of a pooling function call or of ``x.mean((2, 3))`` / ``x.amax((2, 3))``
    (global average or max pooling, then a flatten unless ``keepdim``), or None for any other
    call."""
    import torch

    reduction = (node.target if node.op == "call_method"
                 else getattr(node.target, "__name__", "") if node.op == "call_function"
                 else None)
    if reduction in ("mean", "amax"):
        dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        dims = tuple(dims) if isinstance(dims, (tuple, list)) else (dims,)
        keep = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
        pooled, kind = (("average", OpKind.AVGPOOL) if reduction == "mean"
                        else ("max", OpKind.MAXPOOL))
        if sorted(d % 4 if isinstance(d, int) else d for d in dims) != [2, 3] \
                or not isinstance(keep, bool):
            raise UnsupportedSettingError(f"layer {path!r}", reduction, "dim", repr(dims),
                                          f"{'a' if reduction == 'mean' else 'an'} {reduction} "
                                          f"over a map's rows and columns, (2, 3), is global "
                                          f"{pooled} pooling; no other is supported")
        ops = [Op(kind, path, {}, {"global": True})]
        return ops if keep else ops + [Op(OpKind.FLATTEN, path)]
    if node.op != "call_function":
        return None
    try:
        found = pooling.get(node.target)
    except TypeError:                                   # unhashable target
        found = None
    if found is None:
        return None
    module_type, names = found
    arguments = dict(zip(names, node.args[1:]))
    arguments.update(node.kwargs)
    axis = _map_dimension(arguments.get("kernel_size"), node.args[0])
    if axis is not None and module_type in (torch.nn.AvgPool2d, torch.nn.MaxPool2d) \
            and arguments.get("stride") in (None, arguments["kernel_size"]) \
            and not any(hasattr(value, "op") for key, value in arguments.items()
                        if key not in ("kernel_size", "stride")) \
            and arguments.get("padding", 0) in (0, (0, 0)):
        # F.avg_pool2d(x, x.size(3)): a window as wide as the map, global pooling when the
        # map is square (checked on the map: ir._pooling).
        kind = OpKind.AVGPOOL if module_type is torch.nn.AvgPool2d else OpKind.MAXPOOL
        return [Op(kind, path, {}, {"global": True, "square_of": axis})]
    if any(hasattr(value, "op") for value in arguments.values()):      # an fx Node
        raise UnsupportedLayerError(f"{path!r}", f"{module_type.__name__} (its settings are "
                                    f"computed in the forward; give them as numbers)")
    return _capture(module_type(**arguments), path)


def _map_dimension(value, source) -> int | None:
    """The axis (2: rows, 3: columns) when ``value`` is a traced read of one of ``source``'s
    map dimensions: ``x.size(3)``, ``x.size()[3]``, ``x.shape[3]`` (or -1, -2); else None."""
    import operator

    if not hasattr(value, "op"):
        return None
    axis = None
    if value.op == "call_method" and value.target == "size" and len(value.args) == 2 \
            and value.args[0] is source:
        axis = value.args[1]
    elif value.op == "call_function" and value.target is operator.getitem \
            and len(value.args) == 2 and hasattr(value.args[0], "op"):
        shape = value.args[0]
        reads = ((shape.op == "call_method" and shape.target == "size"
                  and shape.args == (source,))
                 or (shape.op == "call_function" and shape.target is getattr
                     and shape.args == (source, "shape")))
        axis = value.args[1] if reads else None
    if not isinstance(axis, int) or axis % 4 not in (2, 3):
        return None
    return axis % 4


def _view_kind(node, path: str, shape_queries) -> tuple[OpKind, dict]:
    """What ``x.view(...)`` / ``x.reshape(...)`` / ``torch.reshape(x, ...)`` makes: a batch of
    vectors (a Flatten: ``(x.size(0), -1)``, ``(-1, 64)``) or of (channels, rows, columns)
    maps (``(-1, 1, 28, 28)``: the input's map when it comes first)."""
    dims = node.args[1:]
    if "shape" in node.kwargs:
        dims = (node.kwargs["shape"],)
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    if len(dims) <= 2:
        return OpKind.FLATTEN, {}
    sample = dims[1:]
    if len(dims) in (3, 4) and all(isinstance(d, int) and (d >= 1 or d == -1) for d in sample) \
            and sample.count(-1) <= 1 and (dims[0] == -1 or dims[0] in shape_queries):
        return OpKind.RESHAPE, {"shape": tuple(sample)}
    shown = ", ".join("batch" if d in shape_queries else str(d) for d in dims)
    raise UnsupportedSettingError(f"layer {path!r}", "view", "shape", f"({shown})",
                                  "views to a batch of vectors, (x.size(0), -1), to a batch of "
                                  "maps, (-1, channels, rows, columns), and to a batch of 1-D "
                                  "signals, (-1, channels, length), are supported")


def _cast(node, path: str) -> None:
    """``x.to(...)`` / ``x.type(...)`` pass as nothing when they move the tensor or make it
    float; to an integer type they would round, which the network's arithmetic does not."""
    import torch

    floats = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
    for value in (*node.args[1:], *node.kwargs.values()):
        if isinstance(value, (torch.device, str, bool)) or value in floats:
            continue
        raise UnsupportedSettingError(f"layer {path!r}", node.target, "target", repr(value),
                                      "casts to a float type and device moves are dropped; a "
                                      "cast to an integer type rounds, which the engine's "
                                      "own fixed point replaces: leave it out")


def _clamp(node, path: str) -> tuple[OpKind, dict]:
    """What a clamp call is: ``clamp(min=0)`` and ``clamp_min(0)`` a ReLU, other constant
    bounds a CLAMP (``relu6(x)`` 0 .. 6, ``hardtanh(x)`` -1 .. 1 unless given)."""
    called = str(getattr(node.target, "__name__", node.target))
    if called == "relu6":
        return OpKind.CLAMP, {"low": 0.0, "high": 6.0}
    names = {"clamp_min": ("min",), "clamp_max": ("max",),
             "hardtanh": ("min_val", "max_val")}.get(called, ("min", "max"))
    bounds = dict(zip(names, node.args[1:]))
    bounds.update(node.kwargs)
    bounds.pop("inplace", None)
    if called == "hardtanh":
        bounds = {"min": bounds.get("min_val", -1.0), "max": bounds.get("max_val", 1.0)}
    low, high = bounds.get("min"), bounds.get("max")
    shown = ", ".join(f"{k}={v}" for k, v in bounds.items())
    if any(value is not None and not isinstance(value, (int, float))
           for value in (low, high)) or (low is None and high is None):
        raise UnsupportedSettingError(f"layer {path!r}", called, "bounds", f"({shown})",
                                      "bounds given as numbers are supported; a tensor "
                                      "computed in the forward or no bound is not")
    if low is not None and high is not None and not low < high:
        raise UnsupportedSettingError(f"layer {path!r}", called, "bounds", f"({shown})",
                                      "a lower bound below the upper bound")
    if low == 0 and high is None:
        return OpKind.RELU, {}
    return OpKind.CLAMP, {"low": None if low is None else float(low),
                          "high": None if high is None else float(high)}


def _function_of(node, path: str):
    """The activation function a call computes, its settings numbers (GELU's ``approximate``
    "none" or "tanh")."""
    import torch
    import torch.nn.functional as F

    kind, names = _function_calls(torch, F)[node.target]
    given = dict(zip(names, node.args[1:]))
    given.update({k: v for k, v in node.kwargs.items() if k != "inplace"})
    if "approximate" in given:
        given["tanh"] = float(given.pop("approximate") == "tanh")
    if any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in given.values()):
        raise UnsupportedSettingError(f"layer {path!r}", kind, "settings", repr(given),
                                      "settings given as numbers")
    return Function.of(kind, **given)


def _leaky_slope(node, path: str) -> float:
    """``F.leaky_relu(x, negative_slope)``'s slope (0.01 unless given), a number."""
    slope = node.kwargs.get("negative_slope", node.args[1] if len(node.args) > 1 else 0.01)
    if not isinstance(slope, (int, float)) or isinstance(slope, bool):
        raise UnsupportedSettingError(f"layer {path!r}", "leaky_relu", "negative_slope",
                                      repr(slope), "a slope given as a number")
    return float(slope)


def _trace(module, name) -> list[Op]:
    import torch
    import torch.fx

    where = name or type(module).__name__
    try:
        traced = torch.fx.symbolic_trace(module)
    except Exception as error:      # fx raises many kinds for data-dependent control flow
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise InputError(f"{where!r}: its forward cannot be traced by torch.fx ({first_line}). "
                         f"A forward must be a chain of layers with no Python loop, len() or "
                         f"condition on a tensor or its shape; flatten with torch.flatten(x, 1), "
                         f"nn.Flatten() or x.view(x.size(0), -1), or export the model to ONNX "
                         f"and give the .onnx file") from error
    kinds, pooling = _function_kinds(), _pooling_functions()
    # Every value the forward computes: node -> (the node it reads, its ops), or (_SUM, a, b,
    # path, "sum" or "cat") for a skip connection; the output is then resolved into a chain
    # (_resolve).
    produced: dict = {}
    order: dict = {}
    root, result, shape_queries = None, None, set()
    constants = {}                      # get_attr nodes (buffers, parameters): their values
    for index, node in enumerate(traced.graph.nodes):
        order[node] = index
        if node.op == "get_attr" and _is_tensor_attribute(traced, node.target):
            # A constant the forward computes with, (x - self.mean) / self.std say: allowed
            # where it is an elementwise operand (_affine below), refused anywhere else.
            constants[node] = _array(_attribute(traced, node.target))
            continue
        if node.op == "placeholder":
            if root is not None:
                raise UnsupportedLayerError(f"{where!r} (its forward takes more than one input)",
                                            type(module).__name__)
            root = node
            produced[node] = None
            continue
        if node.op == "output":
            result = node.args[0]
            break
        target = node.target
        path = f"{where}.{target}" if node.op == "call_module" else f"{where}.{node.name}"
        if _is_shape_query(node, kinds, shape_queries):
            shape_queries.add(node)     # x.size(0), x.shape[0]: feeds a reshape only
            continue
        data = [value for value in node.all_input_nodes if value in produced]
        affine = _affine(node, data[0], constants, path) if len(data) == 1 else None
        if affine is not None:
            produced[node] = (data[0], [affine])
            continue
        if _is_sum(node) and len(set(data)) == 2 and set(node.args) == set(data):
            produced[node] = (_SUM, *node.args, path, "sum")   # a skip connection
            continue
        joined = _concatenated(node)
        if joined is not None and len(set(joined)) == 2 and set(joined) <= set(produced):
            produced[node] = (_SUM, *joined, path, "cat")      # one concatenated back
            continue
        gated = _self_gated(node, produced)
        if gated is not None:
            produced[node] = gated
            continue
        others = set(node.all_input_nodes) - shape_queries
        if node.op == "get_attr" or not node.args or node.args[0] not in produced \
                or others != {node.args[0]}:
            raise UnsupportedLayerError(f"{path!r}", "not a chain of layers: branches and "
                                        "parameters used directly are not supported, skip "
                                        "connections only as a sum of an earlier value and "
                                        "a value computed from it")
        produced[node] = (node.args[0], _node_ops(node, traced, where, name, path, kinds,
                                                   pooling, shape_queries))
    if result not in produced or result is root:
        raise UnsupportedLayerError(f"{where!r} (it returns something other than its "
                                    f"last layer's output)", type(module).__name__)
    return _resolve(result, root, produced, order)


def _node_ops(node, traced, where: str, name: str, path: str, kinds, pooling,
              shape_queries) -> list[Op]:
    """The ops of one node of a traced forward that reads one value."""
    import torch

    target = node.target
    if node.op == "call_module":
        return _capture(traced.get_submodule(target), f"{where}.{target}" if name
                        else str(target))
    if (pooled := _pooling_call(node, path, pooling)) is not None:
        return pooled
    if target is torch.nn.functional.pad:
        mode = node.kwargs.get("mode", node.args[2] if len(node.args) > 2 else "constant")
        if mode != "constant":
            raise UnsupportedSettingError(f"{path!r}", "pad", "mode", repr(mode),
                                          "zero padding (mode 'constant', value 0) before a "
                                          "convolution is supported")
        value = node.kwargs.get("value", node.args[3] if len(node.args) > 3 else None)
        padding = tuple(node.args[1])
        if len(padding) == 6 and not any(padding[:4]) and not value:
            # Channels padded with zeros (ResNet's "option A" shortcut): a shortcut's map.
            return [Op(OpKind.IDENTITY, path, {}, {"pad_channels": tuple(padding[4:])})]
        return [_padding_op(padding, value or 0.0, path, "pad")]
    import operator

    if target is operator.getitem and len(node.args) == 2:
        return [_sampling_op(node.args[1], path)]
    try:
        kind = kinds.get(target)
    except TypeError:                          # unhashable target
        kind = None
    if kind is None:
        raise UnsupportedLayerError(f"{path!r}", str(getattr(target, "__name__", target)))
    attrs = {}
    if kind is OpKind.FLATTEN and target in ("view", "reshape", torch.reshape):
        kind, attrs = _view_kind(node, path, shape_queries)
    if target in ("squeeze", torch.squeeze):
        attrs["squeeze"] = True
    if target in ("to", "type"):
        _cast(node, path)
    if kind is OpKind.CLAMP:
        kind, attrs = _clamp(node, path)
    if kind is OpKind.LEAKY:
        attrs["slope"] = _leaky_slope(node, path)
    if kind is OpKind.FUNCTION:
        attrs["function"] = _function_of(node, path)
    if kind is OpKind.SOFTMAX:          # softmax(x, dim), x.softmax(dim) or dim=...
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        attrs["axis"] = _softmax_dim(dim, path)
    return [Op(kind, path, {}, attrs)]


# The first item of a produced value's entry that is a skip connection's sum.
_SUM = object()


def _concatenated(node):
    """The two values of ``torch.cat([a, b], dim=1)`` (features, or a map's channels), or
    None for any other node."""
    import torch

    try:
        if node.op != "call_function" or node.target not in (torch.cat, torch.concat):
            return None
    except TypeError:                           # unhashable target
        return None
    values = node.args[0] if node.args else node.kwargs.get("tensors")
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    if not isinstance(values, (list, tuple)) or len(values) != 2 or dim not in (1, -3):
        return None
    return tuple(values)


def _self_gated(node, produced: dict):
    """``x * torch.sigmoid(x)`` written out (Swish, as EfficientNet-style code writes SiLU):
    the produced entry of the SiLU it is, or None for any other node.  (ONNX graphs get the
    same from ``onnx_activations.function_regions``.)"""
    import operator

    import torch

    try:
        if node.op not in ("call_function", "call_method") or node.kwargs \
                or node.target not in (operator.mul, torch.mul, "mul") or len(node.args) != 2:
            return None
    except TypeError:                           # unhashable target
        return None
    for value, gate in (node.args, node.args[::-1]):
        entry = produced.get(gate)
        if value in produced and entry is not None and entry[0] is value \
                and len(entry[1]) == 1 and _is_sigmoid(entry[1][0]):
            return value, [Op(OpKind.FUNCTION, node.name, {}, {"function": Function("silu")})]
    return None


def _is_sigmoid(op: Op) -> bool:
    return op.kind is OpKind.SIGMOID or (op.kind is OpKind.FUNCTION
                                         and op.attrs["function"].name == "sigmoid")


def _is_sum(node) -> bool:
    """``a + b`` of two values (``+``, ``+=``, ``torch.add``, ``a.add(b)``; no ``alpha``)."""
    import operator

    import torch

    if node.op not in ("call_function", "call_method") or len(node.args) != 2 \
            or node.kwargs.get("alpha", 1) != 1 or set(node.kwargs) - {"alpha"}:
        return False
    try:
        return node.target in (operator.add, operator.iadd, torch.add, "add", "add_")
    except TypeError:                           # unhashable target
        return False


def _resolve(node, stop, produced: dict, order: dict) -> list[Op]:
    """The ops that compute ``node`` from ``stop`` (an earlier value it depends on), with a
    skip connection's sum as its two marked sides (residual.py): the side of layers and
    BatchNorms only with the fewest layers is the shortcut, the other the block."""
    chunks = []
    while node != stop:
        entry = produced[node]
        if entry is None:
            raise UnsupportedLayerError(f"{getattr(node, 'name', node)!r}", "not a chain of "
                                        "layers: a skip connection that is not summed back")
        if entry[0] is _SUM:
            _, first, second, name, combine = entry
            fork = _fork(first, second, produced, order)
            sides = [_resolve(side, fork, produced, order) for side in (first, second)]
            shortcuts = sorted((side for side in sides if is_shortcut(side)),
                               key=lambda side: sum(op.kind in (OpKind.LINEAR, OpKind.CONV)
                                                    for op in side))
            if not shortcuts:
                raise UnsupportedLayerError(f"{name!r}", f"a {combine} of two branches: a skip "
                                            "connection's shortcut is the value itself, or "
                                            "Linear layers, 1 x 1 convolutions and BatchNorms")
            shortcut = shortcuts[0]
            block = sides[1] if shortcut is sides[0] else sides[0]
            key = object()
            chunks.append([source_marker(key, name), *block,
                           sum_marker(key, name, shortcut, concatenated=combine == "cat",
                                      shortcut_first=shortcut is sides[0])])
            node = fork
            continue
        node, ops = entry
        chunks.append(ops)
    return [op for chunk in reversed(chunks) for op in chunk]


def _fork(first, second, produced: dict, order: dict):
    """The latest value both ``first`` and ``second`` are computed from."""
    def ancestors(node) -> set:
        seen, stack = set(), [node]
        while stack:
            value = stack.pop()
            if value in seen:
                continue
            seen.add(value)
            entry = produced[value]
            if entry is not None:
                stack += entry[1:3] if entry[0] is _SUM else [entry[0]]
        return seen

    return max(ancestors(first) & ancestors(second), key=order.__getitem__)


def _is_tensor_attribute(module, target: str) -> bool:
    import torch

    return isinstance(_attribute(module, target), torch.Tensor)


def _attribute(module, target: str):
    for part in target.split("."):
        module = getattr(module, part)
    return module


@functools.cache
def _arithmetic() -> dict:
    """Elementwise arithmetic a forward may do with a constant: function or method -> the
    operation."""
    import operator

    import torch

    return {operator.add: "add", operator.sub: "sub", operator.mul: "mul",
            operator.truediv: "div", torch.add: "add", torch.sub: "sub", torch.mul: "mul",
            torch.div: "div", "add": "add", "sub": "sub", "mul": "mul", "div": "div"}


def _affine(node, previous, constants: dict, path: str) -> Op | None:
    """``x + c``, ``x - c``, ``c - x``, ``x * c``, ``x / c`` (``c`` a number, or a buffer or
    parameter of the module: one value, or one per feature or channel) as the affine map it
    is, an ``OpKind.BATCHNORM`` of scale and shift that the passes fold into the layer next
    to it (input normalisation written in a forward, ``(x - self.mean) / self.std`` or
    ``x / 255``); None for any other node."""
    if node.op not in ("call_function", "call_method"):
        return None
    try:
        operation = _arithmetic().get(node.target)
    except TypeError:                           # unhashable target
        return None
    if operation is None or len(node.args) != 2 or set(node.kwargs) - {"alpha"}:
        return None
    first, second = node.args
    if first is previous:
        operand, constant_first = second, False
    elif second is previous and operation != "div":
        operand, constant_first = first, True
    else:
        return None
    if isinstance(operand, (int, float)) and not isinstance(operand, bool):
        value = np.array(float(operand))
    elif operand in constants:
        value = constants[operand]
    else:
        return None
    alpha = node.kwargs.get("alpha", 1)
    if not isinstance(alpha, (int, float)):
        return None
    value = value * alpha if operation in ("add", "sub") else value
    return _affine_op(operation, value, constant_first, path)


def _affine_op(operation: str, value: np.ndarray, constant_first: bool, path: str) -> Op:
    """``x op value`` (or ``value op x``) as an ``OpKind.BATCHNORM`` of scale and shift,
    still shaped as ``value`` is (:func:`_per_channel` spreads it over the channels)."""
    value = np.asarray(value, dtype=np.float64)
    one, zero = np.ones_like(value), np.zeros_like(value)
    if operation == "add":
        scale, shift = one, value
    elif operation == "sub":
        scale, shift = (-one, value) if constant_first else (one, -value)
    elif operation == "mul":
        scale, shift = value, zero
    else:
        if np.any(value == 0):
            raise InputError(f"{path!r} divides by a constant that holds 0")
        scale, shift = 1.0 / value, zero
    return Op(OpKind.BATCHNORM, path, {"weight": scale, "bias": shift},
              {"elementwise": operation})


# ---- ONNX -------------------------------------------------------------------------------------

_ONNX_ARITHMETIC = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div"}
# Ops worked out where all their inputs are constants.
_ONNX_FOLDABLE = {"Add", "Sub", "Mul", "Div", "Mod", "Neg", "Reshape", "Cast", "Unsqueeze",
                  "Squeeze", "Concat", "Slice", "Gather", "Range", "ConstantOfShape",
                  "Transpose", "Expand"}
_ONNX_SIMPLE = {"Relu": OpKind.RELU, "Flatten": OpKind.FLATTEN, "Reshape": OpKind.FLATTEN,
                "Dropout": OpKind.IDENTITY, "Identity": OpKind.IDENTITY,
                "Softmax": OpKind.SOFTMAX, "LogSoftmax": OpKind.SOFTMAX,
                "Sigmoid": OpKind.SIGMOID}


# Nodes of a model quantized by its own training or by a quantization tool: ONNX's QDQ and
# QOperator forms, and QONNX's (Brevitas).
_QUANTIZATION_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv",
    "QLinearMatMul", "MatMulInteger", "ConvInteger", "Quant", "BipolarQuant", "Trunc"})


def capture_onnx(path) -> Graph:
    """Read an ONNX file's graph (or an ``onnx.ModelProto``'s) into a shape-checked Graph.

    The graph must be a chain from its one real input (not an initializer) to its output:
    each node reads one computed tensor, and two meet only in a skip connection's ``Add``
    (resolved as a traced forward's sums are, :func:`_resolve`).  Weights must be initializers or
    Constant nodes (``onnx.numpy_helper``), or Identity nodes reading one.  ``Gemm`` computes
    ``alpha * A B' + beta * C`` with ``B' = B^T`` when ``transB``; ``MatMul(x, W)`` takes
    ``W`` as in x out, and an ``Add`` right after it is its bias.  A Softmax's axis is read as
    its opset defines it (see :func:`_onnx_softmax`)."""
    import onnx
    from onnx import numpy_helper

    if isinstance(path, onnx.ModelProto):
        model, path = path, "the ONNX model"
    else:
        path = Path(path)
        try:
            model = onnx.load(str(path))
        except Exception as error:          # onnx raises DecodeError, OSError and others
            raise ValueError(f"{path}: not a readable ONNX file ({error})") from error
    quantization = sorted({node.op_type for node in model.graph.node
                           if node.op_type in _QUANTIZATION_OPS})
    if quantization:
        # Its quantization is the model's own: taken as a float graph, each would be refused.
        raise InputError(f"{path} is a quantized model ({', '.join(quantization)} nodes): "
                         f"sparseforge import (sf.load_quantized) runs it with its own "
                         f"quantization; compress takes a float model")
    # SiLU, Mish, GELU (before opset 20) and others exported as arithmetic: one node each.
    model = function_regions(model)
    graph = model.graph
    opset = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")),
                 onnx.defs.onnx_opset_version())
    outputs = [output.name for output in graph.output]
    # Constants as stored (shape arithmetic needs its integers) and as float64.
    stored = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    folded = set()                      # indices of the nodes that only make a constant
    for index, node in enumerate(graph.node):
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is None:
                raise UnsupportedLayerError(f"ONNX node {node.name!r} (a Constant without a "
                                            f"tensor 'value')", "Constant")
            stored[node.output[0]] = numpy_helper.to_array(value)
            folded.add(index)
        elif node.op_type == "Identity" and node.input and node.input[0] in stored:
            # torch.onnx.export stores equal initializers once (a fresh BatchNorm's weight and
            # running_var, two zero biases) and reads the copies through an Identity: its
            # output is that constant under another name, not a layer of the chain.
            stored[node.output[0]] = stored[node.input[0]]
            folded.add(index)
        elif node.op_type in _ONNX_FOLDABLE and node.input and node.output[0] not in outputs \
                and all(i in stored for i in node.input if i):
            # Arithmetic on constants alone, as exporters write shapes (nn.Unflatten's Mod,
            # Reshape and Slice bounds): worked out here, by onnx's reference evaluator.
            from onnx.reference import ReferenceEvaluator

            feeds = {i: stored[i] for i in node.input if i}
            stored[node.output[0]] = np.asarray(ReferenceEvaluator(node).run(None, feeds)[0])
            folded.add(index)
    constants = {name: np.asarray(value).astype(np.float64) for name, value in stored.items()}
    shapes = _shape_expressions(graph, constants, folded)
    inputs = [i for i in graph.input if i.name not in constants]
    if len(inputs) != 1:
        raise ValueError(f"{path}: the graph must have exactly one input, not "
                         f"{[i.name for i in inputs]}")
    # Every tensor the graph computes: name -> (the tensor it reads, its ops), or (_SUM, a, b,
    # node name) for a skip connection's Add; the output is then resolved into a chain.
    _refuse_layers_the_engine_lacks(graph, stored, folded)
    ranks = _onnx_ranks(model, inputs[0])
    produced: dict = {inputs[0].name: None}
    order: dict = {inputs[0].name: -1}
    matmuls = set()                     # tensors a MatMul made: an Add of a constant is its bias
    for index, node in enumerate(graph.node):
        if index in folded:
            continue
        name = node.name or f"{node.op_type}_{index}"
        data = [i for i in node.input if i and i not in constants and i not in shapes]
        output = node.output[0]
        order[output] = index
        if node.op_type == "Add" and len(set(data)) == 2 and set(data) <= set(produced):
            produced[output] = (_SUM, *data, name, "sum")      # a skip connection
            continue
        if node.op_type == "Concat" and len(set(data)) == 2 and set(data) <= set(produced) \
                and data == [i for i in node.input if i] \
                and {a.name: onnx.helper.get_attribute_value(a)
                     for a in node.attribute}.get("axis") in (1, -3):
            produced[output] = (_SUM, *data, name, "cat")      # one concatenated back
            continue
        if len(data) != 1 or data[0] not in produced:
            raise UnsupportedLayerError(f"ONNX node {name!r} (it reads {_reads(node, data)}: "
                                        f"not a chain of layers)", node.op_type)
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Add" and data[0] in matmuls:
            # MatMul then Add of a constant: one Linear with its bias.
            source, [linear] = produced[data[0]]
            operand = next(i for i in node.input if i in constants)
            produced[output] = (source, [_linear(linear.name, linear.params["weight"],
                                                 _constant(constants, operand, name))])
            continue
        if node.op_type == "MatMul":
            matmuls.add(output)
        produced[output] = (data[0], _onnx_ops(node, name, attrs, data, constants, shapes,
                                               opset, ranks))
    if len(outputs) != 1 or outputs[0] not in produced or outputs[0] == inputs[0].name:
        raise UnsupportedLayerError(f"{path}: the graph's output {', '.join(outputs)} (not "
                                    f"a model of one output computed from its input)",
                                    "outputs")
    ops = merge_skip_connections(fold_padding(_resolve(outputs[0], inputs[0].name, produced,
                                                       order)))
    layers = [op for op in ops if op.kind in (OpKind.LINEAR, OpKind.CONV)]
    if not layers:
        raise ValueError(f"{path}: the ONNX graph has no Gemm, MatMul or Conv layer")
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim[1:]]
    static = bool(dims) and all(d > 0 for d in dims)
    ops, declared = _input_map(ops, tuple(dims) if static else None, str(path))
    if declared is not None and len(declared) == 3:
        dims, static = list(declared), True
    spatial = next((op for op in ops if op.kind in _SPATIAL), None)
    if spatial is not None and static and len(dims) == 2:
        dims = [dims[0], 1, dims[1]]            # batch x channels x length: a 1-D network's
    if spatial is not None:
        if len(dims) != 3 or not static:
            raise ValueError(f"{path}: node {spatial.name!r} works on feature maps, but the "
                             f"graph input {inputs[0].name!r} has no static shape batch x "
                             f"channels x rows x columns ({dims or 'none'})")
        return check_graph(ops, int(np.prod(dims)), str(path), tuple(dims))
    input_size = layers[0].params["weight"].shape[1]
    if dims and all(d > 0 for d in dims) and int(np.prod(dims)) != input_size:
        raise ValueError(f"{path}: the graph input {inputs[0].name!r} has {int(np.prod(dims))} "
                         f"features but {layers[0].name} takes {input_size}")
    return check_graph(ops, input_size, str(path))


def _onnx_ops(node, name: str, attrs: dict, data: list[str], constants: dict, shapes: dict,
              opset: int, ranks: dict) -> list[Op]:
    """The ops of one ONNX node that reads one computed tensor (a MatMul's Linear without
    its bias: an Add of a constant after it gives it one); ``ranks`` holds the tensors'
    ranks (:func:`_onnx_ranks`)."""
    if node.op_type in ("Gemm", "MatMul") and len(node.input) < 2:
        raise UnsupportedLayerError(f"ONNX node {name!r}", f"{node.op_type} with "
                                    f"{len(node.input)} input, no weight")
    if node.op_type == "Gemm":
        if attrs.get("transA", 0):
            raise UnsupportedLayerError(f"ONNX node {name!r} (Gemm with transA=1)", "Gemm")
        weight = _constant(constants, node.input[1], name)
        weight = (weight if attrs.get("transB", 0) else weight.T) * attrs.get("alpha", 1.0)
        bias = (_constant(constants, node.input[2], name) * attrs.get("beta", 1.0)
                if len(node.input) > 2 and node.input[2] else None)
        return [_linear(name, weight, bias)]
    if node.op_type == "MatMul":
        if node.input[0] != data[0]:
            raise UnsupportedLayerError(f"ONNX node {name!r} (MatMul with the weight on "
                                        f"the left)", "MatMul")
        return [_linear(name, _constant(constants, node.input[1], name).T, None)]
    if node.op_type in _ONNX_ARITHMETIC and len(node.input) == 2 \
            and sum(i in constants for i in node.input) == 1:
        # Arithmetic by a constant (input normalisation: Sub, then Div).
        constant_first = node.input[0] in constants
        operand = node.input[0 if constant_first else 1]
        if constant_first and node.op_type == "Div":
            raise UnsupportedLayerError(f"ONNX node {name!r} (a constant divided by the "
                                        f"data)", "Div")
        return [_affine_op(_ONNX_ARITHMETIC[node.op_type], constants[operand],
                           constant_first, name)]
    if node.op_type == "BatchNormalization":
        scale, shift, mean, var = (_constant(constants, node.input[i], name)
                                   for i in range(1, 5))
        return [Op(OpKind.BATCHNORM, name, {"weight": scale, "bias": shift,
                                            "mean": mean, "var": var},
                   {"eps": float(attrs.get("epsilon", 1e-5))})]
    if node.op_type == "Conv":
        return [_onnx_conv(node, name, attrs, constants)]
    if node.op_type in ("MaxPool", "AveragePool"):
        return [_onnx_pool(node, name, attrs)]
    if node.op_type in ("GlobalAveragePool", "GlobalMaxPool"):
        return [Op(OpKind.AVGPOOL if node.op_type == "GlobalAveragePool"
                   else OpKind.MAXPOOL, name, {}, {"global": True})]
    if node.op_type in ("ReduceMean", "ReduceMax"):
        return _onnx_reduction(node, name, attrs, constants, ranks[data[0]])
    if node.op_type == "Pad":
        return [_onnx_pad(node, name, attrs, constants, ranks[data[0]])]
    if node.op_type == "Slice":
        return [_onnx_slice(node, name, attrs, constants, ranks[data[0]])]
    if node.op_type == "Unsqueeze" and ranks[data[0]] == 3 and ranks[node.output[0]] == 4 \
            and _axes(node, attrs, constants, name, 4) == [2]:
        # A 1-D signal (batch x channels x samples) as a map of one row, the way sparseforge
        # holds it already (the dynamo exporter writes AdaptiveMaxPool1d so).
        return [Op(OpKind.IDENTITY, name)]
    if node.op_type in ("Softmax", "LogSoftmax"):
        return [Op(OpKind.SOFTMAX, name, {}, _onnx_softmax(attrs, opset))]
    if node.op_type == "Squeeze":
        return [Op(OpKind.FLATTEN, name, {}, {"squeeze": True})]
    if node.op_type == "Clip":
        return [_onnx_clip(node, name, attrs, constants)]
    if node.op_type in ("Max", "Min") and len(node.input) == 2 \
            and sum(i in constants for i in node.input) == 1:
        # A bound by a constant: the dynamo exporter writes torch.clamp(x, min=0) after
        # another clamp as Max(x, 0) (the 0 shared with the first Clip).
        bound = constants[next(i for i in node.input if i in constants)]
        if bound.size != 1:
            raise UnsupportedSettingError(f"ONNX node {name!r}", node.op_type, "bound",
                                          f"of shape {bound.shape}", "one number")
        value = float(bound.ravel()[0])
        return [_bounds_op(name, *((value, None) if node.op_type == "Max" else (None, value)))]
    if node.domain == FUNCTION_DOMAIN:
        return [Op(OpKind.FUNCTION, name, {}, {"function": Function(
            node.op_type, tuple(next((a.floats for a in node.attribute
                                      if a.name == "params"), ())))})]
    if node.op_type in _ONNX_FUNCTIONS:
        return [Op(OpKind.FUNCTION, name, {}, {"function": _onnx_function(node, name, attrs)})]
    if node.op_type == "LeakyRelu":
        return [Op(OpKind.LEAKY, name, {}, {"slope": float(attrs.get("alpha", 0.01))})]
    if node.op_type == "PRelu" and _constant(constants, node.input[1], name).size == 1:
        slope = _constant(constants, node.input[1], name)
        return [Op(OpKind.LEAKY, name, {}, {"slope": float(slope.ravel()[0])})]
    if node.op_type in _ONNX_SIMPLE:
        if node.op_type in ("Flatten", "Reshape"):
            return [_check_flatten(node, name, attrs, {**constants, **shapes})]
        return [Op(_ONNX_SIMPLE[node.op_type], name)]
    raise UnsupportedLayerError(f"ONNX node {name!r}", node.op_type)


def _onnx_pad(node, name: str, attrs: dict, constants: dict, rank: int) -> Op:
    """An ONNX ``Pad`` of zeros over a map's rows and columns (or a signal's samples) as a
    padding op (:func:`_padding_op`); its pads are an attribute before opset 11 and an input
    from it, begins then ends per axis."""
    mode = attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    pads = attrs.get("pads")
    if pads is None and len(node.input) > 1 and node.input[1]:
        pads = _constant(constants, node.input[1], name).astype(int).ravel().tolist()
    value = attrs.get("value", 0.0)
    if len(node.input) > 2 and node.input[2]:
        value = float(_constant(constants, node.input[2], name).ravel()[0])
    if mode == "constant" and pads is not None and len(pads) == 2 * rank and rank == 4 \
            and not value and not (len(node.input) > 3 and node.input[3]) \
            and (pads[1] or pads[rank + 1]) \
            and not any(pads[axis] or pads[rank + axis] for axis in (0, 2, 3)):
        # Channels padded with zeros (ResNet's "option A" shortcut): a shortcut's map.
        return Op(OpKind.IDENTITY, name, {}, {"pad_channels": (pads[1], pads[rank + 1])})
    if mode != "constant" or pads is None or len(pads) != 2 * rank or rank not in (3, 4) \
            or any(pads[axis] or pads[rank + axis] for axis in (0, 1)) \
            or (len(node.input) > 3 and node.input[3]):
        raise UnsupportedSettingError(f"ONNX node {name!r}", "Pad", "mode and pads",
                                      f"{mode!r} and {pads}", "zero padding of a map's rows "
                                      "and columns (or a signal's samples) before a "
                                      "convolution is supported")
    begins, ends = pads[2:rank], pads[rank + 2:]
    padding = (begins[-1], ends[-1], *((begins[0], ends[0]) if rank == 4 else ()))
    return _padding_op(padding, value, name, "Pad")


def _onnx_slice(node, name: str, attrs: dict, constants: dict, rank: int) -> Op:
    """An ONNX ``Slice`` that samples a map's rows or columns from the first, every ``step``
    (``x[:, :, ::2, ::2]`` exports as one per axis), as :func:`_sampling_op`'s op; any other
    slice is refused."""
    def operand(at, default):
        if len(node.input) > at and node.input[at]:
            # Constants are held as float64: "to the end" (INT64_MAX) is clipped, not wrapped.
            value = np.clip(_constant(constants, node.input[at], name), -2.0 ** 62, 2.0 ** 62)
            return value.astype(np.int64).ravel().tolist()
        return attrs.get(("starts", "ends", "axes", "steps")[at - 1], default)

    starts, ends = operand(1, None), operand(2, None)
    axes = operand(3, list(range(len(starts or ()))))
    steps = operand(4, [1] * len(axes))
    sampled = {}
    if starts is not None and ends is not None \
            and len(starts) == len(ends) == len(axes) == len(steps):
        for start, end, axis, step in zip(starts, ends, axes, steps):
            if start != 0 or end < 1 << 30 or axis % rank not in (2, 3) or step < 1 \
                    or rank != 4:
                sampled = None
                break
            sampled[axis % rank] = step
    if not sampled:
        raise UnsupportedLayerError(f"ONNX node {name!r} (a Slice of starts {starts}, ends "
                                    f"{ends}, axes {axes}, steps {steps})", "Slice",
                                    "a Slice is supported as x[:, :, ::s, ::t], a skip "
                                    "connection's shortcut sampling the map")
    return Op(OpKind.IDENTITY, name, {}, {"sample": (sampled.get(2, 1), sampled.get(3, 1))})


def _onnx_ranks(model, graph_input) -> dict:
    """Every tensor's rank, as onnx's shape inference gives it (the graph input's for any it
    cannot infer)."""
    import onnx

    rank = len(graph_input.type.tensor_type.shape.dim)
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except Exception:               # a model shape inference cannot follow: the input's rank
        return collections.defaultdict(lambda: rank)
    ranks = collections.defaultdict(lambda: rank)
    for value in (*inferred.value_info, *inferred.input, *inferred.output):
        if value.type.tensor_type.HasField("shape"):
            ranks[value.name] = len(value.type.tensor_type.shape.dim)
    return ranks


def _axes(node, attrs: dict, constants: dict, name: str, rank: int) -> list[int] | None:
    """A reduction's or an Unsqueeze's axes (an attribute before opset 13 or 18, an input
    from it), each in 0 .. rank - 1, sorted; None when not given."""
    axes = attrs.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = _constant(constants, node.input[1], name).astype(int).ravel().tolist()
    return None if axes is None else sorted(int(a) % rank for a in axes)


def _onnx_reduction(node, name: str, attrs: dict, constants: dict, rank: int) -> list[Op]:
    """``ReduceMean`` / ``ReduceMax`` over a map's spatial axes (rows and columns, or a 1-D
    signal's samples) as global average / max pooling, then a flatten unless ``keepdims``:
    PyTorch's dynamo exporter writes ``AdaptiveAvgPool2d(1)`` so.  The axes are an attribute
    before opset 18 and an input from it."""
    spatial = list(range(2, rank))
    axes = _axes(node, attrs, constants, name, rank) if rank > 2 else None
    kind, pooled = ((OpKind.AVGPOOL, "average") if node.op_type == "ReduceMean"
                    else (OpKind.MAXPOOL, "max"))
    if axes != spatial or not spatial:
        raise UnsupportedSettingError(f"ONNX node {name!r}", node.op_type, "axes",
                                      repr(axes),
                                      f"a {node.op_type} over a map's spatial axes "
                                      f"({', '.join(map(str, spatial)) or 'none here'}) is "
                                      f"global {pooled} pooling; no other is supported")
    ops = [Op(kind, name, {}, {"global": True})]
    return ops if attrs.get("keepdims", 1) else ops + [Op(OpKind.FLATTEN, name)]


def _reads(node, data: list[str]) -> str:
    """What a node off the chain reads, for the error: its computed inputs, or the constants
    when it reads nothing else."""
    if data:
        return str(data)
    inputs = [i for i in node.input if i]
    return f"only the constants {inputs}" if inputs else "nothing"


def _onnx_pads(attrs, name: str, kind: str, kernel=None) -> tuple[int, int]:
    """Symmetric ``pads`` (begin rows, begin columns, end rows, end columns) as (rows,
    columns); ``auto_pad`` NOTSET, VALID, or SAME_UPPER / SAME_LOWER where they pad
    symmetrically whatever the input's size: stride 1 and an odd ``kernel`` (rows, columns),
    ``(k - 1) / 2`` on each side (PyTorch's ``padding='same'``)."""
    where = f"ONNX node {name!r}"
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        strides = [int(v) for v in attrs.get("strides", [1, 1])]
        if kernel is not None and all(v == 1 for v in strides) \
                and all(int(k) % 2 == 1 for k in kernel):
            return int(kernel[0]) // 2, int(kernel[1]) // 2
        raise UnsupportedSettingError(where, kind, "auto_pad", auto,
                                      "SAME pads symmetrically only with stride 1 and an odd "
                                      "kernel; give explicit symmetric pads")
    if auto not in ("NOTSET", "VALID"):
        raise UnsupportedSettingError(where, kind, "auto_pad", auto,
                                      "give explicit symmetric pads")
    pads = list(attrs.get("pads", [0, 0, 0, 0])) if auto == "NOTSET" else [0, 0, 0, 0]
    if len(pads) != 4 or pads[:2] != pads[2:]:
        raise UnsupportedSettingError(where, kind, "asymmetric padding", f"pads={pads}",
                                      "the engine pads the same on both sides of each axis")
    return int(pads[0]), int(pads[1])


def _onnx_conv(node, name: str, attrs, constants) -> Op:
    where, kind = f"ONNX node {name!r}", "Conv"
    if any(d != 1 for d in attrs.get("dilations", [1, 1])):
        raise UnsupportedSettingError(where, kind, "dilations", list(attrs["dilations"]),
                                      "the engine runs dilation 1")
    if len(node.input) < 2:
        raise UnsupportedLayerError(where, "Conv without a weight")
    weight = _constant(constants, node.input[1], name)
    if weight.ndim == 3:                    # Conv1d's: a map of one row
        weight, attrs = weight[:, :, None, :], _one_row(attrs)
    if weight.ndim != 4:
        raise UnsupportedLayerError(f"{where} (a {weight.ndim - 2}-D kernel)",
                                    "Conv other than 1-D or 2-D")
    groups = int(attrs.get("group", 1))
    in_channels = weight.shape[1] * groups
    bias = (_constant(constants, node.input[2], name) if len(node.input) > 2 and node.input[2]
            else np.zeros(weight.shape[0]))
    return Op(OpKind.CONV, name,
              {"weight": _ungrouped(weight, groups, in_channels, where, kind),
               "bias": np.asarray(bias, dtype=np.float64).reshape(-1)},
              {"stride": tuple(int(v) for v in attrs.get("strides", [1, 1])),
               "padding": _onnx_pads(attrs, name, kind, weight.shape[2:]),
               **_parameters(weight, groups)})


def _one_row(attrs) -> dict:
    """A 1-D convolution's or pooling's attributes as those of the 2-D one over maps of one
    row that it equals (kernel 1 x k, stride 1 x s, pads 0 x p)."""
    attrs = dict(attrs)
    for key, fill in (("kernel_shape", 1), ("strides", 1), ("dilations", 1)):
        if key in attrs and len(attrs[key]) == 1:
            attrs[key] = [fill, int(attrs[key][0])]
    if "pads" in attrs and len(attrs["pads"]) == 2:
        attrs["pads"] = [0, int(attrs["pads"][0]), 0, int(attrs["pads"][1])]
    return attrs


def _onnx_pool(node, name: str, attrs) -> Op:
    where, kind = f"ONNX node {name!r}", node.op_type
    if len(attrs.get("kernel_shape", ())) == 1:
        attrs = _one_row(attrs)
    if any(d != 1 for d in attrs.get("dilations", [1, 1])):
        raise UnsupportedSettingError(where, kind, "dilations", list(attrs["dilations"]),
                                      "the engine pools with dilation 1")
    if len([o for o in node.output if o]) > 1:
        raise UnsupportedSettingError(where, kind, "a second output (indices)", "",
                                      "the engine returns the pooled values only")
    kernel = tuple(int(v) for v in attrs["kernel_shape"])
    stride = tuple(int(v) for v in attrs.get("strides", [1, 1]))
    padding = _onnx_pads(attrs, name, kind, kernel)
    ceil_mode = bool(attrs.get("ceil_mode", 0))
    if kind == "MaxPool":
        return Op(OpKind.MAXPOOL, name, {}, {"kernel": kernel, "stride": stride,
                                             "padding": padding, "ceil_mode": ceil_mode})
    if padding != (0, 0) and not attrs.get("count_include_pad", 0):
        raise UnsupportedSettingError(where, kind, "count_include_pad", 0,
                                      "with padding the engine counts the padding zeros")
    return Op(OpKind.AVGPOOL, name, {}, {"kernel": kernel, "stride": stride,
                                         "padding": padding, "ceil_mode": ceil_mode})


# Layers the engine does not run, which exporters surround with helper nodes (a GRU's initial
# state is a ConstantOfShape, an Embedding's indices a Cast): named before those are met.
_LAYERS_THE_ENGINE_LACKS = {
    "LSTM": "LSTM, a recurrent layer", "GRU": "GRU, a recurrent layer",
    "RNN": "RNN, a recurrent layer", "LayerNormalization": "LayerNorm",
    "Attention": "attention", "MultiHeadAttention": "attention",
    "Resize": "Upsample / interpolate", "Upsample": "Upsample / interpolate",
    "Einsum": "einsum"}


def _refuse_layers_the_engine_lacks(graph, stored: dict, folded: set) -> None:
    """Refuse a graph with a layer the engine does not run (:data:`_LAYERS_THE_ENGINE_LACKS`,
    and an embedding: a Gather from a matrix of weights), by that layer's node."""
    for index, node in enumerate(graph.node):
        if index in folded:
            continue
        name = node.name or f"{node.op_type}_{index}"
        kind = _LAYERS_THE_ENGINE_LACKS.get(node.op_type)
        if node.op_type == "Gather" and node.input and node.input[0] in stored \
                and np.asarray(stored[node.input[0]]).ndim == 2 \
                and np.asarray(stored[node.input[0]]).dtype.kind == "f":
            kind = "an embedding (nn.Embedding): a table lookup by index"
        if kind is not None:
            raise UnsupportedLayerError(f"ONNX node {name!r}", kind)


_ONNX_FUNCTIONS = {"Tanh": "tanh", "Elu": "elu", "Celu": "celu", "Selu": "selu",
                   "Softplus": "softplus", "Mish": "mish", "HardSwish": "hardswish",
                   "HardSigmoid": "hardsigmoid", "Softsign": "softsign", "Gelu": "gelu"}


def _onnx_function(node, name: str, attrs):
    """An ONNX activation node as the function PyTorch's would be; settings PyTorch's
    functions do not have (a HardSigmoid of another slope, a Selu of other constants) are
    refused by name."""
    kind = _ONNX_FUNCTIONS[node.op_type]
    if kind in ("elu", "celu"):
        return Function.of(kind, alpha=attrs.get("alpha", 1.0))
    if kind == "gelu":
        approximate = attrs.get("approximate", b"none")
        if isinstance(approximate, bytes):
            approximate = approximate.decode()
        return Function.of(kind, tanh=float(approximate == "tanh"))
    expected = {"hardsigmoid": {"alpha": 1 / 6, "beta": 0.5},
                "selu": {"alpha": 1.6732632423543772, "gamma": 1.0507009873554805}}.get(kind, {})
    for setting, value in expected.items():
        if abs(attrs.get(setting, value) - value) > 1e-6:
            raise UnsupportedSettingError(f"ONNX node {name!r}", node.op_type, setting,
                                          attrs[setting], f"{setting} {value:.6g}, PyTorch's")
    return Function(kind)


def _onnx_clip(node, name: str, attrs, constants) -> Op:
    """A Clip (ReLU6 and Hardtanh export as one): its bounds are inputs 1 and 2 since opset
    11, attributes before; ``min`` 0 without ``max`` is a ReLU."""
    bounds = [attrs.get("min"), attrs.get("max")]
    for at, tensor in enumerate(node.input[1:3]):
        if tensor:
            value = _constant(constants, tensor, name)
            if value.size != 1:
                raise UnsupportedSettingError(f"ONNX node {name!r}", "Clip", "bounds",
                                              f"of shape {value.shape}", "one number each")
            bounds[at] = float(value.ravel()[0])
    low, high = bounds
    if low is None and high is None:
        return Op(OpKind.IDENTITY, name)
    if low is not None and high is not None and not low < high:
        raise UnsupportedSettingError(f"ONNX node {name!r}", "Clip", "bounds",
                                      f"{low} .. {high}", "a lower bound below the upper")
    return _bounds_op(name, low, high)


def _bounds_op(name: str, low: float | None, high: float | None) -> Op:
    """A clamp to ``(low, high)`` (None an open side); from 0 with no upper bound, a ReLU."""
    if low == 0 and high is None:
        return Op(OpKind.RELU, name)
    return Op(OpKind.CLAMP, name, {}, {"low": low, "high": high})


def _onnx_softmax(attrs, opset: int) -> dict:
    """A Softmax's or LogSoftmax's settings: its ``axis``, and ``flatten`` before opset 13,
    where the axis (1 by default) splits the input into a matrix, earlier axes x later ones,
    and each row is normalised; from opset 13 it is the one axis normalised (-1 by
    default)."""
    if opset < 13:
        return {"axis": int(attrs.get("axis", 1)), "flatten": True}
    return {"axis": int(attrs.get("axis", -1))}


# The batch size in a shape expression (Shape -> Gather 0), and a dimension it cannot know.
_BATCH, _UNKNOWN = "batch", "?"


def _shape_expressions(graph, constants, folded) -> dict:
    """The values of the nodes that compute a Reshape's target shape from a tensor's shape,
    as ``torch.onnx.export`` writes ``x.view(x.size(0), -1)`` with a dynamic batch axis:
    Shape -> Gather(0) -> Unsqueeze -> Concat with a constant -1 (``nn.Unflatten``: Shape ->
    Slice(0, 1) -> Concat with the map's dimensions).  Each is a list of
    dimensions (``_BATCH``, ``_UNKNOWN`` or a number); those nodes join ``folded``."""
    shapes: dict[str, object] = {}
    # The rank of a Shape's tensor, where it is the graph's input (whose rank is declared).
    declared = {i.name: len(i.type.tensor_type.shape.dim) for i in graph.input
                if i.type.tensor_type.HasField("shape")}
    ranks: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        if index in folded:
            continue
        inputs = [i for i in node.input if i]
        if node.op_type == "Shape":
            value = "shape"                         # the whole shape: Gather and Slice read it
            if inputs and inputs[0] in declared and len(node.attribute) == 0:
                ranks[node.output[0]] = declared[inputs[0]]
        elif node.op_type == "Gather" and len(inputs) == 2 and shapes.get(inputs[0]) == "shape" \
                and inputs[1] in constants:
            where = np.asarray(constants[inputs[1]]).reshape(-1)
            value = [_BATCH if int(i) == 0 else _UNKNOWN for i in where]
        elif node.op_type == "Slice" and len(inputs) >= 3 and shapes.get(inputs[0]) == "shape" \
                and all(i in constants for i in inputs[1:]) \
                and all(np.asarray(constants[i]).reshape(-1).tolist() in ([0], [1])
                        for i in inputs[3:]):           # axis 0, step 1
            start, end = (int(np.asarray(constants[i]).reshape(-1)[0]) for i in inputs[1:3])
            rank = ranks.get(inputs[0])
            if rank is None and (start, end) != (0, 1):
                continue
            # shape[start:end] of a tensor of `rank` axes, the batch's first.
            value = ([_BATCH] + [_UNKNOWN] * ((rank or 1) - 1))[start:end]
        elif node.op_type in ("Unsqueeze", "Squeeze", "Cast") and inputs \
                and isinstance(shapes.get(inputs[0]), list):
            value = shapes[inputs[0]]
        elif node.op_type == "Concat" and inputs and any(i in shapes for i in inputs) and all(
                isinstance(shapes.get(i), list) or i in constants for i in inputs):
            value = [d for i in inputs for d in (
                shapes[i] if i in shapes
                else [int(v) for v in np.asarray(constants[i]).reshape(-1)])]
        else:
            continue
        shapes[node.output[0]] = value
        folded.add(index)
    return shapes


def _check_flatten(node, name: str, attrs, constants) -> Op:
    """A Flatten or Reshape as the op it is: a batch of vectors (a Flatten: the engine's
    activations are flat), or a Reshape to batch x channels x rows x columns (a view, which
    :func:`_input_map` takes as the input's map when it comes first)."""
    if node.op_type == "Flatten":
        if attrs.get("axis", 1) != 1:
            raise UnsupportedSettingError(f"ONNX node {name!r}", "Flatten", "axis",
                                          attrs["axis"], "only axis 1 (a batch of vectors)")
        return Op(OpKind.FLATTEN, name)
    shape = constants.get(node.input[1]) if len(node.input) > 1 else None
    if shape is None:
        return Op(OpKind.FLATTEN, name)
    if isinstance(shape, str):                  # Shape's output itself: a reshape to as it was
        dims = ["the input's own shape"]
    elif isinstance(shape, list):               # a shape expression (_shape_expressions)
        dims = shape
    else:
        dims = np.asarray(shape, dtype=np.int64).reshape(-1).tolist()
    sample = dims[1:]
    # A leading 1 is the batch of a model exported with a fixed batch of one (the exporters'
    # default, x.view(x.size(0), ...) traced at torch.randn(1, ...)).
    if len(dims) in (3, 4) and dims[0] in (_BATCH, -1, 0, 1) and all(
            isinstance(d, int) and (d >= 1 or d == -1) for d in sample) and sample.count(-1) <= 1:
        return Op(OpKind.RESHAPE, name, {}, {"shape": tuple(sample)})
    if len(dims) != 2 or _UNKNOWN in dims:
        raise UnsupportedSettingError(f"ONNX node {name!r}", "Reshape", "target shape", dims,
                                      "only a reshape to batch x features, or to batch x "
                                      "channels x rows x columns before the first layer")
    return Op(OpKind.FLATTEN, name)


def _linear(name: str, weight: np.ndarray, bias) -> Op:
    if weight.ndim != 2:
        raise UnsupportedLayerError(f"ONNX node {name!r} (a {weight.ndim}-D weight)",
                                    "non-matrix product")
    outputs = weight.shape[0]
    bias = np.zeros(outputs) if bias is None else np.asarray(bias, dtype=np.float64)
    if bias.size == 1:                  # a scalar broadcast over the outputs
        bias = np.full(outputs, float(bias.reshape(-1)[0]))
    elif bias.size == outputs and max(bias.shape) == outputs:      # (out,), (1, out)
        bias = bias.reshape(outputs).copy()
    else:
        raise ValueError(f"ONNX node {name!r}: bias of shape {bias.shape} does not match "
                         f"{outputs} outputs")
    return Op(OpKind.LINEAR, name, {"weight": np.ascontiguousarray(weight), "bias": bias})


def _constant(constants, name, node):
    if name not in constants:
        raise UnsupportedLayerError(f"ONNX node {node!r} (its operand {name!r} is computed, "
                                    f"not a constant)", "dynamic weight")
    return constants[name]
