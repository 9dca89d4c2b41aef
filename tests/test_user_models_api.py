"""A user's own float PyTorch model and data set through the Python API (sf.compress,
sf.compile, sf.reference): labels as people have them, and what each refusal tells them."""

import warnings

import numpy as np
import pytest
import torch.nn as nn

import sparseforge as sf
from sparseforge.compiler.errors import InputWarning, SparsityLowered

FAST = dict(prune_steps=1, prune_epochs=1, final_epochs=1, share_epochs=1)


def _data(n=30, features=4, classes=3):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, features)).astype(np.float32), np.arange(n) % classes


def test_class_names_as_labels_are_told_how_to_number_them():
    x, y = _data()
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    with pytest.raises(ValueError) as error:
        sf.compress(nn.Sequential(nn.Linear(4, 3)), (x, names), sparsity=0.5, **FAST)
    message = str(error.value)
    assert "train: y must hold integer class labels, not <U10 values ('setosa', " in message
    assert "names, y = np.unique(y, return_inverse=True)" in message


def test_real_valued_targets_are_told_to_be_a_regression():
    x, y = _data()
    with pytest.raises(ValueError, match=r"train: y must hold integer class labels, not "
                                         r"float32 values \(0\.5, .*\); targets that are "
                                         r"values are a regression: compress with --task "
                                         r"regression \(sf\.compress\(\.\.\., "
                                         r"task='regression'\)\)"):
        sf.compress(nn.Sequential(nn.Linear(4, 1)), (x, (y + 0.5).astype(np.float32)),
                    sparsity=0.5, **FAST)
    # Two targets a sample: they were taken for one-hot rows ("y.argmax(axis=1) gives the
    # labels").
    targets = np.stack([y + 0.5, y * 2.0], axis=1).astype(np.float32)
    with pytest.raises(ValueError, match=r"train: y holds rows of 2 values \(shape \(30, 2\)\), "
                                         r"not class labels: targets that are values are a "
                                         r"regression: compress with --task regression"):
        sf.compress(nn.Sequential(nn.Linear(4, 2)), (x, targets), sparsity=0.5, **FAST)


def test_labels_numbered_apart_are_told_to_be_renumbered():
    x, y = _data()
    with pytest.raises(ValueError) as error:      # classes 1, 3, 5 of a 3-output model
        sf.compress(nn.Sequential(nn.Linear(4, 3)), (x, 2 * y + 1), sparsity=0.5, **FAST)
    assert ("the train data has label 5 but the model has 3 outputs (labels are class "
            "indices 0 .. 2; the train data holds 3 distinct labels: renumber them 0 .. 2, "
            "e.g. np.unique(y, return_inverse=True)[1]") in str(error.value)
    # More distinct labels than outputs: no renumbering helps, none is suggested.
    with pytest.raises(ValueError) as error:
        sf.compress(nn.Sequential(nn.Linear(4, 2)), (x, y), sparsity=0.5, **FAST)
    assert str(error.value).endswith("(labels are class indices 0 .. 1)")


def test_nan_in_the_training_data_is_named_by_sample_and_feature():
    from sparseforge.compiler.errors import InputError

    x, y = _data()
    x[7, 2] = np.nan                              # a cell of a CSV that did not parse
    with pytest.raises(InputError) as error:
        sf.compress(nn.Sequential(nn.Linear(4, 3)), (x, y), sparsity=0.5, **FAST)
    assert str(error.value) == ("train: X holds NaN or infinite values (first at row 7, "
                                "feature 2: nan)")


def _iris_like():
    x, y = _data(n=45, features=4, classes=3)
    x[np.arange(45), y] += 2.0
    return x, y


def test_a_model_in_a_wrapper_is_compressed_as_the_model_it_holds():
    import torch

    x, y = _iris_like()
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    plain = sf.compress(model, (x, y), sparsity=0.5, **FAST)
    # nn.DataParallel and torch.compile hold the module unchanged (both were refused: "layer
    # 'DataParallel' cannot run on the engine", "its forward cannot be traced by torch.fx").
    with warnings.catch_warnings():           # torch's own deprecations, importing inductor
        warnings.simplefilter("ignore")
        compiled = torch.compile(model)
    for wrapped in (nn.DataParallel(model), compiled):
        compressed = sf.compress(wrapped, (x, y), sparsity=0.5, **FAST)
        assert np.array_equal(compressed.predict(x), plain.predict(x))


