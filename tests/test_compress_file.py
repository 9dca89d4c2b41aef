"""The ``.sfm`` file and bad inputs: round trip, atomic writes, and clear refusals (NaN weights,
mismatched manifests, unsupported layers, truncated files, checkpoints that need pickle) that
name the field and the value and leave nothing on disk."""

import dataclasses
import io
import json
import warnings
import zipfile

import numpy as np
import pytest
import torch
import torch.nn as nn

import sparseforge as sf
from sparseforge.cli import main
from sparseforge.compiler.compress.api import CompressionConfig
from sparseforge.compiler.compress.model import (
    CompressedModel,
    CompressedModelError,
    load_compressed,
)
from sparseforge.compiler.compress.quantize import quantize_network
from sparseforge.compiler.compress.accounting import account
from sparseforge.compiler.compress.share import share_weights
from sparseforge.compiler.errors import InputWarning
from sparseforge.compiler.ir import Linear, Network

torch.set_num_threads(1)


def make_model(seed=0) -> CompressedModel:
    """A small compressed model built without training (k-means sharing, calibration)."""
    rng = np.random.default_rng(seed)
    layers, books = [], []
    for index, (n_in, n_out, relu) in enumerate(((12, 9, True), (9, 4, False))):
        weight = rng.normal(0, 0.5, (n_out, n_in)) * (rng.random((n_out, n_in)) > 0.7)
        codes, codebook = share_weights(weight, weight != 0, 16)
        books.append((codes, codebook))
        layers.append(Linear(f"fc{index + 1}", codebook[codes], rng.normal(0, 0.1, n_out), relu))
    network = Network(tuple(layers), "test")
    x = rng.uniform(0, 1, (64, 12))
    quantized = quantize_network(network, x, codebooks=books)
    report = account(quantized, accuracy_float=0.9, accuracy_quantized=0.88,
                     accuracy_data="test data")
    return CompressedModel(quantized, network, report, {"source": "test", "seed": seed})


