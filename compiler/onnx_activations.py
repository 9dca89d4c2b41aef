"""Activations an exporter writes as elementwise arithmetic in ONNX (SiLU as ``x *
Sigmoid(x)``, GELU before opset 20 as ``Erf`` arithmetic, Mish, HardSwish): finding them
(:func:`activation_regions`, which ``compress.swap`` swaps for ReLU) and recognising the
function one computes (:func:`function_regions`, which the capture runs as a table).
"""

from __future__ import annotations

import copy

import numpy as np

from .activations import FUNCTIONS, Function

__all__ = ["activation_regions", "constants_of", "entry_of", "function_regions", "region_name"]


# Elementwise ops an exporter writes activations with; a region of them must hold one of the
# nonlinear ones to be an activation (a Mul and an Add by constants alone are an affine map).
_ELEMENTWISE = {"Sigmoid", "Tanh", "Erf", "Exp", "Log", "Softplus", "HardSigmoid", "Mul",
                "Div", "Add", "Sub", "Pow", "Sqrt", "Neg", "Clip", "Min", "Max", "Abs"}
_AFFINE = {"Add", "Sub", "Mul", "Div"}
_NONLINEAR = {"Sigmoid", "Tanh", "Erf", "Exp", "Log", "Softplus", "HardSigmoid", "Pow", "Sqrt",
              "Clip", "Min", "Max", "Abs"}


def constants_of(graph) -> set[str]:
    """The names of the graph's constant tensors (initializers, Constant nodes' outputs)."""
    names = {init.name for init in graph.initializer}
    names.update(node.output[0] for node in graph.node if node.op_type == "Constant")
    return names


def entry_of(node, graph) -> str:
    """The tensor a region (starting at ``node``) applies its activation to: the node's first
    input that is not a constant."""
    constants = constants_of(graph)
    return next(name for name in node.input if name and name not in constants)


def activation_regions(graph, is_activation) -> list[list[int]]:
    """The graph's activations (node indices, in order): a node ``is_activation(node, graph)``
    says is one (``Tanh``, ``Gelu``, ...), or a run of elementwise nodes that reads one
    tensor from outside (the activation's input) besides constants, leaves one output to the
    rest of the graph (the last node's) and holds a nonlinear op: an activation written as
    arithmetic.  Constant nodes between them are not part of it."""
    constants = constants_of(graph)
    nodes = list(graph.node)
    readers: dict[str, list[int]] = {}
    for index, node in enumerate(nodes):
        for name in node.input:
            readers.setdefault(name, []).append(index)
    regions, index = [], 0
    while index < len(nodes):
        node = nodes[index]
        # x * x (GELU's tanh form starts so) reads one tensor.
        inputs = {name for name in node.input if name and name not in constants}
        if node.op_type not in _ELEMENTWISE or len(inputs) != 1:
            if is_activation(node, graph):
                regions.append([index])
            index += 1
            continue
        entry, region, made = inputs.pop(), [], set()
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
            if is_activation(nodes[index], graph):
                regions.append([index])
            index += 1
    return regions


def region_name(region: list, entry: str) -> str:
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


# The domain of the nodes function_regions puts in the place of a region: each is named by
# its function (op_type) and has its parameters as the float list ``params``.
FUNCTION_DOMAIN = "ai.sparseforge.function"

# Where a region is compared with each function: wide enough for every function's bends and
# tails at the scales layers produce.
_PROBE = np.linspace(-12.0, 12.0, 4801)


def function_regions(model):
    """``model`` (an ``onnx.ModelProto``, not changed) with each run of elementwise arithmetic
    that computes one of :data:`~.activations.FUNCTIONS` (with PyTorch's default settings, or
    GELU's tanh form) replaced by one node of :data:`FUNCTION_DOMAIN`, and the model itself
    where there is none.  A region is what :func:`activation_regions` finds; it is evaluated by
    onnx's reference evaluator over a range of inputs and must agree with the function to
    float32 precision: a formula that is almost GELU stays arithmetic (and is refused)."""
    import onnx

    graph = model.graph
    nodes = list(graph.node)
    regions = [region for region in activation_regions(graph, lambda node, graph: False)
               if len(region) > 1]
    replaced, removed = {}, set()
    for region in regions:
        entry = entry_of(nodes[region[0]], graph)
        function = _function_of(model, [nodes[i] for i in region], entry)
        if function is None:
            continue
        replaced[region[0]] = onnx.helper.make_node(
            function.name, [entry], [nodes[region[-1]].output[0]],
            name=nodes[region[0]].name or nodes[region[-1]].name, domain=FUNCTION_DOMAIN,
            **({"params": list(function.params)} if function.params else {}))
        removed.update(region)
    if not replaced:
        return model
    folded = copy.deepcopy(model)
    del folded.graph.node[:]
    folded.graph.node.extend(replaced.get(index, node) for index, node in enumerate(nodes)
                             if index in replaced or index not in removed)
    return folded


def _function_of(model, region: list, entry: str) -> Function | None:
    """The function the region's nodes compute of ``entry``, or None."""
    values = _evaluate(model, region, entry)
    if values is None:
        return None
    candidates = [Function(name) for name in FUNCTIONS] + [Function.of("gelu", tanh=1.0)]
    for function in candidates:
        expected = function(_PROBE)
        if np.all(np.abs(values - expected) <= 1e-5 * np.maximum(1.0, np.abs(expected))):
            return function
    return None


def _evaluate(model, region: list, entry: str) -> np.ndarray | None:
    """The region's output for ``_PROBE`` as its input (float32, as exporters' constants
    are), or None where it does not evaluate elementwise on a vector."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    used = {name for node in region for name in node.input}
    constants = [node for node in graph.node
                 if node.op_type == "Constant" and node.output[0] in used]
    initializers = [init for init in graph.initializer if init.name in used]
    probe = onnx.helper.make_graph(
        constants + list(region), "region",
        [onnx.helper.make_tensor_value_info(entry, onnx.TensorProto.FLOAT, [len(_PROBE)])],
        [onnx.helper.make_tensor_value_info(region[-1].output[0], onnx.TensorProto.FLOAT,
                                            None)],
        initializers)
    try:
        evaluator = ReferenceEvaluator(onnx.helper.make_model(
            probe, opset_imports=[o for o in model.opset_import if o.domain in ("", "ai.onnx")]))
        [values] = evaluator.run(None, {entry: _PROBE.astype(np.float32)})
    except Exception:               # the evaluator raises anything an op's kernel does
        return None
    values = np.asarray(values, dtype=np.float64)
    return values if values.shape == _PROBE.shape and np.all(np.isfinite(values)) else None
