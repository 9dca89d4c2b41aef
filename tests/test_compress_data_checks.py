"""Training data that cannot make a classifier is refused before any training, naming what is
wrong and the way out: inputs no fixed-point format holds, labels that are not class numbers,
a loss that diverges; labels that cannot teach every class are warned of."""

import numpy as np
import pytest
import torch.nn as nn

import sparseforge as sf
from sparseforge.compiler.compress.api import _warn_of_class_coverage
from sparseforge.compiler.compress.training import TrainConfig, as_dataset, train
from sparseforge.compiler.errors import InputError, InputWarning

RNG = np.random.default_rng(5)
X = RNG.normal(size=(40, 4)).astype(np.float32)
Y = RNG.integers(0, 3, 40)


def mlp():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


@pytest.mark.parametrize("scale,need", [(1e-30, "would need 10[0-9]"), (1e30, "would need -9")])
def test_inputs_no_fixed_point_format_holds_are_refused_before_training(scale, need):
    # They were "fixed-point width must be an integer from 2 to 48, not 64" after the
    # training (1e-30), or a model of 0% accuracy written with exit 0 (1e30).
    with pytest.raises(InputError, match=rf"largest magnitude is .*{need}.*standardise"):
        sf.compress(mlp(), (X * scale, Y), sparsity=0.5)


def test_all_zero_inputs_are_refused():
    with pytest.raises(InputError, match="the training inputs are all 0"):
        sf.compress(mlp(), (np.zeros_like(X), Y), sparsity=0.5)


def test_finite_float64_beyond_float32_is_named_as_that_not_as_nan():
    with pytest.raises(InputError, match=r"X reaches \|x\| = \S+e\+300, beyond float32's range"):
        as_dataset((X.astype(np.float64) * 1e300, Y), "train")
    with pytest.raises(InputError, match="X holds NaN or infinite values"):
        as_dataset((np.where(X > 1, np.nan, X), Y), "train")


def test_nan_labels_are_named_with_the_first_sample():
    y = Y.astype(np.float64)
    y[7] = np.nan
    with pytest.raises(InputError, match=r"train: y holds nan labels \(1 of 40, the first at "
                                         r"sample 7\)"):
        as_dataset((X, y), "train")


def test_labels_that_are_ids_not_class_numbers_are_refused():
    # Label 1000000 made the default MLP 1,000,001 outputs wide and trained it for minutes.
    y = np.where(Y == 2, 1_000_000, Y)
    with pytest.raises(InputError, match=r"y's largest label is 1000000 but it holds only 3 "
                                         r"distinct labels.*return_inverse"):
        as_dataset((X, y), "train")
    # Many classes numbered densely are fine.
    assert as_dataset((np.zeros((2000, 1)), np.arange(2000)), "train").y.max() == 1999


def test_labels_that_cannot_teach_every_class_are_warned_of():
    def coverage(train_y, *others):
        return _warn_of_class_coverage(as_dataset((X, train_y), "train"),
                                       *(as_dataset((X, y), "val") for y in others))

    with pytest.warns(InputWarning, match=r"holds one class only \(2\)"):
        coverage(np.full(40, 2))
    with pytest.warns(InputWarning, match=r"no label 0 \(its labels run from 1 to 3\).*"
                                          r"subtract 1"):
        coverage(Y + 1)
    with pytest.warns(InputWarning, match=r"class\(es\) 2 appear in the validation or test "
                                          r"data but never in the training data"):
        coverage(Y % 2, Y)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        coverage(Y, Y)


def test_a_diverging_loss_stops_the_training_naming_the_inputs_scale():
    x = X * 1e6
    with pytest.raises(InputError, match=r"training diverged: the loss became (nan|inf) in "
                                        r"epoch \d; the inputs reach \|x\| = .*standardise"):
        train(mlp(), as_dataset((x, Y), "train"), TrainConfig(epochs=2, learning_rate=1e30))
    with pytest.raises(InputError, match=r"diverged.*lower the learning rate \(1e\+30\)"):
        train(mlp(), as_dataset((X, Y), "train"), TrainConfig(epochs=3, learning_rate=1e30))


def test_an_overall_sparsity_beside_per_layer_choices_is_refused_not_ignored():
    with pytest.raises(InputError, match=r"give sparsity= or per_layer_sparsity=, not both"):
        sf.compress(mlp(), (X, Y), sparsity=0.7, per_layer_sparsity=(0.5, 0.5))
    with pytest.raises(InputError, match=r"give sparsity= or sensitivity_budget=, not both"):
        sf.compress(mlp(), (X, Y), sparsity=0.7, sensitivity_budget=0.01)
    with pytest.raises(ValueError, match=r"sensitivity_budget must be None when "
                                         r"per_layer_sparsity is given"):
        sf.compress(mlp(), (X, Y), per_layer_sparsity=(0.5, 0.5), sensitivity_budget=0.01)
    from sparseforge.compiler.compress.api import CompressionConfig
    with pytest.raises(TypeError, match=r"pass either config= or options, not both "
                                        r"\(got \['sparsity'\]\)"):
        sf.compress(mlp(), (X, Y), sparsity=0.7, config=CompressionConfig())


def test_channels_last_images_get_the_transpose_named():
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 2)).eval()
    x = RNG.random((20, 6, 6, 3)).astype(np.float32)
    with pytest.raises(InputError, match=r"Conv2d '0' takes 3 channels but its input has 6 "
                                         r"\(images channels last\? x.transpose\(0, 3, 1, 2\)"):
        sf.compress(cnn, (x, RNG.integers(0, 2, 20)), sparsity=0.5)


def test_a_compressed_model_and_a_program_have_short_reprs():
    # The dataclass reprs printed every array: some 10 kB for a 8-16-3 model.
    cm = sf.compress(mlp(), (X, Y), sparsity=0.5, prune_steps=1, prune_epochs=1,
                     final_epochs=1, share_epochs=1)
    assert repr(cm).startswith("<CompressedModel 4-8-3: ") and len(repr(cm)) < 200
    assert "% pruned, 4-bit codes, 8-bit activations" in repr(cm)
    program = sf.compile(cm, pes=2)
    assert repr(program).startswith("<Program 4-") and " on 2 PEs: 8-bit activations" in \
        repr(program)
    assert len(repr(program)) < 200


def test_checked_labels_take_a_single_column_as_the_vector_it_holds():
    from sparseforge.sim.simulate import checked_labels

    column = np.array([[0], [2], [1]])
    np.testing.assert_array_equal(checked_labels(column, 3, 3), [0, 2, 1])
    with pytest.raises(ValueError, match=r"labels must be a vector \(or a single column\) of "
                                         r"one class per input \(3\), not of shape \(3, 2\)"):
        checked_labels(np.zeros((3, 2), np.int64), 3, 3)
