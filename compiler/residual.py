"""Skip connections as a chain of layers.

The engine runs a chain: each layer reads the previous layer's outputs.  A residual block
``z = F(s) + P(s)`` (``F`` Linear layers or convolutions with ReLUs between, ``P`` the
shortcut: ``s`` itself, or a projection of Linear layers or 1 x 1 convolutions and
BatchNorms) is a chain too once ``s`` is carried through ``F``'s layers beside their own
outputs: the block's first layer gets rows (output channels) that copy ``s`` (an identity:
one entry a row, or a convolution's kernel with one tap, which a sparse engine stores and runs
at the cost of one weight each), every layer after it passes them on, and the sum is folded
into a layer's weights, where it is linear:

* the sum right after the block's last layer (``z = W a + b + P s``, an activation after the
  sum or none: ResNet's ``relu(bn(conv(h)) + x)``; the BatchNorm is folded into the layer
  first): that layer takes the carried ``s`` as inputs too, ``[W, P]``;
* the sum after the block's activation (``z = relu(W a + b) + s``): the block's last layer
  keeps the carried rows, and the next Linear or convolution ``C`` reads both halves,
  ``[C, C P]``; with none after it (the model's output is the sum, or an activation comes
  first) a layer of its own sums them (``[I, P]``, a 1 x 1 convolution for maps).

A convolution carries ``s`` with a kernel whose one tap sits where the window's padding puts
the output's own position (row ``padding[0]``, column ``padding[1]``), so a convolution of
stride ``t`` carries ``s`` sampled every ``t`` pixels, as a 1 x 1 shortcut of stride ``t``
samples it: the block's strides must multiply to the shortcut's.  The carried rows go
through the block's ReLUs, which leave them as they are when ``s`` is nonnegative (it comes
from a ReLU); otherwise both ``s`` and ``-s`` are carried (two rows per value) and the sum
takes their difference.  In floating point the chain computes what the block computes, up to
rounding; compression then prunes, shares and quantizes it as any other network (the carried
rows are weights like the others).

A block that starts with a BatchNorm or an activation (a pre-activation ResNet's) has ``s``
copied by the layer before it instead.  A value concatenated back (``torch.cat([x, F(x)], 1)``:
DenseNet, wide and deep models) is carried the same way, and the next layer reads the block's
outputs and the carried rows in the concatenation's order.

Capture marks a block with two identity ops (:func:`source_marker` where ``s`` is, and
:func:`sum_marker`, holding the shortcut's ops, where the sum is) and
:func:`merge_skip_connections` rewrites the marked op list into the chain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .ir import Op, OpKind

__all__ = ["source_marker", "sum_marker", "is_shortcut", "merge_skip_connections",
           "SkipConnectionError"]

_CARRIED_ACTIVATIONS = (OpKind.RELU, OpKind.LEAKY)
_PASSED = (OpKind.IDENTITY, OpKind.FLATTEN)
_LAYERS = (OpKind.LINEAR, OpKind.CONV)


class SkipConnectionError(InputError):
    """A skip connection of a form the chain cannot carry; the message names its sum and
    what is in the way."""


def source_marker(key: object, name: str) -> Op:
    """The op that marks where the skip connection ``key`` (any object, compared by
    identity) leaves the chain."""
    return Op(OpKind.IDENTITY, name, {}, {"skip": ("source", key)})


def sum_marker(key: object, name: str, shortcut=(), *, concatenated: bool = False,
               shortcut_first: bool = False) -> Op:
    """The op that marks where the skip connection ``key`` is added back (its name is the
    sum's, for the messages), through the ``shortcut`` ops (none: the value itself); with
    ``concatenated``, joined to the block's outputs instead (``torch.cat``, the shortcut's
    before the block's with ``shortcut_first``)."""
    return Op(OpKind.IDENTITY, name, {}, {"skip": ("sum", key), "shortcut": tuple(shortcut),
                                          "concatenated": concatenated,
                                          "shortcut_first": shortcut_first})


def is_shortcut(ops) -> bool:
    """Whether ``ops`` can be a skip connection's shortcut: Linear layers, 1 x 1
    convolutions without padding, BatchNorms (none: the value itself)."""
    return all(op.kind in (OpKind.LINEAR, OpKind.BATCHNORM, OpKind.IDENTITY)
               or op.kind is OpKind.CONV and op.params["weight"].shape[2:] == (1, 1)
               and tuple(op.attrs.get("padding", (0, 0))) == (0, 0) for op in ops)


def _marker(op: Op):
    return op.attrs.get("skip") if op.kind is OpKind.IDENTITY else None


@dataclass(frozen=True)
class _Sum:
    """A sum still to be made: the value is ``matrix @ h + bias`` per position (``h`` the
    chain's last output, channels of a map or features of a vector)."""
    matrix: np.ndarray
    bias: np.ndarray
    conv: bool
    name: str

    def layer(self) -> Op:
        """A layer of its own that makes the sum."""
        name = f"{self.name} (the skip connection's sum)"
        if self.conv:
            return Op(OpKind.CONV, name, {"weight": self.matrix[:, :, None, None],
                                          "bias": self.bias},
                      {"stride": (1, 1), "padding": (0, 0)})
        return Op(OpKind.LINEAR, name, {"weight": self.matrix, "bias": self.bias}, {})

    def folds_into(self, op: Op) -> bool:
        """Whether ``op`` can take the sum in its weights: a Linear, or a convolution when
        there is no bias to add (a padded convolution's zeros would be shifted too)."""
        return op.kind is OpKind.LINEAR or (op.kind is OpKind.CONV and self.conv
                                            and not np.any(self.bias))

    def fold(self, op: Op) -> Op:
        """``op`` reading the sum's inputs instead of the sum."""
        folded = _mixed_inputs(op, self.matrix)
        if op.kind is OpKind.LINEAR:
            spread = np.repeat(self.bias, op.params["weight"].shape[1] // len(self.bias))
            folded = _layer(folded, bias=folded.params["bias"] + op.params["weight"] @ spread)
        return folded


def merge_skip_connections(ops: list[Op]) -> list[Op]:
    """``ops`` with every marked skip connection merged into the chain (module docstring);
    unchanged without markers."""
    if not any(_marker(op) for op in ops):
        return list(ops)
    blocks = _blocks(ops)
    out: list[Op] = []
    pending: _Sum | None = None
    nonnegative = False
    index = 0
    while index < len(ops):
        if index in blocks:
            end = blocks[index]
            inside = [op for op in ops[index + 1:end] if op.kind not in _PASSED]
            first_layer = next((op for op in inside if op.kind in _LAYERS), None)
            if pending is not None and first_layer is not None \
                    and (pending.conv != (first_layer.kind is OpKind.CONV)
                         or pending.conv and np.any(pending.bias)
                         or inside[0] is not first_layer):
                # A map's sum before a block of Linear layers (after a Flatten), with a
                # projection's bias, which a padded convolution cannot take, or before a
                # block that starts with an activation (whose value added back a layer
                # copies): made by a layer of its own first.
                _make_sum(out, pending)
                pending = None
            block, pending, nonnegative = _block(ops[index + 1:end], ops[end], pending,
                                                 nonnegative, out)
            out += block
            index = end + 1
            continue
        op = ops[index]
        index += 1
        if op.kind in _PASSED:
            out.append(op)
            continue
        if pending is not None:
            if pending.folds_into(op):
                op = pending.fold(op)
            else:
                _make_sum(out, pending)
            pending = None
        out.append(op)
        nonnegative = (op.kind is OpKind.RELU or op.kind is OpKind.CLAMP
                       and op.attrs.get("low") is not None and op.attrs["low"] >= 0
                       or op.kind is OpKind.MAXPOOL and nonnegative)
    if pending is not None:
        _make_sum(out, pending)
    return out


def _make_sum(out: list[Op], pending: _Sum) -> None:
    """Append ``pending``'s layer of its own to ``out``, before a Flatten (and Dropouts) at
    its end: the sum is of the map."""
    position = len(out)
    while position and out[position - 1].kind in _PASSED:
        position -= 1
    out.insert(position, pending.layer())


def _blocks(ops: list[Op]) -> dict[int, int]:
    """Source index -> sum index of every marked block, checked to be one after another."""
    sources, blocks = {}, {}
    for index, op in enumerate(ops):
        marker = _marker(op)
        if marker is None:
            continue
        role, key = marker
        if role == "source":
            sources[id(key)] = index
            continue
        start = sources.pop(id(key), None)
        if start is None:
            raise SkipConnectionError(f"the skip connection summed at {op.name!r} has no "
                                      f"start in the chain")
        blocks[start] = index
    spans = sorted(blocks.items())
    for (start, end), (next_start, next_end) in zip(spans, spans[1:]):
        if next_start < end:
            raise SkipConnectionError(
                f"the skip connections summed at {ops[end].name!r} and "
                f"{ops[next_end].name!r} overlap (one inside the other, or one value added "
                f"twice): skip connections one after another are supported")
    return blocks


# ---- one block -------------------------------------------------------------------------------

def _block(branch: list[Op], marker: Op, pending: _Sum | None, source_nonnegative: bool,
           chain: list[Op]) -> tuple[list[Op], _Sum | None, bool]:
    """The chain for ``z = F(s) + P(s)``, ``F`` the ops of ``branch``, ``P`` the marker's
    shortcut, and ``s`` the last output of ``chain`` (the ops before the block), or
    ``pending`` of it.  Returns the block's ops, the sum still to be made after them (None:
    their last output is ``z``) and whether ``z`` is nonnegative.  A block that starts with
    a BatchNorm or an activation (a pre-activation ResNet's) has ``s`` copied by the layer
    before it, whose ops in ``chain`` are changed so."""
    name = marker.name
    where = f"the skip connection summed at {name!r}"
    branch = [op for op in branch if op.kind not in _PASSED]
    for op in branch:
        if op.kind not in (*_LAYERS, OpKind.BATCHNORM, *_CARRIED_ACTIVATIONS):
            raise SkipConnectionError(
                f"{where} goes around {op.name!r} ({op.kind.value}): a skip connection is "
                f"supported around Linear layers and convolutions with ReLU or LeakyReLU and "
                f"BatchNorm between them")
    layers = [i for i, op in enumerate(branch) if op.kind in _LAYERS]
    if not layers:
        raise SkipConnectionError(
            f"{where}: its block has no Linear layer or convolution"
            + (f" ({branch[0].name!r} alone)" if branch else " (it adds a value to itself)"))
    conv = branch[layers[0]].kind is OpKind.CONV
    if any(branch[i].kind is not branch[layers[0]].kind for i in layers):
        raise SkipConnectionError(f"{where} goes around both Linear layers and convolutions")
    first, last = layers[0], layers[-1]
    after = branch[last + 1:]
    concatenated = marker.attrs.get("concatenated", False)
    # Added before the block's last activation (or with none): folded into its last layer.
    # Concatenated: the carried rows stay beside the block's outputs to the end.
    before_sum = not concatenated and not any(op.kind in _CARRIED_ACTIVATIONS for op in after)
    if before_sum and after:
        # BatchNorms right after the block's last layer (ResNet's conv -> BatchNorm -> sum)
        # are folded into it, so that the sum is added after them.
        layer = branch[last]
        for norm in after:
            scale, shift = _affine(norm, len(layer.params["weight"]), where)
            layer = _scaled_outputs(layer, scale, shift)
        branch = branch[:last] + [layer]
    size = branch[first].params["weight"].shape[1]
    projection, offset, shortcut_stride = _shortcut(marker.attrs["shortcut"], size, conv, where)
    _check_strides(branch, shortcut_stride, conv, where)
    early = first > 0                   # s is carried from the layer before the block
    carrying = (branch[:last] if early else branch[first + 1:last]) if before_sum \
        else (branch if early else branch[first + 1:])
    activations = [op for op in carrying if op.kind in _CARRIED_ACTIVATIONS]
    split = bool(activations) and not source_nonnegative
    if split and any(op.kind is OpKind.LEAKY for op in activations):
        raise SkipConnectionError(
            f"{where} carries a value that can be negative through a LeakyReLU "
            f"({activations[0].name!r}); a ReLU before the block (the value added back "
            f"nonnegative) or ReLU inside it is supported")
    identity = np.eye(size)
    to_source = identity if pending is None else pending.matrix          # h -> s
    # s = to_source @ h + source_bias: a sum through a projection with a bias before it.
    source_bias = np.zeros(size) if pending is None else pending.bias   # none for a map's
    carry_rows = np.vstack([identity, -identity]) if split else identity     # s -> carried
    added = projection @ (np.hstack([identity, -identity]) if split else identity)
    width = len(carry_rows)
    if early:
        _carry_from_the_layer_before(chain, carry_rows, where)

    out: list[Op] = []
    features = size                     # the block's own features (channels) at this point
    for index, op in enumerate(branch):
        if op.kind is OpKind.BATCHNORM:          # the carried rows pass unscaled
            scale, shift = _affine(op, features, where)
            out.append(Op(OpKind.BATCHNORM, op.name,
                          {"weight": np.concatenate([scale, np.ones(width)]),
                           "bias": np.concatenate([shift, np.zeros(width)]),
                           "mean": np.zeros(features + width),
                           "var": np.ones(features + width)}, {"eps": 0.0}))
            continue
        if op.kind not in _LAYERS:
            out.append(op)
            continue
        features = len(op.params["weight"])
        closes = index == last and before_sum
        if closes:
            _check_size(op, features, len(projection), where)
        if index == first and not early:
            layer = _mixed_inputs(op, to_source)
            bias = op.params["bias"] + _taps_sum(op) @ source_bias
            if closes:                              # z = W s + b + P s
                layer = _plus_at_tap(layer, projection @ to_source)
                bias = bias + projection @ source_bias
            else:
                layer = _with_rows(layer, carry_rows @ to_source)
                bias = np.concatenate([bias, carry_rows @ source_bias])
            layer = _layer(layer, bias=bias)
        elif closes:
            layer = _with_inputs(op, added)
        else:
            layer = _passing(op, width)
        if closes:
            layer = _layer(layer, bias=layer.params["bias"] + offset)
        # Named with what it does beside the model's layer, for the tables and reports.
        out.append(_noted(layer, "and the sum" if closes and index == first and not early
                          else f"and {width} carried inputs" if closes
                          else f"and {width} carried rows"))
    if before_sum:
        return out, None, False
    if concatenated:
        return out, _joined(features, projection, added, offset, conv, name,
                            marker.attrs["shortcut_first"]), False
    _check_size(branch[last], features, len(projection), where)
    # z = relu(...) + s is nonnegative when s is and the shortcut is s itself.
    plain_shortcut = projection.shape[0] == projection.shape[1] and np.array_equal(
        projection, np.eye(len(projection))) and not np.any(offset)
    nonnegative = source_nonnegative and plain_shortcut and after[-1].kind is OpKind.RELU \
        and all(op.kind is OpKind.RELU for op in after if op.kind in _CARRIED_ACTIVATIONS)
    matrix = np.hstack([np.eye(features), added])
    return out, _Sum(matrix, offset, conv, name), nonnegative


def _joined(features: int, projection, added, offset, conv: bool, name: str,
            shortcut_first: bool) -> _Sum:
    """The concatenation of the block's ``features`` outputs and the shortcut's, from the
    block's outputs and the carried rows beside them."""
    width = added.shape[1]
    block = np.hstack([np.eye(features), np.zeros((features, width))])
    shortcut = np.hstack([np.zeros((len(projection), features)), added])
    zeros = np.zeros(features)
    if shortcut_first:
        return _Sum(np.vstack([shortcut, block]), np.concatenate([offset, zeros]), conv, name)
    return _Sum(np.vstack([block, shortcut]), np.concatenate([zeros, offset]), conv, name)


def _carry_from_the_layer_before(chain: list[Op], carry_rows: np.ndarray, where: str) -> None:
    """Give the last layer of ``chain`` outputs that copy (``carry_rows``) the ones the block
    reads, passed through the ops after it as its own outputs are (a copy, the same
    activation and BatchNorm) or through none (a copy with its sign changed would not).  A
    sum still to be made before the block was made by a layer of its own first
    (:func:`merge_skip_connections`), so the chain's last output is the value itself."""
    layers = [i for i, op in enumerate(chain) if op.kind in _LAYERS]
    if not layers:
        raise SkipConnectionError(
            f"{where}: its block starts with an activation or a BatchNorm and there is no "
            f"layer before it to copy the value added back from (the block is at the model's "
            f"input)")
    index = layers[-1]
    layer, after = chain[index], chain[index + 1:]
    copies = np.array_equal(carry_rows, np.eye(len(carry_rows)))
    per_channel = (OpKind.RELU, OpKind.LEAKY, OpKind.CLAMP, OpKind.FUNCTION, OpKind.BATCHNORM,
                   OpKind.MAXPOOL, OpKind.AVGPOOL, OpKind.IDENTITY)
    passed = [op for op in after if op.kind is not OpKind.IDENTITY]
    if any(op.kind not in per_channel for op in after) or (passed and not copies):
        raise SkipConnectionError(
            f"{where}: its block starts with an activation or a BatchNorm, so the value added "
            f"back is copied by {layer.name!r} before it; "
            + (f"{passed[0].name!r} between them would change a copy with its sign changed "
               f"(the value can be negative and the block has a ReLU)" if not copies
               else f"{next(op.name for op in after if op.kind not in per_channel)!r} "
                    f"between them does not act on each value alone"))
    weight, bias = layer.params["weight"], layer.params["bias"]
    outputs = len(weight)
    chain[index] = _noted(_layer(layer, np.concatenate([weight,
                                                        np.tensordot(carry_rows, weight, 1)]),
                                 np.concatenate([bias, carry_rows @ bias])),
                          f"and {len(carry_rows)} copied rows")
    for position, op in enumerate(after, start=index + 1):
        if op.kind is OpKind.BATCHNORM:
            scale, shift = _affine(op, outputs, where)
            chain[position] = Op(OpKind.BATCHNORM, op.name,
                                 {"weight": np.tile(scale, 2), "bias": np.tile(shift, 2),
                                  "mean": np.zeros(2 * outputs), "var": np.ones(2 * outputs)},
                                 {"eps": 0.0})


def _shortcut(ops, size: int, conv: bool, where: str):
    """The shortcut's ops as one map: (matrix, bias, stride) with ``P(s) = matrix @ s + bias``
    at every position sampled every ``stride`` pixels."""
    matrix, bias, stride = np.eye(size), np.zeros(size), (1, 1)
    for op in ops:
        if op.kind is OpKind.IDENTITY and "sample" in op.attrs:     # x[:, :, ::s, ::t]
            if not conv:
                raise SkipConnectionError(f"{where} samples a vector ({op.name!r})")
            step = tuple(op.attrs["sample"])
            stride = (stride[0] * step[0], stride[1] * step[1])
            continue
        if op.kind is OpKind.IDENTITY and "pad_channels" in op.attrs:   # zero channels
            before, after = op.attrs["pad_channels"]
            matrix = np.vstack([np.zeros((before, matrix.shape[1])), matrix,
                                np.zeros((after, matrix.shape[1]))])
            bias = np.concatenate([np.zeros(before), bias, np.zeros(after)])
            continue
        if op.kind is OpKind.IDENTITY:
            continue
        if op.kind is OpKind.BATCHNORM:
            scale, shift = _affine(op, len(matrix), where)
            matrix, bias = scale[:, None] * matrix, scale * bias + shift
            continue
        if (op.kind is OpKind.CONV) != conv:
            raise SkipConnectionError(f"{where} has a shortcut ({op.name!r}) of another kind "
                                      f"than its block's layers")
        weight = op.params["weight"]
        weight = weight[:, :, 0, 0] if op.kind is OpKind.CONV else weight
        if weight.shape[1] != len(matrix):
            raise SkipConnectionError(f"{where}: its shortcut {op.name!r} takes "
                                      f"{weight.shape[1]} inputs, not {len(matrix)}")
        matrix, bias = weight @ matrix, weight @ bias + op.params["bias"]
        if op.kind is OpKind.CONV:
            step = tuple(op.attrs.get("stride", (1, 1)))
            stride = (stride[0] * step[0], stride[1] * step[1])
    return matrix, bias, stride


def _check_strides(branch: list[Op], shortcut_stride, conv: bool, where: str) -> None:
    """A convolution carries ``s`` at the tap its padding gives; the block's strides must
    sample ``s`` where the shortcut does."""
    if not conv:
        return
    stride = (1, 1)
    for op in branch:
        if op.kind is not OpKind.CONV:
            continue
        padding, kernel = tuple(op.attrs.get("padding", (0, 0))), op.params["weight"].shape[2:]
        if padding[0] >= kernel[0] or padding[1] >= kernel[1]:
            raise SkipConnectionError(f"{where} goes around {op.name!r}, whose padding "
                                      f"{padding} is as wide as its kernel {kernel}")
        step = tuple(op.attrs.get("stride", (1, 1)))
        stride = (stride[0] * step[0], stride[1] * step[1])
    if stride != shortcut_stride:
        raise SkipConnectionError(f"{where}: its block's convolutions have a stride of "
                                  f"{stride} in all and its shortcut {shortcut_stride}")


def _check_size(op: Op, features: int, size: int, where: str) -> None:
    if features != size:
        raise SkipConnectionError(f"{where} adds {op.name!r}'s {features} outputs to a value of "
                                  f"{size}: a sum needs both the same size")


def _affine(op: Op, size: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A BatchNorm or elementwise scale and shift (capture's BATCHNORM op) as one scale and
    shift per feature (channel) of ``size``."""
    p = op.params
    if "mean" in p:
        scale = p["weight"] / np.sqrt(p["var"] + op.attrs["eps"])
        shift = p["bias"] - p["mean"] * scale
    else:
        scale, shift = np.asarray(p["weight"], float), np.asarray(p["bias"], float)
    scale, shift = (np.full(size, float(v.reshape(-1)[0])) if v.size == 1 else v.reshape(-1)
                    for v in (scale, shift))
    if scale.size != size or shift.size != size:
        raise SkipConnectionError(f"{where}: {op.name!r} scales {scale.size} features where "
                                  f"the layer before it gives {size}")
    return scale, shift


# ---- a layer's weights, Linear (out x in) or convolution (out x in x rows x columns) ----------

def _layer(op: Op, weight=None, bias=None) -> Op:
    return Op(op.kind, op.name, {"weight": op.params["weight"] if weight is None else weight,
                                 "bias": op.params["bias"] if bias is None else bias},
              dict(op.attrs))


def _noted(op: Op, note: str) -> Op:
    """``op`` with ``note`` after its name (the model's layer, and what the chain adds)."""
    return Op(op.kind, f"{op.name} ({note})", op.params, dict(op.attrs))


def _tap(op: Op, matrix: np.ndarray) -> np.ndarray:
    """``matrix`` (out x in) as ``op``'s kind of weight: a convolution's kernel with one tap,
    where its padding puts the output's own position."""
    if op.kind is OpKind.LINEAR:
        return matrix
    kernel = op.params["weight"].shape[2:]
    row, column = op.attrs.get("padding", (0, 0))
    weight = np.zeros((*matrix.shape, *kernel))
    weight[:, :, row, column] = matrix
    return weight


def _mixed_inputs(op: Op, matrix: np.ndarray) -> Op:
    """``op`` reading ``matrix @ h`` (per position) from ``h``; a Linear after a flattened map
    reads each of the map's positions so."""
    weight = op.params["weight"]
    if op.kind is OpKind.CONV:
        return _layer(op, np.einsum("oc...,cj->oj...", weight, matrix))
    positions = weight.shape[1] // len(matrix)
    return _layer(op, weight @ np.kron(matrix, np.eye(positions)))


def _scaled_outputs(op: Op, scale: np.ndarray, shift: np.ndarray) -> Op:
    weight = op.params["weight"]
    return _layer(op, weight * scale.reshape(-1, *[1] * (weight.ndim - 1)),
                  op.params["bias"] * scale + shift)


def _with_rows(op: Op, rows: np.ndarray) -> Op:
    """``op`` with outputs appended that copy ``rows @ input`` (at the tap)."""
    return _layer(op, np.concatenate([op.params["weight"], _tap(op, rows)]),
                  np.concatenate([op.params["bias"], np.zeros(len(rows))]))


def _with_inputs(op: Op, columns: np.ndarray) -> Op:
    """``op`` with inputs appended, added to its outputs through ``columns`` (at the tap)."""
    return _layer(op, np.concatenate([op.params["weight"], _tap(op, columns)], axis=1))


def _passing(op: Op, width: int) -> Op:
    """``op`` with ``width`` inputs appended that it passes on as outputs of its own."""
    weight = op.params["weight"]
    zeros = np.zeros((len(weight), width, *weight.shape[2:]))
    top = np.concatenate([weight, zeros], axis=1)
    bottom = np.concatenate([np.zeros((width, weight.shape[1], *weight.shape[2:])),
                             _tap(op, np.eye(width))], axis=1)
    return _layer(op, np.concatenate([top, bottom]),
                  np.concatenate([op.params["bias"], np.zeros(width)]))


def _taps_sum(op: Op) -> np.ndarray:
    """``op``'s weight summed over a convolution's taps (out x in): what a constant input
    adds to each output (a convolution's is only ever given zeros: a map's sum with a bias is
    made by a layer of its own first, since padding would not add it)."""
    weight = op.params["weight"]
    return weight if weight.ndim == 2 else weight.sum(axis=(2, 3))


def _plus_at_tap(op: Op, matrix: np.ndarray) -> Op:
    return _layer(op, op.params["weight"] + _tap(op, matrix))
