"""The fit check's calibration: the compiler's resource estimate (``compiler/resources.py``)
against what Yosys + nextpnr make of the same board top (the iCEBreaker's, or with ``--board
ulx3s-85f`` the ULX3S-85F's), on a sweep of models and PE counts.  Prints the error table
(estimated vs packed logic cells and block RAMs), the error the fit check allows for, and for
each design whether the check accepts it and whether it fits.  Asserts nothing.

    nice -n 10 .venv/bin/python benchmarks/fit_calibration.py            # synthesise what is
                                                                         # not cached (minutes)
    .venv/bin/python benchmarks/fit_calibration.py --reuse               # the cached figures only
    nice -n 10 .venv/bin/python benchmarks/fit_calibration.py --place digits-acc16-N8
    nice -n 10 .venv/bin/python benchmarks/fit_calibration.py --board ulx3s-85f --jobs 1

Each design is synthesised (Yosys, the minutes) and packed by nextpnr (``--pack-only``: the
cell counts placement starts from; a second), not placed: the logic cells packed are the logic
cells placed (nextpnr adds none while placing; tests/test_boards.py's build and
docs/compiler.md show the same count both ways).  ``--place NAME`` places and routes the named
designs too (minutes each), for the ones near the part's capacity.  Figures are cached per
design in ``build/fit_calibration/<design>/result.json`` (``build/fit_calibration/<board>/``
for another board) with the commit they were made at (``--fresh`` makes them again).  Engines
are chosen as ``sparseforge compile --board <board>`` chooses them (write-back sharing, lanes,
accumulators, the ECP5's retiming flags), with the fit check off so that the refused designs
are measured too.

The sweep: the digits MLP (64-128-10, 90% pruned, 4-bit weights) compressed with
``--max-acc-bits 16`` (the iCEBreaker's recipe) and without it (wider accumulators, high bits
in registers), two random sparse MLPs with their own codebooks and accumulator widths, and the
Brevitas W4A4 MLP imported from QDQ (per-row requantization), at 1 to 8 PEs on the UP5K and
8 to 32 on the ECP5-85F (its synthesis takes minutes per design; an ECP5 place and route 10-25).
On ECP5 the "logic cells" are LUT4s (``TRELLIS_COMB``), which is what the estimate counts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import sparseforge as sf
from sparseforge.boards.bitstream import DoesNotPlace, build_bitstream
from sparseforge.boards.registry import board as find_board
from sparseforge.boards.top import BoardTop
from sparseforge.compiler.config import EngineConfig
from sparseforge.compiler.configure import DoesNotFit
from sparseforge.compiler.resources import check_board, estimate_resources, fit_margin

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
OUT = ROOT / "build" / "fit_calibration"
BOARD = "icebreaker"                    # main() sets it from --board


@dataclass(frozen=True)
class Design:
    model: str
    pes: int

    @property
    def name(self) -> str:
        return f"{self.model}-N{self.pes}"


SWEEP = tuple(Design(model, pes) for model, counts in (
    ("digits-acc16", (1, 2, 4, 6, 8)),
    ("digits", (4, 6, 8)),
    ("random-a", (1, 2, 4)),
    ("random-b", (3, 6)),
    ("w4a4", (2, 4)),
) for pes in counts)

# The ECP5-85F: the same models at the PE counts its engines are built with.
ECP5_SWEEP = tuple(Design(model, pes) for model, counts in (
    ("digits-acc16", (8, 16, 32)),
    ("digits", (16, 32)),
    ("random-a", (8, 16, 24)),
    ("random-b", (12, 24)),
    ("w4a4", (8, 16)),
) for pes in counts)

SWEEPS = {"icebreaker": SWEEP, "ulx3s-85f": ECP5_SWEEP}


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    return done.stdout.strip() or "?"


def _compressed_digits(path: Path, *extra: str) -> Path:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "sparseforge", "compress", "-o", str(path),
                               *extra, "--json"], capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError("sparseforge compress failed:\n" + done.stderr[-2000:])
    return path


def _random_mlp(widths, density, code_bits, seed):
    """A random sparse MLP as the verification campaigns draw them (sparseforge/verify.py):
    random codes, codebooks of 8-bit values, biases up to +-2000, 8-bit activations."""
    from sparseforge.verify import _network
    return _network(np.random.default_rng(seed), widths, density, code_bits=code_bits)


def load_model(name: str):
    models = ROOT / "build" / "benchmarks"
    if name == "digits-acc16":
        return sf.load_compressed(_compressed_digits(models / "digits-acc16.sfm",
                                                     "--max-acc-bits", "16"))
    if name == "digits":
        return sf.load_compressed(_compressed_digits(models / "digits.sfm"))
    if name == "random-a":
        return _random_mlp([96, 192, 10], 0.12, 4, seed=1)
    if name == "random-b":
        return _random_mlp([128, 64, 64, 10], 0.2, 3, seed=2)
    if name == "w4a4":
        path = ROOT / "build" / "import_brevitas" / "w4a4.sfm"
        if not path.exists():
            raise RuntimeError(f"{path} is missing: run benchmarks/import_brevitas.py first")
        return sf.load_compressed(path)
    raise ValueError(f"unknown model {name!r}")


def measure(design: Design, say, *, place: bool = False) -> dict:
    """Compile ``design`` as ``compile --board BOARD`` would (fit check off), synthesise
    and pack (or place) its board top; the packed counts and the compiler's estimate."""
    target = find_board(BOARD)
    program = sf.compile(load_model(design.model), pes=design.pes, board=BOARD,
                         fit_check=False)
    config = program.config
    folder = OUT / design.name / ("place" if place else "pack")
    say(f"{design.name}: {'synthesis, place and route' if place else 'synthesis and packing'} "
        f"in {folder}")
    started = time.monotonic()
    top = BoardTop(target, config, program.image, frequency_mhz=target.target_mhz)
    record = {"design": design.name, "model": design.model, "pes": design.pes,
              "commit": _commit(), "config": dataclasses.asdict(config)}
    try:
        built = build_bitstream(target.make_platform(), top, folder,
                                synth_opts=target.synthesis_options(config),
                                nextpnr_opts=target.nextpnr_opts or None, pack_only=not place)
        use = built.report.resources
        record.update(lc=use["LUT"].used, bram=use["BRAM"].used, dsp=use["DSP"].used,
                      spram=use.get("SPRAM").used if "SPRAM" in use else 0,
                      fmax_mhz=built.fmax_mhz, fits=True)
    except DoesNotPlace as error:
        record.update(fits=False, error=str(error).splitlines()[0],
                      **{{"LUT": "lc", "BRAM": "bram"}.get(error.resource, error.resource):
                         error.used})
        if error.resource != "LUT":
            record["lc"] = None
        _cells_from_log(folder, record)
    record["seconds"] = round(time.monotonic() - started, 1)
    say(f"{design.name}: {record.get('lc')} logic cells, {record.get('bram')} block RAMs"
        + ("" if record["fits"] else f" -- {record['error']}"))
    return record


