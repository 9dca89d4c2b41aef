"""``sf.build``: a program's engine as a bitstream for a board, with Fmax and utilisation.

The board top (``top.py``: PLL, UART link, LEDs, engine with the program's image in its
memories) goes through Yosys and nextpnr (native or YoWASP).  The engine clock is the board's
target frequency unless the caller asks for another.  With ``fit_clock`` (the default), a build
that misses timing is built once more with the PLL set to what the first build achieved, so
the bitstream runs at a frequency the design meets; both attempts are in the result.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from sparseforge.compiler import configure
from sparseforge.compiler.errors import InputError, InputWarning
from sparseforge.compiler.outputs import write_file, write_folder
from sparseforge.compiler.resources import DoesNotFit, check_board, fit_advice

from .bitstream import BitstreamBuild, BuildError, DoesNotPlace, build_bitstream
from .pll import PLL_RANGE_MHZ
from .nextpnr import Resource
from .registry import Board
from .registry import board as find_board
from .top import BoardTop, clocking_for

__all__ = ["DEFAULT_SEEDS", "Build", "DoesNotPlace", "build", "load_record"]

# nextpnr placements a build tries by default (its default seed and --seed 2), the best kept.
# One placement of the 8-PE digits engine on the UP5K landed at 39.3 MHz, below the 40 MHz
# floor, where seed 2 of the same netlist reached 43.4: the spread between seeds is as large as
# a step of engine work.  On two or more cores they place side by side, in about one's time.
DEFAULT_SEEDS = 2


@dataclass
class Build:
    """A bitstream for a board, and what nextpnr said of it."""
    board: str
    bitstream: Path
    fmax_mhz: float               # what the design can run at (nextpnr's estimate)
    target_mhz: float             # what the PLL makes, i.e. what the bitstream runs at
    utilisation: dict[str, Resource]
    seconds: float
    build_dir: Path
    attempts: list[dict] = field(default_factory=list)
    seed: int | None = None            # nextpnr's seed of the kept placement (None: default)
    seeds: list[dict] = field(default_factory=list)   # the kept attempt's seeds and figures
    program: str | None = None         # the digest of the program built (Program.digest)

    @property
    def timing_met(self) -> bool:
        return self.fmax_mhz >= self.target_mhz

    def to_json(self) -> dict:
        return {"board": self.board, "bitstream": str(self.bitstream),
                "fmax_mhz": round(self.fmax_mhz, 2), "target_mhz": round(self.target_mhz, 3),
                "timing_met": self.timing_met,
                "utilisation": {k: v.to_json() for k, v in self.utilisation.items()},
                "seconds": round(self.seconds, 1), "attempts": self.attempts,
                "seed": _seed_name(self.seed),
                "seeds": [{**s, "seed": _seed_name(s["seed"])} for s in self.seeds],
                **({"program": self.program} if self.program else {})}


def build(program, board: str | None = None, *, frequency_mhz: float | None = None,
          build_dir=None, fit_clock: bool = True, progress=None, seeds: int = DEFAULT_SEEDS,
          jobs: int | None = None) -> Build:
    """Build ``program`` for ``board`` (default: the board it was compiled for).

    ``seeds``: how many nextpnr placements to try (default ``DEFAULT_SEEDS``, 2), the one
    nextpnr makes by default and ``--seed 2`` .. ``--seed N`` (up to ``jobs`` at once, default
    one per core); the one with the best Fmax is kept, and every seed's figure is in
    ``attempts`` and ``build.json``.
    The build folder is written whole (``compiler/outputs.py``): a failed build leaves the
    folder as it was.  A design that does not fit the part raises :class:`DoesNotPlace`
    ("does not fit: N of M logic cells", with the ways out), not nextpnr's text."""
    name = board or program.board
    if name is None:
        raise ValueError("build needs a board: pass board=... (--board on the command "
                         "line), or compile for one")
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise InputError(f"seeds must be a whole number of 1 or more, not {seeds!r}")
    if frequency_mhz is not None and not (isinstance(frequency_mhz, (int, float))
                                          and math.isfinite(frequency_mhz)
                                          and frequency_mhz > 0):
        raise InputError(f"the clock frequency must be a positive number of MHz, not "
                         f"{frequency_mhz!r} (omit it for the board's target clock)")
    target = find_board(name)
    low, high = PLL_RANGE_MHZ.get(target.family, (0.0, math.inf))
    if frequency_mhz is not None and not low <= frequency_mhz <= high:
        raise InputError(f"the {target.title}'s PLL makes {low:g} to {high:g} MHz, not "
                         f"{frequency_mhz:g} (omit --frequency for the board's target clock, "
                         f"{target.target_mhz:g} MHz)")
    compiled_for = find_board(program.board) if program.board is not None else None
    if compiled_for is None or compiled_for.part_name != target.part_name:
        # The compiler's estimate refuses, before minutes of synthesis, an engine this part
        # cannot hold (compile checked it against the part it was compiled for only, or
        # none).
        try:
            check_board(program.config, configure.resolve_part(name))
        except DoesNotFit as error:
            # Compiling for this part is the way out that matters: it shapes the engine (PEs,
            # lanes, memories) for it; the estimate's generic ones come after.
            shortfall, _, ways = str(error).partition("\nways out: ")
            raise DoesNotFit(f"{shortfall}\nthe program was compiled for "
                             f"{program.board or 'no board'}: compile it with --board {name} "
                             f"for an engine shaped for this part"
                             + (f" (other ways out: {ways})" if ways else "")) from None
    if compiled_for is not None and compiled_for.part_name != target.part_name:
        # Its engine was shaped for that part (memory splits, registers, write-back lanes).
        warnings.warn(f"the program was compiled for {program.board} "
                      f"({compiled_for.part_name}), not for {name} ({target.part_name}); "
                      f"compile it with --board {name} for an engine shaped for this part",
                      InputWarning, stacklevel=2)
    build_dir = Path(build_dir) if build_dir else Path("build") / f"bitstream-{name}"
    seed_list = (None,) + tuple(range(2, seeds + 1))
    made = {}

    def fill(folder: Path) -> None:
        try:
            made["build"] = _build_into(program, target, folder, frequency_mhz, fit_clock,
                                        progress, seed_list, jobs)
        except DoesNotPlace:
            raise
        except BuildError as error:
            # The new build's folder is removed with the failure: its logs are kept beside
            # the build folder, and the message names them there.
            kept = _keep_failed(folder, build_dir)
            raise BuildError(str(error).replace(str(folder), str(kept))
                             + f"\n(the failed build's logs are in {kept})") from None

    try:
        write_folder(build_dir, fill, what="bitstream build", replaceable=_is_build)
    except DoesNotPlace as error:
        def engine_for(count: int):
            # The engine the compiler makes for this network with ``count`` PEs on this
            # board, for the advice's "most PEs that fit".
            return configure.other_engine(lambda: configure.derive_config(
                program.network, count, board=name, fit_check=False))

        raise error.with_advice(fit_advice(program.config, target.part, {error.resource},
                                           engine_for=engine_for)) from None
    return _moved(made["build"], build_dir)


