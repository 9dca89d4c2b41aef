"""The dead-unit pass (compiler/dead_units.py): which hidden units go, and that the network's
outputs stay the same integers; and compile's use of it."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sparseforge as sf
from sparseforge.compiler.dead_units import (InputSelection, dead_units, remove_dead_units,
                                             remove_unused_inputs)
from sparseforge.compiler.ir import QuantizedNetwork
from sparseforge.compiler.program import ProgramError, load_program
from sparseforge.sim.reference.golden import run_image

from test_golden import PROPERTY, random_inputs, random_network


def planted(rng, widths, *, unused=(), constant=(), layer=0, bias=None):
    """A random network whose hidden layer ``layer`` has the units ``unused`` (no outgoing
    weight) and ``constant`` (no incoming weight, bias ``bias`` if given) dead."""
    network = random_network(rng, widths, density=0.9)   # dense: no unit dead by chance
    layers = list(network.layers)
    codes = layers[layer].codes.copy()
    biases = layers[layer].bias.copy()
    codes[list(constant), :] = 0
    if bias is not None:
        biases[list(constant)] = bias
    layers[layer] = dataclasses.replace(layers[layer], codes=codes, bias=biases)
    following = layers[layer + 1].codes.copy()
    following[:, list(unused)] = 0
    following[:, list(constant)] = np.maximum(following[:, list(constant)], 1)
    layers[layer + 1] = dataclasses.replace(layers[layer + 1], codes=following)
    return QuantizedNetwork(tuple(layers))


def assert_same_function(rng, network, pruned):
    x = random_inputs(rng, network, 64)
    np.testing.assert_array_equal(pruned.forward(x), network.forward(x))


def test_units_without_outgoing_weights_go():
    rng = np.random.default_rng(1)
    network = planted(rng, [12, 20, 6], unused=(0, 7, 19))
    pruned, kept = remove_dead_units(network)
    assert [layer.out_features for layer in pruned.layers] == [17, 6]
    assert 0 not in kept[0] and 7 not in kept[0] and 19 not in kept[0]
    assert kept[1] is None
    assert_same_function(rng, network, pruned)


@pytest.mark.parametrize("bias", [-5000, 0, 3, 1 << 14])
def test_constant_units_go_and_a_nonzero_constant_moves_into_the_next_biases(bias):
    rng = np.random.default_rng(2)
    network = planted(rng, [12, 20, 6], constant=(3, 4), bias=bias)
    value = network.layers[0].forward(np.zeros((1, 12), np.int64))[0, 3]
    if bias <= 0:
        assert value == 0                     # a ReLU layer: a non-positive bias gives 0
    if bias == 1 << 14:
        assert value != 0                     # the fold is exercised
    pruned, kept = remove_dead_units(network)
    assert pruned.layers[0].out_features == 18
    assert_same_function(rng, network, pruned)
    if value:
        assert not np.array_equal(pruned.layers[1].bias, network.layers[1].bias)


def test_a_constant_unit_stays_when_the_folded_bias_would_not_fit():
    rng = np.random.default_rng(3)
    network = planted(rng, [12, 20, 6], constant=(5,), bias=1 << 20)
    layers = list(network.layers)
    top = (1 << (layers[1].bias_bits - 1)) - 1
    layers[1] = dataclasses.replace(layers[1], bias=np.full(6, top, np.int64),
                                    codes=np.where(layers[1].codes, layers[1].codes, 1
                                                   ).astype(np.uint8))
    network = QuantizedNetwork(tuple(layers))
    removable, _ = dead_units(network.layers[0], network.layers[1])
    if network.layers[0].forward(np.zeros((1, 12), np.int64))[0, 5] != 0:
        assert not removable[5]
    assert_same_function(rng, network, remove_dead_units(network)[0])


def test_a_hidden_layer_keeps_one_unit_and_inputs_and_outputs_stay():
    rng = np.random.default_rng(4)
    network = planted(rng, [10, 8, 5], unused=range(8))
    pruned, kept = remove_dead_units(network)
    assert pruned.layers[0].in_features == 10 and pruned.layers[-1].out_features == 5
    assert pruned.layers[0].out_features == 1
    assert_same_function(rng, network, pruned)


def test_a_network_without_dead_units_is_returned_as_is():
    rng = np.random.default_rng(5)
    network = random_network(rng, [8, 12, 4], density=1.0)
    pruned, kept = remove_dead_units(network)
    assert pruned is network and kept == [None, None]


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), depth=st.integers(2, 4),
       density=st.sampled_from([0.02, 0.1, 0.3]))
def test_removing_dead_units_keeps_every_output(seed, depth, density):
    rng = np.random.default_rng(seed)
    widths = [int(w) for w in rng.integers(1, 24, depth + 1)]
    network = random_network(rng, widths, density=density)
    pruned, _ = remove_dead_units(network)
    assert_same_function(rng, network, pruned)


def test_compile_drops_dead_units_and_the_engine_computes_the_model():
    rng = np.random.default_rng(6)
    network = planted(rng, [16, 40, 8], unused=range(0, 40, 3))
    program = sf.compile(network, pes=4)
    assert program.network.layers[0].out_features == 40 - len(range(0, 40, 3))
    kept = sf.compile(network, pes=4, remove_dead=False)
    assert kept.network.layers[0].out_features == 40
    x = random_inputs(rng, network, 32)
    np.testing.assert_array_equal(run_image(program.config, program.image, x),
                                  network.forward(x))


def with_unread_inputs(rng, widths, unread):
    """A random network whose first layer reads none of the inputs ``unread``."""
    network = random_network(rng, widths, density=0.6)
    first = network.layers[0]
    codes = first.codes.copy()
    codes[:, list(unread)] = 0
    codes[:, [c for c in range(widths[0]) if c not in unread]] |= 1   # every other one read
    return QuantizedNetwork((dataclasses.replace(first, codes=codes), *network.layers[1:]))


def test_inputs_no_weight_reads_go_and_the_selection_narrows_the_inputs():
    rng = np.random.default_rng(7)
    network = with_unread_inputs(rng, [20, 12, 5], unread=(0, 3, 4, 19))
    narrowed, selection = remove_unused_inputs(network)
    assert narrowed.layers[0].in_features == 16
    assert selection == InputSelection(20, tuple(c for c in range(20) if c not in (0, 3, 4, 19)))
    x = random_inputs(rng, network, 64)
    np.testing.assert_array_equal(narrowed.forward(selection.select(x)), network.forward(x))
    assert InputSelection.from_json(selection.to_json()) == selection


def test_a_first_layer_reading_every_input_is_kept_as_is():
    rng = np.random.default_rng(8)
    network = with_unread_inputs(rng, [10, 6, 3], unread=())
    assert remove_unused_inputs(network) == (network, None)


@pytest.mark.parametrize("value, message", [
    ({"features": 20}, "'features' and 'columns'"),
    ({"features": 20, "columns": "0,1"}, "must be a list"),
    ({"features": 20, "columns": [3, 1]}, "increasing"),
    ({"features": 20, "columns": [0, 20]}, "increasing"),
    ({"features": 0, "columns": [0]}, "positive"),
])
def test_a_bad_input_selection_is_refused(value, message):
    with pytest.raises(ValueError, match=message):
        InputSelection.from_json(value)


def test_the_program_keeps_its_input_selection_and_takes_model_width_inputs(tmp_path):
    rng = np.random.default_rng(9)
    network = with_unread_inputs(rng, [24, 16, 4], unread=range(0, 24, 4))
    program = sf.compile(network, pes=2)
    assert program.network.layers[0].in_features == 18 and program.model_in_features == 24
    x = random_inputs(rng, network, 16)
    np.testing.assert_array_equal(program.network_output(
        run_image(program.config, program.image, program.taken_inputs(x))), network.forward(x))
    assert sf.compile(network, pes=2, remove_dead=False).inputs is None
    program.save(tmp_path / "prog")
    assert load_program(tmp_path / "prog").inputs == program.inputs
    manifest_path = tmp_path / "prog" / "program.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["inputs"]["columns"] = manifest["inputs"]["columns"][:-1]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ProgramError, match="'inputs' selects 17 of the model's 24 inputs, "
                                           "but the network takes 18"):
        load_program(tmp_path / "prog")


def test_a_program_compiles_again_for_the_engine_derived_for_it():
    """The engine derived for a narrowed network has memories for its columns only: compiling
    the model for that engine again must narrow before it checks the fit."""
    rng = np.random.default_rng(10)
    network = with_unread_inputs(rng, [40, 24, 6], unread=range(0, 40, 2))
    program = sf.compile(network, pes=2)
    again = sf.compile(network, config=program.config)
    assert again.inputs == program.inputs
    for mine, theirs in zip(again.network.layers, program.network.layers):
        np.testing.assert_array_equal(mine.codes, theirs.codes)


def test_integer_inputs_of_the_model_or_the_engine_width_give_the_same_outputs():
    rng = np.random.default_rng(11)
    network = with_unread_inputs(rng, [16, 10, 3], unread=(5, 6))
    program = sf.compile(network, pes=2)
    x = random_inputs(rng, network, 8)
    expected = network.forward(x)
    np.testing.assert_array_equal(sf.reference(program, x, integer=True), expected)
    np.testing.assert_array_equal(
        sf.reference(program, program.taken_inputs(x), integer=True), expected)
    with pytest.raises(ValueError, match="15 features per row; the program takes the model's "
                                         "16 or the 14 of them it reads"):
        sf.reference(program, x[:, :15], integer=True)


def test_the_report_knows_the_model_a_narrowed_program_came_from(tmp_path):
    from sparseforge.run_report import write_report
    from test_program_cli import save_model

    def compressed(network):
        return sf.load_compressed(save_model(network, tmp_path / f"{id(network)}.sfm"))

    rng = np.random.default_rng(12)
    network = with_unread_inputs(rng, [20, 12, 4], unread=(0, 19))
    program = sf.compile(network, pes=2)
    assert program.inputs is not None
    assert write_report(tmp_path / "a", compressed=compressed(network), program=program,
                        inputs=rng.uniform(0, 1, (4, 20))).is_file()
    other = with_unread_inputs(rng, [20, 12, 4], unread=(0, 19))
    with pytest.raises(ValueError, match="not the one the program was compiled from"):
        write_report(tmp_path / "b", compressed=compressed(other), program=program)
