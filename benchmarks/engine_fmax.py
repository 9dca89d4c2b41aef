"""Synthesis figures: the digits engine through Yosys + nextpnr as users get it (``sf.build``, the
board top with PLL and UART link), with resources vs capacity, Fmax vs the target, build time,
and nextpnr's critical path summarised so a person can see which part of the engine limits the
clock.  Prints figures; asserts nothing about time.

    nice -n 10 .venv/bin/python benchmarks/engine_fmax.py                  # both, ~10-15 min
    nice -n 10 .venv/bin/python benchmarks/engine_fmax.py --board icebreaker --pes 8
    nice -n 10 .venv/bin/python benchmarks/engine_fmax.py --board ulx3s-85f --pes 32 --json
    nice -n 10 .venv/bin/python benchmarks/engine_fmax.py --board icebreaker --frequency 30
    .venv/bin/python benchmarks/engine_fmax.py --reuse       # report the last builds again
    .venv/bin/python benchmarks/engine_fmax.py --log build/.../attempt1/top.tim   # parse only

Defaults: iCEBreaker (iCE40UP5K) at N = 8 and ULX3S-85F (ECP5-85F) at N = 32, each at the
board's target clock, built once (no second attempt at a fitted clock unless ``--fit-clock``).
The digits model is the one ``benchmarks/engine_cycles.py`` uses (compressed with
``--max-acc-bits 16``, cached in ``build/benchmarks/digits-acc16.sfm``; ``--model`` for
another).  Builds land in ``build/benchmarks/fmax/<board>-N<pes>/`` with nextpnr's log as
``attempt1/top.tim``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

import sparseforge as sf
from sparseforge.boards.build import DEFAULT_SEEDS
from sparseforge.boards.registry import board as find_board
from sparseforge.compiler.resources import estimate_resources

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "build" / "benchmarks" / "digits-acc16.sfm"
DEFAULT_BUILDS = (("icebreaker", 8), ("ulx3s-85f", 32))
RESOURCE_ORDER = ("LUT", "FF", "BRAM", "DSP", "SPRAM", "LUTRAM", "IO")


# ---- nextpnr's critical path report -----------------------------------------------------------

@dataclass
class Step:
    """One line of a critical path report: clk-to-q, logic, routing or setup."""
    kind: str
    delay: float
    total: float
    name: str                          # a cell pin (Source ...) or a net (Net ...)
    sink: str = ""                     # for routing: the pin it reaches
    locations: list[str] = field(default_factory=list)   # "Defined in" source lines

    @property
    def signal(self) -> str:
        return signal_name(self.name.rsplit(".", 1)[0] if self.kind != "routing"
                           else self.name)


@dataclass
class CriticalPath:
    clock: str
    steps: list[Step]
    logic_ns: float
    routing_ns: float

    @property
    def total_ns(self) -> float:
        return self.steps[-1].total if self.steps else 0.0

    @property
    def logic_levels(self) -> int:
        return sum(1 for s in self.steps if s.kind == "logic")

    @property
    def carry_levels(self) -> int:
        """Logic steps through a carry chain (iCE40 COUT, ECP5 FCO/FCI)."""
        return sum(1 for s in self.steps if s.kind == "logic"
                   and re.search(r"\.(COUT|FCO|FCI|CIN)$", s.name))

    @property
    def start(self) -> Step:
        return self.steps[0]

    @property
    def end(self) -> Step:
        return self.steps[-1]

    def signals(self) -> list[str]:
        """The named signals the path runs through, in order, repeats merged."""
        names: list[str] = []
        for step in self.steps:
            if step.kind != "routing":
                continue
            name = step.signal
            if name and (not names or names[-1] != name):
                names.append(name)
        return names

    def locations(self) -> list[str]:
        """Project source lines the path's nets were defined at, in order, repeats merged."""
        seen: list[str] = []
        for step in self.steps:
            for location in step.locations:
                if location not in seen:
                    seen.append(location)
        return seen

    def to_json(self) -> dict:
        return {"clock": self.clock, "total_ns": self.total_ns, "logic_ns": self.logic_ns,
                "routing_ns": self.routing_ns, "logic_levels": self.logic_levels,
                "carry_levels": self.carry_levels, "from": self.start.name,
                "to": self.end.name, "signals": self.signals(), "locations": self.locations(),
                "steps": [{"kind": s.kind, "delay": s.delay, "total": s.total, "name": s.name,
                           "sink": s.sink, "locations": s.locations} for s in self.steps]}


