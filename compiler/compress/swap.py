"""Swapping the activations the engine does not have for ReLU, which it has.

A model trained with GELU, Tanh, ELU, SiLU, ... cannot run on the engine as it is: the
requantizer's nonlinearities are ReLU, a leaky ReLU and a clamp (docs/numerics.md).
:func:`swap_activations` returns a copy of the model whose hidden activations of the other
kinds are ReLUs, traced with
``torch.fx`` so that activations written as functions in a ``forward`` (``F.gelu(x)``,
``x.tanh()``) are found as well as modules; ``sf.compress(..., swap_activations=True)`` then
retrains the copy (its weights are the model's: a start, not a result) before compressing it.
:func:`swap_onnx_activations` does the same to an ONNX model's activations: single nodes
(``Tanh``, ``Elu``, ``Gelu``, ...) and the elementwise arithmetic exporters
write for some (SiLU as ``x * Sigmoid(x)``, GELU before opset 20 as ``Erf`` arithmetic).

An activation that ends the network is left alone: a final Sigmoid is dropped by the compiler
(it does not change the argmax) and any other is refused there, since swapping it would
change what the outputs mean.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from ..capture import UnsupportedLayerError, is_swappable_activation

__all__ = ["Swap", "swap_activations", "swap_onnx_activations", "swap_sklearn_activations"]


@dataclass(frozen=True)
class Swap:
    """One activation swapped: ``where``, the layer's path or the function call's node name
    in the traced model, and ``kind``, the activation it was (``"GELU"``, ``"tanh"``)."""
    where: str
    kind: str

    def __str__(self) -> str:
        return f"{self.kind} at {self.where!r}"


def swap_activations(model) -> tuple[object, list[Swap]]:
    """A copy of ``model`` (an ``nn.Module``; the model itself is not changed) with every
    hidden activation the engine does not run replaced by ReLU, and the swaps made (none:
    the model is returned as it is).  Refused with the capture's error when the model cannot
    be traced with ``torch.fx``."""
    import torch
    import torch.fx
    from torch import nn

    weighted = (nn.Linear, nn.Conv1d, nn.Conv2d)
    try:
        traced = torch.fx.symbolic_trace(copy.deepcopy(model).eval())
    except Exception as error:                  # fx raises anything a forward does
        raise UnsupportedLayerError(
            f"the model ({type(model).__name__}: swap_activations traces it with torch.fx, "
            f"which failed: {type(error).__name__}: {error})", "untraceable") from None
    modules = dict(traced.named_modules())
    nodes = list(traced.graph.nodes)

    def kind_of(node) -> str | None:
        if node.op == "call_module":
            module = modules[node.target]
            name = type(module).__name__
            if isinstance(module, nn.PReLU) and module.num_parameters == 1:
                return None                     # one slope: a leaky ReLU, which runs
        elif node.op in ("call_function", "call_method"):
            name = node.target if isinstance(node.target, str) else \
                getattr(node.target, "__name__", "")
        else:
            return None
        return name if is_swappable_activation(name) else None

    def weighted_after(index: int) -> bool:
        return any(node.op == "call_module" and isinstance(modules[node.target], weighted)
                   for node in nodes[index + 1:])

    swaps = []
    for index, node in enumerate(nodes):
        kind = kind_of(node)
        if kind is None or not weighted_after(index):
            continue
        with traced.graph.inserting_after(node):
            relu = traced.graph.call_function(torch.relu, (node.args[0],))
        node.replace_all_uses_with(relu)
        traced.graph.erase_node(node)
        swaps.append(Swap(str(node.target) if node.op == "call_module" else node.name, kind))
    if not swaps:
        return model, []
    traced.graph.lint()
    traced.recompile()
    return traced, swaps


def swap_sklearn_activations(model) -> tuple[object, list[Swap]]:
    """A copy of a fitted scikit-learn MLP (or a Pipeline ending in one; not changed) whose
    hidden activation ``tanh`` or ``logistic`` is ``relu``, and the swap made."""
    mlp = model.steps[-1][1] if type(model).__name__ == "Pipeline" else model
    if getattr(mlp, "activation", "relu") not in ("tanh", "logistic"):
        return model, []
    swapped = copy.deepcopy(model)
    swapped_mlp = swapped.steps[-1][1] if type(model).__name__ == "Pipeline" else swapped
    swapped_mlp.activation = "relu"
    return swapped, [Swap("hidden layers", mlp.activation)]


def swap_onnx_activations(model) -> tuple[object, list[Swap]]:
    """An ONNX model (a path, or an ``onnx.ModelProto``, which is not changed) as a
    ``ModelProto`` whose hidden activations the engine does not run are ``Relu`` nodes, and
    the swaps made.  An activation is one node (``Tanh``, ``Elu``, ``Gelu``, ...) or
    the elementwise arithmetic an exporter writes for one (:func:`_activation_regions`:
    ``x * Sigmoid(x)`` for SiLU, ``Erf`` arithmetic for GELU)."""
    import onnx

    proto = copy.deepcopy(model) if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    graph = proto.graph
    nodes = list(graph.node)
    weighted = {"Gemm", "MatMul", "Conv"}
    swaps, replaced, removed = [], {}, set()
    for region in _activation_regions(graph):
        if not any(later.op_type in weighted for later in nodes[region[-1] + 1:]):
            continue                            # it ends the network: not swapped
        first, last = nodes[region[0]], nodes[region[-1]]
        swaps.append(Swap(first.name or f"{first.op_type}_{region[0]}",
                          _region_name([nodes[i] for i in region], _entry(first, graph))))
        # PRelu's slope is a second input, the others' settings attributes: a Relu has none.
        replaced[region[0]] = onnx.helper.make_node("Relu", [_entry(first, graph)],
                                                    [last.output[0]],
                                                    name=first.name or last.name)
        removed.update(region)
    kept = [replaced.get(index, node) for index, node in enumerate(nodes)
            if index in replaced or index not in removed]
    del graph.node[:]
    graph.node.extend(kept)
    return proto, swaps


# Elementwise ops an exporter writes activations with; a region of them must hold one of the
# nonlinear ones to be an activation (a Mul and an Add by constants alone are an affine map).
_ELEMENTWISE = {"Sigmoid", "Tanh", "Erf", "Exp", "Log", "Softplus", "HardSigmoid", "Mul",
                "Div", "Add", "Sub", "Pow", "Sqrt", "Neg", "Clip", "Min", "Max"}
_AFFINE = {"Add", "Sub", "Mul", "Div"}
_NONLINEAR = {"Sigmoid", "Tanh", "Erf", "Exp", "Log", "Softplus", "HardSigmoid", "Pow", "Sqrt",
              "Clip", "Min", "Max"}


def _constants(graph) -> set[str]:
    """The names of the graph's constant tensors (initializers, Constant nodes' outputs)."""
    names = {init.name for init in graph.initializer}
    names.update(node.output[0] for node in graph.node if node.op_type == "Constant")
    return names


def _entry(node, graph) -> str:
    """The tensor a region (starting at ``node``) applies its activation to: the node's first
    input that is not a constant."""
    constants = _constants(graph)
    return next(name for name in node.input if name and name not in constants)


def _activation_regions(graph) -> list[list[int]]:
    """The graph's activations (node indices, in order): a node of a kind the engine does not
    have (``Tanh``, ``Gelu``, ...), or a run of elementwise nodes that reads one
    tensor from outside (the activation's input) besides constants, leaves one output to the
    rest of the graph (the last node's) and holds a nonlinear op: an activation written as
    arithmetic.  Constant nodes between them are not part of it."""
    constants = _constants(graph)
    nodes = list(graph.node)
    readers: dict[str, list[int]] = {}
    for index, node in enumerate(nodes):
        for name in node.input:
            readers.setdefault(name, []).append(index)
    regions, index = [], 0
    while index < len(nodes):
        node = nodes[index]
        inputs = [name for name in node.input if name and name not in constants]
        if node.op_type not in _ELEMENTWISE or len(inputs) != 1:
            if _is_activation(node, graph):
                regions.append([index])
            index += 1
            continue
        entry, region, made = inputs[0], [], set()
        for later in range(index, len(nodes)):
            node = nodes[later]
            if node.op_type == "Constant":
                continue
            if node.op_type not in _ELEMENTWISE or any(
                    name not in constants and name != entry and name not in made
                    for name in node.input if name):
                break
            region.append(later)
            made.update(node.output)
        # The longest prefix whose inner outputs are read only inside it.
        while region:
            inner = {name for i in region[:-1] for name in nodes[i].output}
            if all(reader in region for name in inner for reader in readers.get(name, [])):
                break
            region.pop()
        # A layer's bias (MatMul, then Add) or a scale in front is the layer's, not the
        # activation's: arithmetic by a constant that alone reads the region's input is left
        # out (GELU's x / sqrt(2) and HardSwish's x + 3 are not: x is read again later).
        while len(region) > 1 and nodes[region[0]].op_type in _AFFINE and [
                i for i in region if entry in nodes[i].input] == [region[0]]:
            entry = nodes[region[0]].output[0]
            region = region[1:]
        if len(region) > 1 and any(nodes[i].op_type in _NONLINEAR for i in region):
            regions.append(region)
            index = region[-1] + 1
        else:
            if _is_activation(nodes[index], graph):
                regions.append([index])
            index += 1
    return regions


def _is_activation(node, graph) -> bool:
    """Whether one ONNX node is an activation the engine does not have (a Clip, ReLU6 or
    Hardtanh, it has: only within arithmetic, as in HardSwish, is one swapped; and a PRelu of
    one slope, a leaky ReLU)."""
    if node.op_type == "PRelu" and len(node.input) > 1:
        from onnx import numpy_helper

        slopes = [numpy_helper.to_array(init) for init in graph.initializer
                  if init.name == node.input[1]]
        if slopes and slopes[0].size == 1:
            return False
    return is_swappable_activation(node.op_type)


def _region_name(region: list, entry: str) -> str:
    """What an activation region (its nodes; ``entry`` its input) is: the activation it
    usually is, or its ops."""
    ops = [node.op_type for node in region]
    if len(ops) == 1:
        return ops[0]
    times_input = ops[-1] == "Mul" and entry in region[-1].input
    if ops == ["Sigmoid", "Mul"] and times_input:
        return "SiLU (x * Sigmoid(x))"
    if ops == ["Softplus", "Tanh", "Mul"] and times_input:
        return "Mish (x * Tanh(Softplus(x)))"
    if "Erf" in ops:
        return "GELU (Erf arithmetic)"
    if "Tanh" in ops and "Pow" in ops:
        return "GELU (Tanh approximation)"
    return " -> ".join(ops)