def _keep_failed(folder: Path, build_dir: Path) -> Path:
    """Copy a failed build's folder to ``<build_dir>.failed`` (an earlier one there is
    replaced); returns that folder."""
    kept = build_dir.with_name(build_dir.name + ".failed")
    if kept.is_dir() and not kept.is_symlink():
        shutil.rmtree(kept)
    shutil.copytree(folder, kept, symlinks=True)
    return kept


def _is_build(folder: Path) -> bool:
    """An earlier build's folder, which a new build may replace."""
    return (folder / "build.json").exists() or (folder / "attempt1").is_dir()


def _build_into(program, target: Board, folder: Path, frequency_mhz, fit_clock, progress,
                seeds, jobs) -> Build:
    started = time.monotonic()
    requested = target.target_mhz if frequency_mhz is None else frequency_mhz
    result = _attempt(program, target, requested, folder / "attempt1", progress, seeds, jobs)
    if result.fmax_mhz is None:
        raise BuildError("nextpnr reported no Fmax for the engine clock; see its log (the "
                         "build left nothing behind: run benchmarks/engine_fmax.py to keep it)")
    attempts = [_summary(result, requested, folder)]
    asked = requested
    if fit_clock and frequency_mhz is None and result.fmax_mhz < _achieved(target, requested):
        # Run where the design meets timing: a little under the achieved Fmax.
        retry = max(result.fmax_mhz * 0.97, target.clock_hz / 1e6 * 0.5)
        second = _attempt(program, target, retry, folder / "attempt2", progress, seeds, jobs)
        attempts.append(_summary(second, retry, folder))
        # Placement varies from run to run: keep the retry only if it is no worse.
        if second.fmax_mhz is not None and (second.fmax_mhz >= _achieved(target, retry)
                                            or second.fmax_mhz >= result.fmax_mhz):
            result, asked = second, retry
    clocking = clocking_for(target, asked)
    outcome = Build(board=target.name, bitstream=result.bitstream, fmax_mhz=result.fmax_mhz,
                    target_mhz=clocking.frequency_hz / 1e6,
                    utilisation=result.report.resources,
                    seconds=time.monotonic() - started, build_dir=folder, attempts=attempts,
                    seed=result.seed, seeds=result.seeds, program=program.digest())
    write_file(folder / "build.json", json.dumps(_record(outcome, folder), indent=2))
    return outcome


