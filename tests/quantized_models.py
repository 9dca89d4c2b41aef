"""Small quantized ONNX models, written node by node: QONNX (``Quant``, ``BipolarQuant``,
``Trunc``) and ONNX QDQ (``QuantizeLinear`` / ``DequantizeLinear``), one per pattern the
importer supports, with seeded random weights and float32 scales that are not powers of two.

Each builder returns an ``onnx.ModelProto``; :func:`save` writes it.  Weights are integers on
the quantizer's grid times their scale, so the model's own weight quantizer gives back those
integers.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

QONNX_DOMAIN = "qonnx.custom_op.general"


class Builder:
    """Collects nodes and initializers; names every tensor after the node that makes it."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.initializers = [], []
        self.count = 0

    def const(self, value, name=None, dtype=np.float32):
        self.count += 1
        name = name or f"c{self.count}"
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(self, op, inputs, name=None, domain="", **attrs):
        self.count += 1
        name = name or f"{op}_{self.count}"
        output = f"{name}_out"
        self.nodes.append(helper.make_node(op, inputs, [output], name=name, domain=domain,
                                           **attrs))
        return output

    def scale(self, low=0.005, high=0.05, shape=()):
        return np.float32(self.rng.uniform(low, high, shape))

    # ---- QONNX -------------------------------------------------------------------------------
    def quant(self, x, scale, bits, *, signed=True, narrow=False, zero_point=0.0,
              rounding="ROUND", name=None):
        return self.node("Quant", [x, self.const(scale), self.const(zero_point),
                                   self.const(float(bits))], name=name, domain=QONNX_DOMAIN,
                         signed=int(signed), narrow=int(narrow), rounding_mode=rounding)

    def quant_weights(self, out_features, in_features, bits, *, per_channel=True,
                      transposed=False, density=1.0, name=None):
        """A weight initializer behind a QONNX Quant: integers on a narrow signed grid of
        ``bits`` (bipolar for 1 bit), times one scale per output row (or one)."""
        top = (1 << (bits - 1)) - 1
        ints = (self.rng.choice([-1, 1], (out_features, in_features)) if bits == 1 else
                self.rng.integers(-top, top + 1, (out_features, in_features)))
        if bits > 1:
            ints[self.rng.random(ints.shape) >= density] = 0
        scale = self.scale(shape=(out_features, 1) if per_channel else ())
        weights = (ints * scale).astype(np.float32)
        shape_scale = scale
        if transposed:                              # MatMul: in x out
            weights, shape_scale = weights.T.copy(), np.asarray(scale).T.copy()
        w = self.const(weights)
        if bits == 1:
            return self.node("BipolarQuant", [w, self.const(shape_scale)], name=name,
                             domain=QONNX_DOMAIN)
        return self.quant(w, shape_scale, bits, narrow=True, name=name)

    # ---- QDQ ---------------------------------------------------------------------------------
    def qdq(self, x, scale, zero_point, dtype, *, clip=None, name=None, cast=None):
        zp = self.const(zero_point, dtype=dtype)
        q = self.node("QuantizeLinear", [x, self.const(scale), zp], name=name)
        if cast is not None:                # torch.ao's export: a Cast to (usually) the same type
            q = self.node("Cast", [q], to=cast)
        if clip is not None:
            q = self.node("Clip", [q, self.const(clip[0], dtype=dtype),
                                   self.const(clip[1], dtype=dtype)])
        return self.node("DequantizeLinear", [q, self.const(scale), zp])

    def dq_weights(self, out_features, in_features, *, per_channel=True, transposed=False,
                   bits=8, zero_point=0):
        top = (1 << (bits - 1)) - 1
        ints = self.rng.integers(-top, top + 1, (out_features, in_features)).astype(np.int8)
        scale = self.scale(shape=(out_features,) if per_channel else ())
        axis = 0
        if transposed:
            ints, axis = ints.T.copy(), 1
        zp = np.full(np.shape(scale), zero_point, np.int8)
        return self.node("DequantizeLinear", [self.const(ints, dtype=np.int8),
                                              self.const(scale), self.const(zp, dtype=np.int8)],
                         axis=axis)

    def dq_bias(self, values_scale, ints):
        return self.node("DequantizeLinear", [self.const(ints, dtype=np.int32),
                                              self.const(values_scale),
                                              self.const(np.zeros_like(ints), dtype=np.int32)],
                         axis=0)

    def model(self, x_name, output, in_shape, *, qonnx: bool):
        graph = helper.make_graph(
            self.nodes, "quantized",
            [helper.make_tensor_value_info(x_name, TensorProto.FLOAT, in_shape)],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
            self.initializers)
        opsets = [helper.make_opsetid("", 13)]
        if qonnx:
            opsets.append(helper.make_opsetid(QONNX_DOMAIN, 1))
        return helper.make_model(graph, opset_imports=opsets)


def save(model, path) -> str:
    onnx.save(model, str(path))
    return str(path)


# ---- the patterns ------------------------------------------------------------------------------

