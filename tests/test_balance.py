"""compiler/balance.py: the row-balancing pass keeps every output and evens the PEs' entries."""

import dataclasses
import json

import numpy as np
import pytest

import sparseforge as sf
from sparseforge.compiler.balance import balance_rows, balanced_order, pe_entries, row_orders
from sparseforge.compiler.ir import QuantizedNetwork, RowRequant
from sparseforge.compiler.program import ProgramError, load_program
from sparseforge.sim.reference.golden import run_image

from test_golden import random_inputs, random_network


def skewed_network(rng, widths, pes):
    """A random network whose hidden layers' heavy rows all sit on PE 0 (every ``pes``-th row
    dense, the others sparse)."""
    network = random_network(rng, widths, density=0.1)
    layers = list(network.layers)
    for index in range(len(layers) - 1):
        codes = layers[index].codes.copy()
        heavy = np.arange(0, codes.shape[0], pes)
        codes[heavy] = rng.integers(1, 16, (len(heavy), codes.shape[1]))
        layers[index] = dataclasses.replace(layers[index], codes=codes.astype(np.uint8))
    return QuantizedNetwork(tuple(layers))


@pytest.mark.parametrize("pes", [2, 3, 8, 16])
@pytest.mark.parametrize("seed", range(4))
def test_balancing_keeps_every_output_and_lowers_the_most_loaded_pe(seed, pes):
    rng = np.random.default_rng(seed)
    network = skewed_network(rng, [40, 48, 33, 7], pes)
    balanced, orders = balance_rows(network, pes)
    x = random_inputs(rng, network, 64)
    assert np.array_equal(balanced.forward(x), network.forward(x))
    assert orders[-1] is None                               # the user's outputs keep their order
    for index, order in enumerate(orders[:-1]):
        assert order is not None, f"layer {index} of a skewed network was not balanced"
        assert sorted(order) == list(range(network.layers[index].out_features))
        before = pe_entries(network.layers[index].codes, pes, 15).max()
        after = pe_entries(balanced.layers[index].codes, pes, 15).max()
        assert after < before


def test_a_balanced_layer_keeps_its_order():
    codes = np.ones((16, 5), np.uint8)                      # every row as long as the others
    network = random_network(np.random.default_rng(1), [5, 16, 3], density=0.5)
    network = QuantizedNetwork((dataclasses.replace(network.layers[0], codes=codes),
                                network.layers[1]))
    balanced, orders = balance_rows(network, 4)
    assert balanced is network and orders == [None, None]


def test_the_order_fills_each_pe_s_slots_and_evens_their_nonzeros():
    codes = np.zeros((10, 4), np.uint8)
    for row, length in enumerate([4, 0, 0, 3, 4, 0, 1, 1, 2, 4]):
        codes[row, :length] = 1
    order = balanced_order(codes, 4)
    assert sorted(order) == list(range(10))
    per_pe = [np.count_nonzero(codes[order[pe::4]]) for pe in range(4)]
    assert max(per_pe) - min(per_pe) <= 1, per_pe             # 19 nonzeros: 5, 5, 5, 4


def test_row_scales_move_with_their_rows():
    rng = np.random.default_rng(7)
    network = skewed_network(rng, [24, 32, 5], 4)
    first = network.layers[0]
    requant = RowRequant(rng.integers(1, 200, 32), rng.integers(4, 12, 32),
                         np.zeros(32, np.int64), rng.random(32) < 0.5, 0, 127)
    network = QuantizedNetwork((dataclasses.replace(first, requant=requant), network.layers[1]))
    balanced, orders = balance_rows(network, 4)
    assert orders[0] is not None
    np.testing.assert_array_equal(balanced.layers[0].requant.multiplier,
                                  requant.multiplier[orders[0]])
    x = random_inputs(rng, network, 64)
    assert np.array_equal(balanced.forward(x), network.forward(x))


def test_compile_balances_by_default_and_the_golden_model_agrees():
    rng = np.random.default_rng(3)
    network = skewed_network(rng, [30, 64, 10], 8)
    program = sf.compile(network, pes=8)               # verify: golden == network.forward
    kept = sf.compile(network, pes=8, balance=False, remove_dead=False)
    assert program.network is not network and kept.network is network
    most = [int(p.column_counts(0).sum(axis=1).max()) for p in (program, kept)]
    assert most[0] < most[1]
    x = random_inputs(rng, network, 32)
    assert np.array_equal(program.network.forward(x), network.forward(x))


def test_row_orders_tell_a_balanced_program_s_network_from_another_model():
    rng = np.random.default_rng(11)
    network = skewed_network(rng, [20, 32, 24, 6], 4)
    balanced, orders = balance_rows(network, 4)
    found = row_orders(network, balanced)
    assert found is not None
    for index, order in enumerate(orders):
        expected = np.arange(network.layers[index].out_features) if order is None else order
        np.testing.assert_array_equal(found[index], expected)
    assert row_orders(network, network) is not None
    other = list(balanced.layers)
    codes = other[1].codes.copy()
    codes[0, 0] = (codes[0, 0] % 15) + 1 if codes[0, 0] else 1   # one weight differs
    other[1] = dataclasses.replace(other[1], codes=codes)
    assert row_orders(network, QuantizedNetwork(tuple(other))) is None
    bias = balanced.layers[2].bias.copy()
    bias[0] += 1
    other = list(balanced.layers)
    other[2] = dataclasses.replace(other[2], bias=bias)
    assert row_orders(network, QuantizedNetwork(tuple(other))) is None
    assert row_orders(network, QuantizedNetwork(balanced.layers[:2])) is None


