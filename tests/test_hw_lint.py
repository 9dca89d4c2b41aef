"""The generated Verilog is clean under `verilator --lint-only -Wall` apart from the waivers."""

import pytest
from amaranth.back import verilog

from sparseforge.compiler.config import EngineConfig
from sparseforge.hw.engine import Engine
from sparseforge.sim.runner import lint


@pytest.mark.parametrize("config", [
    EngineConfig(pes=8, scan_lanes=4),
    EngineConfig(pes=1, act_bits=16, coef_bits=16, acc_bits=40, bias_bits=32),
    EngineConfig(pes=8, scan_lanes=1, writeback_lanes=2, skip_zeros=True),
], ids=["n8", "n1-16bit", "n8-skip-zeros"])
def test_engine_verilog_lints_clean(config, tmp_path):
    source = tmp_path / "engine.v"
    source.write_text(verilog.convert(Engine(config), name="engine", emit_src=False))
    assert lint(source, "engine") == []
