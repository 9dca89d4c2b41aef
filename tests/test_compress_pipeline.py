"""The embedded default and the whole pipeline: the digits data and MLP, ``sf.compress`` and
``sparseforge compress --json`` on it (the issue's acceptance figures), and the pipeline's
options (load balance, ternary, sensitivity scan, distillation, ONNX input)."""

import json

import numpy as np
import pytest
import torch

import sparseforge as sf
from sparseforge.cli import main
from sparseforge.compiler.compress.api import integer_accuracy
from sparseforge.compiler.compress.digits import HIDDEN, digits_mlp, load_digits_split
from sparseforge.compiler.compress.prune import pe_nonzeros
from sparseforge.compiler.compress.training import Dataset

torch.set_num_threads(1)
FAST = {"prune_steps": 2, "prune_epochs": 2, "final_epochs": 2, "share_epochs": 2}


@pytest.fixture(scope="module")
def split():
    return load_digits_split()


def test_digits_split_is_fixed_scaled_and_keeps_zeros(split):
    from sklearn.datasets import load_digits

    train, val, test = split
    assert (len(train), len(val), len(test)) == (1077, 270, 450)
    assert all(d.x.dtype == np.float32 and d.x.shape[1] == 64 for d in split)
    raw = load_digits().data
    combined = np.concatenate([d.x for d in split])
    assert combined.min() == 0.0 and combined.max() == 1.0
    # scaled by 1/16, not standardised: exactly the raw zeros are zero
    assert np.count_nonzero(combined == 0) == np.count_nonzero(raw == 0)
    np.testing.assert_array_equal(np.sort((combined * 16).sum(axis=1)),
                                  np.sort(raw.sum(axis=1)))
    again = load_digits_split()
    for a, b in zip(split, again):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)
    assert np.all(np.bincount(test.y, minlength=10) >= 43)      # stratified: ~45 per class


def test_default_architecture_is_one_hidden_layer():
    model = digits_mlp()
    shapes = [tuple(p.shape) for name, p in model.named_parameters() if name.endswith("weight")]
    assert shapes == [(HIDDEN, 64), (10, HIDDEN)] and HIDDEN <= 128


# ---- acceptance: `sparseforge compress --json` on the embedded default --------------------------

@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("default") / "digits.sfm"
    import contextlib
    import io

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(["compress", "--json", "-o", str(out)])
    return status, stdout.getvalue(), stderr.getvalue(), out


def test_cli_json_prints_one_object_with_the_acceptance_figures(default_run):
    status, stdout, stderr, out = default_run
    assert status == 0, stderr
    figures = json.loads(stdout)            # exactly one JSON object, nothing else on stdout
    assert figures["accuracy_float"] >= 0.96
    assert figures["sparsity"] >= 0.90
    assert 100 * (figures["accuracy_float"] - figures["accuracy_quantized"]) <= 1.0
    assert figures["compression_ratio"] >= 25
    assert figures["compression_ratio_huffman"] > figures["compression_ratio"]
    assert figures["compression_ratio_with_pointers"] < figures["compression_ratio"]
    assert [layer["code_bits"] for layer in figures["layers"]] == [4, 4]
    assert figures["accuracy_data"] == "test data" and figures["output"] == str(out)
    assert "Deep Compression accounting" in stderr    # the table went to stderr


def test_the_default_model_file_matches_the_figures(default_run, split):
    _, stdout, _, out = default_run
    figures = json.loads(stdout)
    cm = sf.load_compressed(out)
    _, _, test = split
    # the reported compressed accuracy is the integer network's
    assert integer_accuracy(cm.network, test) == figures["accuracy_quantized"]
    assert cm.accuracy(test.x, test.y) == figures["accuracy_quantized"]
    assert cm.network.act_bits == 8
    for layer, shared, mask in zip(cm.network.layers, cm.float_network.layers, cm.masks):
        assert layer.weight_format.bits == 8 and layer.codebook[0] == 0
        assert len(np.unique(shared.weight[shared.weight != 0])) <= 15
        assert not np.any(shared.weight[~mask]) and not np.any(layer.codes[~mask])
    sparsity = 1 - sum(layer.nnz for layer in cm.network.layers) / 9472
    assert sparsity == pytest.approx(figures["sparsity"], abs=1e-5)


# ---- options of the pipeline, on short training schedules ---------------------------------------

@pytest.fixture(scope="module")
def trained(split):
    from sparseforge.compiler.compress.training import TrainConfig, train

    train_set, _, _ = split
    model = digits_mlp(hidden=64)
    train(model, train_set, TrainConfig(epochs=15, learning_rate=1e-2))
    return model


def data(d: Dataset):
    return d.x, d.y


def test_compress_with_balanced_pruning_gives_equal_nonzeros_per_pe(trained, split):
    train_set, val_set, _ = split
    cm = sf.compress(trained, data(train_set), data(val_set), sparsity=0.9, balance_pes=8,
                     **FAST)
    for layer in cm.network.layers:
        counts = pe_nonzeros(layer.codes, 8)
        assert np.all(counts == counts[0]), (layer.name, counts)
    assert cm.report.sparsity == pytest.approx(0.9, abs=0.005)
    assert cm.provenance["config"]["balance_pes"] == 8
    # the input model was not touched
    assert np.count_nonzero(trained.fc1.weight.detach().numpy()) == 64 * 64


def test_compress_ternary_uses_three_codebook_entries_in_two_bit_codes(trained, split):
    train_set, val_set, _ = split
    cm = sf.compress(trained, (torch.from_numpy(train_set.x), torch.from_numpy(train_set.y)),
                     data(val_set), sparsity=0.8, weight_bits=2, levels=3,
                     **{**FAST, "share_epochs": 10})
    for layer in cm.network.layers:
        assert layer.code_bits == 2 and layer.codebook[3] == 0 and layer.codes.max() <= 2
        assert layer.codebook[1] < 0 < layer.codebook[2]
    assert cm.report.accuracy_quantized > 0.8


def test_compress_with_a_sensitivity_budget_and_distillation(trained, split):
    train_set, val_set, _ = split
    cm = sf.compress(trained, data(train_set), data(val_set), sensitivity_budget=0.02,
                     distill_alpha=0.5, **FAST)
    chosen = cm.provenance["sparsities"]
    assert len(chosen) == 2 and max(chosen) >= 0.5
    for layer, target in zip(cm.network.layers, chosen):
        assert 1 - layer.nnz / layer.codes.size == pytest.approx(target, abs=0.01)


def test_compress_reads_an_onnx_file(tmp_path, trained, split):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w1, b1 = (p.detach().numpy() for p in (trained.fc1.weight, trained.fc1.bias))
    w2, b2 = (p.detach().numpy() for p in (trained.fc2.weight, trained.fc2.bias))
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
         helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1)],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"),
                                                   (b2, "b2"))])
    path = tmp_path / "mlp.onnx"
    onnx.save(helper.make_model(graph), str(path))
    train_set, val_set, _ = split
    # (The sparsity given: the default would lower itself after the short schedule.)
    cm = sf.compress(path, data(train_set), data(val_set), sparsity=0.9, **FAST)
    direct = sf.compress(trained, data(train_set), data(val_set), sparsity=0.9, **FAST)
    assert cm.report.accuracy_float == direct.report.accuracy_float
    assert [layer.name for layer in cm.network.layers] != []
    assert cm.report.sparsity == pytest.approx(0.9, abs=0.005)
