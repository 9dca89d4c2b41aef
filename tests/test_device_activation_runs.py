"""``device.activation_runs``: the WRITE and READ frames of a wide input or output address
each activation where ``isa.activation_index`` puts it (a WRITE or READ steps through bus
indices one by one, so a run must not cross a word's unused lane indices)."""

import pytest

from sparseforge.boards.device import activation_runs
from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig


@pytest.mark.parametrize("pes", [1, 2, 3, 4, 5, 6, 7, 8, 12, 16])
@pytest.mark.parametrize("count", [1, 7, 140, 300])
def test_every_activation_is_addressed_where_the_engine_keeps_it(pes, count):
    config = EngineConfig(pes=pes)
    addressed = {}
    for first, index, length in activation_runs(count, pes):
        for k in range(length):
            addressed[first + k] = index + k
    assert addressed == {i: isa.activation_index(i, config) for i in range(count)}
    runs = list(activation_runs(count, pes))
    assert len(runs) == (1 if pes & (pes - 1) == 0 else -(-count // pes))