def rewrite(path, manifest=None, arrays=None):
    """Write a .sfm by hand (to damage one field)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("manifest.json", json.dumps(manifest))
        archive.writestr("arrays.npz", buffer.getvalue())


@pytest.fixture
def saved(tmp_path):
    model = make_model()
    path = model.save(tmp_path / "m.sfm")
    return model, path


def test_round_trip_keeps_every_array_format_and_figure(saved):
    model, path = saved
    loaded = sf.load_compressed(path)
    assert isinstance(loaded, sf.CompressedModel)
    for a, b in zip(model.network.layers, loaded.network.layers):
        np.testing.assert_array_equal(a.codes, b.codes)
        np.testing.assert_array_equal(a.codebook, b.codebook)
        np.testing.assert_array_equal(a.bias, b.bias)
        assert (a.input_format, a.weight_format, a.output_format, a.bias_bits, a.relu) == \
            (b.input_format, b.weight_format, b.output_format, b.bias_bits, b.relu)
    for a, b in zip(model.float_network.layers, loaded.float_network.layers):
        np.testing.assert_array_equal(a.weight, b.weight)
    for a, b in zip(model.masks, loaded.masks):
        np.testing.assert_array_equal(a, b)
    assert loaded.report == model.report and loaded.provenance == model.provenance
    x = np.random.default_rng(1).uniform(0, 1, (20, 12))
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    np.testing.assert_array_equal(loaded.dequantize(loaded.predict(x)),
                                  loaded.network.output_format.dequantize(model.predict(x)))


def test_the_report_prints_as_deep_compressions_table(saved):
    model, _ = saved
    text = str(model.report)
    report = model.report
    assert "fc1" in text and "fc2" in text and f"{report.compression_ratio:.1f}x" in text
    assert f"with Huffman coding {report.compression_ratio_huffman:.1f}x" in text
    assert f"{report.compression_ratio_with_pointers:.1f}x with them" in text
    assert "float 90.00%" in text and "compressed fixed point 88.00% (2.00 points lost)" in text
    better = dataclasses.replace(report, accuracy_quantized=0.935)
    assert "compressed fixed point 93.50% (3.50 points gained)" in str(better)
    total = report.total
    assert report.compression_ratio == total("dense_bits") / total("compressed_bits")
    assert total("dense_bits") == 32 * (12 * 9 + 9 + 9 * 4 + 4)


def test_the_file_is_a_zip_of_json_and_npz_without_pickle(saved):
    _, path = saved
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["arrays.npz", "manifest.json"]
        manifest = json.loads(archive.read("manifest.json"))
        arrays = np.load(io.BytesIO(archive.read("arrays.npz")), allow_pickle=False)
        assert arrays["codes_0"].dtype == np.uint8 and arrays["mask_1"].dtype == bool
    assert manifest["format"] == "sparseforge-compressed" and manifest["version"] == 1
    layer = manifest["layers"][0]
    assert layer["codebook"][0] == 0 and len(layer["codebook"]) == 16
    assert layer["weight_format"]["bits"] == 8 and "frac" in layer["output_format"]
    assert manifest["report"]["compression_ratio"] > 1 and manifest["provenance"]["seed"] == 0


def test_a_failed_save_leaves_nothing_behind(tmp_path, monkeypatch):
    model = make_model()
    target = tmp_path / "out" / "m.sfm"

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(zipfile.ZipFile, "writestr", broken)
    with pytest.raises(OSError, match="disk full"):
        model.save(target)
    assert list((tmp_path / "out").iterdir()) == []


def test_saving_over_an_existing_file_replaces_it_whole(saved, tmp_path):
    _, path = saved
    other = make_model(seed=7)
    other.save(path)
    assert load_compressed(path).provenance["seed"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.sfm"]


def test_truncated_and_foreign_files_are_refused(saved, tmp_path):
    _, path = saved
    data = path.read_bytes()
    truncated = tmp_path / "truncated.sfm"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CompressedModelError, match="truncated.sfm: not a readable .sfm file "
                                                   r"\(truncated or not a zip archive\)"):
        load_compressed(truncated)
    text = tmp_path / "text.sfm"
    text.write_text("hello")
    with pytest.raises(CompressedModelError, match="not a readable .sfm file"):
        load_compressed(text)
    with pytest.raises(CompressedModelError, match="nothing.sfm: no such compressed model"):
        load_compressed(tmp_path / "nothing.sfm")
    lacking = tmp_path / "lacking.sfm"
    with zipfile.ZipFile(lacking, "w") as archive:
        archive.writestr("manifest.json", "{}")
    with pytest.raises(CompressedModelError, match="the archive lacks arrays.npz"):
        load_compressed(lacking)


def parts(model):
    return model.manifest(), model.arrays()


@pytest.mark.parametrize("damage,message", [
    (lambda m, a: a.__setitem__("float_weight_0", np.where(a["float_weight_0"] != 0, np.nan, 0)),
     r"float_weight_0 holds NaN or infinite values \(first at index \[\d+, \d+\]\)"),
    (lambda m, a: a.__setitem__("float_bias_1", np.full(4, np.inf)),
     "float_bias_1 holds NaN or infinite values"),
    (lambda m, a: m["layers"][0].__setitem__("nnz", 1),
     r"layers\[0\] \(fc1\).nnz is 1 but codes_0 holds \d+ nonzeros"),
    (lambda m, a: m["layers"][1].__setitem__("in_features", 10),
     r"codes_1 has shape \(4, 9\), the manifest says \(4, 10\) for layers\[1\] \(fc2\)"),
    (lambda m, a: a.__setitem__("codes_0", np.where(a["codes_0"] > 0, 200, 0).astype(np.uint8)),
     "codes_0 holds code 200, out of range for 4-bit codes"),
    (lambda m, a: a.__setitem__("codes_0", a["codes_0"].astype(np.int32)),
     "codes_0 has dtype int32, expected unsigned integers"),
    (lambda m, a: a.__setitem__("bias_0", a["bias_0"].astype(np.float64)),
     "bias_0 has dtype float64, expected integers"),
    (lambda m, a: m["layers"][0]["codebook"].__setitem__(0, 5),
     r"codebook\[0\] must be 0 \(the pruned weight\), not 5"),
    (lambda m, a: m["layers"][0].__setitem__("codebook", [0, 1.5]),
     r"layers\[0\] \(fc1\).codebook must be a list of integers"),
    (lambda m, a: m["layers"][0].__setitem__("weight_format", {"bits": 99, "frac": 3}),
     r"layers\[0\] \(fc1\).weight_format is not a fixed-point format .*not 99"),
    (lambda m, a: m["layers"][1].__setitem__("relu", "yes"),
     r"layers\[1\] \(fc2\).relu must be true or false, not 'yes'"),
    (lambda m, a: m.__setitem__("version", 9),
     "manifest 'version' is 9; this sparseforge reads version 1"),
    (lambda m, a: m.__setitem__("format", "other"),
     "manifest 'format' is 'other', not 'sparseforge-compressed'"),
    (lambda m, a: m.__setitem__("layers", []),
     "manifest 'layers' must be a non-empty list, not \\[\\]"),
    (lambda m, a: a.pop("mask_1"),
     "arrays.npz does not match the manifest's 2 layers: missing mask_1"),
    (lambda m, a: a.__setitem__("extra", np.zeros(2)), "unexpected extra"),
    (lambda m, a: a.__setitem__("mask_0", np.zeros_like(a["mask_0"])),
     "codes_0 has nonzero codes where mask_0 says pruned"),
    (lambda m, a: m["report"]["layers"][0].__setitem__("compressed_bits", 1),
     r"report.layers\[0\].compressed_bits is 1 but the arrays give \d+"),
    (lambda m, a: m["layers"][1]["input_format"].__setitem__("frac", 1),
     "layer fc2's input format .* is not fc1's output format"),
])
def test_a_damaged_file_is_refused_naming_the_field(tmp_path, damage, message):
    manifest, arrays = parts(make_model())
    damage(manifest, arrays)
    path = tmp_path / "bad.sfm"
    rewrite(path, manifest, arrays)
    with pytest.raises(CompressedModelError, match=message):
        load_compressed(path)


def test_arrays_that_need_pickle_are_refused(tmp_path):
    manifest, arrays = parts(make_model())
    arrays["codes_0"] = np.array([{"evil": 1}], dtype=object)
    path = tmp_path / "pickled.sfm"
    rewrite(path, manifest, arrays)
    with pytest.raises(CompressedModelError, match="arrays.npz is damaged or holds arrays that "
                                                   r"need pickle \(refused\)"):
        load_compressed(path)


# ---- bad inputs to compress ---------------------------------------------------------------------

FAST = {"prune_steps": 1, "prune_epochs": 1, "final_epochs": 0, "share_epochs": 1}
DATA = (np.random.default_rng(0).uniform(0, 1, (32, 64)).astype(np.float32),
        np.arange(32) % 10)


def digits_like_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


def test_compress_refuses_a_nan_weight_naming_the_layer():
    model = digits_like_model()
    with torch.no_grad():
        model[2].weight[3, 4] = float("nan")
    with pytest.raises(ValueError, match="linear '2': weight holds NaN or infinite values"):
        sf.compress(model, DATA, **FAST)


def test_compress_refuses_an_unsupported_layer_naming_it():
    from sparseforge.compiler.capture import UnsupportedLayerError

    model = nn.Sequential(nn.Linear(64, 16), nn.Softmin(dim=1), nn.Linear(16, 10))
    with pytest.raises(UnsupportedLayerError, match="'1'.* cannot run on the engine "
                                                    "\\(Softmin\\); supported: Linear"):
        sf.compress(model, DATA, **FAST)


def test_compress_without_validation_data_reports_on_the_training_data():
    cm = sf.compress(digits_like_model(), DATA, sparsity=0.5, **FAST)
    assert cm.report.accuracy_data == "training data"
    assert cm.report.accuracy_quantized == cm.accuracy(*DATA)


def test_compress_names_bad_data_and_options():
    model = digits_like_model()
    with pytest.raises(ValueError, match="the model takes 64 inputs but the train data has 10"):
        sf.compress(model, (np.zeros((4, 10)), np.zeros(4)), **FAST)
    with pytest.raises(ValueError, match="train: X has 4 samples but y has 3"):
        sf.compress(model, (np.zeros((4, 64)), np.zeros(3)), **FAST)
    with pytest.raises(ValueError, match="val: X holds NaN"):
        sf.compress(model, DATA, (np.full((2, 64), np.nan), np.zeros(2)), **FAST)
    with pytest.raises(TypeError, match="compress got unknown option"):
        sf.compress(model, DATA, sparsty=0.5)
    with pytest.raises(TypeError, match="compress needs training data"):
        sf.compress(model)


@pytest.mark.parametrize("options,message", [
    ({"sparsity": 1.0}, r"sparsity must be a number in \[0, 1\), not 1.0"),
    ({"weight_bits": 9}, "weight_bits must be an integer from 1 to 8, not 9"),
    ({"levels": 5, "weight_bits": 2}, "levels must be None or from 2 to 4 for 2-bit codes, not 5"),
    ({"act_bits": 4}, "act_bits must be 8 or 16, not 4"),
    ({"balance_pes": 0}, "balance_pes must be between 1 and 64, not 0"),
    ({"per_layer_sparsity": (0.5, 1.2)}, "per_layer_sparsity must be a tuple of values"),
    ({"max_acc_bits": 8}, "max_acc_bits must be None or an integer from 16 to 48, not 8"),
])
def test_configuration_errors_name_the_field_and_value(options, message):
    with pytest.raises(ValueError, match=message):
        CompressionConfig(**options)


# ---- the CLI: checkpoints -----------------------------------------------------------------------

@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """rich wraps at the console width; wide enough that a message stays on one line."""
    monkeypatch.setenv("COLUMNS", "500")


def test_cli_refuses_a_checkpoint_that_needs_pickle_and_writes_nothing(tmp_path, capsys):
    from sparseforge.compiler.compress.digits import digits_mlp

    checkpoint = tmp_path / "whole.pt"
    torch.save(digits_mlp(), checkpoint)          # a whole module: loading it needs pickle
    out = tmp_path / "out" / "m.sfm"
    assert main(["compress", str(checkpoint), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "whole.pt: cannot be loaded with torch.load(weights_only=True): it needs pickle" \
        in err
    assert not out.exists() and not out.parent.exists()


def test_cli_refuses_a_nan_state_dict_and_a_foreign_one(tmp_path, capsys):
    from sparseforge.compiler.compress.digits import digits_mlp

    state = digits_mlp().state_dict()
    state["fc1.weight"][0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    out = tmp_path / "m.sfm"
    assert main(["compress", str(tmp_path / "nan.pt"), "-o", str(out)]) == 2
    assert "linear 'fc1': weight holds NaN or infinite values" in capsys.readouterr().err
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "foreign.pt")
    assert main(["compress", str(tmp_path / "foreign.pt"), "-o", str(out)]) == 2
    assert "the state_dict has no 'fc1.weight'" in capsys.readouterr().err
    assert main(["compress", str(tmp_path / "missing.pt"), "-o", str(out)]) == 2
    assert "missing.pt: no such model file" in capsys.readouterr().err
    (tmp_path / "folder.pt").mkdir()
    assert main(["compress", str(tmp_path / "folder.pt"), "-o", str(out)]) == 2
    assert "folder.pt: is a folder, not a model file" in capsys.readouterr().err
    assert not out.exists()


class _Module(torch.nn.Linear):
    pass


def test_a_pickled_module_is_refused_without_torchs_advice_to_unpickle_it(tmp_path, capsys):
    torch.save(_Module(3, 2), tmp_path / "whole.pt")
    assert main(["compress", str(tmp_path / "whole.pt"), "-o", str(tmp_path / "m.sfm")]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "never unpickles user files" in error and "Unsupported global" in error
    assert "weights_only=False" not in error and "add_safe_globals" not in error


def test_cli_takes_a_state_dict_pruned_with_torch_prune(tmp_path):
    import torch.nn.utils.prune as torch_prune

    from sparseforge.commands.compress import load_model
    from sparseforge.compiler.compress.digits import digits_mlp

    model = digits_mlp(hidden=32)
    torch_prune.l1_unstructured(model.fc1, "weight", amount=0.6)
    torch.save(model.state_dict(), tmp_path / "pruned.pt")
    loaded = load_model(tmp_path / "pruned.pt")
    expected = (model.fc1.weight_orig * model.fc1.weight_mask).detach()
    torch.testing.assert_close(loaded.fc1.weight.detach(), expected)
    assert loaded.fc1.out_features == 32


def test_cli_refuses_an_onnx_model_with_an_unsupported_layer(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1, name="fc"),
         helper.make_node("Sin", ["h"], ["y"], name="squash")],
        "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(rng.normal(size=(10, 64)).astype(np.float32), "w"),
         numpy_helper.from_array(np.zeros(10, np.float32), "b")])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph), str(path))
    out = tmp_path / "m.sfm"
    assert main(["compress", str(path), "-o", str(out), "--json"]) == 2
    captured = capsys.readouterr()
    assert "squash" in json.loads(captured.out)["error"]     # the one JSON object: the error
    assert "squash" in captured.err and "Sin" in captured.err
    assert "supported: Linear" in captured.err
    assert not out.exists()


@pytest.mark.parametrize("options,message", [
    ({"per_layer_sparsity": {0: 0.9}}, "per_layer_sparsity must be a list or tuple of numbers"),
    ({"per_layer_sparsity": {"fc1": 0.5}}, "per_layer_sparsity must be a list or tuple"),
    ({"per_layer_sparsity": ("0.5", "0.3")}, "per_layer_sparsity must be a tuple of values"),
    ({"sparsity": "0.5"}, "sparsity must be a number in"),
    ({"learning_rate": float("nan")}, "learning_rate must be a number > 0"),
    ({"label_smoothing": "0.1"}, "label_smoothing must be in"),
])
def test_options_of_the_wrong_kind_are_refused_naming_the_field(options, message):
    # A dict of sparsities used to become the tuple of its keys: layer 0 at sparsity 0.
    with pytest.raises(ValueError, match=message):
        CompressionConfig(**options)


def test_one_hot_labels_and_a_model_file_given_to_compile_are_named(tmp_path, capsys):
    from sparseforge.compiler.compress.training import as_dataset

    with pytest.raises(ValueError, match=r"not rows of 3 \(one-hot or scores, shape "
                                         r"\(6, 3\)\); y.argmax\(axis=1\)"):
        as_dataset((np.zeros((6, 4)), np.eye(3)[[0, 1, 2, 0, 1, 2]]), "train")
    assert as_dataset((np.zeros((3, 4)), np.array([[0], [1], [2]])), "train").y.tolist() == \
        [0, 1, 2]
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07")
    assert main(["compile", str(tmp_path / "model.onnx"), "-o", str(tmp_path / "p")]) == 2
    assert "a .onnx model is compressed first" in capsys.readouterr().err


def test_compress_trains_the_default_on_images_flattened_with_every_class(tmp_path, capsys):
    rng = np.random.default_rng(3)
    x = rng.random((90, 1, 6, 6)).astype(np.float32)
    y = np.arange(90) % 3
    # The training labels lack class 2, which the test labels have (warned of).
    np.savez(tmp_path / "d.npz", x_train=x[:60], y_train=y[:60] % 2, x_test=x[60:],
             y_test=y[60:])
    with warnings.catch_warnings():
        warnings.simplefilter("always", InputWarning)
        assert main(["compress", "--data", str(tmp_path / "d.npz"), "-o",
                     str(tmp_path / "m.sfm")]) == 0
    assert ("warning: class(es) 2 appear in the validation or test data but never in the "
            "training data") in capsys.readouterr().err
    layers = sf.load_compressed(tmp_path / "m.sfm").network.layers
    assert (layers[0].in_features, layers[-1].out_features) == (36, 3)


def test_an_edited_sfm_is_refused(tmp_path):
    """A layer's ReLU turned off in the manifest compiled without a word."""
    path = make_model().save(tmp_path / "m.sfm")
    assert load_compressed(path).report is not None          # as saved: read
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        arrays = archive.read("arrays.npz")
    manifest["layers"][0]["relu"] = not manifest["layers"][0]["relu"]
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("manifest.json", json.dumps(manifest))
        archive.writestr("arrays.npz", arrays)
    with pytest.raises(CompressedModelError, match=r"m.sfm was changed after it was saved "
                                                   r"\(the digest of its manifest and arrays "
                                                   r"differs\)"):
        load_compressed(path)
