"""Run Amaranth's build (Yosys + nextpnr + pack) with the tools that `hw.toolchain` found.

Amaranth writes a build script that reads ``YOSYS``, ``NEXTPNR_ICE40``, ``ICEPACK``, ... from the
environment.  We run its steps ourselves, in three stages, with the environment of native tools
or their YoWASP builds: synthesis once, then place and route once per nextpnr seed (in
parallel, each seed in its own folder, when several are asked for), then packing of the
placement with the best Fmax.  Packing alone (``pack_only``) stops after nextpnr has packed the
netlist into the part's cells: the cell counts placement would have, in a second.

nextpnr's log is parsed (``nextpnr.py``).  A design that does not fit the part is reported as
:class:`DoesNotPlace` with the counts ("does not fit: 5692 of 5280 logic cells"), not as
nextpnr's own text ("Failed to expand region").
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sparseforge.compiler.errors import UserError
from sparseforge.hw import toolchain

from .nextpnr import RESOURCE_CELLS, NextpnrReport, Resource, parse_nextpnr_log

__all__ = ["BitstreamBuild", "BuildError", "DoesNotPlace", "build_bitstream",
           "placement_failure"]

_FAMILY_TOOLS = {
    "ice40": ("yosys", "nextpnr-ice40", "icepack"),
    "ecp5": ("yosys", "nextpnr-ecp5", "ecppack"),
}
# What a person calls each cell kind a part can run out of.
_CELL_WORDS = {"LUT": "logic cells", "BRAM": "block RAMs", "DSP": "DSP blocks",
               "SPRAM": "SPRAMs", "IO": "I/O pins", "FF": "flip-flops", "LUTRAM": "LUT RAMs"}
# nextpnr's words when placement or routing gives up on a full part (the heap placer's
# "Failed to expand region", the annealer's "Unable to find legal placement", the router's).
_GAVE_UP = re.compile(r"Failed to expand region|Unable to find legal placement|"
                      r"unable to place|failed to place|Failed to route|Routing failed|"
                      r"failed to route|Unable to route", re.IGNORECASE)


class BuildError(UserError, RuntimeError):
    """Synthesis, place and route or packing failed; the message ends with the log's tail."""


class DoesNotPlace(BuildError):
    """The design does not fit the part: more cells of a kind than it has, or nextpnr could
    not place or route it.  ``resource`` (``"LUT"``, ``"BRAM"``, ...), ``used`` and
    ``available`` are nextpnr's counts after packing."""

    def __init__(self, message: str, *, resource: str, used: int, available: int,
                 device: str = ""):
        super().__init__(message)
        self.resource, self.used, self.available, self.device = (resource, used, available,
                                                                 device)

    def with_advice(self, advice: str) -> DoesNotPlace:
        """The same failure, its message followed by the ways out."""
        return DoesNotPlace(f"{self}\n{advice}" if advice else str(self),
                            resource=self.resource, used=self.used, available=self.available,
                            device=self.device)


@dataclass(frozen=True)
class BitstreamBuild:
    bitstream: Path | None              # None when only packed
    report: NextpnrReport
    build_dir: Path                     # the folder of the kept placement (its top.tim)
    seconds: float
    # Every seed tried: {"seed": None (nextpnr's own default) or N, "fmax_mhz", "seconds"}
    # or {"seed", "error"}.
    seeds: list[dict] = field(default_factory=list)
    seed: int | None = None             # the kept seed

    @property
    def fmax_mhz(self) -> float | None:
        return self.report.worst_fmax_mhz


def _family(platform) -> str:
    device = platform.device.lower()
    if device.startswith("ice40"):
        return "ice40"
    if device.startswith("lfe5"):
        return "ecp5"
    raise ValueError(f"unsupported FPGA family for device {platform.device!r}; "
                     f"supported: iCE40, ECP5")