def _moved(outcome: Build, build_dir: Path) -> Build:
    """The build's paths, made in the staging folder, where the folder now is."""
    staging = outcome.build_dir
    home = Path(build_dir)

    def move(path) -> Path:
        return home / Path(path).relative_to(staging)

    attempts = [{**a, "build_dir": str(move(a["build_dir"]))} for a in outcome.attempts]
    return dataclasses.replace(outcome, bitstream=move(outcome.bitstream), build_dir=home,
                               attempts=attempts)


def _record(outcome: Build, build_dir: Path) -> dict:
    """``build.json``: its paths relative to its own folder, so that ``flash`` and ``run`` find
    the bitstream from any working directory, and the folder can be moved."""
    record = outcome.to_json()
    home = build_dir.resolve()
    record["bitstream"] = os.path.relpath(Path(outcome.bitstream).resolve(), home)
    # Copies: the outcome's own attempts keep their paths.
    record["attempts"] = [{**attempt, "build_dir": os.path.relpath(
        Path(attempt["build_dir"]).resolve(), home)} for attempt in record["attempts"]]
    return record


def check_record_of(program, record: dict, path) -> None:
    """Refuse the build record (``build.json``) of another program than ``program`` (a
    bitstream folder copied from another program: its Fmax, resources and bitstream would be
    taken for this one's), by the digest it names (a record written before it did cannot
    tell)."""
    named = record.get("program") if isinstance(record, dict) else None
    if named and named != program.digest():
        raise InputError(f"{path} is the build of another program (digest {named}, this "
                         f"program's is {program.digest()}): build this one (sparseforge "
                         f"build)")


def load_record(path) -> dict:
    """A ``build.json``, its paths made usable from here (relative ones are to its folder)."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not a readable build record: {error}") from None
    if not isinstance(record, dict):
        raise InputError(f"{path}: not a build record (a JSON object)")
    if isinstance(record.get("bitstream"), str):
        record["bitstream"] = str(path.parent / record["bitstream"])
    return record


def _achieved(target: Board, asked_mhz: float) -> float:
    return clocking_for(target, asked_mhz).frequency_hz / 1e6


def _attempt(program, target: Board, frequency_mhz: float, directory: Path,
             progress, seeds, jobs) -> BitstreamBuild:
    if progress:
        progress(f"place and route for {target.title} at {frequency_mhz:.1f} MHz"
                 + (f", {len(seeds)} seeds" if len(seeds) > 1 else ""))
    top = BoardTop(target, program.config, program.image, frequency_mhz=frequency_mhz)
    return build_bitstream(target.make_platform(), top, directory,
                           synth_opts=target.synthesis_options(program.config),
                           nextpnr_opts=target.nextpnr_opts or None, seeds=seeds, jobs=jobs)


def _summary(result: BitstreamBuild, asked_mhz: float, folder: Path) -> dict:
    return {"asked_mhz": round(asked_mhz, 3), "fmax_mhz": round(result.fmax_mhz, 2),
            "seconds": round(result.seconds, 1), "build_dir": str(result.build_dir),
            "seed": _seed_name(result.seed),
            "seeds": [{**s, "seed": _seed_name(s["seed"])} for s in result.seeds]}


def _seed_name(seed):
    """A seed as build.json states it: nextpnr's own default placement is "default"."""
    return "default" if seed is None else seed
