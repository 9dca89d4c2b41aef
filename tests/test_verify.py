"""Verification campaigns (sparseforge/verify.py, ``sparseforge verify``).

The generator and the engines are checked without a simulator: cases are reproducible from
their seed, every case fits its engine, and the cases span what the campaign claims.  Then a
small campaign runs on Ray and Verilator: bit-exact and cycle-exact, one compiled engine shared
by the workers; and a mismatch's reproducer is what ``sparseforge sim`` needs to run it again.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from sparseforge.cli import main  # noqa: E402
from sparseforge.compiler.program import compile as compile_program  # noqa: E402
from sparseforge.compiler.program import load_program  # noqa: E402
from sparseforge.sim.runner import available_simulators  # noqa: E402
from sparseforge.verify import (  # noqa: E402
    Mismatch,
    case_seed,
    engine_config,
    random_case,
    save_reproducer,
    verify,
)


def test_a_case_is_its_seed():
    first, again = random_case(7, 4, 12), random_case(7, 4, 12)
    assert first.name == again.name
    np.testing.assert_array_equal(first.inputs, again.inputs)
    for a, b in zip(first.network.layers, again.network.layers):
        np.testing.assert_array_equal(a.codes, b.codes)
        np.testing.assert_array_equal(a.codebook, b.codebook)
    assert case_seed(7, 4, 12) != case_seed(7, 4, 13) != case_seed(8, 4, 12)
    assert random_case(7, 4, 13).name != first.name or not np.array_equal(
        random_case(7, 4, 13).inputs, first.inputs)


@pytest.mark.parametrize("pes", [1, 2, 4, 8, 16])
def test_every_case_fits_its_engine_and_the_cases_span_the_claims(pes):
    config = engine_config(pes)
    cases = [random_case(0, pes, index) for index in range(150)]
    for case in cases:
        compile_program(case.network, config=config)          # raises if it does not fit
    layers = [layer for case in cases for layer in case.network.layers]
    assert {len(case.network.layers) for case in cases} == {1, 2, 3}
    assert {case.kind for case in cases} == {"small", "tall"}
    assert {layer.code_bits for layer in layers} == {2, 3, 4}
    assert min(case.density for case in cases) < 0.02 < 0.4 < max(c.density for c in cases)
    assert any(not layer.codes.any(axis=0).all() for layer in layers)     # empty columns
    assert min(c.input_sparsity for c in cases) < 0.1 < 0.8 < max(c.input_sparsity
                                                                  for c in cases)
    # Tall layers give some PE a zero run longer than 15: padding entries in the image.
    runs = 0
    for case in cases:
        if case.kind != "tall":
            continue
        codes = case.network.layers[0].codes
        for k in range(pes):
            for column in codes[k::pes].T:
                gaps = np.diff(np.concatenate([[-1], np.flatnonzero(column)]))
                runs += int(np.count_nonzero(gaps > 16))
    assert runs > 0


def test_a_reproducer_runs_again_with_sim(tmp_path):
    case = random_case(3, 2, 5)
    mismatch = Mismatch(case.name, 2, 3, 5, "outputs", "1 of 20 outputs differ",
                        case_seed(3, 2, 5), {"inputs": case.inputs,
                                             "outputs": np.zeros((2, 3), dtype=np.int64)})
    directory = save_reproducer(mismatch, tmp_path)
    saved = json.loads((directory / "case.json").read_text())
    assert saved["command"] == "sparseforge verify --pes 2 --seed 3 --case 5"
    assert saved["stalls"] is not None                       # case 5 is odd: it ran stalled
    program = load_program(directory / "program")
    assert program.config == engine_config(2)
    # The saved float inputs quantize back to exactly the case's integers.
    floats = np.load(directory / "inputs.npy")
    np.testing.assert_array_equal(program.quantize_input(floats), case.inputs)
    np.testing.assert_array_equal(np.load(directory / "inputs_int.npy"), case.inputs)
    np.testing.assert_array_equal(np.load(directory / "outputs.npy"), np.zeros((2, 3)))
    assert saved["sim_command"].startswith("sparseforge sim ")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("pes", [4, 8])
def test_conv_cases_fit_their_campaigns_engine_and_span_the_claims(pes):
    from sparseforge.compiler.ir import QuantizedConv2d

    cases = [random_case(0, pes, index, "conv") for index in range(60)]
    assert random_case(0, pes, 3, "conv").name == cases[3].name          # its seed
    config = engine_config(pes, "conv", cases)
    assert config.conv
    for case in cases:
        compile_program(case.network, config=config)          # raises if it does not fit
    convs = [layer.geometry for case in cases for layer in case.network.layers
             if isinstance(layer, QuantizedConv2d)]
    assert {k for g in convs for k in g.kernel} == {1, 2, 3, 4, 5}
    assert {s for g in convs for s in g.stride} == {1, 2}
    assert {p for g in convs for p in g.padding} == {0, 1, 2}
    assert any(g.pool for g in convs) and any(g.pool is None for g in convs)
    assert {isinstance(case.network.layers[-1], QuantizedConv2d) for case in cases} == {
        True, False}
    assert all(case.kind == "conv" and "k" in case.name for case in cases)
    with pytest.raises(ValueError, match="power-of-two PE count, not \\[3\\]"):
        verify(4, pes=(3,), networks="conv")


def test_a_conv_reproducer_names_its_networks_and_runs_with_sim(tmp_path):
    case = random_case(1, 4, 2, "conv")
    mismatch = Mismatch(case.name, 4, 1, 2, "cycles", "layer(s) [0]", case_seed(1, 4, 2),
                        {"inputs": case.inputs}, "conv")
    directory = save_reproducer(mismatch, tmp_path)
    saved = json.loads((directory / "case.json").read_text())
    assert saved["command"] == "sparseforge verify --networks conv --pes 4 --seed 1 --case 2"
    program = load_program(directory / "program")
    assert program.config.conv
    # The saved floats quantize back to the case's integers (laid out as the engine reads).
    np.testing.assert_array_equal(program.quantize_input(np.load(directory / "inputs.npy")),
                                  program.engine_input(case.inputs))


# Slow: the Verilator build of the engine is most of its two minutes on two busy cores.
@pytest.mark.slow
@pytest.mark.cocotb
def test_campaign_is_bit_and_cycle_exact_on_one_shared_build(local_ray, tmp_path):
    if "verilator" not in available_simulators():
        pytest.skip("verilator is not installed")
    progress = []
    (tmp_path / "mismatches" / "an-earlier-campaigns").mkdir(parents=True)
    campaign = verify(12, pes=(2,), workers=None, out=tmp_path, batch=3,
                      progress=lambda *state: progress.append(state))
    assert campaign.cases == 12 and campaign.mismatches == []
    # Only this campaign's reproducers (none) beside its verify.json.
    assert not (tmp_path / "mismatches").exists()
    assert campaign.per_engine[2]["cases"] == 12
    assert campaign.cases_per_second > 0
    # Four batches (two stalled, two not) over two workers, one Verilator build between them.
    assert len(list((tmp_path / "simulators").glob("verilator_*"))) == 1
    assert progress[0] == (0, 12, 0) and progress[-1] == (12, 12, 0)
    summary = json.loads((tmp_path / "verify.json").read_text())
    assert summary["mismatch_count"] == 0 and summary["cases"] == 12

    # A single case again, from the command line, reusing the compiled engine.
    status = main(["verify", "--pes", "2", "--case", "5", "--out", str(tmp_path), "--json"])
    assert status == 0
    assert len(list((tmp_path / "simulators").glob("verilator_*"))) == 1


@pytest.mark.slow
@pytest.mark.cocotb
def test_a_conv_campaign_is_bit_and_cycle_exact(local_ray, tmp_path):
    if "verilator" not in available_simulators():
        pytest.skip("verilator is not installed")
    campaign = verify(8, pes=(4, 8), networks="conv", out=tmp_path, batch=2)
    assert campaign.cases == 8 and campaign.mismatches == []
    assert json.loads((tmp_path / "verify.json").read_text())["networks"] == "conv"


def test_cli_errors(capsys):
    status = main(["verify", "--pes", "2,4", "--case", "3", "--json"])
    captured = capsys.readouterr()
    assert status == 2
    assert json.loads(captured.out) == {
        "error": "running single cases needs one PE count, not [2, 4]"}


@pytest.mark.parametrize("option", ["--cases", "--batch", "--workers"])
def test_cli_refuses_counts_under_one_before_it_starts(capsys, option):
    try:
        status = main(["verify", option, "0", "--json"])
    except SystemExit as exit_:
        status = exit_.code
    captured = capsys.readouterr()
    assert status == 2 and "must be at least 1, not 0" in json.loads(captured.out)["error"]
    assert "0/None" not in captured.err and "0/" not in captured.out   # no progress bar