def _cells_from_log(folder: Path, record: dict) -> None:
    """The packed counts of a design nextpnr refused, from its log."""
    from sparseforge.boards.nextpnr import _UTIL_RE, RESOURCE_CELLS
    log = folder / "top.tim"
    if log.exists():
        for cell, used, _ in _UTIL_RE.findall(log.read_text()):
            key = {"LUT": "lc", "BRAM": "bram", "DSP": "dsp", "SPRAM": "spram"}.get(
                RESOURCE_CELLS.get(cell, ""))
            if key:
                record[key] = int(used)


def cached(design: Design, place: bool) -> dict | None:
    path = OUT / design.name / ("place.json" if place else "result.json")
    return json.loads(path.read_text()) if path.exists() else None


def save(design: Design, record: dict, place: bool) -> None:
    path = OUT / design.name / ("place.json" if place else "result.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")


def estimate_row(design: Design, record: dict) -> dict:
    """The estimate now (the model may have been refitted since the build) of the engine that
    was built, and whether the fit check accepts that engine; ``chosen``: the write-back lanes
    the compiler would now choose for the design, when not the ones built."""
    target = find_board(BOARD)
    config = EngineConfig.from_json(record["config"])
    use = estimate_resources(config, target.part)
    try:
        check_board(config, target.part)
        accepted, why = True, ""
    except DoesNotFit as error:
        accepted, why = False, str(error).splitlines()[1].strip()
    program = sf.compile(load_model(design.model), pes=design.pes, board=BOARD,
                         fit_check=False, verify=False)
    chosen = program.config.writeback_lanes
    return {"est_lc": use.lut, "est_bram": use.bram, "est_dsp": use.dsp, "accepted": accepted,
            "why": why, "writeback_lanes": config.writeback_lanes,
            "acc": f"{config.acc_bits}/{config.acc_memory_bits or config.acc_bits}",
            "scales": config.row_scales,
            "chosen": None if chosen == config.writeback_lanes else chosen}


