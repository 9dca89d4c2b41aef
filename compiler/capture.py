"""Network capture: an ``nn.Module`` or an ONNX file as a :class:`Graph` of typed ops.

Modules are walked in execution order (``nn.Sequential`` and nested containers; a module that
is a leaf of a known type becomes one op).  ONNX graphs are read with the ``onnx`` package:
Gemm, MatMul followed by Add, Relu, Flatten, BatchNormalization, Dropout/Identity, and a final
Softmax.  Anything else is refused with the module path (or node name), its type, and what is
supported.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from .ir import SUPPORTED_OPS, Graph, Op, OpKind

__all__ = ["UnsupportedLayerError", "capture", "capture_module", "capture_onnx"]


class UnsupportedLayerError(ValueError):
    """A layer the engine cannot run; the message names it and lists what is supported."""

    def __init__(self, where: str, kind: str):
        super().__init__(f"{where} is a {kind}, which sparseforge cannot run; supported: "
                         f"{', '.join(SUPPORTED_OPS)}")
        self.where, self.kind = where, kind


def capture(model) -> Graph:
    """Capture an ``nn.Module``, or an ONNX file given by its path."""
    if isinstance(model, (str, Path)):
        path = Path(model)
        if path.suffix.lower() != ".onnx":
            raise ValueError(f"{path}: capture reads ONNX files (.onnx); for a PyTorch "
                             f"checkpoint build the module and pass it")
        return capture_onnx(path)
    import torch

    if isinstance(model, torch.nn.Module):
        return capture_module(model)
    raise TypeError(f"capture takes an nn.Module or a path to an ONNX file, not "
                    f"{type(model).__name__}")


# ---- PyTorch ----------------------------------------------------------------------------------

def _array(tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().astype(np.float64)


@functools.cache
def _module_handlers():
    import torch.nn as nn

    def linear(module, name):
        # torch.nn.utils.prune keeps weight_orig and weight_mask; `weight` is their product.
        bias = (_array(module.bias) if module.bias is not None
                else np.zeros(module.out_features))
        return [Op(OpKind.LINEAR, name, {"weight": _array(module.weight), "bias": bias})]

    def batchnorm(module, name):
        if not module.track_running_stats or module.running_mean is None:
            raise UnsupportedLayerError(f"{name} (BatchNorm1d without running statistics)",
                                        "BatchNorm1d")
        weight = (_array(module.weight) if module.affine else np.ones(module.num_features))
        bias = _array(module.bias) if module.affine else np.zeros(module.num_features)
        return [Op(OpKind.BATCHNORM, name,
                   {"mean": _array(module.running_mean), "var": _array(module.running_var),
                    "weight": weight, "bias": bias}, {"eps": float(module.eps)})]

    def simple(kind):
        return lambda module, name: [Op(kind, name)]

    return {
        nn.Linear: linear,
        nn.ReLU: simple(OpKind.RELU),
        nn.BatchNorm1d: batchnorm,
        nn.Flatten: simple(OpKind.FLATTEN),
        nn.Dropout: simple(OpKind.IDENTITY),
        nn.Identity: simple(OpKind.IDENTITY),
        nn.Softmax: simple(OpKind.SOFTMAX),
        nn.LogSoftmax: simple(OpKind.SOFTMAX),
    }


def capture_module(model) -> Graph:
    """``model`` (evaluation-mode parameters) as a Graph.  An ``nn.Sequential`` is walked
    child by child; any other module is traced with ``torch.fx`` and must be a chain (each op
    takes the previous op's output)."""
    ops = _capture(model, "")
    linear = [op for op in ops if op.kind is OpKind.LINEAR]
    if not linear:
        raise ValueError("the model has no Linear layer to run")
    return Graph(tuple(ops), linear[0].params["weight"].shape[1], type(model).__name__)


def _capture(module, name) -> list[Op]:
    import torch.nn as nn

    handler = _module_handlers().get(type(module))
    if handler is not None:
        return handler(module, name or type(module).__name__)
    if not list(module.children()) and type(module).forward is not nn.Module.forward \
            and type(module).__module__.startswith("torch.nn"):
        raise UnsupportedLayerError(f"layer {name or type(module).__name__!r}",
                                    type(module).__name__)
    if isinstance(module, nn.Sequential):
        ops = []
        for child_name, child in module.named_children():
            ops += _capture(child, f"{name}.{child_name}" if name else child_name)
        return ops
    return _trace(module, name)


@functools.cache
def _function_kinds():
    import torch
    import torch.nn.functional as F

    return {torch.relu: OpKind.RELU, F.relu: OpKind.RELU, "relu": OpKind.RELU,
            torch.flatten: OpKind.FLATTEN, "flatten": OpKind.FLATTEN, "view": OpKind.FLATTEN,
            "reshape": OpKind.FLATTEN, F.dropout: OpKind.IDENTITY,
            torch.softmax: OpKind.SOFTMAX, F.softmax: OpKind.SOFTMAX,
            F.log_softmax: OpKind.SOFTMAX, "softmax": OpKind.SOFTMAX}


def _trace(module, name) -> list[Op]:
    import torch.fx

    where = name or type(module).__name__
    try:
        traced = torch.fx.symbolic_trace(module)
    except Exception as error:      # fx raises many kinds for data-dependent control flow
        raise UnsupportedLayerError(f"{where} (its forward cannot be traced: {error})",
                                    type(module).__name__) from error
    ops: list[Op] = []
    previous = None
    for node in traced.graph.nodes:
        if node.op == "placeholder":
            previous = node
            continue
        if node.op == "output":
            break
        if node.op == "get_attr" or not node.args or node.args[0] is not previous:
            raise UnsupportedLayerError(f"{where} at {node.name} (not a chain of layers: "
                                        f"branches and skip connections are not supported)",
                                        type(module).__name__)
        path = f"{where}.{node.target}" if node.op == "call_module" else f"{where}.{node.name}"
        if node.op == "call_module":
            ops += _capture(traced.get_submodule(node.target), path)
        else:
            kind = _function_kinds().get(node.target)
            if kind is None:
                raise UnsupportedLayerError(path, str(getattr(node.target, "__name__",
                                                              node.target)))
            ops.append(Op(kind, path))
        previous = node
    return ops


# ---- ONNX -------------------------------------------------------------------------------------

def capture_onnx(path: Path) -> Graph:
    """Read an ONNX file's graph into a Graph (chain-structured models)."""
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    try:
        model = onnx.load(str(path))
    except Exception as error:          # onnx raises DecodeError and others
        raise ValueError(f"{path}: not a readable ONNX file ({error})") from error
    graph = model.graph
    constants = {init.name: numpy_helper.to_array(init).astype(np.float64)
                 for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    constants[node.output[0]] = numpy_helper.to_array(
                        attribute.t).astype(np.float64)
    ops: list[Op] = []
    pending_matmul = None               # (node name, weight) waiting for its Add
    nodes = [n for n in graph.node if n.op_type != "Constant"]
    for node in nodes:
        name = node.name or f"{node.op_type}_{len(ops)}"
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if pending_matmul is not None and node.op_type != "Add":
            matmul_name, weight = pending_matmul
            ops.append(Op(OpKind.LINEAR, matmul_name,
                          {"weight": weight, "bias": np.zeros(weight.shape[0])}))
            pending_matmul = None
        if node.op_type == "Gemm":
            weight = _constant(constants, node.input[1], name)
            if attrs.get("transA", 0):
                raise UnsupportedLayerError(f"{name} (Gemm with transA)", "Gemm")
            weight = weight if attrs.get("transB", 0) else weight.T
            bias = (_constant(constants, node.input[2], name) * attrs.get("beta", 1.0)
                    if len(node.input) > 2 and node.input[2] else np.zeros(weight.shape[0]))
            ops.append(Op(OpKind.LINEAR, name, {"weight": weight * attrs.get("alpha", 1.0),
                                                 "bias": np.broadcast_to(
                                                     bias, (weight.shape[0],)).copy()}))
        elif node.op_type == "MatMul":
            weight = _constant(constants, node.input[1], name)
            pending_matmul = (name, weight.T)
        elif node.op_type == "Add" and pending_matmul is not None:
            matmul_name, weight = pending_matmul
            operand = node.input[1] if node.input[1] in constants else node.input[0]
            bias = np.broadcast_to(_constant(constants, operand, name), (weight.shape[0],))
            ops.append(Op(OpKind.LINEAR, matmul_name, {"weight": weight, "bias": bias.copy()}))
            pending_matmul = None
        elif node.op_type == "Relu":
            ops.append(Op(OpKind.RELU, name))
        elif node.op_type == "Flatten" or node.op_type == "Reshape":
            ops.append(Op(OpKind.FLATTEN, name))
        elif node.op_type in ("Dropout", "Identity"):
            ops.append(Op(OpKind.IDENTITY, name))
        elif node.op_type == "BatchNormalization":
            scale, shift, mean, var = (_constant(constants, node.input[i], name)
                                       for i in range(1, 5))
            ops.append(Op(OpKind.BATCHNORM, name, {"weight": scale, "bias": shift,
                                                    "mean": mean, "var": var},
                          {"eps": float(attrs.get("epsilon", 1e-5))}))
        elif node.op_type in ("Softmax", "LogSoftmax"):
            ops.append(Op(OpKind.SOFTMAX, name))
        else:
            raise UnsupportedLayerError(f"ONNX node {name!r}", node.op_type)
    if pending_matmul is not None:
        matmul_name, weight = pending_matmul
        ops.append(Op(OpKind.LINEAR, matmul_name,
                      {"weight": weight, "bias": np.zeros(weight.shape[0])}))
    linear = [op for op in ops if op.kind is OpKind.LINEAR]
    if not linear:
        raise ValueError(f"{path}: the ONNX graph has no Gemm or MatMul layer")
    return Graph(tuple(ops), linear[0].params["weight"].shape[1], str(path))


def _constant(constants, name, node):
    if name not in constants:
        raise UnsupportedLayerError(f"ONNX node {node!r} (its operand {name!r} is computed, "
                                    f"not a constant)", "dynamic weight")
    return constants[name]
