"""sf.load_quantized on what other tools' flows write: onnxruntime's pre-processed models (graph
outputs repeated in value_info), 4-bit weights at opset 21, and the formats it does not take
(QOperator, dynamic quantization, contrib Q/DQ, a final softmax), refused saying what to do."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper

import sparseforge as sf
from sparseforge.cli import main
from sparseforge.compiler.quantized import UnsupportedModel
from sparseforge.compiler.quantized.reference import compare, reference_outputs
from tests.quantized_models import Builder, qdq_per_channel, random_inputs, save

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_graph_outputs_repeated_in_value_info_are_read(tmp_path):
    # onnxruntime's quant_pre_process lists the graph output in value_info as well.
    model = qdq_per_channel()
    output = model.graph.output[0].name
    model.graph.value_info.append(helper.make_tensor_value_info(output, TensorProto.FLOAT,
                                                                None))
    path = save(model, tmp_path / "pre.onnx")
    imported = sf.load_quantized(path)
    x = random_inputs(model, 30)
    assert compare(imported.network, reference_outputs(path, x), imported.predict(x)) == 0


def _int4_model():
    """Q(u8)/DQ input -> Gemm with per-channel int4 weights (opset 21's INT4) -> Q(s8)/DQ."""
    b = Builder(11)
    x = b.qdq("x", np.float32(0.013), 128, np.uint8)
    ints = b.rng.integers(-7, 8, (6, 10))
    scale = b.scale(shape=(6,))
    weights = helper.make_tensor("w4", TensorProto.INT4, ints.shape, ints.reshape(-1).tolist())
    zero = helper.make_tensor("w4_zero", TensorProto.INT4, [6], [0] * 6)
    b.initializers += [weights, zero]
    w = b.node("DequantizeLinear", ["w4", b.const(scale), "w4_zero"], axis=0)
    y = b.node("Gemm", [x, w, b.const(b.rng.normal(0, 0.2, 6))], transB=1)
    y = b.qdq(y, b.scale(0.05, 0.2), 0, np.int8)
    model = b.model("x", y, ["N", 10], qonnx=False)
    model.opset_import[0].version = 21
    return model


def test_four_bit_weights_of_opset_21_are_integers(tmp_path):
    model = _int4_model()
    path = save(model, tmp_path / "w4.onnx")
    imported = sf.load_quantized(path)
    assert imported.network.layers[0].code_bits <= 4
    x = random_inputs(model, 40)
    assert compare(imported.network, reference_outputs(path, x), imported.predict(x)) == 0


def _quantized_gemm(b):
    x = b.qdq("x", np.float32(0.02), 0, np.int8)
    y = b.node("Gemm", [x, b.dq_weights(4, 8), b.const(b.rng.normal(0, 0.2, 4))], transB=1)
    return b.qdq(y, b.scale(0.05, 0.2), 0, np.int8)


@pytest.mark.parametrize("op, domain, match", [
    ("QGemm", "com.microsoft", r"\(QGemm\): not supported: onnxruntime's QOperator format; "
                               r"quantize with quantize_static\(\.\.\., "
                               r"quant_format=QuantFormat\.QDQ\)"),
    ("Softmax", "", r"\(Softmax\): not supported: export the model without its final softmax"),
    ("DequantizeLinear", "com.microsoft", r"onnxruntime's own com\.microsoft operator; "
                                          r"quantize with the standard"),
])
def test_other_flows_are_refused_saying_what_to_do(tmp_path, op, domain, match):
    b = Builder(2)
    y = _quantized_gemm(b)
    inputs = [y, b.const(np.float32(0.1)), b.const(0, dtype=np.int8)] \
        if op == "DequantizeLinear" else [y]
    y = b.node(op, inputs, name="other", domain=domain)
    model = b.model("x", y, ["N", 8], qonnx=False)
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    path = save(model, tmp_path / "other.onnx")
    with pytest.raises(UnsupportedModel, match=match):
        sf.load_quantized(path)


def test_a_softmax_inside_the_network_is_not_offered_the_final_softmax_advice(tmp_path):
    b = Builder(4)
    y = b.node("Softmax", [_quantized_gemm(b)], name="middle")
    y = b.qdq(y, b.scale(0.05, 0.2), 0, np.int8)
    y = b.node("Gemm", [y, b.dq_weights(3, 4), b.const(b.rng.normal(0, 0.2, 3))], transB=1)
    path = save(b.model("x", y, ["N", 8], qonnx=False), tmp_path / "middle.onnx")
    with pytest.raises(UnsupportedModel, match=r"'middle' \(Softmax\): not supported: a "
                                               r"Softmax inside the network is not supported"):
        sf.load_quantized(path)


def test_dynamic_quantization_is_refused_saying_what_to_do(tmp_path):
    b = Builder(5)
    b.nodes.append(helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "q_scale", "q_zero"],
                                    name="dynamic"))
    x = b.node("DequantizeLinear", ["q", "q_scale", "q_zero"])
    y = b.node("Gemm", [x, b.dq_weights(4, 8), b.const(b.rng.normal(0, 0.2, 4))], transB=1)
    path = save(b.model("x", y, ["N", 8], qonnx=False), tmp_path / "dynamic.onnx")
    with pytest.raises(UnsupportedModel, match=r"'dynamic' \(DynamicQuantizeLinear\): not "
                                               r"supported: dynamic quantization "
                                               r"\(quantize_dynamic\) computes its scales"):
        sf.load_quantized(path)