def qonnx_gemm_matmul(seed=0):
    """Quant(u8 input) -> Gemm (per-channel 4-bit weights, Int32-style quantized bias) ->
    Relu -> Quant(u4) -> MatMul (per-tensor 4-bit weights) -> Add (float bias) ->
    Quant(s8)."""
    b = Builder(seed)
    x = b.quant("x", np.float32(1 / 255), 8, signed=False)
    w = b.quant_weights(24, 16, 4)
    s_in = np.float32(1 / 255)
    bias_scale = (s_in * b.scale(shape=(24,))).astype(np.float32)
    bias = b.quant(b.const(bias_scale * b.rng.integers(-300, 300, 24)), bias_scale, 32)
    y = b.node("Gemm", [x, w, bias], transB=1)
    y = b.node("Relu", [y])
    y = b.quant(y, b.scale(0.05, 0.3), 4, signed=False)
    w2 = b.quant_weights(10, 24, 4, per_channel=False, transposed=True)
    y = b.node("MatMul", [y, w2])
    y = b.node("Add", [y, b.const(b.rng.normal(0, 0.2, 10))])
    y = b.quant(y, b.scale(0.02, 0.1), 8)
    return b.model("x", y, [1, 16], qonnx=True)


def qonnx_batchnorm_bipolar(seed=1):
    """Reshape of a 4-D input -> Quant(s8, narrow) -> MatMul (bipolar weights) ->
    BatchNormalization -> Quant(u2) -> Flatten -> MatMul (2-bit weights, per channel) ->
    Mul (per-channel) -> Add -> Quant(s4, HALF_UP rounding)."""
    b = Builder(seed)
    x = b.node("Reshape", ["x", b.const(np.array([1, 16], np.int64), dtype=np.int64)])
    x = b.quant(x, np.float32(0.03), 8, narrow=True)
    y = b.node("MatMul", [x, b.quant_weights(20, 16, 1, transposed=True)])
    gamma = b.rng.uniform(-1.5, 1.5, 20)
    gamma[0] = 0.0                                      # a row whose output is constant
    y = b.node("BatchNormalization", [y, b.const(gamma), b.const(b.rng.normal(0, 0.3, 20)),
                                      b.const(b.rng.normal(0, 0.5, 20)),
                                      b.const(b.rng.uniform(0.2, 2.0, 20))], epsilon=1e-3)
    y = b.quant(y, b.scale(0.1, 0.4), 2, signed=False)
    y = b.node("Flatten", [y])
    y = b.node("MatMul", [y, b.quant_weights(6, 20, 2, transposed=True)])
    y = b.node("Mul", [y, b.const(b.rng.uniform(0.5, 2.0, 6))])
    y = b.node("Add", [y, b.const(b.rng.normal(0, 0.3, 6))])
    y = b.quant(y, b.scale(0.05, 0.2), 4, rounding="HALF_UP")
    return b.model("x", y, [1, 1, 4, 4], qonnx=True)


def qonnx_trunc_and_ops(seed=2):
    """Quant(s6) -> Gemm (alpha, beta, float C) -> Sub -> Div -> Clip -> Quant(s8, zero point
    3, FLOOR) -> Trunc (to 5 bits) -> Gemm -> Relu -> Quant(u3) -> Identity."""
    b = Builder(seed)
    x = b.quant("x", np.float32(0.02), 6)
    y = b.node("Gemm", [x, b.quant_weights(12, 8, 3), b.const(b.rng.normal(0, 0.1, 12))],
               transB=1, alpha=0.75, beta=1.5)
    y = b.node("Sub", [y, b.const(b.rng.normal(0, 0.05, 12))])
    y = b.node("Div", [y, b.const(np.float32(1.3))])
    y = b.node("Clip", [y, b.const(np.float32(-0.6)), b.const(np.float32(0.9))])
    scale = b.scale(0.004, 0.01)
    y = b.quant(y, scale, 8, zero_point=3.0, rounding="FLOOR")
    y = b.node("Trunc", [y, b.const(scale), b.const(0.0), b.const(8.0), b.const(5.0)],
               domain=QONNX_DOMAIN, rounding_mode="FLOOR")
    y = b.node("Gemm", [y, b.quant_weights(5, 12, 5)], transB=1)
    y = b.node("Relu", [y])
    y = b.quant(y, b.scale(0.004, 0.008), 3, signed=False)
    y = b.node("Identity", [y])
    return b.model("x", y, [1, 8], qonnx=True)


