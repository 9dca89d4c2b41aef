"""Entries in SPRAM (``EngineConfig.spram_entries``): on the iCEBreaker's UltraPlus a model whose
entries the block RAMs cannot hold (an MNIST-sized MLP) gets each PE's entry memory in one of the
part's SPRAMs.  The engine with them is simulated in tests/test_rtl_cocotb.py (Yosys's model of
the primitive) and the board's run in tests/test_board_sim.py."""

import dataclasses

import numpy as np
import pytest

import sparseforge as sf
from sparseforge.boards.registry import board
from sparseforge.compiler.config import EngineConfig
from sparseforge.compiler.errors import InputWarning
from sparseforge.compiler.resources import estimate_resources
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
