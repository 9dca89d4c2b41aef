"""sf.load_quantized: every supported QONNX / QDQ pattern runs bit for bit as its reference
executor does (qonnx's for QONNX, onnxruntime for QDQ), through the compiler and the golden
model; what cannot be represented is refused naming the node."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper

import sparseforge as sf
from sparseforge.cli import main
from sparseforge.compiler.configure import derive_config
from sparseforge.compiler.ir import QuantizedLinear, QuantizedNetwork, RowRequant
from sparseforge.compiler.numerics import FixedFormat
from sparseforge.compiler.quantized import UnsupportedModel
from sparseforge.compiler.quantized.reference import compare, reference_outputs
from sparseforge.sim.reference.golden import check_program
from tests.quantized_models import PATTERNS, Builder, random_inputs, save

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quantized")
    return {name: (make(), save(make(), folder / f"{name}.onnx"))
            for name, make in PATTERNS.items()}


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_golden_model_equals_the_reference_executor(models, pattern):
    model, path = models[pattern]
    imported = sf.load_quantized(path)
    x = random_inputs(model, 300, seed=len(pattern))
    program = sf.compile(imported, pes=4)
    golden = sf.reference(program, x)
    np.testing.assert_array_equal(golden, imported.predict(x))
    reference = reference_outputs(path, x)
    assert compare(imported.network, reference, golden) == 0
    # Not a vacuous comparison: the outputs vary, and the engine scales rows.
    assert len(np.unique(golden)) > 5
    assert program.config.multiplier_bits > 0


def test_the_model_quantization_is_kept(models):
    """The codebook holds the model's integer weights; the activation ranges are its
    quantizers' (4-bit unsigned, then 8-bit signed)."""
    model, path = models["qonnx_gemm_matmul"]
    imported = sf.load_quantized(path)
    first, second = imported.network.layers
    assert set(first.codebook[1:]) - {0} <= set(range(-7, 8))
    assert first.requant.low == 0 and first.requant.high <= 15
    assert -128 <= second.requant.low and second.requant.high <= 127
    assert imported.network.input_format.low == 0 and imported.network.input_format.high == 255
    layers = imported.provenance["import"]["layers"]
    assert [layer["weight_bits"] for layer in layers] == [4, 4]
    assert layers[0]["output_bits"] == 4 and not layers[0]["output_signed"]


def test_imported_models_survive_their_files(models, tmp_path):
    model, path = models["qonnx_batchnorm_bipolar"]
    imported = sf.load_quantized(path)
    x = random_inputs(model, 100)
    again = sf.load_compressed(imported.save(tmp_path / "m.sfm"))
    np.testing.assert_array_equal(again.predict(x), imported.predict(x))
    program = sf.compile(again, pes=3)
    program.save(tmp_path / "program")
    loaded = sf.load_program(tmp_path / "program")
    np.testing.assert_array_equal(sf.reference(loaded, x), imported.predict(x))


def test_a_power_of_two_layer_keeps_the_power_of_two_engine():
    """Per-row requantization that is today's (multiplier 1, one shift, half up, the full
    activation range) needs no multiplier: the compiler leaves ``multiplier_bits`` at 0."""
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, (6, 5)).astype(np.uint8)
    layer = QuantizedLinear("fc", codes, np.array([0, 3, -2, 5]), rng.integers(-50, 50, 6), 2,
                            FixedFormat(8, 4), FixedFormat(8, 3), FixedFormat(8, 4), 16, True,
                            requant=RowRequant.power_of_two(6, 3, 0, 127))
    network = QuantizedNetwork((layer,))
    assert derive_config(network, 2).multiplier_bits == 0
    program = sf.compile(network, pes=2)
    check_program(program)
    assert program.config.multiplier_bits == 0
    scaled = QuantizedLinear("fc", codes, layer.codebook, layer.bias, 2, layer.input_format,
                             layer.weight_format, layer.output_format, 16, True,
                             requant=RowRequant.power_of_two(6, 3, 0, 100))
    # A narrower range alone is the power-of-two write-back's with the layer's range.
    narrow = derive_config(QuantizedNetwork((scaled,)), 2)
    assert narrow.layer_activation and narrow.multiplier_bits == 0
    # A multiplier other than 1 is per-row scaling.
    thrice = QuantizedLinear("fc", codes, layer.codebook, layer.bias, 2, layer.input_format,
                             layer.weight_format, layer.output_format, 16, True,
                             requant=RowRequant(np.full(6, 3), np.full(6, 5), np.zeros(6, int),
                                                np.zeros(6, bool), 0, 127))
    assert derive_config(QuantizedNetwork((thrice,)), 2).multiplier_bits > 0