def test_weights_widened_by_their_zero_point_are_refused_naming_it(tmp_path):
    b = Builder(3)
    x = b.qdq("x", np.float32(0.02), 0, np.int8)
    y = b.node("Gemm", [x, b.dq_weights(4, 8, per_channel=False, zero_point=100)], transB=1,
               name="fc")
    y = b.qdq(y, b.scale(0.05, 0.2), 0, np.int8)
    path = save(b.model("x", y, ["N", 8], qonnx=False), tmp_path / "zero.onnx")
    with pytest.raises(UnsupportedModel, match=r"'fc' \(Gemm\): 9-bit weights \(their "
                                               r"integers less the zero point span .*quantize "
                                               r"the weights symmetrically"):
        sf.load_quantized(path)


def _one_gemm(tmp_path, outputs: int):
    """A QDQ model of one Gemm, 8 inputs to ``outputs``: (model, path)."""
    b = Builder(4)
    x = b.qdq("x", np.float32(0.02), 0, np.int8)
    y = b.node("Gemm", [x, b.dq_weights(outputs, 8), b.const(b.rng.normal(0, 0.2, outputs))],
               transB=1)
    y = b.qdq(y, b.scale(0.05, 0.2), 0, np.int8)
    model = b.model("x", y, ["N", 8], qonnx=False)
    return model, save(model, tmp_path / f"gemm{outputs}.onnx")


def test_a_one_output_model_is_a_binary_classifier_unless_a_regression(tmp_path, capsys):
    model, path = _one_gemm(tmp_path, 1)
    x = random_inputs(model, 40)
    logit = reference_outputs(path, x)[:, 0]
    np.savez(tmp_path / "data.npz", x_test=x, y_test=(logit > 0).astype(int))
    assert main(["import", path, "-o", str(tmp_path / "m.sfm"), "--data",
                 str(tmp_path / "data.npz"), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    # (0, logit): the argmax is the logit's sign, as the model's own executor's.
    assert payload["mismatches"] == 0 and payload["accuracy_reference"] == 1.0
    assert payload["accuracy_imported"] == 1.0
    imported = sf.load_compressed(tmp_path / "m.sfm")
    assert imported.network.layers[-1].out_features == 2
    assert imported.report.accuracy_quantized == 1.0
    program = sf.compile(imported, pes=2)
    assert program.task == "classification"
    np.testing.assert_array_equal(sf.reference(program, x).argmax(axis=1), logit > 0)

    assert main(["import", path, "-o", str(tmp_path / "r.sfm"), "--data",
                 str(tmp_path / "data.npz"), "--json", "--task", "regression"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert "accuracy_imported" not in payload and payload["mismatches"] == 0
    assert payload["accuracy_skipped"].startswith("a regression's outputs are values")
    regression = sf.load_compressed(tmp_path / "r.sfm")
    assert regression.network.layers[-1].out_features == 1
    assert sf.compile(regression, pes=2).task == "regression"


def test_import_checks_its_data_as_sim_and_compress_do(tmp_path, capsys):
    model, path = _one_gemm(tmp_path, 3)
    x = random_inputs(model, 20)
    cases = (({"x_test": x, "y_test": np.arange(5) % 3}, "one class per input (20)"),
             ({"x_test": x, "y_test": np.arange(20) % 3 + 20}, "label 20 is not a class"),
             ({"x_test": x, "y_test": np.arange(20) % 3 + 0.5}, "labels must be integers"),
             ({"x_test": x[:0], "y_test": np.arange(0)}, "at least one sample"),
             ({"x_test": x[:, :5], "y_test": np.arange(20) % 3}, "have 5 features, the "
                                                                  "model takes 8"))
    for arrays, message in cases:
        np.savez(tmp_path / "data.npz", **arrays)
        assert main(["import", path, "-o", str(tmp_path / "m.sfm"), "--data",
                     str(tmp_path / "data.npz"), "--json"]) == 2
        assert message in json.loads(capsys.readouterr().out)["error"]
        assert not (tmp_path / "m.sfm").exists()


def test_a_bias_added_after_the_products_quantizer_names_the_way_round(tmp_path):
    b = Builder(6)
    x = b.qdq("x", np.float32(0.02), 0, np.int8)
    y = b.node("MatMul", [x, b.dq_weights(4, 8, transposed=True)])
    y = b.qdq(y, b.scale(0.05, 0.2), 0, np.int8)
    y = b.node("Add", [y, b.const(b.rng.normal(0, 0.2, 4))], name="bias")
    y = b.qdq(y, b.scale(0.05, 0.2), 0, np.int8)
    path = save(b.model("x", y, ["N", 8], qonnx=False), tmp_path / "matmul_add.onnx")
    with pytest.raises(UnsupportedModel, match=r"'bias' \(Add\): .*run onnxruntime's "
                                               r"quant_pre_process on the float model first"):
        sf.load_quantized(path)


def test_labels_given_with_the_calibration_give_the_reports_accuracies(tmp_path):
    model, path = _one_gemm(tmp_path, 3)
    x = random_inputs(model, 30)
    y = reference_outputs(path, x).argmax(axis=1)
    imported = sf.load_quantized(path, (x, y))
    assert imported.report.accuracy_quantized == 1.0 and imported.report.accuracy_float > 0.9
    assert imported.report.accuracy_data == "calibration"