_HEADER_RE = re.compile(r"^Info: Critical path report for clock '([^']+)'")
_STEP_RE = re.compile(r"^Info:\s+(clk-to-q|logic|routing|setup|source)\s+(-?[\d.]+)\s+"
                      r"(-?[\d.]+)\s+(Source|Net)\s+(\S+)")
_SINK_RE = re.compile(r"^Info:\s+Sink\s+(\S+)")
_LOCATION_RE = re.compile(r"^Info:\s+(\S+\.(?:py|v|sv)):(\d+)")
_SUMMARY_RE = re.compile(r"^Info:\s+([\d.]+) ns logic, ([\d.]+) ns routing")


def parse_critical_paths(text: str) -> dict[str, CriticalPath]:
    """Every clock's critical path in a nextpnr log; the last report of each clock wins
    (nextpnr reports after routing last).  Cross-domain reports are skipped."""
    paths: dict[str, CriticalPath] = {}
    current: CriticalPath | None = None
    in_defined = False
    for line in text.splitlines():
        header = _HEADER_RE.match(line)
        if header:
            current = CriticalPath(header.group(1), [], 0.0, 0.0)
            in_defined = False
            continue
        if current is None:
            continue
        if line.startswith("Info: Critical path report for") or not line.startswith("Info:"):
            current = None
            continue
        step = _STEP_RE.match(line)
        if step:
            kind, delay, total, _what, name = step.groups()
            current.steps.append(Step(kind, float(delay), float(total), name))
            in_defined = False
            continue
        sink = _SINK_RE.match(line)
        if sink and current.steps:
            current.steps[-1].sink = sink.group(1)
            continue
        if "Defined in:" in line:
            in_defined = True
            continue
        location = _LOCATION_RE.match(line)
        if location and in_defined and current.steps:
            where = project_location(location.group(1), int(location.group(2)))
            if where and where not in current.steps[-1].locations:
                current.steps[-1].locations.append(where)
            continue
        summary = _SUMMARY_RE.match(line)
        if summary:
            current.logic_ns, current.routing_ns = map(float, summary.groups())
            paths[current.clock] = current
            current = None
    return paths


# Yosys and nextpnr append the cells they mapped a signal to ("_SB_DFFESR_Q_3_D_SB_LUT4_O",
# "_TRELLIS_FF_Q", "_CCU2C_S0", "_LUT4_Z", ...); what comes before is the Amaranth signal.
_MAPPED_SUFFIX = re.compile(
    r"(_SB_[A-Z0-9]+|_TRELLIS_[A-Z0-9]+|_CCU2C|_LUT4|_PFUMX|_L6MUX21|_DP16KD|_MULT18X18D"
    r"|_ALU54B|_DPR16X4C|_ICESTORM_[A-Z]+|_DFF[A-Z]*|_SPRAM|_RAM40_4K|_MAC16)(_|\b|\[|$).*$")


def signal_name(name: str) -> str:
    """The Amaranth signal behind a mapped net or cell name; '' for anonymous ones."""
    name = name.strip()
    if name.startswith("$") or name.startswith("\\$"):
        return ""
    base = _MAPPED_SUFFIX.sub("", name)
    # A block or LUT RAM's output port (ECP5 DP16KD DOB2, DPR16X4 DO, iCE40 RDATA) or a
    # LUT RAM's internal cell.
    base = re.sub(r"(_(DO[AB]?|RDATA|DATAOUT)(_?\d+)?(\[\d+\])?|\$DPRAM\w*)$", "", base)
    return base.rstrip("_")


def project_location(path: str, line: int) -> str | None:
    """``hw/pe.py:123`` for this project's files, ``amaranth/lib/fifo.py:80`` for Amaranth's;
    None for the vendor cell libraries (cells_map.v, ...)."""
    if "/site-packages/" in path:
        return path.split("/site-packages/", 1)[1] + f":{line}"
    resolved = Path(path)
    try:
        return f"{resolved.resolve().relative_to(ROOT)}:{line}"
    except (ValueError, OSError):
        pass
    if "/amaranth/" in path:
        return "amaranth/" + path.split("/amaranth/", 1)[1] + f":{line}"
    if "/sparseforge/" in path:
        return path.split("/sparseforge/", 1)[1] + f":{line}"
    return None


