"""Read a quantized ONNX model (QONNX or ONNX QDQ) into a chain of layers with their quantizers.

The model is opened with the ``qonnx`` package (shape inference, constant folding that keeps
the quantizers, static graph inputs removed), then walked node by node in graph order.  Every
tensor gets a kind:

* a constant (an initializer, or a folded constant subgraph);
* :class:`QuantConst`: a constant the model quantizes (weights, a quantized bias): integers and
  the real step of each (QONNX ``Quant`` / ``BipolarQuant`` on a constant, ONNX
  ``DequantizeLinear`` of an integer constant, possibly behind a ``Clip``);
* :class:`Activation`: a quantized activation, the integers ``c = q - zero_point`` of a
  quantizer (QONNX ``Quant`` / ``BipolarQuant`` / ``Trunc``, ONNX ``QuantizeLinear`` [+ ``Clip``]
  + ``DequantizeLinear``) on the graph input or on a layer's output;
* :class:`Pending`: a layer's real output on its way to its quantizer: a ``MatMul`` / ``Gemm``
  of an activation by quantized weights, then ``Add`` / ``Sub`` / ``Mul`` / ``Div`` by
  constants, ``BatchNormalization``, ``Relu``, ``Clip``.

``Flatten``, ``Reshape``, ``Identity`` and ``Dropout`` pass activations through when they keep
a (batch, features) tensor in order.  A ``Transpose`` of a constant (Brevitas exports a
``QuantLinear`` without bias as ``Quant`` -> ``Transpose`` -> ``MatMul``) is folded into it.  The graph must be a chain from its one input to its one
output; any other op is refused naming the node.  The result, :class:`Chain`, is what
``build.py`` turns into an integer network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import InputError, no_such_file
from ..numerics import signed_bits
from . import ops

__all__ = ["Activation", "Chain", "LayerDraft", "Pending", "QuantConst", "UnsupportedModel",
           "read_chain", "SUPPORTED_NODES"]

SUPPORTED_NODES = ("Quant", "BipolarQuant", "Trunc", "QuantizeLinear", "DequantizeLinear",
                   "MatMul", "Gemm", "Add", "Sub", "Mul", "Div", "BatchNormalization", "Relu",
                   "Clip", "Flatten", "Reshape", "Identity", "Dropout", "Transpose",
                   "Cast (to the type the tensor has)")
QONNX_OPS = ("Quant", "BipolarQuant", "Trunc")
CONVOLUTIONS = ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool",
                "GlobalAveragePool", "GlobalMaxPool")
# What to do instead, for the ops of other quantization flows.
_QOPERATOR = ("onnxruntime's QOperator format; quantize with quantize_static(..., "
              "quant_format=QuantFormat.QDQ)")
_HINTS = {
    "QGemm": _QOPERATOR, "QLinearMatMul": _QOPERATOR, "MatMulInteger": _QOPERATOR,
    "QLinearAdd": _QOPERATOR,
    "DynamicQuantizeLinear": "dynamic quantization (quantize_dynamic) computes its scales at "
                             "run time; quantize with quantize_static in the QDQ format",
    "Softmax": "export the model without its final softmax (the engine's outputs are the "
               "logits, whose argmax is the same)",
    "LogSoftmax": "export the model without its final log-softmax (the engine's outputs are "
                  "the logits, whose argmax is the same)",
    "Sigmoid": "export the model without its final sigmoid (the engine's outputs are the "
               "logits: a logit above 0 is a probability above 0.5, and their order is the "
               "same)",
}
# Activations other than ReLU / Clip: a layer's rows are requantized along one ramp between
# two clamps, which a curve or a second slope is not.
_ACTIVATIONS = ("Tanh", "Sigmoid", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "Erf",
                "HardSigmoid", "HardSwish", "Softplus", "Softsign", "Mish", "ThresholdedRelu")
_ACTIVATION_HINT = ("a {op} activation is not imported: the engine requantizes each row of a "
                    "layer along one ramp between two clamps, so ReLU and Clip (Brevitas "
                    "QuantReLU, QuantHardTanh) are the activations it runs; train the model "
                    "with one of those")
for _op in _ACTIVATIONS:
    _HINTS.setdefault(_op, _ACTIVATION_HINT.format(op=_op))
# Ops whose hint above holds only at the graph's end.
_FINAL_ONLY = ("Softmax", "LogSoftmax", "Sigmoid")
# Between a final op and the graph output, nothing but its quantizers and no-ops.
_PASS_THROUGH = ("QuantizeLinear", "DequantizeLinear", "Identity", "Cast")
_NARROW_INTEGERS = ("int4", "uint4", "int2", "uint2")
MAX_ACTIVATION_BITS = 8
MAX_WEIGHT_BITS = 8


def _ends_graph(graph, node, output_name: str) -> bool:
    """Whether ``node``'s output reaches ``output_name`` through quantizers and no-ops only."""
    frontier = [node.output[0]]
    while frontier:
        tensor = frontier.pop()
        if tensor == output_name:
            continue
        users = [n for n in graph.node if tensor in n.input]
        if not users or any(u.op_type not in _PASS_THROUGH for u in users):
            return False
        frontier.extend(u.output[0] for u in users)
    return True


class UnsupportedModel(InputError):
    """A model, node or quantizer the importer cannot represent; the message names the node."""


@dataclass(frozen=True, eq=False)
class QuantConst:
    """A constant quantized by the model: ``ints`` (``q - zero_point``) and ``scale`` (the
    real value of one step, broadcast to ``ints``'s shape); the value is ``ints * scale``."""
    ints: np.ndarray
    scale: np.ndarray
    node: str
    bits: int