def test_balancing_does_not_deepen_the_entry_memory():
    # Layer 0 puts its two long rows on PE 0 (16 entries against 2); the last layer's rows of
    # PE 1 hold 8. Evening layer 0 (9 and 9) would leave PE 1 with 17 entries in all, more
    # than PE 0's 16 now: the order is kept.
    network = random_network(np.random.default_rng(2), [8, 4, 4], density=0.5)
    first = np.zeros((4, 8), np.uint8)
    first[[0, 2]] = 1
    first[[1, 3], 0] = 1
    last = np.zeros((4, 4), np.uint8)
    last[[1, 3]] = 1
    network = QuantizedNetwork((dataclasses.replace(network.layers[0], codes=first),
                                dataclasses.replace(network.layers[1], codes=last)))
    assert balanced_order(first, 2).tolist() != [0, 1, 2, 3]      # it would move rows
    balanced, orders = balance_rows(network, 2)
    assert balanced is network and orders == [None, None]


def test_the_last_layer_is_placed_and_its_outputs_come_back_in_the_network_s_order(tmp_path):
    # One layer whose heavy rows all sit on PE 0: only the output placement can even it.
    rng = np.random.default_rng(4)
    network = random_network(rng, [40, 24], density=0.1)
    codes = network.layers[0].codes.copy()
    codes[::4] = rng.integers(1, 16, (6, 40))
    network = QuantizedNetwork((dataclasses.replace(network.layers[0], codes=codes),))
    program = sf.compile(network, pes=4)
    kept = sf.compile(network, pes=4, balance=False)
    assert program.output_order is not None and kept.output_order is None
    assert sorted(program.output_order.tolist()) == list(range(24))
    assert program.network is network                # the user's order, as given
    most = [int(p.column_counts(0).sum(axis=1).max()) for p in (program, kept)]
    assert most[0] < most[1]
    x = random_inputs(rng, network, 32)
    engine = run_image(program.config, program.image, x)
    assert not np.array_equal(engine, network.forward(x))     # the engine's own order ...
    np.testing.assert_array_equal(program.network_output(engine), network.forward(x))
    np.testing.assert_array_equal(sf.reference(program, x, integer=True), network.forward(x))

    program.save(tmp_path / "prog")
    loaded = load_program(tmp_path / "prog")
    np.testing.assert_array_equal(loaded.output_order, program.output_order)
    np.testing.assert_array_equal(sf.reference(loaded, x, integer=True), network.forward(x))
    # Compiling for the engine it was compiled for places the rows the same way.
    again = sf.compile(network, config=program.config)
    np.testing.assert_array_equal(again.output_order, program.output_order)


def test_compile_says_the_outputs_are_placed(tmp_path, capsys):
    from sparseforge.cli import main
    from test_program_cli import save_model

    rng = np.random.default_rng(4)
    network = random_network(rng, [40, 24], density=0.1)
    codes = network.layers[0].codes.copy()
    codes[::4] = rng.integers(1, 16, (6, 40))
    save_model(QuantizedNetwork((dataclasses.replace(network.layers[0], codes=codes),)),
               tmp_path / "m.sfm")
    assert main(["compile", str(tmp_path / "m.sfm"), "--pes", "4", "-o", str(tmp_path / "p"),
                 "--no-verilog"]) == 0
    assert "outputs: the last layer's 24 rows are placed over the PEs" in \
        capsys.readouterr().out
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    np.testing.assert_array_equal(report["output_order"],
                                  load_program(tmp_path / "p").output_order)


@pytest.mark.parametrize("order,message", [
    ([0] * 24, "each of the last layer's 24 rows once"),
    (list(range(23)), "each of the last layer's 24 rows once"),
    ("0,1", "each of the last layer's 24 rows once"),
    ([float(v) for v in range(24)], "each of the last layer's 24 rows once"),
])
def test_a_bad_output_order_is_refused_when_loading(tmp_path, order, message):
    rng = np.random.default_rng(4)
    network = random_network(rng, [40, 24], density=0.1)
    codes = network.layers[0].codes.copy()
    codes[::4] = rng.integers(1, 16, (6, 40))
    network = QuantizedNetwork((dataclasses.replace(network.layers[0], codes=codes),))
    folder = sf.compile(network, pes=4).save(tmp_path / "prog")
    manifest = json.loads((folder / "program.json").read_text())
    manifest["output_order"] = order
    (folder / "program.json").write_text(json.dumps(manifest))
    with pytest.raises(ProgramError, match="output_order"):
        load_program(folder)
