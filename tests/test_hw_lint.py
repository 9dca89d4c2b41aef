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


def test_the_same_verilog_is_not_written_again(tmp_path):
    # A compiled simulator is rebuilt when its sources are newer: writing the same engine
    # again (every `sparseforge sim` of a program) must leave the file, and its time, alone.
    import os

    from sparseforge.hw.verilog import write_engine_verilog

    config = EngineConfig(pes=2)
    path = write_engine_verilog(config, tmp_path / "engine.v")
    os.utime(path, (1_000_000, 1_000_000))
    assert write_engine_verilog(config, path) == path
    assert path.stat().st_mtime == 1_000_000
    write_engine_verilog(EngineConfig(pes=4), path)
    assert path.stat().st_mtime != 1_000_000