@dataclass(frozen=True)
class _Script:
    """Amaranth's build script cut into its stages: the preamble (``set -e``, the tool
    variables' defaults), the synthesis command, nextpnr's, and the packing commands."""
    preamble: list[str]
    synth: list[str]
    pnr: str
    pack: list[str]
    # The shells running now (the seeds' nextpnr runs in threads), for stop().
    _running: set = field(default_factory=set, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False,
                                  compare=False)

    @classmethod
    def read(cls, path: Path) -> _Script:
        preamble, synth, pnr, pack = [], [], None, []
        for line in path.read_text().splitlines():
            if not line.startswith('"$'):
                (preamble if pnr is None and not synth else pack).append(line)
            elif line.startswith('"$YOSYS"'):
                synth.append(line)
            elif line.startswith('"$NEXTPNR_'):
                pnr = line
            else:
                pack.append(line)
        if not synth or pnr is None:
            raise BuildError(f"{path}: not the Amaranth build script expected (no Yosys or "
                             f"nextpnr step)")
        return cls(preamble, synth, pnr, pack)

    def run(self, lines: list[str], cwd: Path, env: dict, timeout: float):
        """The lines in a shell of its own process group, so that stopping the build (a
        SIGTERM, Ctrl-C, the timeout) stops the tools it started: killing the shell alone
        left Yosys running."""
        text = "\n".join(self.preamble + lines) + "\n"
        with subprocess.Popen(["sh", "-c", text], cwd=cwd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              start_new_session=True) as process:
            with self._lock:
                self._running.add(process)
            try:
                stdout, stderr = process.communicate(timeout=timeout)
            except BaseException:
                _stop(process)
                raise
            finally:
                with self._lock:
                    self._running.discard(process)
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    def stop(self) -> None:
        """Stop every tool this script is running (other threads' too)."""
        with self._lock:
            running = list(self._running)
        for process in running:
            _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """Kill ``process``'s group (the shell and the tools it started) and reap the shell."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _pnr_line(line: str, seed: int | None, pack_only: bool) -> str:
    """nextpnr's command with a seed, or packing only (no placement: no outputs to write)."""
    if pack_only:
        words = shlex.split(line, posix=False)
        kept, skip = [], False
        for word in words:
            if skip:
                skip = False
                continue
            if word in ("--asc", "--textcfg", "--report", "--write"):
                skip = True
                continue
            if word == "--detailed-timing-report":
                continue
            kept.append(word)
        line = " ".join(kept) + " --pack-only"
    if seed is not None:
        line += f" --seed {int(seed)}"
    return line


def build_bitstream(platform, top, build_dir: Path, *, name: str = "top",
                    synth_opts: str | None = None, nextpnr_opts: str | None = None,
                    seeds=(None,), jobs: int | None = None, pack_only: bool = False,
                    timeout: float = 3600) -> BitstreamBuild:
    """Elaborate ``top`` for ``platform``, run the toolchain, return the bitstream and report.

    ``seeds``: nextpnr seeds to place with (None: nextpnr's own default, no ``--seed``); with
    more than one, each places in ``build_dir/seed-N`` (up to ``jobs`` at once, default one
    per core) and the placement with the best Fmax is packed.  ``pack_only``: stop after
    packing (no placement, no bitstream; the report has the cell counts and no Fmax)."""
    family = _family(platform)
    for tool in _FAMILY_TOOLS[family][:2 if pack_only else 3]:
        toolchain.require(tool)
    build_dir = Path(build_dir)
    seeds = list(seeds) or [None]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must differ from each other, not {seeds!r}")
    kwargs = {}
    if synth_opts is not None:
        kwargs["synth_opts"] = synth_opts
    # A design that misses its clock still gets a bitstream and a report with the Fmax it
    # reached: the caller decides (sf.build rebuilds at a clock it meets, or reports the miss).
    kwargs["nextpnr_opts"] = " ".join(filter(None, ["--timing-allow-fail", nextpnr_opts]))
    plan = platform.prepare(top, name, **kwargs)
    plan.extract(build_dir)
    env = toolchain.environment()
    if "DFU_SUFFIX" not in env and shutil.which("dfu-suffix") is None:
        # The OrangeCrab's script appends a DFU suffix for its bootloader; without dfu-util
        # the .bit is still complete (and flashable over JTAG), so skip that step.
        env["DFU_SUFFIX"] = "true"
    started = time.monotonic()
    script = _Script.read(build_dir / f"build_{name}.sh")
    done = script.run(script.synth, build_dir, env, timeout)
    if done.returncode != 0:
        raise BuildError(_failure(f"the {family} synthesis of {name}", done, build_dir,
                                  build_dir / f"{name}.rpt"))

    def place(seed):
        folder = build_dir if len(seeds) == 1 else build_dir / f"seed-{seed or 'default'}"
        if folder != build_dir:
            folder.mkdir(exist_ok=True)
            for source in build_dir.glob(f"{name}.*"):
                if source.suffix in (".json", ".pcf", ".lpf"):
                    shutil.copyfile(source, folder / source.name)
        begun = time.monotonic()
        result = script.run([_pnr_line(script.pnr, seed, pack_only)], folder, env, timeout)
        return folder, result, time.monotonic() - begun

    workers = max(1, min(len(seeds), jobs or os.cpu_count() or 1))
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        placements = list(pool.map(place, seeds))
    except BaseException:
        # Stopped (SIGTERM, Ctrl-C) or failed here: the other seeds' nextpnr runs go too,
        # before the pool waits for them.
        script.stop()
        raise
    finally:
        pool.shutdown(wait=True)
    tried, best, failure = [], None, None
    for seed, (folder, result, seconds) in zip(seeds, placements):
        log = folder / f"{name}.tim"
        log_text = log.read_text() if log.exists() else ""
        if result.returncode != 0:
            failure = failure or placement_failure(log_text + result.stderr, platform.device) \
                or BuildError(_failure(f"the {family} place and route of {name}", result,
                                       folder, log))
            tried.append({"seed": seed, "error": str(failure).splitlines()[0],
                          "seconds": round(seconds, 1)})
            continue
        report = parse_nextpnr_log(log_text)
        tried.append({"seed": seed, "fmax_mhz": None if report.worst_fmax_mhz is None
                      else round(report.worst_fmax_mhz, 2), "seconds": round(seconds, 1)})
        if pack_only:
            over = placement_failure(log_text, platform.device, failed=False)
            if over is not None:
                # Packed, but more cells than the part has: placement would fail.
                raise over
        if best is None or (report.worst_fmax_mhz or 0) > (best[2].worst_fmax_mhz or 0):
            best = (seed, folder, report)
    if best is None:
        raise failure
    seed, folder, report = best
    if pack_only:
        return BitstreamBuild(None, report, folder, time.monotonic() - started, tried, seed)
    done = script.run(script.pack, folder, env, timeout)
    if done.returncode != 0:
        raise BuildError(_failure(f"packing {name}", done, folder, None))
    suffix = ".bin" if family == "ice40" else ".bit"
    bitstream = folder / f"{name}{suffix}"
    if not bitstream.exists():
        raise BuildError(f"the build finished but wrote no bitstream {bitstream}")
    return BitstreamBuild(bitstream, report, folder, time.monotonic() - started, tried, seed)