def qonnx_power_of_two(seed=3):
    """FINN's style: power-of-two scales, integer biases, half-to-even rounding (ties are
    common): Quant(s8, 2**-4) -> MatMul (4-bit, 2**-3) -> Add -> Relu -> Quant(u4, 2**-2)
    -> MatMul -> Quant(s8, 2**-3)."""
    b = Builder(seed)
    x = b.quant("x", np.float32(2 ** -4), 8)
    w = b.const((b.rng.integers(-7, 8, (8, 12)) * 2.0 ** -3).astype(np.float32))
    y = b.node("MatMul", [x, b.quant(w, np.float32(2 ** -3), 4, narrow=True)])
    y = b.node("Add", [y, b.const(b.rng.integers(-40, 40, 12) * 2.0 ** -7)])
    y = b.node("Relu", [y])
    y = b.quant(y, np.float32(2 ** -2), 4, signed=False)
    w2 = b.const((b.rng.integers(-7, 8, (12, 4)) * 2.0 ** -3).astype(np.float32))
    y = b.node("MatMul", [y, b.quant(w2, np.float32(2 ** -3), 4, narrow=True)])
    y = b.quant(y, np.float32(2 ** -3), 8)
    return b.model("x", y, [1, 8], qonnx=True)


def qdq_per_channel(seed=4):
    """QuantizeLinear(u8, zero point 128)/DequantizeLinear input -> Gemm (per-channel int8
    weights, int32 bias) -> Relu -> Q(u8)/Clip(0, 15)/DQ -> MatMul (per-channel, in x out) ->
    Q(s8, zero point -5)/DQ."""
    b = Builder(seed)
    s_in = np.float32(0.0123)
    x = b.qdq("x", s_in, 128, np.uint8)
    w = b.dq_weights(16, 12, per_channel=True)
    weight_scales = numpy_helper.to_array(b.initializers[-2])
    bias = b.dq_bias((s_in * weight_scales).astype(np.float32),
                     b.rng.integers(-2000, 2000, 16).astype(np.int32))
    y = b.node("Gemm", [x, w, bias], transB=1)
    y = b.node("Relu", [y])
    y = b.qdq(y, b.scale(0.02, 0.08), 0, np.uint8, clip=(0, 15))
    y = b.node("MatMul", [y, b.dq_weights(6, 16, per_channel=True, transposed=True)])
    y = b.qdq(y, b.scale(0.05, 0.2), -5, np.int8)
    return b.model("x", y, ["N", 12], qonnx=False)


def qdq_per_tensor(seed=5):
    """Per-tensor int8 everywhere, float biases: Q(s8)/DQ -> MatMul -> Add -> Q(u8, zero
    point 0)/DQ -> Gemm (transB) -> Q(s8)/DQ."""
    b = Builder(seed)
    x = b.qdq("x", np.float32(0.021), 0, np.int8)
    y = b.node("MatMul", [x, b.dq_weights(10, 8, per_channel=False, transposed=True)])
    y = b.node("Add", [y, b.const(b.rng.normal(0, 0.3, 10))])
    y = b.qdq(y, b.scale(0.03, 0.1), 0, np.uint8)
    y = b.node("Gemm", [y, b.dq_weights(4, 10, per_channel=False),
                        b.const(b.rng.normal(0, 0.2, 4))], transB=1)
    y = b.qdq(y, b.scale(0.05, 0.2), 0, np.int8)
    return b.model("x", y, ["N", 8], qonnx=False)


def qdq_symmetric_relu(seed=6, second_scale=None):
    """onnxruntime's symmetric int8 activations: Gemm -> Q(s8, 0)/DQ -> Relu -> the same
    Q(s8, 0)/DQ again (a no-op on the ReLU's values; ``second_scale``: another step, which is
    not) -> Gemm -> Q(s8)/DQ."""
    b = Builder(seed)
    x = b.qdq("x", np.float32(0.02), 0, np.int8)
    y = b.node("Gemm", [x, b.dq_weights(12, 8, per_channel=True),
                        b.const(b.rng.normal(0, 0.3, 12))], transB=1)
    step = b.scale(0.02, 0.06)
    y = b.qdq(y, step, 0, np.int8)
    y = b.node("Relu", [y])
    y = b.qdq(y, step if second_scale is None else np.float32(second_scale), 0, np.int8)
    y = b.node("Gemm", [y, b.dq_weights(5, 12, per_channel=True),
                        b.const(b.rng.normal(0, 0.2, 5))], transB=1)
    y = b.qdq(y, b.scale(0.05, 0.2), 0, np.int8)
    return b.model("x", y, ["N", 8], qonnx=False)


PATTERNS = {
    "qonnx_gemm_matmul": qonnx_gemm_matmul,
    "qonnx_batchnorm_bipolar": qonnx_batchnorm_bipolar,
    "qonnx_trunc_and_ops": qonnx_trunc_and_ops,
    "qonnx_power_of_two": qonnx_power_of_two,
    "qdq_per_channel": qdq_per_channel,
    "qdq_per_tensor": qdq_per_tensor,
    "qdq_symmetric_relu": qdq_symmetric_relu,
}


def random_inputs(model, count: int, seed: int = 0) -> np.ndarray:
    """Inputs over and past the input quantizer's range, some on its grid (ties)."""
    rng = np.random.default_rng(seed)
    shape = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim][1:]
    features = int(np.prod(shape))
    x = rng.uniform(-1.2, 1.2, (count, features)).astype(np.float32)
    x[: count // 4] = np.round(x[: count // 4] * 32) / 32
    x[count // 4: count // 3] = 0
    return x
