"""The host runtime drives the simulated board over its UART pins (cocotb): end to end,
loading a model at run time, and under line faults."""

import numpy as np
import pytest

from sparseforge.boards.simulate import simulate_board
from tests.oracle import build_image, config_for, random_layers
from tests.test_hw_engine import golden


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(31)
    layers = random_layers(rng, [(16, 12), (6, 16)], density=0.4)
    config = config_for(layers, 4, 2)
    inputs = rng.integers(-128, 128, (4, 12))
    return config, layers, build_image(config, layers), inputs, golden(layers, inputs)[-1]


@pytest.mark.cocotb
def test_device_runs_inferences_on_simulated_board(model, tmp_path):
    config, layers, image, inputs, expected = model
    result = simulate_board(config, image, inputs, out_features=6, build_dir=tmp_path)
    assert result["failures"] == []
    np.testing.assert_array_equal(np.array(result["outputs"]), expected)
    assert result["info"]["pes"] == 4 and result["info"]["layer_count"] == 2
    assert result["runs_counted"] == result["runs_ok"] == len(inputs)


@pytest.mark.cocotb
def test_model_loaded_over_the_link(model, tmp_path):
    config, layers, image, inputs, expected = model
    result = simulate_board(config, image, inputs[:2], out_features=6, build_dir=tmp_path,
                            load_over_link=True)
    assert result["written"] > 0 and result["failures"] == []
    np.testing.assert_array_equal(np.array(result["outputs"]), expected[:2])


@pytest.mark.cocotb
def test_line_faults_never_run_a_command_twice(model, tmp_path):
    config, layers, image, inputs, expected = model
    result = simulate_board(config, image, np.repeat(inputs, 3, axis=0), out_features=6,
                            build_dir=tmp_path, fault_rate=0.3, seed=5)
    assert sum(result["injected"].values()) > 5
    assert result["retried"] > 0
    # Every run the host saw succeed ran exactly once, and failed ones not at all.
    assert result["runs_counted"] == result["runs_ok"]
    for got, want in zip(result["outputs"], np.repeat(expected, 3, axis=0)):
        if got is not None:
            assert got == want.tolist()