def _failure(what: str, result, folder: Path, log: Path | None) -> str:
    """The failure's message: the tool's log's last lines, then its own output's (a tool that
    crashes says why on stderr, after the last line of its log), and any ERROR line of the
    log that is not among them."""
    log_lines = (log.read_text(errors="replace").splitlines()
                 if log is not None and log.exists() else [])
    output = (result.stdout + result.stderr).splitlines()
    tail = log_lines[-12:] + output[-12:]
    errors = [line for line in log_lines if line.startswith("ERROR")]
    tail = [line for line in errors[-3:] if line not in tail] + tail
    return f"{what} failed (exit {result.returncode}) in {folder}:\n" + "\n".join(tail)


def placement_failure(log_text: str, device: str = "", *,
                      failed: bool = True) -> DoesNotPlace | None:
    """A :class:`DoesNotPlace` when nextpnr's log says the design does not fit: a cell kind
    used beyond the part's count (after packing), or -- with ``failed``, for the log of a run
    that exited with an error -- placement or routing that gave up.  None otherwise."""
    cells = {}
    for line in log_text.splitlines():
        match = re.match(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", line)
        if match:
            cells[match.group(1)] = Resource(int(match.group(2)), int(match.group(3)))
    part = f" the {device}" if device else " the part"
    over = [(RESOURCE_CELLS.get(cell, cell), use) for cell, use in cells.items()
            if use.used > use.available]
    if over:
        resource, use = max(over, key=lambda item: item[1].used / max(1, item[1].available))
        words = "; ".join(f"{u.used} of {u.available} {_CELL_WORDS.get(r, r)}"
                          for r, u in over)
        return DoesNotPlace(f"does not fit: {words} ({100 * use.used // use.available}%) on"
                            f"{part} after packing; nextpnr cannot place it",
                            resource=resource, used=use.used, available=use.available,
                            device=device)
    if failed and _GAVE_UP.search(log_text):
        logic = next((u for c, u in cells.items() if RESOURCE_CELLS.get(c) == "LUT"), None)
        if logic is not None:
            return DoesNotPlace(f"does not fit: {logic.used} of {logic.available} logic cells "
                                f"({100 * logic.used // logic.available}%) on{part}, and "
                                f"nextpnr could not place and route them",
                                resource="LUT", used=logic.used, available=logic.available,
                                device=device)
    return None
