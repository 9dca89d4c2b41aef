"""Room for MNIST-sized models on the iCEBreaker.  Entries in SPRAM
(``EngineConfig.spram_entries``): a model whose entries the block RAMs cannot hold (an
MNIST-sized MLP) gets each PE's entry memory in one of the UltraPlus's SPRAMs.  Pooling
registers for the pooled layers' rows only (``pool_rows``: LeNet-5's).  The engine with SPRAM
entries is simulated in tests/test_rtl_cocotb.py (Yosys's model of the primitive) and the
board's run in tests/test_board_sim.py."""

import dataclasses

import numpy as np
import pytest

import sparseforge as sf
from sparseforge.boards.registry import board
from sparseforge.compiler.config import EngineConfig
from sparseforge.compiler.errors import InputWarning
from sparseforge.compiler.resources import engine_memories, estimate_resources
from tests.test_golden import random_network


@pytest.fixture(scope="module")
def mnist_sized():
    return random_network(np.random.default_rng(7), [784, 128, 10], density=0.1)


def test_an_mnist_sized_mlp_gets_its_entries_in_spram_on_the_icebreaker(mnist_sized):
    part = board("icebreaker").part
    with pytest.warns(InputWarning, match="8 PEs do not fit .* compiled for 2"):
        program = sf.compile(mnist_sized, board="icebreaker")
    config = program.config
    assert config.pes == 2 and config.spram_entries
    use = estimate_resources(config, part)
    assert use.bram <= part.brams and use.spram == 3 <= part.sprams      # 1 activations + 2
    assert dict(use.brams_by_memory)["entries"] == 0
    # Without them the block RAMs are short at any PE count.
    plain = estimate_resources(dataclasses.replace(config, spram_entries=False), part)
    assert plain.bram > part.brams
    # A model whose entries fit the block RAMs keeps them there (the calibrated designs).
    small = sf.compile(random_network(np.random.default_rng(8), [64, 32, 10], density=0.2),
                       pes=4, board="icebreaker")
    assert not small.config.spram_entries


def test_the_flag_round_trips_and_is_refused_where_an_spram_cannot_hold_the_entries():
    config = EngineConfig(pes=2, entry_depth=12000, decoded_weights=True, spram_entries=True)
    assert EngineConfig.from_json(config.to_json()) == config
    assert "spram_entries" not in EngineConfig(pes=2).to_json()      # older engine.json files
    with pytest.raises(ValueError, match="spram_entries needs entries of at most 16 bits and "
                                         "at most 16384"):
        EngineConfig(pes=2, entry_depth=20000, spram_entries=True)


def pooled_network(rows: int, channels: int):
    """A 1x8x8 map through a pooled 3x3 convolution of ``channels``, then a Linear of
    ``rows`` outputs and a classifier: integer, as compression gives it."""
    from sparseforge.compiler.compress.quantize import quantize_network
    from sparseforge.compiler.conv import ConvGeometry, Pool
    from sparseforge.compiler.ir import Conv2d, Linear, Network

    rng = np.random.default_rng(channels)
    geometry = ConvGeometry(1, 8, 8, channels, (3, 3), (1, 1), (1, 1), Pool((2, 2), (2, 2)))
    network = Network((
        Conv2d("conv", rng.choice([0.0, -0.5, 0.5], size=(channels, 9)),
               rng.normal(size=channels), True, geometry),
        Linear("fc1", rng.choice([0.0, 0.0, 0.5], size=(rows, 16 * channels)),
               rng.normal(size=rows), True),
        Linear("fc2", rng.choice([0.0, -0.5, 0.5], size=(3, rows)), rng.normal(size=3), False)))
    return quantize_network(network, rng.normal(size=(40, 64)))


def test_the_pooling_registers_keep_the_pooled_layers_rows_not_every_layers():
    # LeNet's Linear layer of 120 rows sized them before: 960 flip-flops on an iCE40 at 1 PE.
    from sparseforge.compiler.configure import DoesNotFit, fit

    program = sf.compile(pooled_network(rows=120, channels=6), pes=1)
    config = program.config
    assert (config.max_rows, config.pool_rows, config.pooling_depth) == (120, 6, 6)
    assert {m.name: m.depth for m in engine_memories(config)}["pooling"] == 6
    # A model whose pooled layer has more rows does not fit that engine: named.
    with pytest.raises(DoesNotFit, match="pool_rows: a max-pooling layer has 10 rows, the "
                                         "engine's pooling registers keep 6"):
        fit(pooled_network(rows=20, channels=10), config)
    # Where the pooled layer has the most rows, nothing changes (0: every row).
    assert sf.compile(pooled_network(rows=4, channels=6), pes=1).config.pool_rows == 0
