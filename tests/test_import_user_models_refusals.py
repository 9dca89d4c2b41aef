"""Refusals met by models users bring as they quantized them (onnxruntime's quantize_static of
a Linear -> BatchNorm -> ReLU network, a float model given to import): each names what to do."""

from __future__ import annotations

import numpy as np
import pytest

import sparseforge as sf
from sparseforge.compiler.errors import InputError
from sparseforge.compiler.quantized import UnsupportedModel
from tests.quantized_models import Builder, save

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _after_quantizer(tmp_path, op: str):
    """onnxruntime's QDQ of Linear -> ``op`` -> ReLU: Q/DQ -> Gemm -> Q/DQ -> ``op`` -> Q/DQ
    -> Gemm -> Q/DQ (the product quantized before the op)."""
    b = Builder(21)
    x = b.qdq("x", np.float32(0.02), 0, np.int8)
    y = b.node("Gemm", [x, b.dq_weights(6, 4), b.const(b.rng.normal(0, 0.3, 6))], transB=1,
               name="fc1")
    y = b.qdq(y, b.scale(0.02, 0.06), 0, np.int8, name="fc1_q")
    if op == "BatchNormalization":
        y = b.node(op, [y, b.const(b.rng.uniform(0.5, 1.5, 6)), b.const(b.rng.normal(0, 1, 6)),
                        b.const(b.rng.normal(0, 1, 6)), b.const(b.rng.uniform(0.5, 2, 6))],
                   name="bn")
    else:
        y = b.node(op, [y, b.const(b.rng.uniform(0.5, 1.5, 6))], name="bn")
    y = b.qdq(y, b.scale(0.02, 0.06), 0, np.uint8)
    y = b.node("Gemm", [y, b.dq_weights(3, 6), b.const(b.rng.normal(0, 0.2, 3))], transB=1)
    y = b.qdq(y, b.scale(0.05, 0.2), 0, np.int8)
    return save(b.model("x", y, ["N", 4], qonnx=False), tmp_path / f"{op}.onnx")


def test_a_batchnorm_after_a_quantized_linear_names_the_fold(tmp_path):
    with pytest.raises(UnsupportedModel) as refused:
        sf.load_quantized(_after_quantizer(tmp_path, "BatchNormalization"))
    message = str(refused.value)
    assert "node 'bn' (BatchNormalization)" in message
    assert "output quantizer of layer 'fc1'" in message
    assert "fuse_linear_bn_eval" in message and "next Linear's weights and bias" in message


def test_a_scale_after_a_quantized_linear_names_the_way_round(tmp_path):
    with pytest.raises(UnsupportedModel) as refused:
        sf.load_quantized(_after_quantizer(tmp_path, "Mul"))
    message = str(refused.value)
    assert "node 'bn' (Mul)" in message and "output quantizer of layer 'fc1'" in message
    assert "fuse_linear_bn_eval" not in message
    assert "move it before the quantizer" in message


def test_a_float_model_given_to_import_is_sent_to_compress(tmp_path):
    b = Builder(22)
    y = b.node("Gemm", ["x", b.const(b.rng.normal(0, 1, (3, 4))), b.const(np.zeros(3))],
               transB=1, name="fc")
    path = save(b.model("x", y, ["N", 4], qonnx=False), tmp_path / "float.onnx")
    with pytest.raises(UnsupportedModel, match=r"'fc' \(Gemm\): its weights are not quantized.*"
                                               r"sparseforge compress MODEL\.onnx"):
        sf.load_quantized(path, np.ones((2, 4)))


def _with_activation(tmp_path, op: str, final: bool):
    """Q/DQ -> Gemm -> ``op`` -> Q/DQ -> Gemm -> Q/DQ [-> ``op`` at the end when ``final``]."""
    b = Builder(23)
    x = b.qdq("x", np.float32(0.02), 0, np.int8)
    y = b.node("Gemm", [x, b.dq_weights(6, 4), b.const(b.rng.normal(0, 0.3, 6))], transB=1)
    if not final:
        y = b.node(op, [y], name="act")
    y = b.qdq(y, b.scale(0.01, 0.03), 0, np.int8)
    y = b.node("Gemm", [y, b.dq_weights(3, 6), b.const(b.rng.normal(0, 0.2, 3))], transB=1)
    y = b.qdq(y, b.scale(0.05, 0.2), 0, np.int8)
    if final:
        y = b.node(op, [y], name="act")
    return save(b.model("x", y, ["N", 4], qonnx=False), tmp_path / f"{op}{final}.onnx")


@pytest.mark.parametrize("op", ["LeakyRelu", "Tanh", "Sigmoid"])
def test_a_hidden_activation_other_than_relu_names_the_ones_that_run(tmp_path, op):
    with pytest.raises(UnsupportedModel) as refused:
        sf.load_quantized(_with_activation(tmp_path, op, final=False))
    message = str(refused.value)
    assert f"node 'act' ({op}): not supported: a {op} activation is not imported" in message
    assert "QuantReLU, QuantHardTanh" in message


def test_a_final_sigmoid_is_told_to_be_left_out(tmp_path):
    with pytest.raises(UnsupportedModel, match=r"node 'act' \(Sigmoid\): not supported: export "
                                               r"the model without its final sigmoid"):
        sf.load_quantized(_with_activation(tmp_path, "Sigmoid", final=True))


