"""Passes over the captured Graph, each with a written contract, and canonicalisation.

Every pass is ``apply(graph) -> graph``: it keeps the function the graph computes (checked by
``Graph.run`` in the tests) and makes one structural change.  ``canonicalize`` chains them and
returns the canonical :class:`Network` the rest of the compiler works on.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .activations import Function
from .conv import Pool, avg_pool_matrix
from .errors import InputError, InputWarning
from .ir import (
    ENGINE_ACTIVATIONS,
    MAX_LEAK,
    InputScaling,
    Conv2d,
    Graph,
    Linear,
    Network,
    Op,
    OpKind,
    adaptive_window,
    op_geometry,
    op_output_shape,
    pool_overhang,
)

__all__ = [
    "PASSES",
    "REGRESSION_PASSES",
    "binary_logit_as_two_classes",
    "canonicalize",
    "drop_final_softmax",
    "erase_identities",
    "fold_avgpool",
    "fold_batchnorm",
    "fuse_maxpool",
    "fuse_relu",
    "outputs_as_they_are",
    "pad_max_pooling",
]

_LAYERS = (OpKind.LINEAR, OpKind.CONV)

_KIND_NAMES = {OpKind.LINEAR: "Linear", OpKind.RELU: "ReLU", OpKind.BATCHNORM: "BatchNorm",
               OpKind.CONV: "Conv2d", OpKind.MAXPOOL: "MaxPool2d", OpKind.AVGPOOL: "AvgPool2d",
               OpKind.SOFTMAX: "Softmax", OpKind.FLATTEN: "Flatten", OpKind.IDENTITY: "Identity",
               OpKind.SIGMOID: "Sigmoid", OpKind.CLAMP: "clamp", OpKind.LEAKY: "LeakyReLU",
               OpKind.FUNCTION: "activation"}


def _named(op: Op) -> str:
    """An op as a message names it: its type and its module path (or ONNX node name); an
    affine map written as arithmetic (``x - mean``) by that arithmetic."""
    if op.kind is OpKind.BATCHNORM and op.attrs.get("elementwise"):
        return f"the elementwise {op.attrs['elementwise']} {op.name!r}"
    return f"{_KIND_NAMES[op.kind]} {op.name!r}"


def _leak_of(op: Op) -> int:
    """A LeakyReLU's leak: ``k`` of the slope ``2**-k`` nearest its own (in ratio), warned
    when the two differ.  The engine shifts a negative result ``k`` bits right (the
    requantizer's shift, a few bits further), so the slope is a power of two; compression then
    trains with that slope."""
    slope = float(op.attrs["slope"])
    if not 0 < slope < 1:
        raise InputError(f"{_named(op)} has negative_slope {slope:g}: the engine's leaky ReLU "
                         f"takes a slope between 0 and 1 (0 is a ReLU)")
    leak = round(-math.log2(slope))
    if not 1 <= leak <= MAX_LEAK:
        raise InputError(f"{_named(op)} has negative_slope {slope:g}, which the engine's "
                         f"slopes 2**-1 .. 2**-{MAX_LEAK} do not come near; use a ReLU, or a "
                         f"slope of at most 0.7")
    if math.ldexp(1.0, -leak) != slope:
        warnings.warn(InputWarning(
            f"{_named(op)}: negative_slope {slope:g} runs as 2**-{leak} = "
            f"{math.ldexp(1.0, -leak):g}, the nearest slope the engine has (a shift); "
            f"compression trains the model with it"), stacklevel=2)
    return leak


def _before(ops: list[Op]) -> str:
    return _named(ops[-1]) if ops else "the model's input"


def _shapes(graph: Graph) -> list[tuple[int, ...]]:
    """The shape reaching each op, then the graph's output shape."""
    shapes = [graph.input_shape or (graph.input_size,)]
    for op in graph.ops:
        shapes.append(op_output_shape(op, shapes[-1]))
    return shapes


def erase_identities(graph: Graph) -> Graph:
    """Remove Flatten, Dropout and Identity: inputs are flat vectors and inference ignores
    dropout.  After it, no IDENTITY or FLATTEN op remains."""
    ops = tuple(op for op in graph.ops if op.kind not in (OpKind.IDENTITY, OpKind.FLATTEN))
    return Graph(ops, graph.input_size, graph.source, graph.input_shape)


def fold_batchnorm(graph: Graph) -> Graph:
    """Fold each BatchNorm into a layer.  Into the Linear or convolution right before it:
    ``W' = diag(s) W`` (each output channel's filter scaled), ``b' = s (b - m) + beta`` with
    ``s = gamma / sqrt(var + eps)``.  Otherwise (first, or after a ReLU or a pooling) into the
    Linear or unpadded convolution right after it, whose inputs it scales and shifts:
    ``W' = W diag(s)``, ``b' = b + W t`` with ``t = beta - s m`` (a BatchNorm2d before a
    Flatten and a Linear gives each position of a channel that channel's ``s`` and ``t``).
    One at the model's input, right before its first layer (an input normalisation), is
    not folded: it becomes that layer's ``input_scaling`` attribute, per input feature,
    which the host applies before quantizing (``ir.InputScaling``), so the engine's one
    input format sees the features as the model does; a padded convolution's padding is
    then the scaled map's, as in the model.
    After it, no BATCHNORM op remains; one with neither is an error (a ReLU or a pooling
    after it does not commute with its shift, and a padded convolution would shift its
    padding too)."""
    graph = _merge_affine_runs(graph)
    shapes = _shapes(graph)
    ops: list[Op] = []
    pending = None                      # (BatchNorm, the op before it) to fold forward
    for op, shape in zip(graph.ops, shapes):
        if pending is not None and pending[1] is None and not ops and op.kind in _LAYERS:
            # Per channel of a map: each of its positions.
            scale, shift = _batchnorm_affine(pending[0])
            spread = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            ops.append(Op(op.kind, op.name, op.params,
                          {**op.attrs, "input_scaling": (np.repeat(scale, spread),
                                                         np.repeat(shift, spread))}))
            pending = None
            continue
        if pending is not None:
            ops.append(_fold_forward(*pending, op, shape))
            pending = None
            continue
        if op.kind is not OpKind.BATCHNORM:
            ops.append(op)
            continue
        if not ops or ops[-1].kind not in _LAYERS or ops[-1].attrs.get("relu"):
            pending = (op, ops[-1] if ops else None)
            continue
        linear = ops[-1]
        channels = len(linear.params["weight"])
        if op.params["weight"].size != channels:
            raise InputError(
                f"{_named(op)} normalises {op.params['weight'].size} features, but "
                f"{_named(linear)} before it has {channels} output channels: a BatchNorm1d "
                f"after a Flatten scales each position of the feature map on its own, which a "
                f"convolution's per-channel filters cannot do; use BatchNorm2d({channels}) "
                f"before the Flatten")
        ops.pop()
        scale, shift = _batchnorm_affine(op)
        weight = linear.params["weight"]
        weight = weight * scale.reshape(-1, *[1] * (weight.ndim - 1))
        bias = linear.params["bias"] * scale + shift
        ops.append(Op(linear.kind, linear.name, {"weight": weight, "bias": bias},
                      dict(linear.attrs)))
    if pending is not None:
        ops.append(_fold_forward(*pending, None, None))
    return Graph(tuple(ops), graph.input_size, graph.source, graph.input_shape)


def _merge_affine_runs(graph: Graph) -> Graph:
    """BatchNorms (and elementwise arithmetic by constants, captured as BatchNorms) that
    follow one another as the one affine map they make, ``s2 (s1 x + t1) + t2``: input
    normalisation is written ``(x - mean) / std``, two of them."""
    ops: list[Op] = []
    for op in graph.ops:
        if op.kind is OpKind.BATCHNORM and ops and ops[-1].kind is OpKind.BATCHNORM:
            first = ops.pop()
            (s1, t1), (s2, t2) = _batchnorm_affine(first), _batchnorm_affine(op)
            arithmetic = first.attrs.get("elementwise") or op.attrs.get("elementwise")
            op = Op(OpKind.BATCHNORM, f"{first.name} .. {op.name}",
                    {"weight": s2 * s1, "bias": s2 * t1 + t2, "mean": np.zeros_like(s1),
                     "var": np.ones_like(s1)},
                    {"eps": 0.0, **({"elementwise": "scale and shift"} if arithmetic else {})})
        ops.append(op)
    return Graph(tuple(ops), graph.input_size, graph.source, graph.input_shape)


def _batchnorm_affine(op: Op) -> tuple[np.ndarray, np.ndarray]:
    """A BatchNorm at inference as ``s x + t`` per channel."""
    p = op.params
    scale = p["weight"] / np.sqrt(p["var"] + op.attrs["eps"])
    return scale, p["bias"] - p["mean"] * scale


def _fold_forward(norm: Op, before: Op | None, layer: Op | None, shape) -> Op:
    """``layer`` with the BatchNorm ``norm`` (after ``before``) folded into its inputs, or
    the error that says why it cannot be."""
    scale, shift = _batchnorm_affine(norm)
    # A padded convolution's padding is zeros: a scale keeps them zeros, a shift would not.
    if layer is None or layer.kind not in _LAYERS or (
            layer.kind is OpKind.CONV and tuple(layer.attrs.get("padding", (0, 0))) != (0, 0)
            and np.any(shift)):
        if before is not None and before.kind in (OpKind.RELU, OpKind.CLAMP, OpKind.LEAKY,
                                                  OpKind.FUNCTION, OpKind.MAXPOOL,
                                                  OpKind.AVGPOOL):
            hint = (f"move it before the {_KIND_NAMES[before.kind]} (layer -> BatchNorm -> "
                    f"ReLU -> pooling is the order that folds)")
        elif before is not None and before.attrs.get("relu"):
            hint = "move it before the ReLU"
        elif before is None:
            hint = "or normalise the data before it reaches the model"
        else:
            hint = "put it right after a Linear layer or a convolution"
        follows = _before([before] if before else []) + (
            ", whose ReLU is already fused" if before is not None and before.attrs.get("relu")
            else "")
        after = ("the end of the model" if layer is None else _named(layer) + (
            " (padded: its padding would be shifted too)" if layer.kind is OpKind.CONV
            else ""))
        raise InputError(f"{_named(norm)} follows {follows} and comes before {after}: "
                         f"sparseforge folds a BatchNorm (or a scale and shift by constants) "
                         f"into the Linear or convolution right before it, or into the Linear "
                         f"or unpadded convolution right after it; {hint}")
    weight = layer.params["weight"]
    channels = weight.shape[1]
    if layer.kind is OpKind.LINEAR and scale.size != channels:
        # A BatchNorm2d's channels over the flattened map's positions (channel first).
        if len(shape) != 3 or shape[0] != scale.size or int(np.prod(shape)) != channels:
            raise InputError(f"{_named(norm)} normalises {scale.size} channels, but "
                             f"{_named(layer)} after it takes {channels} inputs")
        positions = shape[1] * shape[2]
        scale, shift = np.repeat(scale, positions), np.repeat(shift, positions)
    if scale.size != channels:
        raise InputError(f"{_named(norm)} normalises {scale.size} channels, but "
                         f"{_named(layer)} after it takes {channels}")
    broadcast = scale.reshape(1, -1, *[1] * (weight.ndim - 2))
    bias = layer.params["bias"] + (weight * shift.reshape(broadcast.shape)).reshape(
        len(weight), -1).sum(axis=1)
    return Op(layer.kind, layer.name, {"weight": weight * broadcast, "bias": bias},
              dict(layer.attrs))


def fold_avgpool(graph: Graph) -> Graph:
    """Fold each average pooling into the Linear right after it (``W' = W P``, ``P`` the
    pooling as a matrix: global average pooling before a classifier costs no layer), or, with
    anything else after it, make it a convolution of its own: a depthwise kernel of
    ``1 / (kh kw)`` (zero padding counted in the divisor), ``structural`` (compression neither
    prunes nor trains it).  After it, no AVGPOOL op remains."""
    shapes = _shapes(graph)
    ops: list[Op] = []
    pending = None                      # (pooling op, its input shape) waiting for a Linear
    for op, shape in zip(graph.ops, shapes):
        if pending is not None and op.kind is OpKind.LINEAR:
            pool, pool_shape = pending
            matrix = avg_pool_matrix(pool_shape, *_pool_settings(pool, pool_shape))
            # The model's weights stay the Linear's own, not the matrix's repeats of them.
            parameters = op.attrs.get("parameters", op.params["weight"].size)
            ops.append(Op(OpKind.LINEAR, op.name, {"weight": op.params["weight"] @ matrix,
                                                   "bias": op.params["bias"]},
                          {**op.attrs, "parameters": int(parameters),
                           "tied_columns": _tied_columns(matrix)}))
            pending = None
            continue
        if pending is not None:
            ops.append(_box_convolution(*pending))
            pending = None
        if op.kind is OpKind.AVGPOOL:
            pending = (op, shape)
        else:
            ops.append(op)
    if pending is not None:
        ops.append(_box_convolution(*pending))
    return Graph(tuple(ops), graph.input_size, graph.source, graph.input_shape)


def _tied_columns(matrix: np.ndarray) -> np.ndarray | None:
    """For a pooling matrix whose windows tile the map (each input in one window, every
    weight the same), each input's pooled feature: the folded Linear repeats its weight
    there.  None for overlapping or padded windows, whose repeats differ."""
    taken = matrix != 0
    if not np.all(taken.sum(axis=0) == 1) or len(np.unique(matrix[taken])) != 1:
        return None
    return taken.argmax(axis=0)


def _pool_settings(op: Op, shape) -> tuple:
    if op.attrs.get("global"):
        return tuple(shape[1:]), tuple(shape[1:]), (0, 0)
    if "adaptive" in op.attrs:
        window = adaptive_window(op, shape)
        return window, window, (0, 0)
    kernel = op.attrs["kernel"]
    return kernel, op.attrs.get("stride", kernel), op.attrs.get("padding", (0, 0))


def _box_convolution(op: Op, shape) -> Op:
    kernel, stride, padding = _pool_settings(op, shape)
    channels = shape[0]
    weight = np.zeros((channels, channels, *kernel))
    for c in range(channels):
        weight[c, c] = 1.0 / (kernel[0] * kernel[1])
    return Op(OpKind.CONV, op.name, {"weight": weight, "bias": np.zeros(channels)},
              {"stride": tuple(stride), "padding": tuple(padding), "structural": True})


def _nonnegative_activation(op: Op) -> bool:
    """``op`` is a ReLU, or a clamp from 0 or above: its outputs are never negative."""
    return (op.kind is OpKind.RELU or op.kind is OpKind.CLAMP
            and op.attrs.get("low") is not None and op.attrs["low"] >= 0)


def merge_max_poolings(graph: Graph) -> Graph:
    """Two max poolings in a row, each of non-overlapping windows (kernel = stride, no
    padding, no partial window), as the one pooling they make: ``MaxPool2d(2)`` twice is
    ``MaxPool2d(4)`` (the second's window covers k2 of the first's, k1 k2 rows of the map, and
    floor(floor(h / k1) / k2) = floor(h / (k1 k2))).  The engine pools once per convolution."""
    ops: list[Op] = []
    shape = graph.input_shape or (graph.input_size,)        # the shape reaching `op`
    before = shape                                           # the shape reaching ops[-1]
    for op in graph.ops:
        if op.kind is OpKind.MAXPOOL and ops and ops[-1].kind is OpKind.MAXPOOL \
                and _tiles(ops[-1], before) and _tiles(op, shape):
            first = ops.pop()
            (k1h, k1w), (k2h, k2w) = _pool_settings(first, before)[0], _pool_settings(op, shape)[0]
            merged = Op(OpKind.MAXPOOL, first.name, {},
                        {"kernel": (k1h * k2h, k1w * k2w), "stride": (k1h * k2h, k1w * k2w)})
            ops.append(merged)
            shape = op_output_shape(merged, before)
            continue
        ops.append(op)
        before, shape = shape, op_output_shape(op, shape)
    return Graph(tuple(ops), graph.input_size, graph.source, graph.input_shape)


def _tiles(op: Op, shape) -> bool:
    """A pooling of ``shape`` whose windows tile the map without overlap or padding."""
    kernel, stride, padding = _pool_settings(op, shape)
    return (tuple(kernel) == tuple(stride) and tuple(padding) == (0, 0)
            and tuple(pool_overhang(op, shape)) == (0, 0))


def pad_max_pooling(graph: Graph) -> Graph:
    """Give each max pooling with padding, or in ceil mode with a partial last window
    (ResNet's stem, ``MaxPool2d(3, 2, padding=1)``), a convolution of its own in front of it
    that makes the padding: a depthwise kernel with a single tap of 1 that copies the map into
    a larger one with zeros around it, padded ``p`` on either side and ``p + e`` after, ``e``
    the rows and columns ceil mode reaches past the map (the tap sits ``e`` in from the
    kernel's first row and column, and the convolution pads ``p + e`` on either side).  The
    pooling then runs without padding on that map, as the engine pools.  PyTorch pads a max
    pooling with -inf; zeros are the same only where the values are never negative, so the
    pooling must follow a ReLU (or a clamp from 0), or be followed by one, which is moved in
    front of it (the two commute).  The copy is ``structural``: compression neither prunes
    nor trains it.  After it, no MAXPOOL op has padding or ceil mode."""
    ops: list[Op] = []
    source = list(zip(graph.ops, _shapes(graph)))
    index = 0
    while index < len(source):
        op, shape = source[index]
        index += 1
        if op.kind is not OpKind.MAXPOOL or op.attrs.get("global") or "adaptive" in op.attrs:
            ops.append(op)
            continue
        kernel = tuple(op.attrs["kernel"])
        stride = tuple(op.attrs.get("stride", kernel))
        padding = tuple(op.attrs.get("padding", (0, 0)))
        overhang = pool_overhang(op, shape)
        plain = Op(OpKind.MAXPOOL, op.name, {}, {"kernel": kernel, "stride": stride})
        if padding == (0, 0) and overhang == (0, 0):
            ops.append(plain)
            continue
        activation = None
        if ops and _nonnegative_activation(ops[-1]):
            activation = ops.pop()
        elif index < len(source) and _nonnegative_activation(source[index][0]):
            activation = source[index][0]
            index += 1
        else:
            what = (f"padding {padding}" if padding != (0, 0)
                    else "ceil mode (a partial last window)")
            raise InputError(f"{_named(op)} has {what}: the engine pools without padding, so "
                             f"the padding becomes zeros around the map, which is the max "
                             f"pooling PyTorch computes (padding -inf) only on values that are "
                             f"never negative; it follows {_before(ops)}: put a ReLU right "
                             f"before or after the pooling")
        ops.append(activation)
        channels, (rows, columns) = shape[0], overhang
        weight = np.zeros((channels, channels, rows + 1, columns + 1))
        weight[np.arange(channels), np.arange(channels), rows, columns] = 1.0
        ops.append(Op(OpKind.CONV, f"{op.name} (padding)",
                      {"weight": weight, "bias": np.zeros(channels)},
                      {"stride": (1, 1), "padding": (padding[0] + rows, padding[1] + columns),
                       "structural": True}))
        ops.append(Op(OpKind.RELU, f"{op.name} (padding)"))
        ops.append(plain)
    return Graph(tuple(ops), graph.input_size, graph.source, graph.input_shape)


def fuse_relu(graph: Graph) -> Graph:
    """Fuse each ReLU into the Linear or convolution right before it (``attrs['relu']``), each
    LeakyReLU as its ``leak`` (the slope ``2**-leak`` nearest the model's, warned when not the
    same) and each clamp (ReLU6, Hardtanh) as its output range (``attrs['clamp']``, ``(low,
    high)``, None an open side), also across a max pooling after a convolution (they
    commute).  After it, no RELU, LEAKY or CLAMP op remains; one with no layer right before
    it is an error (the engine applies them as part of a layer's write-back)."""
    ops: list[Op] = []
    for op in graph.ops:
        if op.kind not in (OpKind.RELU, OpKind.CLAMP, OpKind.LEAKY, OpKind.FUNCTION):
            ops.append(op)
            continue
        at = len(ops) - 1
        if (at >= 1 and ops[at].kind is OpKind.MAXPOOL and ops[at - 1].kind is OpKind.CONV):
            if op.kind is OpKind.FUNCTION and not op.attrs["function"].monotone:
                raise InputError(f"{_named(op)} ({op.attrs['function']}) follows a max "
                                 f"pooling: the engine pools after a convolution's write-back, "
                                 f"which a function that can decrease does not commute with; "
                                 f"put it before the pooling")
            at -= 1
        what = {OpKind.RELU: "ReLU", OpKind.LEAKY: "LeakyReLU",
                OpKind.CLAMP: "a clamp (ReLU6, Hardtanh)",
                OpKind.FUNCTION: "an activation function"}[op.kind]
        if at < 0 or ops[at].kind not in _LAYERS:
            raise InputError(f"{_named(op)} follows {_before(ops)}, not a Linear layer or a "
                             f"convolution; the engine applies {what} as part of a layer's "
                             f"write-back")
        layer = ops[at]
        ops[at] = Op(layer.kind, layer.name, layer.params,
                     {**layer.attrs, **_activation_after(layer, op)})
    return Graph(tuple(ops), graph.input_size, graph.source, graph.input_shape)


def _activation_after(layer: Op, op: Op) -> dict:
    """The ``relu``, ``leak``, ``function`` and ``clamp`` attributes of ``layer`` once the
    ReLU, LeakyReLU, activation function or clamp ``op`` that follows it is fused.  The layer
    applies ReLU, its leak or its function, then its clamp: a ReLU after a clamp raises the
    clamp's lower bound to 0, two clamps meet in their overlap, a ReLU after a leaky ReLU is
    the ReLU, two leaky ReLUs multiply their slopes, a ReLU after a function is a clamp from
    0; a leaky ReLU after a clamp or a function, and a function after any other activation,
    are refused (orders the engine does not have)."""
    relu, clamp = bool(layer.attrs.get("relu")), layer.attrs.get("clamp")
    leak, function = layer.attrs.get("leak", 0), layer.attrs.get("function")
    if op.kind is OpKind.FUNCTION:
        if relu or leak or clamp is not None or function is not None:
            raise InputError(f"{_named(op)} follows another activation of layer "
                             f"{layer.name!r}; the engine applies one activation function to "
                             f"a layer's sums (a clamp or a ReLU may follow it)")
        return {"function": op.attrs["function"]}
    if function is not None and op.kind is not OpKind.CLAMP:
        if op.kind is OpKind.LEAKY:
            raise InputError(f"{_named(op)} follows the activation function of layer "
                             f"{layer.name!r}, which the engine does not run after one")
        # A ReLU after a function is a clamp from 0 (in the function's table).
        op = Op(OpKind.CLAMP, op.name, {}, {"low": 0.0, "high": None})
    if op.kind is OpKind.LEAKY:
        if clamp is not None:
            raise InputError(f"{_named(op)} follows a clamp of layer {layer.name!r}; the "
                             f"engine applies a leaky ReLU before a clamp, not after: put the "
                             f"LeakyReLU first")
        if relu:                    # after a ReLU it changes nothing
            return {}
        leak += _leak_of(op)
        if leak > MAX_LEAK:
            raise InputError(f"{_named(op)} after another leaky ReLU of layer {layer.name!r} "
                             f"makes a slope of 2**-{leak}, below the engine's 2**-{MAX_LEAK}; "
                             f"use a ReLU")
        return {"leak": leak}
    if op.kind is OpKind.RELU:
        if leak:                    # a ReLU after a leaky ReLU is the ReLU
            return {"relu": True, "leak": 0}
        if clamp is None:
            return {"relu": True}
        low, high = clamp
        low, high = max(low, 0.0) if low is not None else 0.0, high
    else:
        low, high = op.attrs.get("low"), op.attrs.get("high")
        if clamp is not None:
            low = clamp[0] if low is None else low if clamp[0] is None else max(low, clamp[0])
            high = (clamp[1] if high is None else high if clamp[1] is None
                    else min(high, clamp[1]))
    if high is not None and ((low is not None and low >= high) or (relu and high <= 0)):
        raise InputError(f"{_named(op)} after layer {layer.name!r} leaves it a constant "
                         f"output (every value clamped to one bound); remove the layer")
    return {"relu": relu or op.kind is OpKind.RELU, "clamp": (low, high)}


def fuse_maxpool(graph: Graph) -> Graph:
    """Fuse each max pooling into the convolution right before it (``attrs['pool']``, a
    :class:`~.conv.Pool`: the engine takes each window's largest output in the convolution's
    write-back).  After it, no MAXPOOL op remains; a max pooling with no convolution right
    before it, or after one that pools already, is an error."""
    ops: list[Op] = []
    shape = graph.input_shape or (graph.input_size,)        # the shape reaching `op`
    for op in graph.ops:
        if op.kind is OpKind.MAXPOOL:
            if not ops or ops[-1].kind is not OpKind.CONV or "pool" in ops[-1].attrs:
                raise InputError(f"{_named(op)} follows {_before(ops)}, not a convolution that "
                                 f"does not pool yet; the engine pools in a convolution's "
                                 f"write-back: put each MaxPool2d right after a Conv2d (a ReLU "
                                 f"between them is fine)")
            conv = ops.pop()
            # A global or adaptive max pooling is the window it makes on this map.
            kernel, stride, _ = _pool_settings(op, shape)
            ops.append(Op(OpKind.CONV, conv.name, conv.params,
                          {**conv.attrs, "pool": Pool(kernel, stride)}))
        else:
            ops.append(op)
        shape = op_output_shape(op, shape)
    return Graph(tuple(ops), graph.input_size, graph.source, graph.input_shape)


def drop_final_softmax(graph: Graph) -> Graph:
    """Drop a Softmax or a Sigmoid at the end (neither changes the argmax the engine's
    outputs give); one anywhere else is an error (the engine has neither),
    and so is a final Softmax whose ``axis`` attribute is not the class axis (1 or -1): over
    the batch it changes which class wins."""
    ops = list(graph.ops)
    if ops and ops[-1].kind is OpKind.SIGMOID:
        ops.pop()
    if ops and ops[-1].kind is OpKind.SOFTMAX:
        axis = ops[-1].attrs.get("axis", 1)
        if axis not in (1, -1):
            raise InputError(f"{_named(ops[-1])} normalises over axis {axis}, not the "
                             f"classes (axis 1 or -1); only a softmax over the classes keeps "
                             f"the argmax and can be dropped")
        ops.pop()
    for op in ops:
        if op.kind in (OpKind.SOFTMAX, OpKind.SIGMOID):
            raise InputError(f"{_named(op)} is not the last layer; only a final "
                             f"{_KIND_NAMES[op.kind]} is supported (it is dropped for argmax; "
                             f"{ENGINE_ACTIVATIONS})")
    return Graph(tuple(ops), graph.input_size, graph.source, graph.input_shape)


def binary_logit_as_two_classes(graph: Graph) -> Graph:
    """A last Linear with one output (a binary classifier's logit, trained with
    ``BCEWithLogitsLoss``; its Sigmoid dropped) becomes two outputs, ``(0, logit)``: the
    argmax is 1 exactly where the logit is above 0, and cross-entropy over them is the binary
    cross-entropy of the logit, so compression and everything after it see the classifier of
    two classes it is.  The zero row stores no weight.  After it, no network ends in one
    Linear output."""
    ops = list(graph.ops)
    if not ops or ops[-1].kind is not OpKind.LINEAR or len(ops[-1].params["weight"]) != 1:
        return graph
    last = ops.pop()
    weight = np.vstack([np.zeros_like(last.params["weight"]), last.params["weight"]])
    bias = np.concatenate([[0.0], np.asarray(last.params["bias"], dtype=np.float64)])
    # The zero row is not the model's: the overall sparsity counts the logit's weights only.
    parameters = last.attrs.get("parameters", last.params["weight"].size)
    ops.append(Op(OpKind.LINEAR, last.name, {"weight": weight, "bias": bias},
                  {**last.attrs, "parameters": int(parameters)}))
    return Graph(tuple(ops), graph.input_size, graph.source, graph.input_shape)


PASSES = (erase_identities, drop_final_softmax, fold_batchnorm, fold_avgpool,
          merge_max_poolings, pad_max_pooling, binary_logit_as_two_classes, fuse_relu, fuse_maxpool)


def outputs_as_they_are(graph: Graph) -> Graph:
    """A regression model's passes in the place of the classifier's two that read outputs
    as class scores (``drop_final_softmax``, ``binary_logit_as_two_classes``): its outputs
    are the values themselves, so a final Sigmoid is kept, as the activation function it is
    (a table on the last layer), a Softmax cannot be (the engine has none) and one output
    stays one."""
    ops = []
    for op in graph.ops:
        if op.kind is OpKind.SOFTMAX:
            raise InputError(f"{_named(op)}: the engine has no softmax, and a regression "
                             f"model's outputs are its values (a classifier's final Softmax "
                             f"is dropped, since the argmax stays): train the model without "
                             f"it, or as a classifier")
        ops.append(Op(OpKind.FUNCTION, op.name, {}, {"function": Function("sigmoid")})
                   if op.kind is OpKind.SIGMOID else op)
    return Graph(tuple(ops), graph.input_size, graph.source, graph.input_shape)


REGRESSION_PASSES = tuple(outputs_as_they_are if apply is drop_final_softmax else apply
                          for apply in PASSES if apply is not binary_logit_as_two_classes)


def canonicalize(graph: Graph, *, regression: bool = False) -> Network:
    """Run every pass (a regression model's: ``REGRESSION_PASSES``), then build the Network
    of Linear and Conv2d layers (shapes checked)."""
    for apply in REGRESSION_PASSES if regression else PASSES:
        graph = apply(graph)
    layers = []
    for op, shape in zip(graph.ops, _shapes(graph)):
        if op.kind not in _LAYERS:
            raise ValueError(f"{op.name} ({op.kind.value}) is left after the passes")
        weight = np.asarray(op.params["weight"], dtype=np.float64)
        bias = np.asarray(op.params["bias"], dtype=np.float64)
        relu, clamp = bool(op.attrs.get("relu", False)), op.attrs.get("clamp")
        scaling = op.attrs.get("input_scaling")
        activation = {"clamp": clamp, "leak": op.attrs.get("leak", 0),
                      "function": op.attrs.get("function"),
                      "input_scaling": None if scaling is None else InputScaling(*scaling),
                      "structural": bool(op.attrs.get("structural", False)),
                      "parameters": op.attrs.get("parameters")}
        if op.attrs.get("tied_columns") is not None:
            activation["tied_columns"] = op.attrs["tied_columns"]
        if op.kind is OpKind.CONV:
            layers.append(Conv2d(op.name, weight.reshape(len(weight), -1), bias, relu,
                                 op_geometry(op, shape), **activation))
        else:
            layers.append(Linear(op.name, weight, bias, relu, **activation))
    if layers and layers[0].in_features != graph.input_size:
        raise InputError(f"layer {layers[0].name!r} takes {layers[0].in_features} inputs, the "
                         f"network's input has {graph.input_size}")
    return Network(tuple(layers), graph.source)
