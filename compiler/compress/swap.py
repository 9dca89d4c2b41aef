"""Swapping a model's activations besides ReLU, a leaky ReLU and clamps for ReLU.

A model trained with GELU, Tanh, ELU, SiLU, ... runs on the engine with a table per layer for
its function (8-bit activations, docs/numerics.md "Activations as tables"); for 16-bit
activations, an engine without table memories, or arithmetic that is no function the engine
has, the requantizer's own nonlinearities are ReLU, a leaky ReLU and a clamp.
:func:`swap_activations` returns a copy of the model whose hidden activations of the other
kinds are ReLUs, traced with
``torch.fx`` so that activations written as functions in a ``forward`` (``F.gelu(x)``,
``x.tanh()``) are found as well as modules; ``sf.compress(..., swap_activations=True)`` then
retrains the copy (its weights are the model's: a start, not a result) before compressing it.
:func:`swap_onnx_activations` does the same to an ONNX model's activations: single nodes
(``Tanh``, ``Elu``, ``Gelu``, ...) and the elementwise arithmetic exporters
write for some (SiLU as ``x * Sigmoid(x)``, GELU before opset 20 as ``Erf`` arithmetic).

An activation that ends the network is left alone: a classifier's final Sigmoid is dropped
by the compiler (it does not change the argmax) and any other runs as the last layer's table,
since swapping it would change what the outputs mean.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from ..capture import UnsupportedLayerError, is_swappable_activation
from ..onnx_activations import activation_regions, entry_of, region_name

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
    the elementwise arithmetic an exporter writes for one (``onnx_activations.activation_regions``:
    ``x * Sigmoid(x)`` for SiLU, ``Erf`` arithmetic for GELU)."""
    import onnx

    proto = copy.deepcopy(model) if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    graph = proto.graph
    nodes = list(graph.node)
    weighted = {"Gemm", "MatMul", "Conv"}
    swaps, replaced, removed = [], {}, set()
    for region in activation_regions(graph, _is_activation):
        if not any(later.op_type in weighted for later in nodes[region[-1] + 1:]):
            continue                            # it ends the network: not swapped
        first, last = nodes[region[0]], nodes[region[-1]]
        swaps.append(Swap(first.name or f"{first.op_type}_{region[0]}",
                          region_name([nodes[i] for i in region], entry_of(first, graph))))
        # PRelu's slope is a second input, the others' settings attributes: a Relu has none.
        replaced[region[0]] = onnx.helper.make_node("Relu", [entry_of(first, graph)],
                                                    [last.output[0]],
                                                    name=first.name or last.name)
        removed.update(region)
    kept = [replaced.get(index, node) for index, node in enumerate(nodes)
            if index in replaced or index not in removed]
    del graph.node[:]
    graph.node.extend(kept)
    return proto, swaps


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
