"""The host runtime drives the simulated board over its UART pins (cocotb): end to end,
loading a model at run time, and the fault campaign (bit flips, dropped bytes, cut, duplicated
and replayed frames, garbage, a host restarted mid-sequence, a model load cut halfway)."""

import numpy as np
import pytest

from sparseforge.boards.simulate import fault_campaign, simulate_board
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
    # At the iCEBreaker's clocks and 3 Mbaud: one infer after another, then infer_many.
    config, layers, image, inputs, expected = model
    result = simulate_board(config, image, inputs, out_features=6, build_dir=tmp_path,
                            windows=[2])
    assert result["failures"] == []
    np.testing.assert_array_equal(np.array(result["outputs"]), expected)
    assert result["info"]["pes"] == 4 and result["info"]["layer_count"] == 2
    (streamed,) = result["streamed"]
    np.testing.assert_array_equal(np.array(streamed["outputs"]), expected)
    assert streamed["total_cycles"] == [sum(c) for c in result["cycles"]]
    assert streamed["commands"] == len(inputs)          # one INFER each, none retried
    assert result["runs_counted"] == 2 * len(inputs)
    assert streamed["seconds"] < result["seconds"]


@pytest.mark.cocotb
def test_model_loaded_over_the_link(model, tmp_path):
    config, layers, image, inputs, expected = model
    result = simulate_board(config, image, inputs[:2], out_features=6, build_dir=tmp_path,
                            load_over_link=True)
    assert result["written"] > 0 and result["failures"] == []
    np.testing.assert_array_equal(np.array(result["outputs"]), expected[:2])


@pytest.mark.cocotb
def test_fault_campaign_never_answers_wrong_runs_twice_or_hangs(model, tmp_path):
    config, layers, image, inputs, expected = model
    rng = np.random.default_rng(32)
    other = random_layers(rng, [(16, 12), (6, 16)], density=0.2)
    other_image = build_image(config, other)
    assert max(len(e) for e in other_image.entries) <= config.entry_depth
    result = fault_campaign(config, image, inputs, expected, other_image=other_image,
                            other_expected=golden(other, inputs)[-1], out_features=6,
                            build_dir=tmp_path, per_scenario=2, seed=3)
    total = result["total"]
    assert total["faults"] > 20 and total["retried"] > 0
    assert total["duplicates"] == 0 and total["silent_wrong"] == 0 and total["hangs"] == 0
    assert total["correct"] >= total["inferences"] // 2
    assert result["scenarios"]["model load cut halfway"]["run_refused_after_cut"]
    restarted = result["scenarios"]["host restarted mid-sequence"]
    assert restarted["correct"] >= 2          # the new session's first inference each time
    streamed = result["scenarios"]["streamed (infer_many)"]
    assert streamed["correct"] == streamed["inferences"] == 4
    # An input whose answer was lost while a later frame was out runs again (one retry each).
    assert streamed["inferences"] <= streamed["runs"] <= streamed["inferences"] + streamed["retried"]


@pytest.mark.cocotb
def test_the_run_command_streams_a_program_over_the_simulated_board(tmp_path):
    # `sparseforge run`'s work (program_run.run_program) on the simulated board: a compiled
    # program's float inputs, streamed, against the golden model and the cycle model; then a
    # board holding another image refuses the run until the program is loaded over the link.
    import sparseforge as sf
    from sparseforge.boards.simulate import simulate_program_run
    from sparseforge.sim.simulate import predict
    from tests.test_golden import random_network

    rng = np.random.default_rng(33)
    network = random_network(rng, [12, 16, 6], density=0.5)
    program = sf.compile(network, pes=4)
    # Within the inputs' range (far beyond it they saturate, and sf.reference warns).
    limit = network.input_format.max * network.input_format.scale
    x = rng.normal(scale=limit / 2, size=(5, 3, 4))             # flattened by the program
    expected = sf.reference(program, x)
    cycles = [sum(t.cycles for t in row) for row in predict(program, program.quantize_input(x))]

    result = simulate_program_run(program, x, build_dir=tmp_path / "on_board")
    np.testing.assert_array_equal(np.array(result["outputs"]), expected)
    assert result["predictions"] == expected.argmax(axis=1).tolist()
    assert result["cycles"] == cycles
    assert result["progress"][-1] == [5, 5] and len(result["progress"]) == 5
    assert result["seconds"] > 0 and result["retried"] == 0

    refused = simulate_program_run(program, x, build_dir=tmp_path / "empty",
                                   image_on_board=False)
    assert "image" in refused["error"]
    loaded = simulate_program_run(program, x[:2], build_dir=tmp_path / "loaded",
                                  image_on_board=False, load=True)
    np.testing.assert_array_equal(np.array(loaded["outputs"]), expected[:2])


