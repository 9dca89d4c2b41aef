"""scikit-learn's multilayer perceptrons as models: an ``MLPClassifier`` or ``MLPRegressor``,
alone or after scalers in a ``Pipeline``, is captured into the Graph a PyTorch module is, its
float function the estimator's, and compresses and compiles as one."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

import sparseforge as sf
from sparseforge.compiler.errors import InputError
from sparseforge.compiler.compress.convert import to_network

SCHEDULE = dict(sparsity=0.6, prune_steps=2, prune_epochs=3, final_epochs=6, share_epochs=4)


def fitted(estimator, x, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")         # scikit-learn's ConvergenceWarning
        return estimator.fit(x, y)


def wine():
    x, y = load_wine(return_X_y=True)
    return train_test_split(x, y, test_size=0.3, random_state=0)


@pytest.mark.parametrize("scaler", [None, StandardScaler(), MinMaxScaler(), MaxAbsScaler(),
                                    RobustScaler()])
def test_an_mlp_alone_or_after_a_scaler_computes_what_scikit_learn_does(scaler):
    x_train, x_test, y_train, _ = wine()
    mlp = MLPClassifier(hidden_layer_sizes=(16, 8), max_iter=300, random_state=0)
    model = fitted(mlp if scaler is None else make_pipeline(scaler, mlp), x_train, y_train)
    network = to_network(model)
    assert [layer.out_features for layer in network.layers] == [16, 8, 3]
    assert all(layer.relu for layer in network.layers[:-1]) and not network.layers[-1].relu
    logits = network.forward(x_test)
    # The final softmax is dropped: the argmax, and the probabilities through a softmax, stay.
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities, model.predict_proba(x_test), atol=1e-9)


def test_a_scaled_mlp_compresses_and_its_program_classifies_as_reported():
    x, y = load_breast_cancer(return_X_y=True)
    x = StandardScaler().fit_transform(x)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0)
    # A binary classifier: one logistic output, run as two classes.
    model = fitted(MLPClassifier(hidden_layer_sizes=(32,), max_iter=400, random_state=0),
                   x_train, y_train)
    assert model.out_activation_ == "logistic"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compressed = sf.compress(model, (x_train, y_train), test=(x_test, y_test), **SCHEDULE)
    assert compressed.report.accuracy_float == pytest.approx(model.score(x_test, y_test))
    assert compressed.report.accuracy_quantized > 0.9
    program = sf.compile(compressed, board="icebreaker", pes=4)
    golden = sf.reference(program, x_test).argmax(axis=1)
    assert np.mean(golden == y_test) == pytest.approx(compressed.report.accuracy_quantized)


def test_a_regressor_is_captured_with_its_outputs_as_values():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    y = np.stack([x[:, 0] - x[:, 1], np.maximum(x[:, 2], 0)], 1)
    model = fitted(MLPRegressor(hidden_layer_sizes=(16,), max_iter=300, random_state=0), x, y)
    network = to_network(model, regression=True)
    np.testing.assert_allclose(network.forward(x), model.predict(x), atol=1e-9)
    # Compressed without task='regression': the estimator says its outputs are values (its
    # targets were refused as class labels: "the train data has label 346 ...").
    pipeline = fitted(make_pipeline(StandardScaler(), MLPRegressor(
        hidden_layer_sizes=(16,), max_iter=300, random_state=0)), x, y[:, 0] * 100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compressed = sf.compress(pipeline, (x, y[:, 0] * 100), **SCHEDULE)
    assert compressed.report.metric == "r2"
    assert compressed.provenance["config"]["task"] == "regression"


@pytest.mark.parametrize("activation", ["tanh", "logistic"])
def test_tanh_and_logistic_hidden_layers_run_as_tables_or_are_swapped(activation):
    x_train, x_test, y_train, _ = wine()
    model = fitted(make_pipeline(StandardScaler(), MLPClassifier(
        hidden_layer_sizes=(16,), activation=activation, max_iter=300, random_state=0)),
        x_train, y_train)
    network = to_network(model)
    assert str(network.layers[0].function) == {"tanh": "tanh", "logistic": "sigmoid"}[activation]
    logits = network.forward(x_test)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities, model.predict_proba(x_test), atol=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        swapped = sf.compress(model, (x_train, y_train), swap_activations=True, swap_epochs=2,
                              **SCHEDULE)
    assert swapped.provenance["swapped_activations"] == [{"where": "hidden layers",
                                                          "kind": activation}]
    assert swapped.network.layers[0].function is None and swapped.network.layers[0].relu
    assert model.steps[-1][1].activation == activation        # the user's model is not changed


@pytest.mark.parametrize("model, words", [
    (StandardScaler(), ["StandardScaler", "MLPClassifier or MLPRegressor"]),
    (make_pipeline(StandardScaler(), MinMaxScaler(clip=True),
                   MLPClassifier(hidden_layer_sizes=(8,), max_iter=50)),
     ["MinMaxScaler(clip=True)"]),
])
def test_what_the_engine_does_not_run_is_refused_by_name(model, words):
    x_train, _, y_train, _ = wine()
    model = fitted(model, x_train, y_train)
    with pytest.raises(InputError) as error:
        to_network(model)
    for word in words:
        assert word in str(error.value)


def test_an_unfitted_mlp_is_told_to_be_fitted():
    with pytest.raises(ValueError, match=r"not fitted: call fit\(X, y\) first"):
        to_network(MLPClassifier(hidden_layer_sizes=(8,)))
