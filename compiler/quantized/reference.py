"""The model run by its own reference executor, to compare the imported network with.

QONNX models run on qonnx's executor (``qonnx.core.onnx_exec.execute_onnx``: its own ``Quant``
/ ``BipolarQuant`` / ``Trunc``, onnxruntime for the standard nodes), ONNX QDQ models on
onnxruntime.  Both compute in float32, as the model's author's tools do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["compare", "reference_outputs"]


def reference_outputs(path, x, *, batch: int = 256) -> np.ndarray:
    """The model's outputs (float32, samples x features) for inputs ``x``, reshaped to the
    graph input's shape per sample."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path))
    qonnx = any(node.op_type in ("Quant", "BipolarQuant", "Trunc") for node in model.graph.node)
    x = np.asarray(x, dtype=np.float32)
    if qonnx:
        return _qonnx_outputs(path, x, batch)
    return _onnxruntime_outputs(model, x, batch)


def _input_shape(model_input) -> list[int]:
    dims = model_input.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else -1 for d in dims]


def _qonnx_outputs(path: Path, x: np.ndarray, batch: int) -> np.ndarray:
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.transformation.infer_shapes import InferShapes

    model = ModelWrapper(str(path))
    for node in model.graph.node:
        if node.op_type in ("Quant", "BipolarQuant", "Trunc"):
            node.domain = "qonnx.custom_op.general"
    model = model.transform(InferShapes())
    name = model.graph.input[0].name
    feature_shape = model.get_tensor_shape(name)[1:]
    outputs = []
    prepared = {}
    for start in range(0, len(x), batch):
        part = x[start:start + batch]
        if len(part) not in prepared:
            prepared[len(part)] = model.transform(ChangeBatchSize(len(part))).transform(
                InferShapes())
        resized = prepared[len(part)]
        result = execute_onnx(resized, {name: part.reshape([len(part)] + feature_shape)})
        outputs.append(np.asarray(result[resized.graph.output[0].name]).reshape(len(part), -1))
    return np.concatenate(outputs).astype(np.float32)


def _onnxruntime_outputs(model, x: np.ndarray, batch: int) -> np.ndarray:
    import onnxruntime

    graph_input = model.graph.input[0]
    shape = _input_shape(graph_input)
    # A fixed batch in the file (1, or the batch it was exported with): run that many samples
    # at a time, the last run filled up with copies of its last sample; else in batches.
    fixed = bool(shape) and shape[0] > 0
    step = shape[0] if fixed else batch
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    # The graph as written: onnxruntime's graph optimisations fuse QuantizeLinear /
    # DequantizeLinear around MatMul and Gemm into integer kernels (QLinearMatMul) whose
    # requantization rounds a float32 multiplier, not the model's arithmetic.
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3          # its notes on unused initializers are noise
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    feature_shape = [d if d > 0 else 1 for d in shape[1:]]
    outputs = []
    for start in range(0, len(x), step):
        part = x[start:start + step]
        count = len(part)
        if fixed and count < step:
            part = np.concatenate([part, np.repeat(part[-1:], step - count, axis=0)])
        result = session.run(None, {graph_input.name: part.reshape([len(part)]
                                                                    + feature_shape)})[0]
        outputs.append(np.asarray(result).reshape(len(part), -1)[:count])
    return np.concatenate(outputs).astype(np.float32)


def compare(network, reference: np.ndarray, integers: np.ndarray) -> int:
    """How many outputs of the integer network (``integers``, dequantized in float32 as the
    model's own dequantizer does: ``float32(c) * float32(scale)``) differ from the reference
    executor's."""
    scale = np.float32(network.output_format.scale)
    ours = np.asarray(integers).astype(np.float32) * scale
    return int(np.count_nonzero(ours != np.asarray(reference, dtype=np.float32)))
