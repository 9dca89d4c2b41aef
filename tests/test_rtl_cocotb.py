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


@pytest.mark.cocotb
def test_engine_built_for_icebreaker_uses_spram_and_matches(tmp_path):
    # The iCE40 build puts the activation buffer in SB_SPRAM256KA primitives; simulate exactly
    # that Verilog, with Yosys's model of the primitive.
    from amaranth_boards.icebreaker import ICEBreakerPlatform

    rng = np.random.default_rng(4)
    layers = random_layers(rng, [(24, 16), (10, 24)], density=0.3)
    config = config_for(layers, 8, 1)
    inputs = rng.integers(-128, 128, (3, 16))
    acts = golden(layers, inputs)
    case = RtlCase("spram", build_image(config, layers), inputs, acts[-1])
    (result,) = run_rtl(config, [case], build_dir=tmp_path, platform=ICEBreakerPlatform())
    assert "SB_SPRAM256KA" in (tmp_path / "engine.v").read_text()
    np.testing.assert_array_equal(result.outputs, case.expected)
    assert_cycles_match_model(config, case.image, layers, acts, result.cycles)


@pytest.mark.cocotb
def test_engine_with_its_entries_in_spram_matches(tmp_path):
    # spram_entries: each PE's entry memory one SB_SPRAM256KA in the iCE40 build (besides the
    # activation buffer's), loaded over the host bus; Yosys's model of the primitive.
    import dataclasses

    from amaranth_boards.icebreaker import ICEBreakerPlatform

    rng = np.random.default_rng(5)
    layers = random_layers(rng, [(40, 24), (10, 40)], density=0.4)
    config = dataclasses.replace(config_for(layers, 2, 1), spram_entries=True,
                                 decoded_weights=True)
    inputs = rng.integers(-128, 128, (4, 24))
    inputs[:, rng.random(24) < 0.3] = 0
    acts = golden(layers, inputs)
    case = RtlCase("spram_entries", build_image(config, layers), inputs, acts[-1])
    (result,) = run_rtl(config, [case], build_dir=tmp_path, platform=ICEBreakerPlatform(),
                        input_idle=0.2, output_stall=0.2)
    assert (tmp_path / "engine.v").read_text().count("SB_SPRAM256KA") >= 3   # 1 + 2 PEs
    np.testing.assert_array_equal(result.outputs, case.expected)
    assert_cycles_match_model(config, case.image, layers, acts, result.cycles)


def test_a_build_directory_is_used_by_one_run_at_a_time(tmp_path):
    # Two `sparseforge sim` of one program share PROGRAM/sim: while one run holds the build
    # directory's lock, another process cannot take it (it waits in run_rtl).
    import subprocess
    import sys

    from sparseforge.sim.runner import file_lock

    probe = ("import fcntl, sys\n"
             "handle = open(sys.argv[1], 'a')\n"
             "try:\n"
             "    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
             "except BlockingIOError:\n"
             "    sys.exit(3)\n")
    lock = tmp_path / ".lock"
    with file_lock(lock):
        held = subprocess.run([sys.executable, "-c", probe, str(lock)])
    free = subprocess.run([sys.executable, "-c", probe, str(lock)])
    assert (held.returncode, free.returncode) == (3, 0)
