"""The generated Verilog under cocotb: bit-exact against the golden model, cycles as modelled."""

import numpy as np
import pytest

from sparseforge.sim.rtl import RtlCase, run_rtl
from sparseforge.sim.runner import available_simulators
from tests.oracle import build_image, config_for, random_layers
from tests.test_hw_engine import assert_cycles_match_model, golden


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_generated_verilog_runs_several_models(simulator, tmp_path):
    if simulator not in available_simulators():
        pytest.skip(f"{simulator} is not installed")
    rng = np.random.default_rng(3)
    models = [random_layers(rng, [(20, 16), (10, 20)], density=d) for d in (0.1, 0.4)]
    config = config_for(models[0] + models[1], 4, 2)
    cases, activations = [], []
    for index, layers in enumerate(models):
        inputs = rng.integers(-128, 128, (3, 16))
        inputs[:, rng.random(16) < 0.3] = 0
        activations.append(golden(layers, inputs))
        cases.append(RtlCase(f"model{index}", build_image(config, layers), inputs,
                             activations[-1][-1]))
    results = run_rtl(config, cases, build_dir=tmp_path, simulator=simulator,
                      input_idle=0.2, output_stall=0.2)
    for case, result, layers, acts in zip(cases, results, models, activations):
        assert result.mismatches == 0
        np.testing.assert_array_equal(result.outputs, case.expected)
        assert_cycles_match_model(config, case.image, layers, acts, result.cycles)