@pytest.mark.cocotb
def test_a_board_whose_entries_are_in_spram_is_loaded_before_the_run(tmp_path):
    # An iCE40 engine with spram_entries starts without its image (SPRAMs have no initial
    # contents, so its bitstream reports none): `sparseforge run` loads it without --load.
    import dataclasses

    import sparseforge as sf
    from sparseforge.boards.simulate import simulate_program_run
    from tests.test_golden import random_network

    rng = np.random.default_rng(36)
    network = random_network(rng, [12, 16, 6], density=0.5)
    config = dataclasses.replace(sf.compile(network, pes=2).config, spram_entries=True)
    program = sf.compile(network, config=config)
    limit = network.input_format.max * network.input_format.scale
    x = rng.normal(scale=limit / 2, size=(3, 12))
    result = simulate_program_run(program, x, build_dir=tmp_path, image_on_board=False)
    np.testing.assert_array_equal(np.array(result["outputs"]), sf.reference(program, x))


@pytest.mark.cocotb
def test_an_input_and_outputs_wider_than_a_frame_run_over_the_simulated_board(tmp_path):
    # 140 inputs and 130 outputs: more than an INFER or LOAD_INPUT frame carries (125, 126).
    # The host writes the input into the activation region, seals the image again, and reads
    # the outputs with READ frames; on 3 PEs, whose activation words leave a lane index
    # unused, a frame carries one word's lanes. Answers as the golden model.
    import sparseforge as sf
    from sparseforge.boards.device import VALUES_PER_INFER
    from sparseforge.boards.simulate import simulate_program_run
    from tests.test_golden import random_network

    rng = np.random.default_rng(35)
    network = random_network(rng, [140, 12, 130], density=0.3)
    program = sf.compile(network, pes=3, remove_dead=False)
    assert program.model_in_features > VALUES_PER_INFER
    assert program.out_features > VALUES_PER_INFER
    limit = network.input_format.max * network.input_format.scale
    x = rng.normal(scale=limit / 2, size=(3, 140))
    result = simulate_program_run(program, x, build_dir=tmp_path)
    assert "error" not in result, result.get("error")
    np.testing.assert_array_equal(np.array(result["outputs"]), sf.reference(program, x))


@pytest.mark.cocotb
def test_a_convolutional_program_of_three_layers_runs_over_the_simulated_board(tmp_path):
    # The link reads the outputs at activation 0: a conv program of an odd number of layers
    # ends there too (its maps alternate between two regions; the last one's output used to
    # land in the second, and `sparseforge run` answered the layer before's values).
    import sparseforge as sf
    from sparseforge.boards.simulate import simulate_program_run
    from sparseforge.compiler.compress.quantize import quantize_network
    from sparseforge.compiler.compress.share import share_network
    from tests.test_compress_conv import conv_network, images

    shared, books = share_network(conv_network(), 16)
    program = sf.compile(quantize_network(shared, images(40), codebooks=books), pes=2,
                         board="icebreaker")
    assert len(program.lowering.maps) == 4 and program.lowering.maps[-1].base == 0
    x = images(3)
    result = simulate_program_run(program, x, build_dir=tmp_path)
    assert "error" not in result, result.get("error")
    np.testing.assert_array_equal(np.array(result["outputs"]), sf.reference(program, x))


def test_a_program_whose_outputs_the_link_cannot_read_is_refused_before_the_board():
    # A single convolution writes its output beside its input, not at activation 0.
    import sparseforge as sf
    from sparseforge.boards.program_run import run_program
    from sparseforge.compiler.compress.quantize import quantize_network
    from sparseforge.compiler.compress.share import share_network
    from sparseforge.compiler.ir import Network
    from tests.test_compress_conv import conv_network, images

    shared, books = share_network(Network(conv_network().layers[:1]), 16)
    program = sf.compile(quantize_network(shared, images(20), codebooks=books), pes=2,
                         board="icebreaker")
    assert program.lowering.maps[-1].base != 0
    with pytest.raises(ValueError, match="outputs are not at activation 0, where the board's "
                                         "link reads them"):
        run_program(None, program, images(2))