SEARCHED = ("hw", "boards/gateware", "boards")


def guess_definition(signal: str) -> str:
    """Where an engine signal is probably made, for nets the log gives no source line for.
    The signal's hierarchy (``link.engine.pe2.queue.storage``) names the files to look in
    first (``hw/pe.py``, ``hw/engine.py``, deepest first); each part, deepest first, is looked
    up there as a submodule or an assignment, then the last part anywhere in hw/ and boards/.
    '' when not found."""
    parts = [re.sub(r"\[\d+\]$", "", p) for p in signal.split(".") if p and not p.isdigit()]
    if not parts:
        return ""
    files = [f for folder in SEARCHED for f in sorted((ROOT / folder).glob("*.py"))]
    by_stem = {}
    for file in files:
        by_stem.setdefault(file.stem, file)
    hierarchy = [by_stem[stem] for stem in
                 dict.fromkeys(re.sub(r"\d+$", "", p) for p in reversed(parts))
                 if stem in by_stem]
    texts = {f: f.read_text().splitlines() for f in files}

    def candidates(part):
        names = [part, part.split("__")[0]]
        names.append(re.sub(r"_(r|w|rd|wr|read|write|RAM)$", "", names[-1]))
        names.append(re.sub(r"\d+$", "", names[-1]))
        return [re.escape(n) for n in dict.fromkeys(n for n in names if n)]

    def find(name, where):
        # A submodule first, then an assignment (PEP 8 spacing: keyword arguments do not
        # match).
        for pattern in (rf"^\s*m\.submodules\.{name}\s*=",
                        rf"^\s*((self\.)?[\w.]+\s*,\s*)*(self\.)?{name}"
                        rf"(\s*,\s*[\w.]+)*\s+=\s"):
            regex = re.compile(pattern)
            for file in where:
                for number, line in enumerate(texts[file], 1):
                    if regex.match(line):
                        return f"{file.relative_to(ROOT)}:{number}"
        return ""

    for part in reversed(parts):
        for name in candidates(part):
            found = find(name, hierarchy)
            if found:
                return found
    for name in candidates(parts[-1]):
        found = find(name, files)
        if found:
            return found
    return ""


def source_line(location: str) -> str:
    """The code at ``file:line`` (project files only), stripped; '' when unknown."""
    path, _, line = location.rpartition(":")
    file = ROOT / path
    if not file.is_file():
        return ""
    lines = file.read_text().splitlines()
    index = int(line) - 1
    return lines[index].strip() if 0 <= index < len(lines) else ""


def condensed_steps(path: CriticalPath) -> list[tuple]:
    """The path as rows (kind, nets, logic levels, delay, routing delay, cumulative, signal,
    where): each routing step with the logic it feeds, and consecutive steps through one
    signal (a carry chain, say; anonymous nets count as the signal before them) merged."""
    rows: list[list] = []
    for step in path.steps:
        routing = step.delay if step.kind == "routing" else 0.0
        if step.kind in ("routing", "logic"):
            signal = re.sub(r"\[\d+\]$", "", step.signal)
            where = step.locations[0] if step.locations else ""
            last = rows[-1] if rows else None
            if last is not None and last[0] == "path" and (
                    step.kind == "logic" or not signal or signal == last[6]):
                last[1] += step.kind == "routing"
                last[2] += step.kind == "logic"
                last[3] += step.delay
                last[4] += routing
                last[5] = step.total
                last[7] = last[7] or where
                continue
            rows.append(["path", int(step.kind == "routing"), int(step.kind == "logic"),
                         step.delay, routing, step.total, signal or "(anonymous)", where])
            continue
        rows.append([step.kind, 0, 0, step.delay, 0.0, step.total,
                     re.sub(r"\[\d+\]$", "", step.signal) or step.name,
                     step.locations[0] if step.locations else ""])
    return [tuple(row) for row in rows]


# ---- a build ----------------------------------------------------------------------------------

class _SavedBuild:
    """A finished build read back from its build.json (``--reuse``)."""

    def __init__(self, saved: dict):
        self.fmax_mhz, self.target_mhz = saved["fmax_mhz"], saved["target_mhz"]
        self.timing_met, self.seconds = saved["timing_met"], saved["seconds"]
        self.attempts, self.bitstream = saved["attempts"], saved["bitstream"]
        self.utilisation = saved["utilisation"]