def render(rows: list[dict], console: Console) -> None:
    part = find_board(BOARD).part
    table = Table(title=f"fit check calibration: estimate vs Yosys + nextpnr (packed), "
                        f"{part.name} ({part.luts} logic cells, {part.brams} block RAMs)",
                  title_justify="left")
    for column in ("design", "N", "wb", "acc", "est LC", "packed LC", "LC err", "est BRAM",
                   "BRAM", "BRAM err", "check", "placed"):
        table.add_column(column, justify="left" if column in ("design", "check", "placed")
                         else "right")
    errors, bram_errors, wrong = [], [], []
    for r in rows:
        lc, bram = r.get("lc"), r.get("bram")
        err = None if lc is None else (r["est_lc"] - lc) / lc
        if err is not None:
            errors.append(err)
        if bram is not None:
            bram_errors.append(r["est_bram"] - bram)
        fits = r["fits"] and (lc or 0) <= part.luts and (bram or 0) <= part.brams
        placed = r.get("placed")
        if placed is not None:
            fits = fits and placed["fits"]
        if r["accepted"] and not fits:
            wrong.append(r["design"])
        table.add_row(
            r["model"], str(r["pes"]), str(r["writeback_lanes"])
            + ("" if r.get("chosen") is None else f" (now {r['chosen']})"), r["acc"],
            str(r["est_lc"]),
            "-" if lc is None else f"{lc} ({100 * lc / part.luts:.0f}%)",
            "-" if err is None else f"{100 * err:+.1f}%", str(r["est_bram"]),
            "-" if bram is None else str(bram),
            "-" if bram is None else f"{r['est_bram'] - bram:+d}",
            "[green]accepts[/green]" if r["accepted"] else f"refuses ({escape(r['why'])})",
            "-" if placed is None else (
                f"yes, {placed['lc']} LC, {placed['fmax_mhz']:.1f} MHz" if placed["fits"]
                else f"[red]no[/red]: {escape(placed.get('error', ''))}"))
    console.print(table)
    margin = fit_margin(part)
    if errors:
        worst = max(errors, key=abs)
        console.print(f"logic cells: estimate error {100 * np.mean(errors):+.1f}% on average, "
                      f"{100 * np.mean(np.abs(errors)):.1f}% mean absolute, worst "
                      f"{100 * worst:+.1f}% ({len(errors)} designs); the fit check allows "
                      f"{100 * margin:.1f}% (refuses an estimate above "
                      f"{int(part.luts * (1 - margin))} of {part.luts})")
    if bram_errors:
        console.print(f"block RAMs: estimate minus packed {sorted(set(bram_errors))} "
                      f"({sum(e == 0 for e in bram_errors)} of {len(bram_errors)} exact)")
    console.print("accepted by the check but not fitting: "
                  + (", ".join(wrong) if wrong else "none"))
    console.print("wb: write-back lanes (requantizers; 0 = one per PE) of the engine built, and "
                  "(now N) what the compiler chooses today when it differs; acc: accumulator "
                  "bits / of them in block RAM; LC err: (estimate - packed) / packed; check: the "
                  "fit check on the engine built.")


def main() -> None:
    global OUT, BOARD
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--board", choices=sorted(SWEEPS), default="icebreaker",
                        help="the board whose part is calibrated (default icebreaker)")
    parser.add_argument("--reuse", action="store_true", help="cached figures only; build "
                                                             "nothing")
    parser.add_argument("--fresh", action="store_true", help="build again what is cached")
    parser.add_argument("--only", nargs="*", metavar="DESIGN", help="these designs only "
                                                                    "(e.g. digits-N8)")
    parser.add_argument("--place", nargs="*", default=(), metavar="DESIGN",
                        help="also place and route these designs (minutes each)")
    parser.add_argument("--jobs", type=int, default=2, help="builds at once (default 2)")
    parser.add_argument("--out", type=Path, default=None,
                        help="the cache folder (default build/fit_calibration, and "
                             "build/fit_calibration/<board> for another board)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    BOARD = args.board
    OUT = args.out or (OUT if BOARD == "icebreaker" else OUT / BOARD)
    console = Console(stderr=args.json, width=200)

    def say(message: str) -> None:
        console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {escape(message)}",
                      highlight=False)

    sweep = SWEEPS[BOARD]
    designs = [d for d in sweep if not args.only or d.name in args.only]
    extra = [Design(*_parse(name)) for name in args.only or () if name not in
             {d.name for d in sweep}]
    designs += extra
    jobs = [(design, place) for design in designs
            for place in dict.fromkeys((False, design.name in args.place))
            if args.fresh or (cached(design, place) is None and not args.reuse)]

    def run(job):
        design, place = job
        try:
            record = measure(design, say, place=place)
        except Exception as error:          # report it and go on
            say(f"{design.name}: failed: {error}")
            return
        save(design, record, place)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(run, jobs))
    rows = []
    for design in designs:
        record = cached(design, False)
        if record is None:
            continue
        row = {**record, **estimate_row(design, record)}
        placed = cached(design, True)
        if placed is not None:
            row["placed"] = placed
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=1))
    render(rows, console)
    commits = sorted({r["commit"] for r in rows})
    if commits and commits != [_commit()]:
        console.print(f"the cached builds are of commit(s) {', '.join(commits)}, HEAD is "
                      f"{_commit()}: --fresh builds them again (the estimate is today's)")


def _parse(name: str) -> tuple[str, int]:
    model, _, pes = name.rpartition("-N")
    return model, int(pes)


if __name__ == "__main__":
    main()