@dataclass(eq=False)
class Activation:
    """A quantized activation tensor: the engine's integers ``c`` lie in ``low .. high``, the
    value is ``c * scale``.  ``quantizer`` made it from the graph input (``producer`` None) or
    from layer ``producer``'s real output."""
    quantizer: ops.Quantizer | ops.Trunc
    low: int
    high: int
    producer: int | None
    node: str
    bits: int

    @property
    def scale(self) -> Fraction:
        return getattr(self.quantizer, "out_scale", None) or self.quantizer.scale


@dataclass(eq=False)
class QuantInts:
    """An ONNX ``QuantizeLinear`` output on its way to its ``DequantizeLinear``: the
    quantizer, and the integer range a ``Clip`` may have narrowed."""
    quantizer: ops.Quantizer
    target: object          # Pending, "input", or a float constant
    node: str
    constant: np.ndarray | None = None


@dataclass(eq=False)
class LayerDraft:
    """One layer as read: ``weights`` (out x in integers), per row ``y = a * v + b`` on the
    accumulator ``v``, then ``ops`` (monotone, per row by :meth:`row_ops`), then ``final``
    (the output quantizer)."""
    name: str
    input: Activation
    weights: np.ndarray
    weight_bits: int
    weight_scale: np.ndarray        # per row, for reports
    a: list[Fraction]
    b: list[Fraction]
    nodes: list[str] = field(default_factory=list)
    ops: list = field(default_factory=list)
    final: ops.Quantizer | ops.Trunc | None = None
    relu_after: bool = False        # a Relu on the quantized output (clamps it at 0)

    @property
    def out_features(self) -> int:
        return self.weights.shape[0]

    def row_ops(self, row: int) -> list:
        return [op.row(row) if hasattr(op, "row") else op for op in self.ops]

    def has_relu(self) -> bool:
        return self.relu_after or any(isinstance(op, ops.Relu) for op in self.ops)


@dataclass(eq=False)
class Pending:
    layer: LayerDraft


@dataclass(frozen=True)
class RowAffine:
    """``y * scale_i + offset_i`` after a nonlinear op (per row ``i``)."""
    node: str
    scale: tuple[Fraction, ...]
    offset: tuple[Fraction, ...]

    def row(self, i: int) -> _Affine:
        return _Affine(self.scale[i], self.offset[i])


@dataclass(frozen=True)
class _Affine:
    scale: Fraction
    offset: Fraction

    def exact(self, y: Fraction) -> Fraction:
        return y * self.scale + self.offset

    def approx(self, y):
        return y * float(self.scale) + float(self.offset)


@dataclass(eq=False)
class Chain:
    """What a model is, in order: its input quantizer (an :class:`Activation` of the graph
    input, or None when the model takes raw floats), the layers, and the graph's input and
    output names and the feature count.  ``kind`` is ``"qonnx"`` or ``"qdq"``.
    ``output`` is None when the last layer's output is left real (no quantizer)."""
    input: Activation | None
    layers: list[LayerDraft]
    in_features: int
    input_name: str
    output_name: str
    kind: str
    source: str


def _fraction(value) -> Fraction:
    return Fraction(float(value))


def read_chain(path, calibration_input=None) -> Chain:
    """Read ``path`` (a QONNX or QDQ ``.onnx`` file) into a :class:`Chain`, or raise
    :class:`UnsupportedModel` naming the node that cannot be represented."""
    import onnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.general import RemoveStaticGraphInputs, RemoveUnusedTensors
    from qonnx.transformation.infer_shapes import InferShapes

    path = Path(path)
    if not path.is_file():
        raise InputError(no_such_file(path, "ONNX"))
    try:
        proto = onnx.load(str(path))
        # onnxruntime's quant_pre_process lists the graph's inputs and outputs in value_info
        # too; qonnx refuses a tensor described twice.
        described = {t.name for t in (*proto.graph.input, *proto.graph.output)}
        repeated = [v for v in proto.graph.value_info if v.name in described]
        for value_info in repeated:
            proto.graph.value_info.remove(value_info)
        model = ModelWrapper(proto)
    except Exception as error:          # protobuf's DecodeError and friends
        if Path(path).suffix.lower() in (".pt", ".pth", ".bin", ".ckpt"):
            raise InputError(f"{path}: a PyTorch file, not an ONNX model: import takes a "
                             f"quantized ONNX model (a Brevitas model exported with "
                             f"brevitas.export.export_qonnx, onnxruntime's quantize_static); "
                             f"a float PyTorch model goes to compress") from None
        raise InputError(f"{path}: not a readable ONNX model: {error}") from None
    for node in model.graph.node:
        if node.op_type in QONNX_OPS:
            node.domain = "qonnx.custom_op.general"     # as qonnx's own cleanup does
    kind = "qonnx" if any(n.op_type in QONNX_OPS for n in model.graph.node) else "qdq"
    try:
        for transformation in (InferShapes(), FoldConstants(exclude_op_types=[
                "Quant", "BipolarQuant", "QuantizeLinear", "DequantizeLinear", "Trunc"]),
                               RemoveUnusedTensors(), RemoveStaticGraphInputs()):
            model = model.transform(transformation)
    except Exception as error:
        raise UnsupportedModel(f"{path}: qonnx could not prepare the model: {error}") from None
    return _Walker(model, kind, str(path), calibration_input).walk()