TIMING_REPORT = "top.report.json"
TIMING_REPORT_OPTS = f"--report {TIMING_REPORT} --detailed-timing-report"


def _build_with(program, target, frequency: float | None, build_dir: Path, synth_opts: str,
                say, nextpnr_opts: str = "", seeds: int = DEFAULT_SEEDS) -> _SavedBuild:
    """One build of the same board top sf.build makes, with extra Yosys or nextpnr options
    (for a synthesis bug's workaround, or nextpnr's timing report), placed with ``seeds``
    seeds as sf.build does (the best kept); saved as build.json like sf.build's."""
    from sparseforge.boards.bitstream import build_bitstream
    from sparseforge.boards.top import BoardTop

    asked = frequency or target.target_mhz
    options = " ".join(filter(None, [target.synthesis_options(program.config), synth_opts]))
    seed_list = (None,) + tuple(range(2, seeds + 1))     # sf.build's: the default first
    say(f"[{target.name} N={program.config.pes}] place and route for {target.title} at "
        f"{asked:.1f} MHz with Yosys options {options!r}"
        + (f", {seeds} seeds" if seeds > 1 else ""))
    started = time.monotonic()
    top = BoardTop(target, program.config, program.image, frequency_mhz=asked)
    try:
        done = build_bitstream(target.make_platform(), top, build_dir / "attempt1",
                               synth_opts=options,
                               nextpnr_opts=" ".join(filter(None, [target.nextpnr_opts,
                                                                   nextpnr_opts])) or None,
                               seeds=seed_list)
    except Exception as error:
        raise RuntimeError(f"{error}{_yosys_error(build_dir)}") from error
    clock = top.clocking.frequency_hz / 1e6
    saved = {"board": target.name, "bitstream": str(done.bitstream),
             "fmax_mhz": done.fmax_mhz, "target_mhz": clock,
             "timing_met": done.fmax_mhz >= clock,
             "utilisation": {k: v.to_json() for k, v in done.report.resources.items()},
             "seconds": time.monotonic() - started, "synth_opts": options,
             "attempts": [{"asked_mhz": asked, "fmax_mhz": done.fmax_mhz,
                           "seconds": done.seconds, "build_dir": str(done.build_dir),
                           "seed": done.seed, "seeds": done.seeds}]}
    (build_dir / "build.json").write_text(json.dumps(saved, indent=2))
    return _SavedBuild(saved)


def _yosys_error(build_dir: Path) -> str:
    """Yosys's own error line (``-q`` sends it to top.rpt only), for the failure message."""
    lines = []
    for report in sorted(Path(build_dir).glob("attempt*/top.rpt")):
        errors = [l for l in report.read_text(errors="replace").splitlines()
                  if l.startswith("ERROR")]
        lines += [f"\n{report}: {e}" for e in errors[-1:]]
    return "".join(lines)


def design_digest(program) -> str:
    """A short fingerprint of what goes to Yosys: the engine configuration and the program
    image (the memories' contents are part of the netlist, so a different model is a different
    design, and nextpnr places it differently).  The demo and ``sparseforge build`` of the same
    program give the same digest."""
    import hashlib

    import numpy as np
    digest = hashlib.sha256(repr(program.config).encode())
    # Every word the image puts in the engine's memories, as the host bus would write them:
    # the same for a program compiled here and one loaded from a folder.
    digest.update(repr([tuple(int(v) for v in np.atleast_1d(np.asarray(w)).ravel())
                        if not isinstance(w, int) else w
                        for write in program.bus_writes() for w in write]).encode())
    return digest.hexdigest()[:12]