def test_a_torchscript_module_or_a_state_dict_is_told_what_to_pass_instead():
    import torch

    from sparseforge.compiler.errors import InputError

    x, y = _iris_like()
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    # Was torch.fx's "traced_func_name=forward doesn't exist in TopLevelTracedModule" with
    # advice about loops and len(), and capture's TypeError naming OrderedDict.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, torch.zeros(1, 4))
    with pytest.raises(InputError, match=r"the model is a TorchScript module "
                                         r"\(TopLevelTracedModule, .*pass the original "
                                         r"nn.Module, or export it to ONNX"):
        sf.compress(traced, (x, y), sparsity=0.5, **FAST)
    with pytest.raises(InputError, match=r"the model is a state_dict .* load it into your "
                                         r"module \(model.load_state_dict\(state\)\)"):
        sf.compress(model.state_dict(), (x, y), sparsity=0.5, **FAST)


def test_labels_of_minus_one_and_one_are_told_to_be_renumbered():
    x, y = _data(classes=2)
    with pytest.raises(ValueError) as error:
        sf.compress(nn.Sequential(nn.Linear(4, 2)), (x, 2 * y - 1), sparsity=0.5, **FAST)
    assert str(error.value) == ("train: y holds the negative label -1; labels are class "
                                "numbers 0 .. K-1: renumber them, e.g. np.unique(y, "
                                "return_inverse=True)[1] (-1 / +1 become 0 / 1)")


def test_the_small_weights_warning_names_the_layer_as_the_model_does():
    import torch

    from sparseforge.compiler.errors import InputWarning

    class Mine(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            return self.head(self.features(x))

    model = Mine()
    with torch.no_grad():
        model.head.weight.mul_(1e-4)
    x, y = _iris_like()
    # It said "layer 1's weights are small", a position the model's names do not have.
    with pytest.warns(InputWarning, match=r"^layer head's weights are small \(median"):
        sf.compress(model, (x, y), sparsity=0.5, **FAST)


def test_reference_and_simulate_of_a_compressed_model_say_to_compile_it(tmp_path):
    x, y = _iris_like()
    compressed = sf.compress(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)),
                             (x, y), sparsity=0.5, **FAST)
    # Both were AttributeErrors ("'CompressedModel' object has no attribute 'taken_inputs'",
    # "'str' object has no attribute 'quantize_input'").
    for call in (sf.reference, sf.simulate):
        with pytest.raises(TypeError, match=r"takes a Program, from sf.compile\(model, "
                                            r"pes=...\) or sf.load_program\(folder\), not a "
                                            r"CompressedModel: compile it first \(its "
                                            r"predict\(x\) gives the same integer outputs"):
            call(compressed, x)
        with pytest.raises(TypeError, match=r"takes a Program, not a path: "
                                            r"sf.load_program\('build/p'\) reads"):
            call("build/p", x)
    # sf.build was an AttributeError of each ("no attribute 'board'"), sf.compile of a path a
    # TypeError from deep inside.
    with pytest.raises(TypeError, match=r"sf.build takes a Program, from sf.compile"):
        sf.build(compressed, "icebreaker")
    with pytest.raises(TypeError, match=r"sf.build takes a Program, not a path: "
                                        r"sf.load_program\('build/p'\) reads"):
        sf.build("build/p", "icebreaker")
    with pytest.raises(TypeError, match=r"sf.compile takes a compressed model, not a path: "
                                        r"sf.load_compressed\('m.sfm'\) reads"):
        sf.compile("m.sfm", pes=2)
    program = sf.compile(compressed, pes=2)
    assert np.array_equal(program.dequantize(sf.reference(program, x)),
                          compressed.dequantize(compressed.predict(x)))


def test_dir_of_the_package_lists_each_public_name_once():
    import sparseforge as sf

    sf.load_compressed                          # imported on first use: then in globals() too
    public = [name for name in dir(sf) if not name.startswith("_")]
    # It listed load_compressed twice once used, and the importlib and metadata it imports.
    assert public == sorted(sf.__all__)
    assert sf.__version__


def _iris_model():
    import torch
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    x = ((x - x.mean(axis=0)) / x.std(axis=0)).astype(np.float32)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 10), nn.ReLU(), nn.Linear(10, 3))
    optimiser = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(300):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(torch.tensor(x)), torch.tensor(y)).backward()
        optimiser.step()
    return model, (x, y)


def test_the_default_sparsity_lowers_itself_where_it_would_ruin_a_small_model():
    model, data = _iris_model()
    schedule = dict(prune_steps=2, prune_epochs=4, final_epochs=10, share_epochs=5)
    # 0.9 of a 4-10-3 MLP's 70 weights leaves 7: it lost 98 points of 98 on the command line.
    with pytest.warns(SparsityLowered, match=r"the default sparsity lowered itself \(0.9 lost "
                                             r"\d+.\d points, .* on the training data\): "
                                             r"compressed at 0.\d \(sparsity= chooses\)"):
        compressed = sf.compress(model, data, **schedule)
    tried = compressed.provenance["sparsity_tried"]
    assert tried[0]["sparsity"] == 0.9 and tried[0]["loss"] > 0.02
    assert [t["sparsity"] for t in tried] == [0.9, 0.8, 0.7, 0.5, 0.3][:len(tried)]
    chosen = compressed.provenance["config"]["sparsity"]
    kept = next((t for t in tried if t["loss"] <= 0.02), min(tried, key=lambda t: t["loss"]))
    assert chosen == kept["sparsity"] < 0.9
    assert compressed.provenance["sparsity_tried_on"] == "training data"
    report = compressed.report
    assert report.accuracy_float - report.accuracy_quantized == pytest.approx(kept["loss"],
                                                                              abs=1e-3)
    # A sparsity given is the one used, whatever it costs.
    given = sf.compress(model, data, sparsity=0.9, **schedule)
    assert "sparsity_tried" not in given.provenance
    assert given.provenance["config"]["sparsity"] == 0.9