def test_an_unquantized_output_needs_calibration(tmp_path):
    """Calibration chooses an 8-bit output quantizer for a model that leaves its output real
    (the argmax is the executor's); without it the model is refused naming the layer."""
    b = Builder(7)
    x = b.quant("x", np.float32(0.02), 8)
    y = b.node("Gemm", [x, b.quant_weights(6, 8, 4), b.const(b.rng.normal(0, 0.1, 6))],
               transB=1, name="last")
    path = save(b.model("x", y, [1, 8], qonnx=True), tmp_path / "real_output.onnx")
    with pytest.raises(UnsupportedModel, match="output .*'last'.* not quantized"):
        sf.load_quantized(path)
    samples = np.random.default_rng(1).uniform(-1, 1, (200, 8)).astype(np.float32)
    imported = sf.load_quantized(path, samples)
    assert imported.provenance["import"]["calibrated"] == ["output"]
    reference = reference_outputs(path, samples)
    agree = np.mean(imported.predict(samples).argmax(axis=1) == reference.argmax(axis=1))
    assert agree > 0.95


def _refused(tmp_path, b, y, shape, match, qonnx=True):
    path = save(b.model("x", y, shape, qonnx=qonnx), tmp_path / "refused.onnx")
    with pytest.raises(UnsupportedModel, match=match):
        sf.load_quantized(path)


def test_a_convolution_is_refused_naming_the_node(tmp_path):
    b = Builder(0)
    x = b.quant("x", np.float32(0.02), 8)
    y = b.node("Conv", [x, b.const(np.ones((2, 1, 3, 3)))], name="conv1")
    # Named with the way a CNN does run: compression of the float model.
    _refused(tmp_path, b, y, [1, 1, 4, 4], r"node 'conv1' \(Conv\): convolutions .* not "
                                          r"imported .* a float CNN runs through compression")


def test_an_unsupported_op_is_refused_naming_the_node(tmp_path):
    b = Builder(0)
    x = b.quant("x", np.float32(0.02), 8)
    y = b.node("MatMul", [x, b.quant_weights(4, 8, 4, transposed=True)])
    y = b.node("Sin", [y], name="squash")       # (a Sigmoid is told what to do instead)
    _refused(tmp_path, b, y, [1, 8], r"node 'squash' \(Sin\): not supported; supported: ")


def test_a_branch_is_refused_naming_the_node(tmp_path):
    b = Builder(0)
    x = b.quant("x", np.float32(0.02), 8)
    y = b.node("MatMul", [x, b.quant_weights(8, 8, 4, transposed=True)])
    y = b.node("Add", [y, x], name="skip")
    _refused(tmp_path, b, y, [1, 8], r"feeds 'MatMul_\d+', 'skip'; the model must be "
                                      r"a chain of layers")


def test_float_weights_are_refused_naming_the_node(tmp_path):
    b = Builder(0)
    x = b.quant("x", np.float32(0.02), 8)
    y = b.node("MatMul", [x, b.const(np.ones((8, 4)))], name="float_fc")
    y = b.quant(y, np.float32(0.1), 8)
    _refused(tmp_path, b, y, [1, 8], r"'float_fc' \(MatMul\): its weights are not quantized")


def test_a_wide_activation_quantizer_is_refused_naming_the_node(tmp_path):
    b = Builder(0)
    x = b.quant("x", np.float32(0.02), 12, name="wide")
    y = b.node("MatMul", [x, b.quant_weights(4, 8, 4, transposed=True)])
    y = b.quant(y, np.float32(0.1), 8)
    _refused(tmp_path, b, y, [1, 8], r"'wide' \(Quant\): a 12-bit activation quantizer")


def test_a_per_channel_activation_quantizer_is_refused(tmp_path):
    b = Builder(0)
    x = b.quant("x", np.float32(0.02), 8)
    y = b.node("MatMul", [x, b.quant_weights(4, 8, 4, transposed=True)])
    y = b.quant(y, np.full((1, 4), 0.1, np.float32), 8, name="per_channel")
    _refused(tmp_path, b, y, [1, 8], r"'per_channel' \(Quant\): .*per tensor")


def _unrepresentable(tmp_path):
    """256 8-bit inputs times 8-bit weights: accumulators over +-2**22, and an output scale so
    coarse that its 255 steps spread over all of them at a generic ratio -- no 25-bit
    multiplier places every step."""
    b = Builder(11)
    x = b.quant("x", np.float32(0.0071), 8)
    y = b.node("MatMul", [x, b.quant_weights(3, 256, 8, transposed=True)], name="dense")
    y = b.quant(y, np.float32(4.7), 8)
    return save(b.model("x", y, [1, 256], qonnx=True), tmp_path / "unrepresentable.onnx")


