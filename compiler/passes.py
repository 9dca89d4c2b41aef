"""Passes over the captured Graph, each with a written contract, and canonicalisation.

Every pass is ``apply(graph) -> graph``: it keeps the function the graph computes (checked by
``Graph.run`` in the tests) and makes one structural change.  ``canonicalize`` chains them and
returns the canonical :class:`Network` the rest of the compiler works on.
"""

from __future__ import annotations

import numpy as np

from .ir import Graph, Linear, Network, Op, OpKind

__all__ = [
    "PASSES",
    "canonicalize",
    "drop_final_softmax",
    "erase_identities",
    "fold_batchnorm",
    "fuse_relu",
]


def erase_identities(graph: Graph) -> Graph:
    """Remove Flatten, Dropout and Identity: inputs are flat vectors and inference ignores
    dropout.  After it, no IDENTITY or FLATTEN op remains."""
    ops = tuple(op for op in graph.ops if op.kind not in (OpKind.IDENTITY, OpKind.FLATTEN))
    return Graph(ops, graph.input_size, graph.source)


def fold_batchnorm(graph: Graph) -> Graph:
    """Fold each BatchNorm into the Linear right before it: ``W' = diag(s) W``, ``b' = s (b - m)
    + beta`` with ``s = gamma / sqrt(var + eps)``.  After it, no BATCHNORM op remains; a
    BatchNorm with no Linear right before it (after a ReLU, first, or after a Linear whose ReLU
    is fused) is an error: BatchNorm after a nonlinearity cannot be folded into a Linear."""
    ops: list[Op] = []
    for op in graph.ops:
        if op.kind is not OpKind.BATCHNORM:
            ops.append(op)
            continue
        if not ops or ops[-1].kind is not OpKind.LINEAR:
            before = ops[-1].name if ops else "the input"
            raise ValueError(f"BatchNorm {op.name} follows {before}, not a Linear layer; "
                             f"sparseforge folds BatchNorm only into the Linear before it")
        linear = ops[-1]
        if linear.attrs.get("relu"):
            raise ValueError(f"BatchNorm {op.name} follows {linear.name}, whose ReLU is already "
                             f"fused; folding through a ReLU would change the function")
        ops.pop()
        p = op.params
        scale = p["weight"] / np.sqrt(p["var"] + op.attrs["eps"])
        weight = linear.params["weight"] * scale[:, None]
        bias = (linear.params["bias"] - p["mean"]) * scale + p["bias"]
        ops.append(Op(OpKind.LINEAR, linear.name, {"weight": weight, "bias": bias},
                      dict(linear.attrs)))
    return Graph(tuple(ops), graph.input_size, graph.source)


def fuse_relu(graph: Graph) -> Graph:
    """Fuse each ReLU into the Linear right before it (``attrs['relu']``).  After it, no RELU
    op remains; a ReLU with no Linear right before it is an error (the engine applies ReLU at
    a layer's write-back)."""
    ops: list[Op] = []
    for op in graph.ops:
        if op.kind is not OpKind.RELU:
            ops.append(op)
            continue
        if not ops or ops[-1].kind is not OpKind.LINEAR:
            raise ValueError(f"ReLU {op.name} does not follow a Linear layer; the engine "
                             f"applies ReLU as part of a layer")
        linear = ops.pop()
        ops.append(Op(OpKind.LINEAR, linear.name, linear.params, {**linear.attrs, "relu": True}))
    return Graph(tuple(ops), graph.input_size, graph.source)


def drop_final_softmax(graph: Graph) -> Graph:
    """Drop a Softmax at the end (it does not change the argmax the engine's outputs give);
    a Softmax anywhere else is an error."""
    ops = list(graph.ops)
    if ops and ops[-1].kind is OpKind.SOFTMAX:
        ops.pop()
    for op in ops:
        if op.kind is OpKind.SOFTMAX:
            raise ValueError(f"Softmax {op.name} is not the last layer; only a final Softmax "
                             f"is supported (it is dropped for argmax)")
    return Graph(tuple(ops), graph.input_size, graph.source)


PASSES = (erase_identities, drop_final_softmax, fold_batchnorm, fuse_relu)


def canonicalize(graph: Graph) -> Network:
    """Run every pass, then build the Network of Linear layers (shapes checked)."""
    for apply in PASSES:
        graph = apply(graph)
    layers = []
    for op in graph.ops:
        if op.kind is not OpKind.LINEAR:
            raise ValueError(f"{op.name} ({op.kind.value}) is left after the passes")
        layers.append(Linear(op.name, np.asarray(op.params["weight"], dtype=np.float64),
                             np.asarray(op.params["bias"], dtype=np.float64),
                             bool(op.attrs.get("relu", False))))
    if layers and layers[0].in_features != graph.input_size:
        raise ValueError(f"layer {layers[0].name} takes {layers[0].in_features} inputs, the "
                         f"network's input has {graph.input_size}")
    return Network(tuple(layers), graph.source)
