"""Workload statistics for the cost model: E_k, limit, bound, nonzero inputs, layer stats."""

import numpy as np
import pytest

import sparseforge as sf
from sparseforge.compiler import isa
from sparseforge.compiler.encode import encode_layer
from sparseforge.compiler.ir import QuantizedLinear, QuantizedNetwork
from sparseforge.compiler.numerics import FixedFormat, ceil_div
from sparseforge.sim.reference.golden import run_image
from sparseforge.sim.reference.workload import layer_stats, layer_work, work_of, workload
from tests.test_golden import random_inputs, random_network


def test_worked_example():
    # 4 x 3 on 2 PEs; PE 0 owns rows 0, 2 and PE 1 rows 1, 3.
    codes = np.array([[1, 0, 0],
                      [1, 1, 0],
                      [1, 0, 0],
                      [0, 0, 2]], dtype=np.uint8)
    counts = np.stack([s.column_counts for s in encode_layer(codes, 2)])
    assert counts.tolist() == [[2, 0, 0], [1, 1, 1]]
    work = work_of(counts, np.array([[5, 0, -3], [0, 0, 0], [1, 1, 1]]))
    assert work.work.tolist() == [[2, 2], [0, 0], [2, 3]]
    assert work.total.tolist() == [4, 0, 5]
    assert work.limit.tolist() == [2, 0, 3]            # ceil(sum / N)
    assert work.bound.tolist() == [2, 0, 3]            # max_k E_k
    assert work.nonzero.tolist() == [2, 0, 3]
    assert work.balance.tolist() == [1.0, 1.0, pytest.approx(2.5 / 3)]


def brute_force(program, layer, x):
    """E_k by loops over inputs, PEs and columns, straight from the definition."""
    pointers = program.layer_pointers(layer)
    out = np.zeros((len(x), program.config.pes), dtype=np.int64)
    for b in range(len(x)):
        for k, p in enumerate(pointers):
            for j in range(len(p) - 1):
                if x[b, j] != 0:
                    out[b, k] += p[j + 1] - p[j]
    return out


@pytest.mark.parametrize("pes", [1, 3, 8])
def test_workload_matches_the_definition_on_every_layer(pes):
    rng = np.random.default_rng(pes)
    network = random_network(rng, [50, 70, 40, 10], density=0.15)
    program = sf.compile(network, pes=pes)
    x = random_inputs(rng, network, 9, zeros=0.5)
    per_layer = workload(program, x)
    activations = run_image(program.config, program.image, x, return_layers=True)
    assert len(per_layer) == 3
    for index, work in enumerate(per_layer):
        expected = brute_force(program, index, activations[index])
        np.testing.assert_array_equal(work.work, expected)
        np.testing.assert_array_equal(work.limit, ceil_div(expected.sum(1), pes))
        np.testing.assert_array_equal(work.bound, expected.max(1))
        np.testing.assert_array_equal(work.nonzero, np.count_nonzero(activations[index], 1))
        np.testing.assert_array_equal(layer_work(program, index, activations[index]).work,
                                      expected)


def test_work_shape_mismatch():
    with pytest.raises(ValueError, match="inputs have 4 features, the layer takes 3"):
        work_of(np.ones((2, 3)), np.ones((1, 4)))


def test_layer_stats():
    codes = np.zeros((40, 6), dtype=np.uint8)
    codes[0, :] = 1
    codes[39, 0] = 2                   # PE 1 local row 19: gap 19 -> one padding entry
    codebook = np.arange(4)
    layer = QuantizedLinear("only", codes, codebook, np.zeros(40, np.int64), 2,
                            FixedFormat(8, 4), FixedFormat(8, 4), FixedFormat(8, 4), 16, False)
    program = sf.compile(QuantizedNetwork((layer,)), pes=2)
    (stats,) = layer_stats(program)
    assert (stats.name, stats.shape, stats.nnz, stats.padding) == ("only", (40, 6), 7, 1)
    assert (stats.entries_min, stats.entries_mean, stats.entries_max) == (2, 4.0, 6)
    assert stats.imbalance == 1.5
    config = program.config
    expected_bits = (8 * config.entry_bits + 2 * (6 + 1 + 20) * isa.parameter_bits(config)
                     + 3 * isa.occupancy_layout(config).size
                     + config.codebook_size * config.coef_bits
                     + isa.descriptor_layout(config).size)
    assert stats.memory_bits == expected_bits
    assert stats.to_json()["entries_per_pe"] == {"min": 2, "mean": 4.0, "max": 6}