def test_an_unrepresentable_quantizer_is_refused_or_approximated(tmp_path):
    path = _unrepresentable(tmp_path)
    with pytest.raises(UnsupportedModel, match=r"layer 'dense' row \d+: no multiplier of at "
                                               r"most 25 bits .* approximate=True"):
        sf.load_quantized(path)
    imported = sf.load_quantized(path, approximate=True)
    approximated = imported.provenance["import"]["approximated"]
    assert approximated and all(row["layer"] == "dense" and row["error"] >= 1
                                for row in approximated)


def test_a_row_flat_inside_its_range_is_refused_even_approximated(tmp_path):
    # ReLU, then a shift (a BatchNorm after the ReLU): each row is flat at an interior value
    # below the knee, which no requantization with one clamp per layer follows; approximated
    # it was 59-73 steps off (161 of 162 outputs wrong) and the import exited 0.
    b = Builder(5)
    x = b.quant("x", np.float32(0.02), 8)
    y = b.node("MatMul", [x, b.quant_weights(4, 8, 4, transposed=True)], name="dense")
    y = b.node("Relu", [y])
    y = b.node("Add", [y, b.const(np.full((1, 4), 5.0, np.float32))])
    y = b.quant(y, np.float32(0.1), 8)
    path = save(b.model("x", y, [1, 8], qonnx=True), tmp_path / "flat.onnx")
    with pytest.raises(UnsupportedModel, match=r"layer 'dense' row \d+: the nearest "
                                               r"requantization .* is off by \d+ output steps"
                                               r".*put the BatchNorm before the ReLU"):
        sf.load_quantized(path, approximate=True)


def test_a_quantizer_rounding_across_zero_is_refused_naming_its_rounding(tmp_path):
    # It was "no multiplier of at most 25 bits ... over its accumulators -6367 .. 6383",
    # which reads as sparseforge's shortcoming, not the rounding mode's.
    b = Builder(3)
    x = b.quant("x", np.float32(1 / 127), 8)
    y = b.node("Gemm", [x, b.quant_weights(6, 10, 4)], transB=1, name="fc")
    y = b.quant(y, np.float32(0.03), 8, rounding="UP", name="out_up")
    _refused(tmp_path, b, y, [1, 10], r"layer 'fc' row \d+: its quantizer 'out_up' rounds UP "
                                      r"\(across zero\).*export it with rounding ROUND")


def _cast_model(tmp_path, to):
    b = Builder(9)
    x = b.qdq("x", np.float32(0.0123), 128, np.uint8, cast=to)
    y = b.node("Gemm", [x, b.dq_weights(5, 12, per_channel=True)], transB=1)
    y = b.qdq(y, np.float32(0.05), 0, np.uint8, cast=to, name="out_q")
    return b, save(b.model("x", y, [1, 12], qonnx=False), tmp_path / f"cast{to}.onnx")


def test_a_no_op_cast_after_a_quantizer_passes_and_another_is_refused(tmp_path):
    # torch.ao's ONNX export puts a Cast to uint8 between each QuantizeLinear (uint8 already)
    # and its DequantizeLinear; such models were refused at the Cast.
    b, path = _cast_model(tmp_path, onnx.TensorProto.UINT8)
    imported = sf.load_quantized(path)
    x = random_inputs(b.model("x", "x", [1, 12], qonnx=False), 200)
    golden = sf.reference(sf.compile(imported, pes=2), x)
    assert compare(imported.network, reference_outputs(path, x), golden) == 0
    assert len(np.unique(golden)) > 5
    _, path = _cast_model(tmp_path, onnx.TensorProto.INT8)
    with pytest.raises(UnsupportedModel, match=r"\(Cast\): a Cast from UINT8 to INT8; only a "
                                               r"Cast to the type the tensor has already"):
        sf.load_quantized(path)


def test_an_output_that_cannot_be_written_is_refused_before_the_import(models, tmp_path,
                                                                        capsys):
    # A file where the output's folder should be gave a traceback (FileExistsError) after the
    # whole import; "newdir/" wrote a file named newdir.
    _, path = models["qdq_per_channel"]
    (tmp_path / "notadir").write_text("")
    assert main(["import", path, "-o", str(tmp_path / "notadir" / "m.sfm")]) == 2
    assert "notadir is not a folder" in capsys.readouterr().err
    assert main(["import", path, "-o", str(tmp_path / "newdir") + "/"]) == 2
    assert "newdir/: names a folder" in capsys.readouterr().err
    assert not (tmp_path / "newdir").exists()
    model = sf.load_quantized(path)
    with pytest.raises(ValueError, match="newdir/ is a folder; give a file name"):
        model.save(str(tmp_path / "newdir") + "/")
    with pytest.raises(ValueError, match="a file stands where a folder of its path should be"):
        model.save(tmp_path / "notadir" / "m.sfm")


