"""Skip connections as a chain of layers.

The engine runs a chain: each layer reads the previous layer's outputs.  A residual block
``z = F(s) + s`` (``F`` a few Linear layers with ReLUs between) is a chain too once ``s`` is
carried through ``F``'s layers beside their own outputs: the block's first Linear gets rows
that copy ``s`` (an identity block: one entry a row, which a sparse engine stores and runs at
the cost of one weight each), every Linear after it passes them on, and the sum is folded into
a Linear's weights, where it is linear:

* the add right after the block's last Linear (``z = W a + b + s``, an activation after the
  add or none: ResNet's ``relu(F(x) + x)``): that Linear takes the carried ``s`` as inputs
  of weight one, ``[W, I]``;
* the add after the block's activation (``z = relu(W a + b) + s``): the block's last layer
  keeps the carried rows, and the next Linear ``C`` reads both halves, ``[C, C]``; with none
  after it (the model's output is the sum) a Linear of ``[I, I]`` is added to sum them.

The carried rows go through the block's ReLUs, which leave them as they are when ``s`` is
nonnegative (it comes from a ReLU); otherwise both ``s`` and ``-s`` are carried (two rows
per value) and the sum takes their difference.  In floating point the chain computes what
the block computes, up to rounding; compression then prunes, shares and quantizes it as any
other network (the carried rows are weights like the others).

Capture marks a block with two identity ops (:func:`source_marker` where ``s`` is, and
:func:`sum_marker` where the sum is), in whichever module they were traced, and
:func:`merge_skip_connections` rewrites the marked op list into the chain.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .ir import Op, OpKind

__all__ = ["source_marker", "sum_marker", "merge_skip_connections", "SkipConnectionError"]

_CARRIED_ACTIVATIONS = (OpKind.RELU, OpKind.LEAKY)
_PASSED = (OpKind.IDENTITY, OpKind.FLATTEN)


class SkipConnectionError(InputError):
    """A skip connection of a form the chain cannot carry; the message names its sum and
    what is in the way."""


def source_marker(key: object, name: str) -> Op:
    """The op that marks where the skip connection ``key`` (any object, compared by
    identity) leaves the chain."""
    return Op(OpKind.IDENTITY, name, {}, {"skip": ("source", key)})


def sum_marker(key: object, name: str) -> Op:
    """The op that marks where the skip connection ``key`` is added back (its name is the
    add's, for the messages)."""
    return Op(OpKind.IDENTITY, name, {}, {"skip": ("sum", key)})


def _marker(op: Op):
    return op.attrs.get("skip") if op.kind is OpKind.IDENTITY else None


def merge_skip_connections(ops: list[Op]) -> list[Op]:
    """``ops`` with every marked skip connection merged into the chain (module docstring);
    unchanged without markers."""
    if not any(_marker(op) for op in ops):
        return list(ops)
    blocks = _blocks(ops)
    out: list[Op] = []
    pending: np.ndarray | None = None     # the value is pending @ (the chain's last output)
    nonnegative = False
    sum_name = ""
    index = 0
    while index < len(ops):
        if index in blocks:
            end = blocks[index]
            sum_name = ops[end].name
            block, pending, nonnegative = _block(ops[index + 1:end], sum_name, pending,
                                                 nonnegative)
            out += block
            index = end + 1
            continue
        op = ops[index]
        index += 1
        if op.kind in _PASSED:
            out.append(op)
            continue
        if op.kind is OpKind.LINEAR and pending is not None:
            op = _linear(op, op.params["weight"] @ pending, op.params["bias"])
            pending = None
        elif pending is not None:
            # The sum goes into something that is not a Linear: a layer of its own sums it.
            out.append(_sum_layer(pending, sum_name))
            pending = None
        out.append(op)
        nonnegative = (op.kind is OpKind.RELU or op.kind is OpKind.CLAMP
                       and op.attrs.get("low") is not None and op.attrs["low"] >= 0
                       or op.kind is OpKind.MAXPOOL and nonnegative)
    if pending is not None:
        out.append(_sum_layer(pending, sum_name))
    return out


def _sum_layer(pending: np.ndarray, name: str) -> Op:
    """A Linear of its own that sums a block's outputs and the value carried beside them."""
    return Op(OpKind.LINEAR, f"{name} (the skip connection's sum)",
              {"weight": pending, "bias": np.zeros(len(pending))}, {})


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


def _affine(op: Op, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A BatchNorm or elementwise scale and shift (capture's BATCHNORM op) as one scale and
    shift per feature of a vector of ``size``."""
    p = op.params
    if "mean" in p:
        scale = p["weight"] / np.sqrt(p["var"] + op.attrs["eps"])
        shift = p["bias"] - p["mean"] * scale
    else:
        scale, shift = np.asarray(p["weight"], float), np.asarray(p["bias"], float)
    scale, shift = (np.full(size, float(v.reshape(-1)[0])) if v.size == 1 else v.reshape(-1)
                    for v in (scale, shift))
    if scale.size != size or shift.size != size:
        raise SkipConnectionError(f"{op.name!r} scales {scale.size} features inside a skip "
                                  f"connection's block whose layer gives {size}")
    return scale, shift


def _linear(op: Op, weight: np.ndarray, bias: np.ndarray) -> Op:
    return Op(OpKind.LINEAR, op.name, {"weight": weight, "bias": bias}, dict(op.attrs))


def _block(branch: list[Op], name: str, pending: np.ndarray | None,
           source_nonnegative: bool) -> tuple[list[Op], np.ndarray | None, bool]:
    """The chain for ``z = F(s) + s``, ``F`` the ops of ``branch`` and ``s`` the value
    ``pending @ h`` (``h`` the chain's last output; ``pending`` None: ``s = h``).  Returns
    the chain's ops, the map that gives ``z`` from the chain's new last output (None: it is
    ``z``) and whether ``z`` is nonnegative."""
    branch = [op for op in branch if op.kind not in _PASSED]
    where = f"the skip connection summed at {name!r}"
    for op in branch:
        if op.kind not in (OpKind.LINEAR, OpKind.BATCHNORM, *_CARRIED_ACTIVATIONS):
            kind = "a convolution" if op.kind is OpKind.CONV else op.kind.value
            raise SkipConnectionError(
                f"{where} goes around {op.name!r} ({kind}): a skip connection is supported "
                f"around Linear layers with ReLU or LeakyReLU and BatchNorm1d between them")
    linears = [i for i, op in enumerate(branch) if op.kind is OpKind.LINEAR]
    if not linears or linears[0] != 0:
        first = branch[0].name if branch else None
        raise SkipConnectionError(
            f"{where}: its block must start with a Linear layer"
            + (f", not {first!r}" if first else " (it adds a value to itself)"))
    first, last = linears[0], linears[-1]
    after = branch[last + 1:]
    before_sum = not any(op.kind in _CARRIED_ACTIVATIONS for op in after)
    carrying = branch[first + 1:last] if before_sum else branch[first + 1:]
    activations = [op for op in carrying if op.kind in _CARRIED_ACTIVATIONS]
    if before_sum and after:
        # BatchNorms right after the block's last Linear (ResNet's Linear -> BatchNorm -> sum):
        # folded into it, so that the sum is added after them.
        layer = branch[last]
        weight, bias = layer.params["weight"], layer.params["bias"]
        for norm in after:
            scale, shift = _affine(norm, len(weight))
            weight, bias = scale[:, None] * weight, scale * bias + shift
        branch = branch[:last] + [_linear(layer, weight, bias)]
    size = branch[first].params["weight"].shape[1]
    split = bool(activations) and not source_nonnegative
    if split and any(op.kind is OpKind.LEAKY for op in activations):
        raise SkipConnectionError(
            f"{where} carries a value that can be negative through a LeakyReLU "
            f"({activations[0].name!r}); a ReLU before the block (the value added back "
            f"nonnegative) or ReLU inside it is supported")
    identity = np.eye(size)
    to_source = identity if pending is None else pending         # h -> s
    carry_rows = np.vstack([identity, -identity]) if split else identity      # s -> carried
    carried_to_source = np.hstack([identity, -identity]) if split else identity
    width = len(carry_rows)

    out: list[Op] = []
    features = size                     # the block's own features at this point
    for index, op in enumerate(branch):
        if op.kind is OpKind.BATCHNORM:          # the carried rows pass unscaled
            scale, shift = _affine(op, features)
            out.append(Op(OpKind.BATCHNORM, op.name,
                          {"weight": np.concatenate([scale, np.ones(width)]),
                           "bias": np.concatenate([shift, np.zeros(width)])},
                          {"elementwise": "scale and shift"}))
            continue
        if op.kind is not OpKind.LINEAR:
            out.append(op)
            continue
        weight, bias = op.params["weight"], op.params["bias"]
        features = len(weight)
        closes = index == last and before_sum
        if index == first:
            weight = weight @ to_source
            if closes:                              # z = W s + b + s
                _check_size(op, features, size, where)
                weight = weight + to_source
            else:
                weight = np.vstack([weight, carry_rows @ to_source])
                bias = np.concatenate([bias, np.zeros(width)])
        elif closes:
            _check_size(op, features, size, where)
            weight = np.hstack([weight, carried_to_source])
        else:
            weight = np.block([[weight, np.zeros((features, width))],
                               [np.zeros((width, weight.shape[1])), np.eye(width)]])
            bias = np.concatenate([bias, np.zeros(width)])
        out.append(_linear(op, weight, bias))
    if before_sum:
        return out, None, False
    _check_size(branch[last], features, size, where)
    nonnegative = source_nonnegative and all(op.kind is OpKind.RELU for op in after
                                             if op.kind in _CARRIED_ACTIVATIONS) \
        and after[-1].kind is OpKind.RELU
    return out, np.hstack([np.eye(size), carried_to_source]), nonnegative


def _check_size(op: Op, features: int, size: int, where: str) -> None:
    if features != size:
        raise SkipConnectionError(f"{where} adds {op.name!r}'s {features} outputs to a value of "
                                  f"{size}: a sum needs both the same size")