def test_the_fallback_is_refused_beside_a_per_layer_choice():
    from sparseforge.compiler.compress.api import CompressionConfig

    with pytest.raises(ValueError, match="fallback_loss must be None when per_layer_sparsity "
                                         "or sensitivity_budget chooses"):
        CompressionConfig(fallback_loss=0.02, sensitivity_budget=0.01)


def test_a_default_out_of_reach_is_lowered_and_a_given_one_refused():
    # Linear(6, 4) -> Linear(4, 12): the last layer, pruned at most 0.8, holds 48 of the 72
    # weights, so 0.9 cannot be reached; the default said "out of reach" and stopped.
    x, y = _data(n=60, features=6, classes=12)
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 12))
    with pytest.warns(InputWarning, match=r"the default sparsity 0.9 is out of reach: the last "
                                          r"layer, pruned at most 0.8, holds 48 of the model's "
                                          r"72 weights; pruned to 0.863 instead"):
        compressed = sf.compress(model, (x, y), fallback_loss=0.99, **FAST)
    assert compressed.report.sparsity == pytest.approx(0.863, abs=0.02)
    with pytest.raises(ValueError, match="overall sparsity 0.9 is out of reach"):
        sf.compress(model, (x, y), sparsity=0.9, **FAST)


def test_a_binary_logits_zero_row_is_not_counted_as_the_models_weights():
    # Linear(2, 16) -> Linear(16, 1) trained with BCE: 48 weights.  The second output the
    # compiler adds, (0, logit), was counted as 16 more of the last layer's ("out of reach:
    # the last layer holds 32 of the 64 weights").
    x, y = _data(n=60, features=2, classes=2)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1))
    compressed = sf.compress(model, (x, y), sparsity=0.9, **FAST)
    weights = sum(np.count_nonzero(layer.codes) for layer in compressed.network.layers)
    assert weights == round(0.1 * 48)


def test_labels_numbered_otherwise_than_the_models_outputs_are_told():
    """A model trained with setosa = 0 given labels numbered in another order (a table's
    names in sorted order) scored 0% as float, and compression went on fine-tuning it to the
    wrong numbering without a word."""
    model, (x, y) = _iris_model()
    with pytest.warns(InputWarning, match=r"agree with the training labels on \d+\.\d% of "
                                          r"the samples, and on 9\d\.\d% with the labels "
                                          r"renumbered \(0 as 2, 1 as 0, 2 as 1\): are the "
                                          r"labels numbered as the model's outputs\?"):
        sf.compress(model, (x, (y + 1) % 3), sparsity=0.5, **FAST)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)        # the model's own numbering
        sf.compress(model, (x, y), sparsity=0.5, **FAST)


def test_the_fallback_does_not_try_again_a_sparsity_the_last_attempt_reached(monkeypatch):
    """A CNN whose 0.9 was out of reach reached 0.799; the fallback then tried 0.8, the same
    network compressed again, and said "0.9 lost 33.3 points, 0.8 lost 33.3 points"."""
    from sparseforge.compiler.compress import api

    tried = []

    def compressed_at(network, config, *_):
        # The attempts as _compressed_at makes them, its figures given: 0.79 at most reached.
        tried.append(config.sparsity)
        return api._Attempt(config.sparsity, [], [], (), None, None,
                            loss=0.5 if config.sparsity > 0.6 else 0.0,
                            reached=min(config.sparsity, 0.79))

    monkeypatch.setattr(api, "_compressed_at", compressed_at)
    config = api.CompressionConfig(sparsity=0.9, fallback_loss=0.02)
    chosen, records = api._fallen_back(None, config, None, None, None, False,
                                       compressed_at(None, config))
    assert tried == [0.9, 0.7, 0.5] and chosen.sparsity == 0.5
    assert api.fallback_summary(records, "validation data", 0.5, False) == (
        "lowered itself (0.9 (reached 0.79) lost 50.0 points, 0.7 lost 50.0 points, 0.5 lost "
        "0.0 points on the validation data): compressed at 0.5")