def test_a_layer_output_quantized_twice_names_brevitas_output_quant(tmp_path):
    """Brevitas QuantLinear(output_quant=...) then QuantReLU(bit_width=4): the layer's output
    quantized to 8 bits, then to 4; and a QuantIdentity before a QuantLinear(input_quant)."""
    b = Builder(24)
    x = b.quant("x", np.float32(0.02), 8)
    y = b.node("MatMul", [x, b.quant_weights(6, 4, 4, transposed=True)])
    y = b.quant(y, np.float32(0.04), 8, name="output_quant")
    y = b.node("Relu", [y])
    y = b.quant(y, np.float32(0.35), 4, signed=False, name="relu_quant")
    y = b.node("MatMul", [y, b.quant_weights(3, 6, 4, transposed=True)])
    y = b.quant(y, np.float32(0.1), 8)
    path = save(b.model("x", y, [1, 4], qonnx=True), tmp_path / "twice.onnx")
    with pytest.raises(UnsupportedModel, match=r"node 'relu_quant' \(Quant\): it quantizes a "
                                               r"tensor that is already quantized.*leave out "
                                               r"the output_quant"):
        sf.load_quantized(path)
    b = Builder(25)
    x = b.quant("x", np.float32(0.02), 8)
    x = b.quant(x, np.float32(0.05), 8, name="input_quant")
    y = b.node("MatMul", [x, b.quant_weights(3, 4, 4, transposed=True)])
    y = b.quant(y, np.float32(0.1), 8)
    path = save(b.model("x", y, [1, 4], qonnx=True), tmp_path / "input_twice.onnx")
    with pytest.raises(UnsupportedModel, match=r"node 'input_quant' \(Quant\): .*quantize the "
                                               r"input once"):
        sf.load_quantized(path)


def test_a_quantized_model_given_to_compress_is_told_to_be_imported(tmp_path):
    """onnxruntime's QDQ or a Brevitas model given to compress was refused node by node
    ("'0.bias_DequantizeLinear' cannot run on the engine"), never naming import."""
    from tests.brevitas_models import build_mlp
    from tests.quantized_models import qdq_per_tensor, qonnx_gemm_matmul

    x, y = np.zeros((8, 4), np.float32), np.arange(8) % 3
    for model, nodes in ((qdq_per_tensor(), "DequantizeLinear, QuantizeLinear"),
                         (qonnx_gemm_matmul(), "Quant")):
        path = save(model, tmp_path / "q.onnx")
        with pytest.raises(InputError, match=rf"q.onnx is a quantized model \({nodes} "
                                                rf"nodes\): sparseforge import \(sf.load_"
                                                rf"quantized\) runs it with its own "
                                                rf"quantization"):
            sf.compress(path, (x, y), sparsity=0.5)
    brevitas = build_mlp(4, 4, hidden=8, input_bits=8)
    with pytest.raises(InputError, match=r"the model is quantized with Brevitas \(layer "
                                            r"'0' is a QuantIdentity\): export it with "
                                            r"brevitas.export.export_qonnx"):
        sf.compress(brevitas, (np.zeros((8, 64), np.float32), np.arange(8) % 3))
    with pytest.raises(InputError, match=r"not a Sequential: export it first: "
                                            r"brevitas.export.export_qonnx"):
        sf.load_quantized(brevitas)


def test_import_reads_data_as_compress_does(tmp_path, capsys):
    """import --data refused what compress --data reads (scikit-learn's X_test, a CSV
    table), took a .pt file for a broken ONNX one, and spoke of "calibration samples" for a
    model that needed none."""
    from sparseforge.cli import main
    from tests.quantized_models import qdq_per_tensor, random_inputs

    model = qdq_per_tensor()
    path, output = save(model, tmp_path / "q.onnx"), str(tmp_path / "m.sfm")
    x = random_inputs(model, 24)
    y = sf.load_quantized(path).predict(x).argmax(axis=1)
    np.savez(tmp_path / "upper.npz", X_test=x, Y_test=y)
    assert main(["import", path, "--data", str(tmp_path / "upper.npz"), "-o", output,
                 "--json"]) == 0
    assert '"accuracy_imported": 1.0' in capsys.readouterr().out
    table = tmp_path / "data.csv"
    table.write_text("\n".join([",".join(f"f{i}" for i in range(8)) + ",label"]
                               + [",".join(f"{v:.6f}" for v in row) + f",{label}"
                                  for row, label in zip(x, y)]) + "\n")
    assert main(["import", path, "--data", str(table), "-o", output]) == 0
    assert "data.csv: 24 samples, 8 feature columns, labels from 'label'" in \
        " ".join(capsys.readouterr().err.split())
    (tmp_path / "model.pt").write_bytes(b"PK\x03\x04 not onnx")
    assert main(["import", str(tmp_path / "model.pt"), "-o", output]) == 2
    assert "model.pt: a PyTorch file, not an ONNX model: import takes a quantized ONNX " \
           "model" in " ".join(capsys.readouterr().err.split())
    np.savez(tmp_path / "narrow.npz", x=x[:, :5], y=y)
    assert main(["import", path, "--data", str(tmp_path / "narrow.npz"), "-o", output]) == 2
    assert "the samples have 5 features, the model takes 8" in capsys.readouterr().err
