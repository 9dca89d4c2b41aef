"""A normalisation at a model's input (an input BatchNorm, ``(x - mean) / std`` in a forward,
a scikit-learn Pipeline's scaler) is the host's: kept out of the first layer's weights as
``ir.InputScaling`` and applied before the inputs are quantized, so the engine's one input
format sees features of the sizes the model does.  Raw features of very different sizes
(wine: proline in the hundreds beside hue near 1) keep their information; the scaling
travels through compression, the ``.sfm``, the compiler's dropped inputs and the program."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
from sklearn.datasets import load_wine
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import sparseforge as sf
from sparseforge.compiler.compress.convert import to_network
from sparseforge.compiler.compress.model import load_compressed

SCHEDULE = dict(sparsity=0.6, prune_steps=2, prune_epochs=3, final_epochs=6, share_epochs=4)


class Standardised(nn.Module):
    """A classifier that standardises raw features in its forward."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.body = nn.Sequential(nn.Linear(len(mean), 24), nn.ReLU(), nn.Linear(24, 3))

    def forward(self, x):
        return self.body((x - self.mean) / self.std)


def wine():
    x, y = load_wine(return_X_y=True)
    return train_test_split(x, y, test_size=0.3, random_state=0)


def trained(model, x, y, steps: int = 300):
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), 1e-2)
    inputs, labels = torch.tensor(x).float(), torch.tensor(y)
    for _ in range(steps):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(inputs), labels).backward()
        optimiser.step()
    return model.eval()


def test_an_input_normalisation_is_the_hosts_and_keeps_small_features():
    x_train, x_test, y_train, y_test = wine()
    model = trained(Standardised(x_train.mean(axis=0), x_train.std(axis=0)), x_train, y_train)
    network = to_network(model)
    scaling = network.input_scaling
    np.testing.assert_allclose(scaling.scale, 1 / x_train.std(axis=0), rtol=1e-6)
    with torch.no_grad():
        np.testing.assert_allclose(network.forward(x_test),
                                   model(torch.tensor(x_test).float()).numpy(), atol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # no input feature is lost
        compressed = sf.compress(model, (x_train, y_train), test=(x_test, y_test), **SCHEDULE)
    assert compressed.report.accuracy_quantized > 0.9
    # The engine's inputs are the standardised features, at a format that holds them.
    assert compressed.network.input_format.frac >= 4
    assert compressed.network.layers[0].input_scaling is not None


def test_a_pipelines_scaler_travels_through_the_file_and_the_program(tmp_path):
    x_train, x_test, y_train, y_test = wine()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make_pipeline(StandardScaler(), MLPClassifier(
            hidden_layer_sizes=(32,), max_iter=500, random_state=0)).fit(x_train, y_train)
        compressed = sf.compress(model, (x_train, y_train), test=(x_test, y_test), **SCHEDULE)
    assert compressed.report.accuracy_quantized > 0.9
    loaded = load_compressed(compressed.save(tmp_path / "m.sfm"))
    np.testing.assert_array_equal(loaded.predict(x_test), compressed.predict(x_test))
    program = sf.compile(loaded, pes=4)
    expected = program.network_output(program.network.forward(program.quantize_input(x_test)))
    np.testing.assert_array_equal(expected, compressed.predict(x_test))
    np.testing.assert_array_equal(sf.reference(program, x_test), expected)
    reloaded = sf.load_program(program.save(tmp_path / "program"))
    np.testing.assert_array_equal(sf.reference(reloaded, x_test), expected)
    # The report knows the loaded model for the one the program came from (its scaling is
    # equal arrays, not the same ones), and a model with another scaling for another.
    from sparseforge.run_report import write_report

    write_report(tmp_path / "report", compressed=loaded, program=sf.compile(compressed, pes=4))
    other = load_compressed(tmp_path / "m.sfm")
    layer = other.network.layers[0]
    changed = dataclasses.replace(layer, input_scaling=dataclasses.replace(
        layer.input_scaling, shift=layer.input_scaling.shift + 1))
    other = dataclasses.replace(other, network=dataclasses.replace(
        other.network, layers=(changed, *other.network.layers[1:])))
    with pytest.raises(ValueError, match="not the one the program was compiled from"):
        write_report(tmp_path / "other", compressed=other, program=program)


def test_inputs_no_weight_reads_are_dropped_with_their_scaling():
    rng = np.random.default_rng(0)
    x = rng.normal(loc=50, scale=10, size=(400, 8))
    y = (x[:, 0] > 50).astype(int) + (x[:, 1] > 55)
    model = nn.Sequential(nn.BatchNorm1d(8), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    with torch.no_grad():
        model[0].running_mean.copy_(torch.full((8,), 50.0))
        model[0].running_var.copy_(torch.full((8,), 100.0))
        model[1].weight[:, 5:] = 0                  # inputs 5, 6, 7 are read by no weight
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compressed = sf.compress(model, (x, y), **SCHEDULE)
        program = sf.compile(compressed, pes=4)
    assert program.inputs is not None and max(program.inputs.columns) < 5
    assert program.network.input_scaling.features == len(program.inputs.columns)
    np.testing.assert_array_equal(sf.reference(program, x[:50]), compressed.predict(x[:50]))


def test_a_scaling_not_of_the_first_layer_is_refused():
    from sparseforge.compiler.ir import InputScaling, Linear, Network

    scaling = InputScaling(np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="only the first layer scales the inputs"):
        Network((Linear("a", np.ones((3, 2)), np.zeros(3), True),
                 Linear("b", np.ones((1, 3)), np.zeros(1), False, input_scaling=scaling)))
    with pytest.raises(ValueError, match="an InputScaling of its 2 inputs"):
        Linear("a", np.ones((3, 2)), np.zeros(3), True, input_scaling=scaling)
