"""The scripts in examples/ run as a user runs them, and print what they promise.

Each runs in a subprocess with warnings as errors (as pytest runs the suite), writing into a
temporary directory.  Simulating examples need Verilator (cocotb marker); the bitstream build
needs Yosys + nextpnr and minutes (toolchain, slow).
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from sparseforge.sim.runner import available_simulators

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, *args: str, timeout: float = 900) -> str:
    """Run ``examples/<name>`` and return its stdout; a failure shows the script's output."""
    command = [sys.executable, "-W", "error",
               # as in pyproject's filterwarnings: cocotb_tools' own deprecations
               "-W", "ignore::DeprecationWarning:cocotb_tools.runner",
               str(ROOT / "examples" / name), *args]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (f"{' '.join(command)} exited {result.returncode}\n"
                                    f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
    assert "Warning" not in result.stderr, result.stderr
    return result.stdout


def percent(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in:\n{text}"
    return float(match.group(1)) / 100


def require_verilator():
    if "verilator" not in available_simulators():
        pytest.skip("verilator is not installed")


@pytest.mark.cocotb
def test_api_end_to_end(tmp_path):
    require_verilator()
    out = run_example("api_end_to_end.py", "--images", "4", "--out", str(tmp_path))
    assert percent(r"-> fixed point ([\d.]+)%", out) >= 0.95
    assert percent(r"reference: 450 test images, accuracy ([\d.]+)%", out) >= 0.95
    assert "simulate: 4 images on Verilator, bit-exact against the golden model" in out
    assert (tmp_path / "digits.sfm").is_file()
    assert (tmp_path / "program" / "program.json").is_file()


@pytest.mark.slow
@pytest.mark.toolchain
@pytest.mark.cocotb
def test_api_end_to_end_with_build(tmp_path):
    require_verilator()
    out = run_example("api_end_to_end.py", "--images", "2", "--build", "--out", str(tmp_path),
                      timeout=3600)
    assert re.search(r"build: Fmax [\d.]+ MHz, engine clock [\d.]+ MHz", out), out
    assert (tmp_path / "program" / "bitstream" / "build.json").is_file()


def test_own_pytorch_model(tmp_path):
    out = run_example("own_pytorch_model.py", "--images", "0", "--out", str(tmp_path))
    assert percent(r"float model: test accuracy ([\d.]+)%", out) >= 0.9
    assert "compress: layers ['fc1', 'fc2', 'out']" in out        # BatchNorm folded, Dropout gone
    assert percent(r"reference: accuracy ([\d.]+)%", out) >= 0.9
    assert re.search(r"logits within 0\.\d+ of the compressed float network", out), out


def test_own_onnx_model(tmp_path):
    out = run_example("own_onnx_model.py", "--images", "0", "--out", str(tmp_path))
    assert "softmax /1/Softmax" in out                    # captured, then dropped by the passes
    assert percent(r"-> fixed point ([\d.]+)%", out) >= 0.85
    assert percent(r"reference: accuracy ([\d.]+)%", out) >= 0.85
    assert (tmp_path / "mlp.onnx").is_file() and (tmp_path / "data.npz").is_file()


@pytest.mark.slow
@pytest.mark.cocotb
@pytest.mark.parametrize("name", ["own_pytorch_model.py", "own_onnx_model.py"])
def test_own_models_simulated(name, tmp_path):
    require_verilator()
    out = run_example(name, "--images", "4", "--out", str(tmp_path))
    assert re.search(r"simulate: 4 inputs on verilator, bit-exact against the golden model",
                     out), out


def test_own_onnx_cnn(tmp_path):
    out = run_example("own_onnx_cnn.py", "--images", "0", "--epochs", "15", "--out",
                      str(tmp_path))
    # Capture read the file's convolutions and pooling (the exporter folds the BatchNorm into
    # the first convolution itself); the passes fuse and fold them.
    assert re.search(r"captured: conv \S+, relu \S+, maxpool \S+, conv \S+, relu \S+, "
                     r"avgpool \S+, flatten \S+, linear \S+", out), out
    assert percent(r"-> fixed point ([\d.]+)%", out) >= 0.9
    assert "compile: conv mode True" in out
    assert percent(r"reference: accuracy ([\d.]+)%", out) >= 0.9
    assert (tmp_path / "cnn.onnx").is_file() and (tmp_path / "cnn.sfm").is_file()


@pytest.mark.slow
@pytest.mark.cocotb
def test_own_onnx_cnn_simulated(tmp_path):
    require_verilator()
    out = run_example("own_onnx_cnn.py", "--images", "4", "--out", str(tmp_path))
    assert re.search(r"simulate: 4 images on verilator, bit-exact against the golden model; "
                     r"\d+ cycles per inference, cycle model within 0\.0%", out), out