def run(board_name: str, pes: int, model_path: Path, frequency: float | None,
        fit_clock: bool, out: Path, say, reuse: bool = False,
        synth_opts: str | None = None, timing_report: bool = False,
        nextpnr_opts: str | None = None, program_dir: Path | None = None,
        seeds: int = DEFAULT_SEEDS) -> dict:
    target = find_board(board_name)
    started = time.perf_counter()
    if program_dir is not None:
        program = sf.load_program(program_dir)
        if program.config.pes != pes:
            raise ValueError(f"{program_dir} is a {program.config.pes}-PE program, not {pes}")
    else:
        program = sf.compile(sf.load_compressed(model_path), pes=pes, board=board_name)
    config = program.config
    digest = design_digest(program)
    estimate = estimate_resources(config, target.part)
    say(f"[{board_name} N={pes}] compiled in {time.perf_counter() - started:.1f} s: scan lanes "
        f"{config.scan_lanes}, queues {config.fifo_depth}, write-back lanes "
        f"{config.writeback_lanes}, acc {config.acc_bits} bits ({config.acc_memory_bits} in RAM); "
        f"estimate {estimate.lut} LUT, {estimate.bram} BRAM, {estimate.dsp} DSP, "
        f"{estimate.spram} SPRAM; design {digest} ("
        + (f"the program {program_dir}" if program_dir else f"the model {model_path}") + ")")
    build_dir = out / f"{board_name}-N{pes}"
    say(f"[{board_name} N={pes}] Yosys + nextpnr for {target.title} at "
        f"{frequency or target.target_mhz:g} MHz in {build_dir} (minutes)")
    saved = build_dir / "build.json"
    if reuse and saved.exists():
        result = _SavedBuild(json.loads(saved.read_text()))
        say(f"[{board_name} N={pes}] reusing the build in {build_dir} (--reuse)")
    elif synth_opts or timing_report or nextpnr_opts:
        result = _build_with(program, target, frequency, build_dir, synth_opts or "", say,
                             " ".join(filter(None, [nextpnr_opts, timing_report
                                                    and TIMING_REPORT_OPTS])), seeds=seeds)
    else:
        try:
            result = sf.build(program, board_name, frequency_mhz=frequency,
                              build_dir=build_dir, fit_clock=fit_clock, seeds=seeds,
                              progress=lambda text: say(f"[{board_name} N={pes}] {text}"))
        except Exception as error:
            raise RuntimeError(f"{error}{_yosys_error(build_dir)}") from error
    say(f"[{board_name} N={pes}] built in {result.seconds:.0f} s: Fmax "
        f"{result.fmax_mhz:.1f} MHz for a {result.target_mhz:.1f} MHz clock (design {digest})")
    log = Path(result.bitstream).parent / "top.tim"       # the attempt the build kept
    paths = parse_critical_paths(log.read_text()) if log.exists() else {}
    report = Path(result.bitstream).parent / TIMING_REPORT
    if timing_report and report.exists():
        # Every register input past its clock's period, not only the critical path.
        import timing_paths
        say(f"[{board_name} N={pes}] register inputs later than their clock's period "
            f"(benchmarks/timing_paths.py {report}):")
        with contextlib.redirect_stdout(sys.stderr):       # stdout may be --json's
            timing_paths.main([str(report), "--top", "25"])
    return {
        "board": board_name, "title": target.title, "part": target.part.name, "pes": pes,
        "design": digest, "seeds": getattr(result, "seeds", None),
        "engine": {"scan_lanes": config.scan_lanes, "fifo_depth": config.fifo_depth,
                   "writeback_lanes": config.writeback_lanes, "acc_bits": config.acc_bits,
                   "acc_memory_bits": config.acc_memory_bits, "code_bits": config.code_bits,
                   "coef_bits": config.coef_bits, "act_bits": config.act_bits},
        "fmax_mhz": result.fmax_mhz, "target_mhz": result.target_mhz,
        "timing_met": result.timing_met, "synth_opts": synth_opts,
        "nextpnr_opts": nextpnr_opts,
        "seconds": result.seconds, "attempts": result.attempts,
        "utilisation": {k: (v if isinstance(v, dict) else v.to_json())
                        for k, v in result.utilisation.items()},
        "estimate": {"LUT": estimate.lut, "BRAM": estimate.bram, "DSP": estimate.dsp,
                     "SPRAM": estimate.spram},
        "log": str(log), "bitstream": str(result.bitstream),
        "critical_paths": {clock: p.to_json() for clock, p in paths.items()},
        "_paths": paths,
    }