class _Walker:
    def __init__(self, model, kind: str, source: str, calibration=None):
        self.model = model
        self.calibration = calibration
        self.kind = kind
        self.source = source
        self.values: dict[str, object] = {}
        self.layers: list[LayerDraft] = []
        self.input_activation: Activation | None = None

    # ---- helpers ------------------------------------------------------------------------------
    def constant(self, name: str):
        if name == "":
            return None
        value = self.values.get(name)
        if isinstance(value, np.ndarray):
            return value
        init = self.model.get_initializer(name)
        return None if init is None else np.asarray(init)

    def kind_of(self, name: str):
        if name in self.values:
            return self.values[name]
        init = self.model.get_initializer(name)
        return None if init is None else np.asarray(init)

    def refuse(self, node, why: str):
        raise UnsupportedModel(f"{self.source}: node {node.name!r} ({node.op_type}): {why}")

    def scalar(self, node, name: str, what: str):
        value = self.constant(name)
        if value is None or value.size != 1:
            self.refuse(node, f"its {what} must be a constant scalar")
        return value.reshape(())

    def attributes(self, node) -> dict:
        from onnx import helper

        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    # ---- the walk -----------------------------------------------------------------------------
    def walk(self) -> Chain:
        graph = self.model.graph
        inputs = [i for i in graph.input if self.model.get_initializer(i.name) is None]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise UnsupportedModel(f"{self.source}: the graph must have one input and one "
                                   f"output, not {len(inputs)} and {len(graph.output)}")
        input_name, output_name = inputs[0].name, graph.output[0].name
        shape = self.model.get_tensor_shape(input_name)
        if not shape or any(not isinstance(d, int) or d < 1 for d in shape[1:]):
            raise UnsupportedModel(f"{self.source}: the graph input {input_name!r} needs a "
                                   f"static shape, not {shape}")
        self.in_features = int(np.prod(shape[1:]))
        self.values[input_name] = "input"
        consumers: dict[str, list[str]] = {}
        for index, node in enumerate(graph.node):
            for name in node.input:
                consumers.setdefault(name, []).append(node.name or f"{node.op_type}_{index}")
        for index, node in enumerate(graph.node):
            if not node.name:
                node.name = f"{node.op_type}_{index}"
            dynamic = [n for n in node.input if n and _computed(self.values.get(n))]
            for name in dynamic:
                users = consumers.get(name, [])
                if len(users) > 1 or name == output_name:
                    where = ", ".join(repr(u) for u in users) + (
                        " and the graph output" if name == output_name else "")
                    # GELU and SiLU export as x times a function of x: a branch.
                    gated = any(n.op_type in ("Erf", "Sigmoid", "Tanh") for n in graph.node)
                    self.refuse(node, f"tensor {name!r} feeds {where}; the model must be a "
                                      f"chain of layers (no branches or skip connections)"
                                + ("; a GELU or SiLU activation exports as such a branch (x "
                                   "times a function of x): train the model with ReLU (or "
                                   "a quantized HardTanh), the activations the engine runs"
                                   if gated else ""))
            if len(dynamic) > 1:
                self.refuse(node, "it takes two computed tensors; only chains of layers with "
                                  "constant weights are supported")
            handler = getattr(self, f"_{node.op_type}", None)
            if handler is not None and node.domain == "com.microsoft":
                self.refuse(node, "onnxruntime's own com.microsoft operator; quantize with "
                                  "the standard QuantizeLinear / DequantizeLinear (no "
                                  "UseQDQContribOps; 4-bit types need opset 21)")
            if handler is None:
                hint = _HINTS.get(node.op_type)
                if node.op_type in _FINAL_ONLY and not _ends_graph(graph, node, output_name):
                    hint = (_ACTIVATION_HINT.format(op=node.op_type)
                            if node.op_type in _ACTIVATIONS else
                            f"a {node.op_type} inside the network is not supported (only a "
                            f"final one can be left out: the engine's outputs are logits)")
                if hint:
                    self.refuse(node, f"not supported: {hint}")
                if node.op_type in CONVOLUTIONS:
                    self.refuse(node, "convolutions and pooling of a quantized model are not "
                                      "imported (the importer takes chains of Linear layers); "
                                      "a float CNN runs through compression instead "
                                      "(sparseforge compress, or sf.compress), which prunes "
                                      "and quantizes it for the engine's conv mode")
                self.refuse(node, "not supported; supported: " + ", ".join(SUPPORTED_NODES))
            result = handler(node, dynamic[0] if dynamic else None)
            self.values[node.output[0]] = result
        final = self.values.get(output_name)
        if isinstance(final, Pending):
            if self.calibration is None:
                raise UnsupportedModel(
                    f"{self.source}: the model's output (layer {final.layer.name!r}) is not "
                    f"quantized; add an output quantizer (e.g. Brevitas QuantIdentity) or give "
                    f"calibration data, from which an 8-bit one is chosen")
            return self._chain(input_name, output_name)
        if not isinstance(final, Activation) or final.producer is None:
            raise UnsupportedModel(f"{self.source}: the graph output {output_name!r} is not "
                                   f"a layer's quantized output")
        if final.producer != len(self.layers) - 1:
            raise UnsupportedModel(f"{self.source}: the graph output is not the last layer's")
        return self._chain(input_name, output_name)

    def _chain(self, input_name, output_name) -> Chain:
        if not self.layers:
            raise UnsupportedModel(f"{self.source}: the model has no MatMul or Gemm layer")
        return Chain(self.input_activation, self.layers, self.in_features, input_name,
                     output_name, self.kind, self.source)

    # ---- quantizers ---------------------------------------------------------------------------
    def _quantizer_of(self, node, signed: bool, narrow: bool, bits: int, scale, zero_point,
                      rounding: str, *, zero_point_first: bool = True) -> ops.Quantizer:
        if bits == 1 and signed:
            return ops.Quantizer(node.name, _fraction(scale), int(zero_point), -1, 1,
                                 rounding, zero_point_first, bipolar=True)
        qmin = -(1 << (bits - 1)) + narrow if signed else 0
        qmax = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1 - narrow
        return ops.Quantizer(node.name, _fraction(scale), int(zero_point), qmin, qmax, rounding,
                             zero_point_first)

    def _Quant(self, node, source):
        attrs = self.attributes(node)
        signed, narrow = bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0))
        rounding = attrs.get("rounding_mode", b"ROUND")
        rounding = (rounding.decode() if isinstance(rounding, bytes) else str(rounding)).upper()
        if rounding not in ops.ROUNDING_MODES:
            self.refuse(node, f"rounding mode {rounding!r} is not one of "
                              f"{', '.join(ops.ROUNDING_MODES)}")
        bits_value = self.constant(node.input[3])
        if bits_value is None or bits_value.size != 1 or float(bits_value) != int(bits_value):
            self.refuse(node, "its bit width must be a constant integer")
        bits = int(bits_value)
        scale = self.constant(node.input[1])
        zero_point = self.constant(node.input[2])
        if scale is None or zero_point is None:
            self.refuse(node, "its scale and zero point must be constants")
        if not np.all(zero_point == np.round(zero_point)):
            self.refuse(node, f"zero point {zero_point.ravel()[:4]} is not an integer")
        if not np.all(scale > 0) or not np.all(np.isfinite(scale)):
            self.refuse(node, "its scale must be positive and finite")
        data = self.kind_of(node.input[0])
        if isinstance(data, np.ndarray):
            return self._quant_constant(node, data, scale, zero_point, bits, signed, narrow,
                                        rounding)
        if scale.size != 1 or zero_point.size != 1:
            self.refuse(node, "an activation quantizer must be per tensor (one scale and zero "
                              "point); per-channel activation scales are not supported")
        self._activation_bits(node, bits)
        quantizer = self._quantizer_of(node, signed, narrow, bits, scale.reshape(()),
                                       zero_point.reshape(()), rounding)
        return self._quantize_activation(node, source, quantizer, bits)

    def _activation_bits(self, node, bits: int):
        if not 1 <= bits <= MAX_ACTIVATION_BITS:
            self.refuse(node, f"a {bits}-bit activation quantizer; activations may be 1 to "
                              f"{MAX_ACTIVATION_BITS} bits wide")

    def _quant_constant(self, node, data, scale, zero_point, bits, signed, narrow, rounding):
        if not 1 <= bits <= 32:
            self.refuse(node, f"a {bits}-bit quantizer of constants")
        quantizer = self._quantizer_of(node, signed, narrow, bits, 1.0, 0, rounding)
        # As qonnx computes it, in float32, so the integers are the ones its executor uses.
        y = data.astype(np.float32) / scale.astype(np.float32) + zero_point.astype(np.float32)
        if quantizer.bipolar:
            q = np.where(y >= 0, 1, -1)
        else:
            y = np.clip(y, quantizer.qmin, quantizer.qmax)
            q = ops.round_float(y.astype(np.float64), rounding).astype(np.int64)
        ints = q - np.broadcast_to(zero_point, q.shape).astype(np.int64)
        return QuantConst(ints.astype(np.int64),
                          np.broadcast_to(scale.astype(np.float64), ints.shape).copy(),
                          node.name, bits)

    def _BipolarQuant(self, node, source):
        scale = self.constant(node.input[1])
        if scale is None or not np.all(scale > 0):
            self.refuse(node, "its scale must be a positive constant")
        data = self.kind_of(node.input[0])
        if isinstance(data, np.ndarray):
            q = np.where(data.astype(np.float32) / scale.astype(np.float32) >= 0, 1, -1)
            return QuantConst(q.astype(np.int64),
                              np.broadcast_to(scale.astype(np.float64), q.shape).copy(),
                              node.name, 1)
        if scale.size != 1:
            self.refuse(node, "an activation quantizer must be per tensor")
        quantizer = ops.Quantizer(node.name, _fraction(scale.reshape(())), 0, -1, 1,
                                  bipolar=True)
        return self._quantize_activation(node, source, quantizer, 1)

    def _quantize_activation(self, node, source, quantizer, bits: int) -> Activation:
        target = self.values[source]
        if isinstance(target, str) and target == "input":
            if quantizer.bipolar or quantizer.rounding not in ("ROUND", "HALF_EVEN"):
                self.refuse(node, "the input quantizer must round half to even (ROUND)")
            activation = Activation(quantizer, quantizer.low, quantizer.high, None, node.name,
                                    bits)
            if self.input_activation is not None:
                self.refuse(node, "a second quantizer of the graph input")
            self.input_activation = activation
            return activation
        if isinstance(target, Pending):
            layer = target.layer
            layer.final = quantizer
            layer.nodes.append(node.name)
            return Activation(quantizer, quantizer.low, quantizer.high, len(self.layers) - 1,
                              node.name, bits)
        if isinstance(target, Activation) and self._same_grid(quantizer, target):
            return self._requantized(node, target)
        self.refuse(node, "it quantizes a tensor that is already quantized, with no layer in "
                          "between" + self._grid_difference(quantizer, target))

    def _Trunc(self, node, source):
        attrs = self.attributes(node)
        target = self.values[source]
        if not isinstance(target, Activation) or target.producer is None \
                or not isinstance(target.quantizer, ops.Quantizer):
            self.refuse(node, "Trunc is supported on a layer's quantized output only")
        rounding = attrs.get("rounding_mode", b"FLOOR")
        rounding = (rounding.decode() if isinstance(rounding, bytes) else str(rounding)).upper()
        scale = self.scalar(node, node.input[1], "scale")
        zero_point = self.scalar(node, node.input[2], "zero point")
        in_bits = int(self.scalar(node, node.input[3], "input bit width"))
        version = next((o.version for o in self.model.model.opset_import
                        if o.domain == "qonnx.custom_op.general"), 1)
        if len(node.input) >= 6 or version >= 2:
            out_scale = self.scalar(node, node.input[4], "output scale")
            out_bits = int(self.scalar(node, node.input[5], "output bit width"))
            drop = int(np.round(np.log2(float(out_scale) / float(scale))))
            signed, narrow = bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0))
            qmin = -(1 << (out_bits - 1)) + narrow if signed else 0
            qmax = (1 << (out_bits - 1)) - 1 if signed else (1 << out_bits) - 1 - narrow
        else:
            out_bits = int(self.scalar(node, node.input[4], "output bit width"))
            drop, out_scale, qmin, qmax = in_bits - out_bits, scale, None, None
        if drop < 0 or int(zero_point) % (1 << drop):
            self.refuse(node, "a Trunc must drop low bits and keep an integer zero point")
        self._activation_bits(node, out_bits)
        trunc = ops.Trunc(node.name, _fraction(scale), int(zero_point), drop,
                          _fraction(out_scale), rounding, qmin, qmax)
        layer = self.layers[target.producer]
        layer.ops.append(layer.final)
        layer.final = trunc
        layer.nodes.append(node.name)
        out_zero = int(zero_point) >> drop
        low = -(1 << 30) if qmin is None else qmin - out_zero
        high = (1 << 30) if qmax is None else qmax - out_zero
        return Activation(trunc, low, high, target.producer, node.name, out_bits)

    def _QuantizeLinear(self, node, source):
        attrs = self.attributes(node)
        scale = self.constant(node.input[1])
        zero_point = self.constant(node.input[2]) if len(node.input) > 2 else None
        if scale is None:
            self.refuse(node, "its scale must be a constant")
        if zero_point is None:
            zero_point = np.zeros((), np.uint8)
        if zero_point.dtype not in (np.uint8, np.int8):
            self.refuse(node, f"{zero_point.dtype} quantized values; 8-bit ones (uint8, "
                              f"int8) are supported: quantize the activations to 8 bits "
                              f"(onnxruntime: activation_type=QuantType.QUInt8 or QInt8)")
        bits = 8
        signed = zero_point.dtype == np.int8
        data = self.kind_of(node.input[0])
        if isinstance(data, np.ndarray):
            axis = attrs.get("axis", 1)
            scale_b = _along(scale, axis, data.ndim)
            zero_b = _along(zero_point.astype(np.int64), axis, data.ndim)
            q = np.round(data.astype(np.float32) / scale_b.astype(np.float32)) + zero_b
            low, high = (-128, 127) if signed else (0, 255)
            # An array even for a 0-d constant (NumPy gives a scalar, which read as no
            # constant at all: a GELU's quantized 1.0 and 0.5 ended in a KeyError).
            return np.asarray(np.clip(q, low, high).astype(zero_point.dtype))
        if scale.size != 1 or zero_point.size != 1:
            self.refuse(node, "an activation quantizer must be per tensor")
        quantizer = self._quantizer_of(node, signed, False, bits, scale.reshape(()),
                                       zero_point.reshape(()), "ROUND", zero_point_first=False)
        if source is None:
            self.refuse(node, "its input must be a constant or a computed tensor")
        target = self.values[source]
        if not isinstance(target, (Pending, Activation)) and not (isinstance(target, str)
                                                                  and target == "input"):
            self.refuse(node, "it quantizes a tensor that is already quantized, with no layer "
                              "in between")
        return QuantInts(quantizer, target, node.name)

    def _Clip(self, node, source):
        low = self.constant(node.input[1]) if len(node.input) > 1 else None
        high = self.constant(node.input[2]) if len(node.input) > 2 else None
        attrs = self.attributes(node)
        low = low if low is not None else attrs.get("min")
        high = high if high is not None else attrs.get("max")
        if source is None:                  # constants only: folded here
            data = self.constant(node.input[0])
            if data is None:
                self.refuse(node, "its input must be a constant or a computed tensor")
            return np.asarray(np.clip(data, -np.inf if low is None else low,
                                      np.inf if high is None else high).astype(data.dtype))
        target = self.values[source]
        if isinstance(target, QuantInts):
            q = target.quantizer
            qmin = q.qmin if low is None else max(q.qmin, int(np.asarray(low)))
            qmax = q.qmax if high is None else min(q.qmax, int(np.asarray(high)))
            return QuantInts(ops.Quantizer(q.node, q.scale, q.zero_point, qmin, qmax,
                                           q.rounding, q.zero_point_first), target.target,
                             target.node)
        if isinstance(target, Pending):
            target.layer.ops.append(ops.Clip(
                node.name, None if low is None else _fraction(np.asarray(low)),
                None if high is None else _fraction(np.asarray(high))))
            target.layer.nodes.append(node.name)
            return target
        self.refuse(node, "Clip is supported on a layer's real output or between "
                          "QuantizeLinear and DequantizeLinear")

    def _DequantizeLinear(self, node, source):
        attrs = self.attributes(node)
        scale = self.constant(node.input[1])
        zero_point = self.constant(node.input[2]) if len(node.input) > 2 else None
        if scale is None:
            self.refuse(node, "its scale must be a constant")
        if zero_point is None:
            zero_point = np.zeros((), np.int64)
        data = self.kind_of(node.input[0])
        if isinstance(data, np.ndarray):
            if data.dtype.name in _NARROW_INTEGERS:     # ml_dtypes' int4 / uint4 (opset 21)
                data = data.astype(np.int64)
            if zero_point.dtype.name in _NARROW_INTEGERS:
                zero_point = zero_point.astype(np.int64)
            if data.dtype.kind not in "iu":
                self.refuse(node, f"dequantizes {data.dtype} values, not integers")
            axis = attrs.get("axis", 1)
            ints = data.astype(np.int64) - _along(zero_point.astype(np.int64), axis, data.ndim)
            step = np.broadcast_to(_along(scale.astype(np.float64), axis, data.ndim),
                                   ints.shape).copy()
            # The grid's width from its values: exporters store narrow grids in int8 (a 4-bit
            # weight is an int8 clipped to -7 .. 7).
            bits = (1 if ints.size and set(np.unique(ints).tolist()) <= {-1, 1}
                    else signed_bits(int(ints.min(initial=0)), int(ints.max(initial=0))))
            return QuantConst(ints, step, node.name, bits)
        target = self.values.get(source)
        if not isinstance(target, QuantInts):
            self.refuse(node, "DequantizeLinear must follow a QuantizeLinear (or dequantize "
                              "constants)")
        q = target.quantizer
        if scale.size != 1 or Fraction(float(scale.reshape(()))) != q.scale \
                or int(np.asarray(zero_point).reshape(())) != q.zero_point:
            self.refuse(node, "its scale and zero point differ from its QuantizeLinear's")
        return self._finish_qdq(node, target)

    def _finish_qdq(self, node, target: QuantInts) -> Activation:
        q = target.quantizer
        if isinstance(target.target, Activation):
            if not self._same_grid(q, target.target):
                self.refuse(node, "it quantizes a tensor that is already quantized, with no "
                                  "layer in between"
                            + self._grid_difference(q, target.target))
            return self._requantized(node, target.target, target.node)
        if isinstance(target.target, str) and target.target == "input":
            activation = Activation(q, q.low, q.high, None, node.name, 8)
            if self.input_activation is not None:
                self.refuse(node, "a second quantizer of the graph input")
            self.input_activation = activation
            return activation
        layer = target.target.layer
        layer.final = q
        layer.nodes += [target.node, node.name]
        return Activation(q, q.low, q.high, len(self.layers) - 1, node.name, 8)

    @staticmethod
    def _same_grid(quantizer, activation: Activation) -> bool:
        """Whether ``quantizer`` leaves every value of ``activation`` as it is: the same step
        and a range that holds the activation's (a quantized ReLU exported as quantizer,
        ReLU, the same quantizer again: onnxruntime's symmetric activations)."""
        return (isinstance(quantizer, ops.Quantizer) and not quantizer.bipolar
                and quantizer.scale == activation.scale
                and quantizer.low <= activation.low and activation.high <= quantizer.high)

    @staticmethod
    def _grid_difference(quantizer, activation) -> str:
        if not isinstance(activation, Activation) or not isinstance(quantizer, ops.Quantizer):
            return ""
        # Brevitas quantizes a tensor twice where two modules each quantize it.
        twice = ("; quantize the layer's output once (Brevitas: a QuantLinear with "
                 "output_quant followed by a QuantReLU or QuantIdentity quantizes it twice: "
                 "leave out the output_quant)" if activation.producer is not None else
                 "; quantize the input once (Brevitas: a QuantIdentity followed by a "
                 "QuantLinear with input_quant quantizes it twice: keep one)")
        return (f" (a second quantizer is taken only where it changes no value: the same "
                f"step and a range holding {activation.low}..{activation.high}; this one has "
                f"step {float(quantizer.scale):.6g} and range {quantizer.low}.."
                f"{quantizer.high}, the tensor step {float(activation.scale):.6g}){twice}")

    def _requantized(self, node, activation: Activation, *more_nodes: str) -> Activation:
        """``activation`` again, a quantizer that changes none of its values folded in."""
        if activation.producer is not None:
            self.layers[activation.producer].nodes += [*more_nodes, node.name]
        return activation

    # ---- layers -------------------------------------------------------------------------------
    def _weights(self, node, name: str, transpose: bool) -> QuantConst:
        weights = self.kind_of(name)
        if isinstance(weights, np.ndarray):
            self.refuse(node, "its weights are not quantized (a float constant); export the "
                              "model with weight quantizers, or, for a float model, quantize "
                              "it with `sparseforge compress MODEL.onnx --data DATA.npz` "
                              "(sf.compress) instead of importing it")
        if not isinstance(weights, QuantConst) or weights.ints.ndim != 2:
            self.refuse(node, "its weights must be a quantized 2-D constant")
        span = int(weights.ints.max()) - int(weights.ints.min())
        if weights.bits > MAX_WEIGHT_BITS and span >= 1 << MAX_WEIGHT_BITS:
            # A grid wider than 8 bits whatever its zero point: the export's bit width.
            self.refuse(node, f"{weights.bits}-bit weights (their integers span "
                              f"{int(weights.ints.min())} .. {int(weights.ints.max())}); at "
                              f"most {MAX_WEIGHT_BITS} bits: quantize the weights to "
                              f"{MAX_WEIGHT_BITS} bits or fewer (Brevitas: weight_bit_width; "
                              f"onnxruntime: weight_type=QuantType.QInt8)")
        if weights.bits > MAX_WEIGHT_BITS:
            self.refuse(node, f"{weights.bits}-bit weights (their integers less the zero "
                              f"point span {int(weights.ints.min())} .. "
                              f"{int(weights.ints.max())}); at most {MAX_WEIGHT_BITS} bits: an "
                              f"8-bit grid with a zero point off its middle widens it, so "
                              f"quantize the weights symmetrically (onnxruntime: "
                              f"WeightSymmetric, or QInt8 weights) or per channel")
        if transpose:
            return QuantConst(weights.ints.T, weights.scale.T, weights.node, weights.bits)
        return weights

    def _linear(self, node, source, weights: QuantConst, gain: float) -> Pending:
        activation = self.values[source]
        if not isinstance(activation, Activation):
            if not (isinstance(activation, str) and activation == "input"):
                self.refuse(node, "its input is not a quantized activation")
            activation = self._raw_input(node)
        if weights.ints.shape[1] != _features(self, source, activation):
            self.refuse(node, f"weights {weights.ints.shape} (out x in) do not match "
                              f"{_features(self, source, activation)} inputs")
        row_scale = weights.scale[:, :1]
        if not np.all(weights.scale == row_scale):
            self.refuse(node, "weight scales must be per output channel (or per tensor)")
        row_scale = row_scale[:, 0]
        a = [activation.scale * Fraction(float(s)) * Fraction(gain) for s in row_scale]
        layer = LayerDraft(node.name, activation, weights.ints, weights.bits, row_scale, a,
                           [Fraction(0)] * len(a), nodes=[weights.node, node.name])
        if activation.producer is None and activation is not self.input_activation:
            self.refuse(node, "internal: an input activation that is not the model's")
        self.layers.append(layer)
        return Pending(layer)

    def _raw_input(self, node):
        """The model takes floats unquantized: with calibration data, an 8-bit quantizer whose
        scale covers them (unsigned when they are never negative), else refused."""
        if self.calibration is None:
            self.refuse(node, "its input is the model's float input, which the model does not "
                              "quantize; add an input quantizer (e.g. Brevitas QuantIdentity) "
                              "or give calibration data, from which an 8-bit one is chosen")
        x = np.asarray(self.calibration, dtype=np.float32)
        unsigned = bool(x.min() >= 0)
        top = float(np.abs(x).max()) or 1.0
        scale = np.float32(top / (255 if unsigned else 127))
        quantizer = ops.Quantizer(f"{node.name} (input, calibrated)", Fraction(float(scale)), 0,
                                  0 if unsigned else -127, 255 if unsigned else 127)
        self.input_activation = Activation(quantizer, quantizer.low, quantizer.high, None,
                                           quantizer.node, 8)
        return self.input_activation

    def _MatMul(self, node, source):
        if node.input[0] != source:
            self.refuse(node, "the activation must be the left operand (x @ W)")
        return self._linear(node, source, self._weights(node, node.input[1], True), 1.0)

    def _Gemm(self, node, source):
        attrs = self.attributes(node)
        if attrs.get("transA", 0) or node.input[0] != source:
            self.refuse(node, "Gemm with the activation transposed or on the right")
        weights = self._weights(node, node.input[1], not attrs.get("transB", 0))
        pending = self._linear(node, source, weights, float(attrs.get("alpha", 1.0)))
        if len(node.input) > 2 and node.input[2]:
            self._add_offset(node, pending.layer, node.input[2],
                             Fraction(float(attrs.get("beta", 1.0))))
        return pending

    def _real_constant(self, node, name: str, rows: int) -> list[Fraction]:
        value = self.kind_of(name)
        if isinstance(value, QuantConst):
            value = [Fraction(int(i)) * Fraction(float(s))
                     for i, s in zip(value.ints.ravel(), value.scale.ravel())]
            array = np.array(value, dtype=object)
        elif isinstance(value, np.ndarray):
            array = np.array([Fraction(float(v)) for v in value.ravel()], dtype=object)
            array = array.reshape(value.shape)
        else:
            self.refuse(node, "its second operand must be a constant")
        array = np.asarray(array, dtype=object)
        if array.size == 1:
            return [array.reshape(())[()]] * rows
        if array.size != rows or (array.ndim > 1 and array.shape[-1] != rows):
            self.refuse(node, f"a constant of shape {array.shape}; one value per output "
                              f"feature ({rows}) or one for all is supported")
        return list(array.reshape(-1))

    def _add_offset(self, node, layer: LayerDraft, name: str, sign: Fraction):
        values = self._real_constant(node, name, layer.out_features)
        if layer.ops:
            layer.ops.append(RowAffine(node.name, (Fraction(1),) * layer.out_features,
                                       tuple(sign * v for v in values)))
        else:
            layer.b = [b + sign * v for b, v in zip(layer.b, values)]

    def _scale_by(self, node, layer: LayerDraft, factors: list[Fraction]):
        if layer.ops:
            layer.ops.append(RowAffine(node.name, tuple(factors),
                                       (Fraction(0),) * layer.out_features))
        else:
            layer.a = [a * f for a, f in zip(layer.a, factors)]
            layer.b = [b * f for b, f in zip(layer.b, factors)]

    def _pending(self, node, source) -> LayerDraft:
        target = self.values[source]
        if not isinstance(target, Pending):
            hint = ""
            if node.op_type == "Add" and isinstance(target, Activation):
                # onnxruntime's static quantization of MatMul + Add quantizes the product
                # before its bias.
                hint = ("; a bias added after the product's quantizer (onnxruntime's "
                        "quantize_static of MatMul + Add does this): run onnxruntime's "
                        "quant_pre_process on the float model first, which fuses them into "
                        "a Gemm")
            elif isinstance(target, Activation) and target.producer is not None:
                hint = self._after_quantizer_hint(node, target)
            self.refuse(node, "supported only on a layer's real output (between its MatMul / "
                              "Gemm and its output quantizer)" + hint)
        if target.layer.final is not None:
            self.refuse(node, "after the layer's output quantizer")
        target.layer.nodes.append(node.name)
        return target.layer

    def _after_quantizer_hint(self, node, target: Activation) -> str:
        """Why a scale or offset on a layer's quantized output is refused, and the way round:
        the engine applies a layer's per-row scales and offsets before its output quantizer
        only, and a quantizer, an affine step and another quantizer are not one
        requantization.  onnxruntime's quantize_static puts a quantizer between a Gemm and the
        BatchNormalization after it; a BatchNormalization after a ReLU would need a per-row
        clamp the engine does not have."""
        layer = self.layers[target.producer].name
        hint = (f"; it follows the output quantizer of layer {layer!r} ({target.node!r}), "
                f"and a layer's scales and offsets are taken only before its output quantizer")
        if node.op_type == "BatchNormalization":
            hint += (": fold the BatchNormalization into the float model before exporting or "
                     "quantizing it -- into the Linear before it when nothing is between "
                     "them (torch.nn.utils.fusion.fuse_linear_bn_eval), or, after a ReLU, "
                     "into the next Linear's weights and bias (a BatchNormalization after a "
                     "ReLU needs a per-row clamp the engine does not have)")
        else:
            hint += (": move it before the quantizer, or fold it into the next layer's "
                     "weights and bias, in the float model")
        return hint

    def _Add(self, node, source):
        layer = self._pending(node, source)
        other = node.input[1] if node.input[0] == source else node.input[0]
        self._add_offset(node, layer, other, Fraction(1))
        return self.values[source]

    def _Sub(self, node, source):
        layer = self._pending(node, source)
        if node.input[0] == source:
            self._add_offset(node, layer, node.input[1], Fraction(-1))
        else:                                   # c - y
            self._scale_by(node, layer, [Fraction(-1)] * layer.out_features)
            self._add_offset(node, layer, node.input[0], Fraction(1))
        return self.values[source]

    def _Mul(self, node, source):
        layer = self._pending(node, source)
        other = node.input[1] if node.input[0] == source else node.input[0]
        self._scale_by(node, layer, self._real_constant(node, other, layer.out_features))
        return self.values[source]

    def _Div(self, node, source):
        layer = self._pending(node, source)
        if node.input[0] != source:
            self.refuse(node, "a constant divided by a layer's output is not monotone")
        values = self._real_constant(node, node.input[1], layer.out_features)
        if any(v == 0 for v in values):
            self.refuse(node, "division by zero")
        self._scale_by(node, layer, [1 / v for v in values])
        return self.values[source]

    def _BatchNormalization(self, node, source):
        layer = self._pending(node, source)
        attrs = self.attributes(node)
        eps = float(attrs.get("epsilon", 1e-5))
        gamma, beta, mean, var = (self.constant(n) for n in node.input[1:5])
        if any(v is None for v in (gamma, beta, mean, var)):
            self.refuse(node, "its parameters must be constants")
        # As the executor computes it, in float: (y - mean) / sqrt(var + eps) * gamma + beta.
        factor = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
        rows = layer.out_features
        factor_f = [Fraction(float(f)) for f in np.broadcast_to(factor, (rows,))]
        mean_f = [Fraction(float(m)) for m in np.broadcast_to(mean, (rows,))]
        beta_f = [Fraction(float(b)) for b in np.broadcast_to(beta, (rows,))]
        if layer.ops:
            layer.ops.append(RowAffine(node.name, tuple(factor_f),
                                       tuple(b - m * f for b, m, f in
                                             zip(beta_f, mean_f, factor_f))))
        else:
            layer.b = [(b - m) * f + bb for b, m, f, bb in zip(layer.b, mean_f, factor_f,
                                                                 beta_f)]
            layer.a = [a * f for a, f in zip(layer.a, factor_f)]
        return self.values[source]

    def _Relu(self, node, source):
        target = self.values[source]
        if isinstance(target, Activation):
            if target.low >= 0:
                return target
            if target.producer is None:
                self.refuse(node, "a ReLU on the quantized model input")
            self.layers[target.producer].relu_after = True
            self.layers[target.producer].nodes.append(node.name)
            return Activation(target.quantizer, 0, max(target.high, 0), target.producer,
                              node.name, target.bits)
        layer = self._pending(node, source)
        layer.ops.append(ops.Relu(node.name))
        return target

    def _passthrough(self, node, source):
        target = self.values[source]
        shape = self.model.get_tensor_shape(node.output[0])
        raw = isinstance(target, str) and target == "input"
        if not raw and (shape is None or len(shape) != 2):
            self.refuse(node, f"gives shape {shape}; activations must stay (batch, features)")
        if isinstance(target, Pending):
            target.layer.nodes.append(node.name)
        return target

    def _Cast(self, node, source):
        # torch.ao's export puts a Cast to uint8 between each QuantizeLinear (which gives
        # uint8 already) and its DequantizeLinear: a no-op, passed through.  A Cast that
        # changes the type would change the values (rounding, wrapping): refused.
        import onnx

        target = self.attributes(node).get("to")
        info = self.model.get_tensor_valueinfo(node.input[0])
        have = info.type.tensor_type.elem_type if info is not None else None
        if have is None or have != target:
            name = onnx.TensorProto.DataType.Name
            self.refuse(node, f"a Cast from {name(have) if have else 'an unknown type'} to "
                              f"{name(target)}; only a Cast to the type the tensor has already "
                              f"(a no-op, as torch.ao's export puts after each QuantizeLinear) "
                              f"is passed through")
        if source is None:
            self.refuse(node, "a Cast of a constant; only an activation's no-op Cast is "
                              "passed through")
        return self._passthrough(node, source)

    def _Transpose(self, node, source):
        if source is not None:
            self.refuse(node, "a transpose of an activation; only a constant's (a weight's) "
                              "is folded")
        value = self.kind_of(node.input[0])
        perm = self.attributes(node).get("perm")
        axes = tuple(int(a) for a in perm) if perm else None      # ONNX: reverse them all
        if isinstance(value, QuantConst):
            scale = np.broadcast_to(value.scale, value.ints.shape)
            return QuantConst(np.transpose(value.ints, axes), np.transpose(scale, axes),
                              value.node, value.bits)
        if isinstance(value, np.ndarray):
            return np.transpose(value, axes)
        self.refuse(node, "its input must be a constant")

    _Flatten = _passthrough
    _Reshape = _passthrough
    _Identity = _passthrough
    _Dropout = _passthrough


def _computed(value) -> bool:
    """Whether a tensor is computed from the graph input (not a constant of some kind)."""
    return (isinstance(value, (Activation, Pending, QuantInts))
            or (isinstance(value, str) and value == "input"))


def _along(values: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """Per-axis quantization parameters (1-D along ``axis``) shaped to broadcast."""
    values = np.asarray(values)
    if values.size == 1:
        return values.reshape(())
    shape = [1] * ndim
    shape[axis] = values.size
    return values.reshape(shape)


def _features(walker: _Walker, source: str, activation) -> int:
    shape = walker.model.get_tensor_shape(source)
    if shape is None:
        return walker.in_features
    return int(np.prod(shape[1:]))
