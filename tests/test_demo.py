"""``sparseforge demo`` end to end, short of the bitstream (CI builds that in test_boards)."""

import json
import subprocess
import sys

import pytest

from sparseforge.sim.runner import available_simulators


@pytest.mark.cocotb
def test_demo_runs_every_stage_and_writes_its_summary(tmp_path):
    if "verilator" not in available_simulators():
        pytest.skip("verilator is not installed")
    out = tmp_path / "demo"
    completed = subprocess.run(
        [sys.executable, "-m", "sparseforge", "demo", "--skip-build", "--count", "30",
         "--out", str(out), "--json"], capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-3000:]
    figures = json.loads(completed.stdout)
    assert figures["bit_exact"] and figures["hardware_images"] == 30
    assert figures["accuracy_golden"] == figures["accuracy_compressed"]
    assert figures["accuracy_float"] - figures["accuracy_compressed"] <= 0.01
    assert figures["cycle_model_max_error"] == 0
    assert figures["cycles_per_inference"] >= figures["cost_model_limit"]
    assert set(figures["stage_seconds"]) == {"train", "compress", "compile", "golden",
                                             "simulate", "report"}
    for name in ("digits.sfm", "program/engine.v", "program/sim.json", "demo.json",
                 "program/report/report.html", "program/report/report.md"):
        assert (out / name).is_file(), name
    assert json.loads((out / "demo.json").read_text())["bit_exact"] is True
    assert "Summary" in completed.stderr and "bit-exact" in completed.stderr


def test_demo_refuses_an_unknown_board(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "sparseforge", "demo", "--board", "nosuchboard",
         "--out", str(tmp_path / "demo")], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert "nosuchboard" in completed.stderr
    assert not (tmp_path / "demo").exists()