def ensure_model(path: Path | None, say) -> Path:
    if path is not None:
        return path
    if not DEFAULT_MODEL.exists():
        DEFAULT_MODEL.parent.mkdir(parents=True, exist_ok=True)
        say(f"compressing the digits MLP: sparseforge compress -o {DEFAULT_MODEL} "
            f"--max-acc-bits 16")
        done = subprocess.run([sys.executable, "-m", "sparseforge", "compress", "-o",
                               str(DEFAULT_MODEL), "--max-acc-bits", "16", "--json"],
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError("sparseforge compress failed:\n" + done.stderr[-2000:])
    else:
        say(f"reusing {DEFAULT_MODEL}")
    return DEFAULT_MODEL


# ---- report -----------------------------------------------------------------------------------

def render(results: list[dict], console: Console) -> None:
    summary = Table(title="the digits engine through Yosys + nextpnr (sf.build: board top with "
                          "PLL and UART link)", title_justify="left")
    for column in ("board", "N", "Fmax MHz", "clock MHz", "met", *RESOURCE_ORDER[:5],
                   "build s"):
        summary.add_column(column, justify="left" if column == "board" else "right")
    for r in results:
        use = r["utilisation"]
        cells = []
        for name in RESOURCE_ORDER[:5]:
            if name in use:
                u = use[name]
                estimate = r["estimate"].get(name)
                cells.append(f"{u['used']}/{u['available']} ({u['percent']:.0f}%)"
                             + (f"\n[dim]est. {estimate}[/dim]" if estimate is not None else ""))
            else:
                cells.append("-")
        summary.add_row(f"{r['title']}", str(r["pes"]), f"{r['fmax_mhz']:.1f}",
                        f"{r['target_mhz']:.1f}",
                        "[green]yes[/green]" if r["timing_met"] else "[red]no[/red]", *cells,
                        f"{r['seconds']:.0f}")
    console.print(summary)
    console.print("Fmax: nextpnr's estimate after routing; clock: what the PLL makes (the "
                  "target); resources: used/available on the part, with the compiler's "
                  "estimate (est.) for the board top.")
    for r in results:
        asked = r["attempts"][0]["asked_mhz"] if r.get("attempts") else None
        target = find_board(r["board"]).target_mhz
        same = asked is not None and abs(asked - target) < 1e-6 and not r.get("synth_opts") \
            and not r.get("nextpnr_opts")
        console.print(
            f"{escape(r['title'])} N={r['pes']}, design {r.get('design', '?')}: "
            + ("the figure sparseforge build and the demo give for this design (same clock, "
               f"{target:g} MHz, same seeds)" if same else
               f"built at {asked} MHz or with other options: sparseforge build and the demo "
               f"build at the board's {target:g} MHz, and nextpnr's placement is "
               f"timing-driven, so their figure differs"), highlight=False)
    for r in results:
        for tool, key in (("Yosys", "synth_opts"), ("nextpnr", "nextpnr_opts")):
            if r.get(key):
                console.print(f"{escape(r['title'])} N={r['pes']}: built with extra {tool} "
                              f"options {escape(repr(r[key]))} (not sf.build's defaults)")
    for r in results:
        for clock, path in r["_paths"].items():
            render_path(r, clock, path, console)


def render_path(r: dict, clock: str, path: CriticalPath, console: Console) -> None:
    console.print()
    start = path.start.signal or path.start.name
    end = path.end.signal or path.end.name
    console.print(
        f"[bold]critical path, {escape(r['title'])} N={r['pes']}, clock '{escape(clock)}'"
        f"[/bold]: {path.total_ns:.2f} ns = {path.logic_ns:.2f} logic + {path.routing_ns:.2f} "
        f"routing; {path.logic_levels} logic levels ({path.carry_levels} of them carry)",
        highlight=False)
    units: list[str] = []
    for step in path.steps:
        parts = (step.signal or "").split(".")
        if "engine" in parts[:-1]:
            below = parts[parts.index("engine") + 1:]
            unit = "engine" if len(below) == 1 else below[0]
        else:
            unit = ".".join(parts[:-1]) or parts[0]
        if unit and (not units or units[-1] != unit):
            units.append(unit)
    console.print("  units: " + " -> ".join(escape(u) for u in units), highlight=False)
    console.print(f"  from [cyan]{escape(start)}[/cyan]  ({escape(path.start.name)})",
                  highlight=False)
    console.print(f"  to   [cyan]{escape(end)}[/cyan]  ({escape(path.end.name)})",
                  highlight=False)
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="dim")
    numeric = ("nets", "levels", "ns", "routing", "at ns")
    for column in ("step", *numeric, "signal", "defined at", "code"):
        table.add_column(column, justify="right" if column in numeric else "left",
                         no_wrap=column != "signal", overflow="ellipsis" if column == "code"
                         else "fold", max_width=44 if column == "code" else None)
    for kind, nets, levels, delay, routing, total, signal, where in condensed_steps(path):
        if not where and signal != "(anonymous)":
            guess = guess_definition(signal)
            where = guess and f"~{guess}"
        table.add_row(kind, str(nets or ""), str(levels or ""), f"{delay:.2f}",
                      f"{routing:.2f}" if kind == "path" else "", f"{total:.2f}",
                      escape(signal), escape(where),
                      escape(source_line(where.lstrip("~"))) if where else "")
    console.print(table)
    console.print("  (defined at: the source line nextpnr gives; ~: guessed from the signal's "
                  "name)", style="dim")
    places = [p for p in path.locations() if not p.startswith("amaranth")]
    if places:
        console.print("  project lines on the path: " + ", ".join(escape(p) for p in places),
                      highlight=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--board", help="one board (default: icebreaker N=8, ulx3s-85f N=32)")
    parser.add_argument("--pes", type=int, help="PEs (default 8 on iCE40, 32 on ECP5)")
    parser.add_argument("--frequency", type=float, help="clock to ask for, MHz (default: the "
                                                        "board's target)")
    parser.add_argument("--fit-clock", action="store_true",
                        help="when timing fails, build again at the achieved Fmax (sf.build's "
                             "default; off here so each build runs once)")
    parser.add_argument("--model", type=Path, help="a .sfm (default: the digits model)")
    parser.add_argument("--program", type=Path, metavar="DIR",
                        help="build this compiled program instead (e.g. the demo's, "
                             "build/demo/program: the demo's design, so the same Fmax)")
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS,
                        help="nextpnr placements to try, the best kept (sf.build's seeds; "
                             f"default {DEFAULT_SEEDS}, as sf.build and the demo)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "benchmarks" / "fmax")
    parser.add_argument("--synth-opts", metavar="OPTS",
                        help="extra Yosys synth options, e.g. '-dff' (the same board top, one "
                             "build; a workaround when synthesis fails)")
    parser.add_argument("--nextpnr-opts", metavar="OPTS",
                        help="extra nextpnr options, e.g. '--router router2' or '--seed 2' "
                             "(the same board top, one build)")
    parser.add_argument("--timing-report", action="store_true",
                        help="have nextpnr write its timing report (top.report.json, tens of "
                             "MB) and list every register input slower than the clock, grouped "
                             "(benchmarks/timing_paths.py)")
    parser.add_argument("--reuse", action="store_true",
                        help="report a finished build in the output directory instead of "
                             "building again")
    parser.add_argument("--log", type=Path, help="only parse this nextpnr log's critical path")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args()

    console = Console(stderr=args.json)
    if not console.is_terminal:
        console = Console(width=170, stderr=args.json)

    def say(message: str) -> None:
        console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {escape(message)}",
                      highlight=False)

    if args.log:
        paths = parse_critical_paths(args.log.read_text())
        fake = {"title": str(args.log), "pes": "?"}
        for clock, path in paths.items():
            render_path(fake, clock, path, console)
        if args.json:
            print(json.dumps({c: p.to_json() for c, p in paths.items()}, indent=1))
        return

    if args.board:
        pes = args.pes or (8 if find_board(args.board).family == "ice40" else 32)
        builds = [(args.board, pes)]
    else:
        builds = [(b, args.pes or p) for b, p in DEFAULT_BUILDS]
    model = None if args.program else ensure_model(args.model, say)
    results, failures = [], []
    for board_name, pes in builds:
        try:
            results.append(run(board_name, pes, model, args.frequency, args.fit_clock,
                               args.out, say, reuse=args.reuse, synth_opts=args.synth_opts,
                               timing_report=args.timing_report,
                               nextpnr_opts=args.nextpnr_opts, program_dir=args.program,
                               seeds=args.seeds))
        except Exception as error:        # report it, go on with the next board
            failures.append({"board": board_name, "pes": pes, "error": str(error)})
            say(f"[{board_name} N={pes}] failed: {error}")
    if args.json:
        print(json.dumps({"builds": [{k: v for k, v in r.items() if k != "_paths"}
                                     for r in results], "failures": failures}, indent=1))
    console.print()
    render(results, console)
    for failure in failures:
        console.print(f"[red]failed[/red] {failure['board']} N={failure['pes']}: "
                      f"{escape(failure['error'])}")


if __name__ == "__main__":
    main()