def test_cli_imports_with_data_and_json(models, tmp_path, capsys):
    model, path = models["qdq_per_channel"]
    x = random_inputs(model, 60)
    y = np.random.default_rng(0).integers(0, 6, 60)
    np.savez(tmp_path / "data.npz", x_test=x, y_test=y)
    status = main(["import", path, "-o", str(tmp_path / "m.sfm"), "--data",
                   str(tmp_path / "data.npz"), "--json"])
    assert status == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["format"] == "qdq" and payload["mismatches"] == 0
    assert payload["outputs_compared"] == 60 * 6 and payload["samples"] == 60
    assert payload["accuracy_imported"] == payload["accuracy_reference"]
    assert [layer["shape"] for layer in payload["layers"]] == [[16, 12], [6, 16]]
    # The accuracies printed are saved with the model, for the report.
    report = sf.load_compressed(tmp_path / "m.sfm").report
    assert report.accuracy_quantized == payload["accuracy_imported"]
    assert report.accuracy_float is not None and report.accuracy_data == "data.npz"


def test_cli_refuses_naming_the_node(tmp_path, capsys):
    b = Builder(0)
    x = b.quant("x", np.float32(0.02), 8)
    y = b.node("Conv", [x, b.const(np.ones((2, 1, 3, 3)))], name="conv1")
    path = save(b.model("x", y, [1, 1, 4, 4], qonnx=True), tmp_path / "conv.onnx")
    assert main(["import", path, "--json"]) == 2
    captured = capsys.readouterr()
    assert "conv1" in json.loads(captured.out)["error"]
    assert "error: " in captured.err


def test_the_reference_comparison_counts_what_differs(models):
    """compare() is not blind: one output moved by a step is one mismatch."""
    model, path = models["qdq_per_tensor"]
    imported = sf.load_quantized(path)
    x = random_inputs(model, 20)
    integers = imported.predict(x)
    reference = reference_outputs(path, x)
    assert compare(imported.network, reference, integers) == 0
    integers[3, 1] += 1
    assert compare(imported.network, reference, integers) == 1


def test_onnx_files_without_a_graph_input_are_refused(tmp_path):
    graph = helper.make_graph([], "empty", [], [])
    path = tmp_path / "empty.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(UnsupportedModel, match="one input and one output"):
        sf.load_quantized(path)


def test_a_second_quantizer_is_taken_only_where_it_changes_no_value(tmp_path):
    from tests.quantized_models import qdq_symmetric_relu

    path = save(qdq_symmetric_relu(second_scale=0.5), tmp_path / "other_step.onnx")
    with pytest.raises(UnsupportedModel, match="already quantized.*the same step"):
        sf.load_quantized(path)


def test_data_and_path_faults_name_the_key_and_the_sample(models, tmp_path, capsys):
    # A NaN in x_test was "calibration data must be a non-empty array of finite numbers";
    # an onnx.ModelProto for the path was pathlib's TypeError.
    model, path = models["qdq_per_channel"]
    x = random_inputs(model, 20)
    x[3, 2] = np.nan
    np.savez(tmp_path / "data.npz", x_test=x)
    assert main(["import", path, "--data", str(tmp_path / "data.npz"), "-o",
                 str(tmp_path / "m.sfm")]) == 2
    assert "data.npz: x_test holds NaN or infinite values (first at row 3, feature 2" in \
        capsys.readouterr().err
    with pytest.raises(ValueError, match=r"calibration data hold NaN or infinite values "
                                         r"\(first at row 3, feature 2"):
        sf.load_quantized(path, x)
    with pytest.raises(ValueError, match=r"takes the path of an ONNX file, not a ModelProto"):
        sf.load_quantized(onnx.load(path))


def test_wide_quantizers_are_refused_naming_the_bit_width_to_export(tmp_path):
    # 16-bit symmetric weights were told to "quantize the weights symmetrically or per
    # channel" (they were); 16-bit activations did not say they were the activations.
    b = Builder(4)
    x = b.quant("x", np.float32(0.02), 8)
    y = b.node("Gemm", [x, b.quant_weights(4, 8, 16)], transB=1, name="fc")
    y = b.quant(y, np.float32(0.1), 8)
    _refused(tmp_path, b, y, [1, 8], r"'fc' \(Gemm\): 16-bit weights \(their integers span "
                                     r".*quantize the weights to 8 bits or fewer")
    b = Builder(4)
    x = b.qdq("x", np.float32(0.02), 0, np.uint16)
    y = b.node("Gemm", [x, b.dq_weights(4, 8, per_channel=True)], transB=1)
    y = b.qdq(y, np.float32(0.1), 0, np.uint8)
    _refused(tmp_path, b, y, [1, 8], r"uint16 quantized values; 8-bit ones \(uint8, int8\) are "
                                     r"supported: .*activation_type=QuantType.QUInt8",
             qonnx=False)
