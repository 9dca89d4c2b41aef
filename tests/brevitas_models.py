"""Brevitas-trained MLPs on the digits, exported to QONNX and to ONNX QDQ: the models a user of
quantization-aware training brings to ``sparseforge import``.

``train_mlp(weight_bits, act_bits)``: 64 -> hidden -> 10, an unsigned input quantizer, weights
quantized per output channel (binary, +-1 times a constant, for 1 bit), quantized biases
(Int32Bias: the accumulator's scale), a ReLU quantized to ``act_bits`` unsigned, and an 8-bit
output quantizer; optionally pruned by magnitude while it trains (``sparsity``), which the
weight quantizer keeps at zero.  Seeded and single-threaded: the same model every run.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

__all__ = ["TrainedMlp", "export", "qonnx_to_qdq", "train_mlp"]


@dataclass
class TrainedMlp:
    model: object                   # the Brevitas nn.Sequential, in eval mode
    weight_bits: int
    act_bits: int
    accuracy: float                 # Brevitas' own evaluation on the test split
    logits: np.ndarray              # its outputs on the test split
    sparsity: float


def _quiet():
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def build_mlp(weight_bits: int, act_bits: int, hidden: int, input_bits: int,
              bias: bool = True):
    import torch.nn as nn
    from brevitas import nn as qnn
    from brevitas.quant import Int32Bias, SignedBinaryWeightPerTensorConst, Uint8ActPerTensorFloat

    def linear(inputs, outputs):
        weights = ({"weight_quant": SignedBinaryWeightPerTensorConst} if weight_bits == 1 else
                   {"weight_bit_width": weight_bits, "weight_scaling_per_output_channel": True})
        # Without a bias Brevitas exports the layer as Quant -> Transpose -> MatMul.
        biases = {"bias": True, "bias_quant": Int32Bias} if bias else {"bias": False}
        return qnn.QuantLinear(inputs, outputs, return_quant_tensor=True, **biases, **weights)

    return nn.Sequential(
        qnn.QuantIdentity(act_quant=Uint8ActPerTensorFloat, bit_width=input_bits,
                          return_quant_tensor=True),
        linear(64, hidden),
        qnn.QuantReLU(bit_width=act_bits, return_quant_tensor=True),
        linear(hidden, 10),
        qnn.QuantIdentity(bit_width=8, return_quant_tensor=False),
    )


def train_mlp(weight_bits: int, act_bits: int, *, hidden: int = 64, input_bits: int = 4,
              epochs: int = 3, sparsity: float = 0.0, seed: int = 0,
              bias: bool = True) -> TrainedMlp:
    """Quantization-aware training on the digits' training split (Adam, batch 64); with
    ``sparsity`` the smallest weights of each layer are held at zero, the fraction pruned
    rising to ``sparsity`` over the first half of the epochs."""
    _quiet()
    import torch
    import torch.nn.functional as F

    from sparseforge.compiler.compress.digits import load_digits_split

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    train, _, test = load_digits_split()
    model = build_mlp(weight_bits, act_bits, hidden, input_bits, bias)
    linears = [model[1], model[3]]
    x, y = torch.tensor(train.x), torch.tensor(train.y)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    masks = [torch.ones_like(layer.weight, dtype=torch.bool) for layer in linears]
    for epoch in range(epochs):
        model.train()
        if sparsity and weight_bits > 1:
            target = sparsity * min(1.0, (epoch + 1) / max(1, epochs // 2))
            masks = [_magnitude_mask(layer.weight.detach(), target) for layer in linears]
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 64):
            batch = order[start:start + 64]
            optimiser.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimiser.step()
            with torch.no_grad():
                for layer, mask in zip(linears, masks):
                    layer.weight.mul_(mask)
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor(test.x)).numpy()
    pruned = sum(int((~mask).sum()) for mask in masks) / sum(mask.numel() for mask in masks)
    return TrainedMlp(model, weight_bits, act_bits,
                      float(np.mean(logits.argmax(axis=1) == test.y)), logits, pruned)


def _magnitude_mask(weight, sparsity: float):
    """Keep the largest ``1 - sparsity`` of the weights (the last layer pruned half as much:
    the classifier is small)."""
    import torch

    count = int(round(sparsity * weight.numel() * (0.5 if weight.shape[0] <= 10 else 1.0)))
    if count <= 0:
        return torch.ones_like(weight, dtype=torch.bool)
    threshold = weight.abs().flatten().kthvalue(count).values
    return weight.abs() > threshold


def export(trained: TrainedMlp, folder, *, dynamo: bool = False) -> dict[str, str]:
    """The model as ``{"qonnx": path, "qdq": path}``.  ``dynamo`` picks PyTorch's newer
    exporter for QONNX (Brevitas's default with torch >= 2.9; slower, and QDQ export with
    quantized biases needs the TorchScript one)."""
    _quiet()
    import torch
    from brevitas.export import export_onnx_qcdq, export_qonnx

    folder = __import__("pathlib").Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"w{trained.weight_bits}a{trained.act_bits}"
    example = torch.rand(1, 64)
    paths = {"qonnx": str(folder / f"{stem}.qonnx.onnx"), "qdq": str(folder / f"{stem}.qdq.onnx")}
    export_qonnx(trained.model, example, export_path=paths["qonnx"], dynamo=dynamo)
    if trained.weight_bits == 1:
        # Brevitas's QDQ exporter refuses binary quantizers ("Binary quant not supported").
        qonnx_to_qdq(paths["qonnx"], paths["qdq"])
    else:
        export_onnx_qcdq(trained.model, example, export_path=paths["qdq"], dynamo=False)
    return paths


def qonnx_to_qdq(source, target) -> str:
    """A QONNX model as ONNX QDQ, for what Brevitas's QDQ exporter refuses (binary weights):
    a ``Quant`` / ``BipolarQuant`` of a constant becomes a ``DequantizeLinear`` of its
    integers (int8, or int32 for a bias), a ``Quant`` of an activation (8 bits at most, zero
    point 0, rounding ROUND) becomes ``QuantizeLinear`` [+ ``Clip`` to a narrower range] +
    ``DequantizeLinear``.  The result runs on onnxruntime alone."""
    _quiet()
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.general import RemoveStaticGraphInputs, RemoveUnusedTensors
    from qonnx.transformation.infer_shapes import InferShapes

    model = ModelWrapper(str(source))
    for node in model.graph.node:
        if node.op_type in ("Quant", "BipolarQuant", "Trunc"):
            node.domain = "qonnx.custom_op.general"
    for transformation in (InferShapes(), FoldConstants(exclude_op_types=["Quant",
                                                                         "BipolarQuant"]),
                           RemoveUnusedTensors(), RemoveStaticGraphInputs()):
        model = model.transform(transformation)
    graph = model.graph
    nodes = []
    for node in graph.node:
        if node.op_type not in ("Quant", "BipolarQuant"):
            nodes.append(node)
            continue
        data = model.get_initializer(node.input[0])
        scale = model.get_initializer(node.input[1])
        name, out = node.name or node.output[0], node.output[0]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "BipolarQuant":
            signed, narrow, bits, zero = True, False, 1, 0.0
        else:
            zero = float(model.get_initializer(node.input[2]))
            bits = int(model.get_initializer(node.input[3]))
            signed, narrow = bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0))
        if zero != 0:
            raise ValueError(f"{name}: zero point {zero}; only 0 is converted")
        scale_name = f"{name}_scale"
        if data is not None:                            # a constant: its integers
            ratio = data.astype(np.float32) / scale.astype(np.float32)
            if bits == 1:
                ints = np.where(ratio >= 0, 1, -1)
            else:
                top = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1 - narrow
                bottom = -top - (0 if narrow else 1) if signed else 0
                ints = np.round(np.clip(ratio, bottom, top))
            dtype = np.int32 if bits > 8 else np.int8
            axis = 0 if scale.size > 1 else 1
            flat_scale = scale.reshape(-1).astype(np.float32)
            graph.initializer.extend([
                numpy_helper.from_array(ints.astype(dtype), f"{name}_ints"),
                numpy_helper.from_array(flat_scale if scale.size > 1 else flat_scale[0],
                                        scale_name),
                numpy_helper.from_array(np.zeros(flat_scale.shape if scale.size > 1 else (),
                                                 dtype), f"{name}_zero")])
            nodes.append(helper.make_node("DequantizeLinear", [f"{name}_ints", scale_name,
                                                               f"{name}_zero"], [out],
                                          name=name, axis=axis))
            continue
        if bits > 8 or attrs.get("rounding_mode", b"ROUND") not in (b"ROUND", "ROUND"):
            raise ValueError(f"{name}: a {bits}-bit activation quantizer is not converted")
        dtype = np.int8 if signed else np.uint8
        low = -(1 << (bits - 1)) + narrow if signed else 0
        high = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1 - narrow
        graph.initializer.extend([
            numpy_helper.from_array(scale.astype(np.float32).reshape(()), scale_name),
            numpy_helper.from_array(np.zeros((), dtype), f"{name}_zero"),
            numpy_helper.from_array(np.array(low, dtype), f"{name}_low"),
            numpy_helper.from_array(np.array(high, dtype), f"{name}_high")])
        nodes += [
            helper.make_node("QuantizeLinear", [node.input[0], scale_name, f"{name}_zero"],
                             [f"{name}_q"], name=f"{name}_quantize"),
            helper.make_node("Clip", [f"{name}_q", f"{name}_low", f"{name}_high"],
                             [f"{name}_clipped"], name=f"{name}_clip"),
            helper.make_node("DequantizeLinear", [f"{name}_clipped", scale_name,
                                                  f"{name}_zero"], [out], name=name)]
    del graph.node[:]
    graph.node.extend(nodes)
    proto = model.model
    del proto.opset_import[:]
    proto.opset_import.extend([helper.make_opsetid("", 13)])
    del graph.value_info[:]
    graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT
    onnx.save(proto, str(target))
    return str(target)
