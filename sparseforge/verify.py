"""``sparseforge verify``: a verification campaign of random networks on the generated Verilog.

Each case is a random sparse network (1 to 3 layers, shapes 1 to 64 wide and tall layers of
many rows per PE at 1-3% density, so zero runs longer than 15 need padding entries; weight
densities 1-50%, 2- to 4-bit codebooks, empty rows and columns) and a batch of random inputs
(0-90% zeros).  A case is fully determined by the campaign seed, its PE count and its index
(:func:`case_seed`), so any case can be run again alone.

There is one engine per PE count (:func:`engine_config`, a variant per N as in the random
engine tests: scan lanes, queue depths, shared requantizers and the ECP5 front end's
registers), big enough for every case the generator can make.  Each engine is compiled once
per node (the Verilator build is shared by the node's workers, ``sim/rtl.py``), and the cases
go to it in batches over the host bus, one Ray task per batch; odd-numbered cases run with
idle cycles on the input stream and backpressure on the output stream.  Every case must be
bit-exact (the engine's outputs equal the golden model's, and the golden model the integer
network's) and cycle-exact (every layer's cycle counter equals the cycle model's prediction).

``networks="conv"`` (``--networks conv``) makes each case a random convolutional network
instead (one or two convolutions of kernels 1..5, strides 1..2, padding 0..2, 1..16 channels,
maps up to 10x10, max pooling on or off, and a Linear classifier after them or not;
``random_networks.py``) with one input map, on conv-mode engines of a power-of-two PE count.
A conv engine is sized for the campaign's own cases (the field-wise largest of what each
needs), so a case run alone (``--case I``) runs on an engine sized for it.

Every mismatch is saved with a reproducer: ``OUT/mismatches/<case>/`` holds the program, the
inputs (``sparseforge sim`` runs them), what was expected and what came out, and ``case.json``
with the seed and the command that runs the case again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Campaign", "Case", "Mismatch", "case_seed", "engine_config", "random_case",
           "save_reproducer", "verify"]

DEFAULT_PES = (1, 2, 4, 8, 16)
NETWORKS = ("linear", "conv")
CONV_DEFAULT_PES = (4, 8)
CONV_MAX_SIZE = 10              # a conv case's input map: at most this many rows and columns
CONV_MAX_LAYERS = 2             # convolutions (a Linear may follow)
ACT_BITS = 8
BATCH_INPUTS = 2                # inputs per case
MAX_WIDTH = 64                  # widest layer of a small case
MAX_LAYERS = 3
TALL_INPUTS = 32                # a tall case's first layer: at most this many inputs ...
TALL_ROWS_PER_PE = 24           # ... and this many rows per PE (zero runs over 15 need > 16)
TALL_MAX_ROWS = 384
TALL_SHARE = 0.1                # of the cases
STALLS = {"input_idle": 0.3, "output_stall": 0.3}

# One engine per N, varied as in tests/test_engine_random.py so the campaign covers the
# broadcast unit's lane logic, full queues, shared write-back and the ECP5 front end.
VARIANTS = {
    1: {"scan_lanes": 1, "fifo_depth": 4, "writeback_lanes": 0},
    2: {"scan_lanes": 2, "fifo_depth": 2, "writeback_lanes": 0},
    4: {"scan_lanes": 4, "fifo_depth": 8, "writeback_lanes": 2},
    8: {"scan_lanes": 1, "fifo_depth": 2, "writeback_lanes": 2},        # the iCE40 shape
    16: {"scan_lanes": 4, "fifo_depth": 8, "writeback_lanes": 4,        # the ECP5 front end
         "column_queue": True, "readout_register": True, "link_registers": True},
}
# Conv-mode engines, as in tests/test_engine_conv_random.py (the iCE40 shape at 8 PEs).
CONV_VARIANTS = {
    1: {"scan_lanes": 1, "fifo_depth": 4, "writeback_lanes": 0},
    2: {"scan_lanes": 2, "fifo_depth": 2, "writeback_lanes": 0},
    4: {"scan_lanes": 2, "fifo_depth": 4, "writeback_lanes": 2},
    8: {"scan_lanes": 1, "fifo_depth": 2, "writeback_lanes": 2, "readout_register": True,
        "decoded_weights": True},
}

# ---- the cases ----------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Case:
    """One random network and its integer inputs."""
    pes: int
    seed: int                   # the campaign's
    index: int
    kind: str                   # "small", "tall" or "conv"
    network: object             # QuantizedNetwork
    inputs: np.ndarray          # batch x in, integers
    density: float
    input_sparsity: float

    @property
    def name(self) -> str:
        from .random_networks import describe

        return f"N{self.pes}-s{self.seed}-{self.index:05d}-{self.kind}-{describe(self.network)}"

    @property
    def stalled(self) -> bool:
        """Odd cases run with stalls on both streams."""
        return self.index % 2 == 1


def case_seed(seed: int, pes: int, index: int) -> int:
    """The generator seed of case ``index`` for ``pes`` PEs in campaign ``seed``."""
    return int(np.random.SeedSequence([seed, pes, index]).generate_state(1)[0])


def _random_layer(rng, name, out_features, in_features, density, *, input_format, relu,
                  code_bits=None, empty_columns=0.1, extremes=False):
    from sparseforge.compiler.ir import QuantizedLinear
    from sparseforge.compiler.numerics import FixedFormat

    code_bits = int(rng.integers(2, 5)) if code_bits is None else code_bits
    codes = rng.integers(1, 1 << code_bits, (out_features, in_features))
    codes[rng.random((out_features, in_features)) >= density] = 0
    codes[:, rng.random(in_features) < empty_columns] = 0
    if out_features > 4 and rng.random() < 0.3:
        codes[rng.integers(0, out_features)] = 0                       # an empty row
    codebook = rng.integers(-128, 128, 1 << code_bits)
    codebook[0] = 0
    bias = rng.integers(-2000, 2000, out_features)
    if extremes:                      # the widest values the generator can draw
        codebook[1:3] = (-128, 127)
        bias[:2] = (-2000, 1999)
    weight_format = FixedFormat(8, int(rng.integers(4, 8)))
    output_format = FixedFormat(ACT_BITS, int(rng.integers(0, 5)))
    return QuantizedLinear(name, codes.astype(np.uint8), codebook, bias, code_bits,
                           input_format, weight_format, output_format, 16, relu)


def _network(rng, widths, density, *, code_bits=None, empty_columns=0.1, extremes=False):
    from sparseforge.compiler.ir import QuantizedNetwork
    from sparseforge.compiler.numerics import FixedFormat

    layers, fmt = [], FixedFormat(ACT_BITS, 4)
    for index in range(len(widths) - 1):
        last = index == len(widths) - 2
        layer = _random_layer(rng, f"fc{index}", widths[index + 1], widths[index], density,
                              input_format=fmt, relu=not last or bool(rng.random() < 0.5),
                              code_bits=code_bits, empty_columns=empty_columns,
                              extremes=extremes)
        layers.append(layer)
        fmt = layer.output_format
    return QuantizedNetwork(tuple(layers))


def _tall_rows(pes: int) -> int:
    return min(TALL_ROWS_PER_PE * pes, TALL_MAX_ROWS)


def random_case(seed: int, pes: int, index: int, networks: str = "linear") -> Case:
    """Case ``index`` of campaign ``seed`` for an engine of ``pes`` PEs (deterministic)."""
    rng = np.random.default_rng(case_seed(seed, pes, index))
    if networks == "conv":
        from .random_networks import random_conv_network

        network = random_conv_network(rng, max_size=CONV_MAX_SIZE, max_layers=CONV_MAX_LAYERS)
        inputs = rng.integers(-128, 128, (1, network.layers[0].in_features))
        inputs[rng.random(inputs.shape) < 0.25] = 0
        density = float(np.mean([np.count_nonzero(layer.codes) / layer.codes.size
                                 for layer in network.layers]))
        return Case(pes, seed, index, "conv", network, inputs, density, 0.25)
    if rng.random() < TALL_SHARE:
        kind = "tall"
        density = float(rng.uniform(0.01, 0.03))
        widths = [int(rng.integers(8, TALL_INPUTS + 1)), _tall_rows(pes)]
        if rng.random() < 0.5:
            widths.append(int(rng.integers(2, 17)))
    else:
        kind = "small"
        layers = int(rng.integers(1, MAX_LAYERS + 1))
        widths = [int(rng.integers(1, MAX_WIDTH + 1)) for _ in range(layers + 1)]
        density = float(np.exp(rng.uniform(np.log(0.01), np.log(0.5))))
    network = _network(rng, widths, density)
    sparsity = float(rng.uniform(0.0, 0.9))
    inputs = rng.integers(-128, 128, (BATCH_INPUTS, widths[0]))
    inputs[rng.random(inputs.shape) < sparsity] = 0
    return Case(pes, seed, index, kind, network, inputs, density, sparsity)


def engine_config(pes: int, networks: str = "linear", cases=()):
    """The campaign's engine for ``pes`` PEs: the variant's structure, every capacity the
    largest any case needs (taken from dense worst cases of the generator's biggest shapes,
    with the widest codebooks; for conv networks, from ``cases``, the campaign's)."""
    from sparseforge.compiler.config import check_pes
    from sparseforge.compiler.configure import (default_scan_lanes, derive_config,
                                                widest_capacity)

    pes = check_pes(pes)
    if networks == "conv":
        if not cases:
            raise ValueError("a conv engine is sized for its cases: pass them")
        variant = dict(CONV_VARIANTS.get(pes, {"scan_lanes": 2, "fifo_depth": 4,
                                               "writeback_lanes": pes // 4}))
        derived = [derive_config(case.network, pes, scan_lanes=variant["scan_lanes"])
                   for case in cases]
        widest = widest_capacity(derived)
        structure = {name: value for name, value in variant.items() if name != "scan_lanes"}
        return dataclasses.replace(derived[0], **widest, **structure)
    variant = dict(VARIANTS.get(pes, {"scan_lanes": default_scan_lanes(pes), "fifo_depth": 8,
                                      "writeback_lanes": 0}))
    rng = np.random.default_rng(0)
    worst = [_network(rng, [MAX_WIDTH] * (MAX_LAYERS + 1), 1.0, code_bits=4, empty_columns=0,
                      extremes=True),
             _network(rng, [TALL_INPUTS, _tall_rows(pes), 16], 1.0, code_bits=4,
                      empty_columns=0, extremes=True)]
    derived = [derive_config(network, pes, scan_lanes=variant["scan_lanes"])
               for network in worst]
    widest = widest_capacity(derived)
    structure = {name: value for name, value in variant.items() if name != "scan_lanes"}
    return dataclasses.replace(derived[0], **widest, **structure)


# ---- one batch (a Ray task) ---------------------------------------------------------------

@dataclass(frozen=True)
class Mismatch:
    """A case that failed a check, and how to run it again."""
    name: str
    pes: int
    seed: int
    index: int
    kind: str             # outputs | cycles | golden | compile | simulator | error
    detail: str
    case_seed: int
    arrays: dict = field(default_factory=dict, repr=False, compare=False)
    networks: str = "linear"

    @property
    def command(self) -> str:
        networks = "" if self.networks == "linear" else f" --networks {self.networks}"
        return (f"sparseforge verify{networks} --pes {self.pes} --seed {self.seed} --case "
                f"{self.index}")

    def to_json(self) -> dict:
        return {"name": self.name, "pes": self.pes, "seed": self.seed, "index": self.index,
                "kind": self.kind, "detail": self.detail, "case_seed": self.case_seed,
                "networks": self.networks, "command": self.command}


def _engine_verilog(config, simulators_dir: Path) -> Path:
    """The engine's Verilog for ``config``, written once per node and shared by its workers."""
    from sparseforge.hw.verilog import write_engine_verilog
    from sparseforge.sim.runner import file_lock

    digest = hashlib.sha256(json.dumps(config.to_json(), sort_keys=True).encode())
    path = simulators_dir / f"engine_{digest.hexdigest()[:16]}.v"
    if path.exists():
        return path
    simulators_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(simulators_dir / ".verilog.lock"):
        if not path.exists():
            temporary = path.with_suffix(f".{os.getpid()}.tmp")
            write_engine_verilog(config, temporary)
            temporary.replace(path)
    return path


def _run_batch(pes: int, seed: int, indices: list[int], simulator: str,
               simulators_dir: str, networks: str = "linear", config=None) -> dict:
    """Run cases ``indices`` on the engine for ``pes`` PEs (``config``, by default
    :func:`engine_config`'s); every check, every mismatch."""
    import ray

    from sparseforge.compiler.program import compile as compile_program
    from sparseforge.compiler.resources import DoesNotFit
    from sparseforge.sim.reference.golden import run_image
    from sparseforge.sim.rtl import RtlCase, run_rtl
    from sparseforge.sim.simulate import predict

    started = time.perf_counter()
    config = config or engine_config(pes)
    simulators = Path(simulators_dir)
    verilog = _engine_verilog(config, simulators)
    mismatches: list[Mismatch] = []
    runnable = []                           # (case, program, taken, golden, predicted)
    def mismatch(case, kind, detail, arrays=None) -> Mismatch:
        return Mismatch(case.name, pes, seed, case.index, kind, detail,
                        case_seed(seed, pes, case.index), arrays or {}, networks)

    for index in indices:
        case = random_case(seed, pes, index, networks)

        def miss(kind, detail, arrays=None, case=case):
            mismatches.append(mismatch(case, kind, detail, arrays))
        try:
            program = compile_program(case.network, config=config)
        except (DoesNotFit, ValueError) as error:
            miss("compile", str(error))
            continue
        # The engine takes the inputs a weight reads (an empty column's is not sent), a
        # convolution's map laid out as it reads it.
        taken = program.engine_input(program.taken_inputs(case.inputs))
        golden = run_image(config, program.image, taken)
        network = case.network.forward(case.inputs)
        if not np.array_equal(program.network_output(golden), network):
            miss("golden", "the golden model differs from the integer network",
                 {"expected": network, "outputs": golden})
            continue
        predicted = np.array([[timing.cycles for timing in row]
                              for row in predict(program, taken)])
        runnable.append((case, program, taken, golden, predicted))
    simulated = 0.0
    for stalled in (False, True):
        group = [item for item in runnable if item[0].stalled == stalled]
        if not group:
            continue
        rtl_cases = [RtlCase(case.name, program.image, taken, golden)
                     for case, program, taken, golden, _ in group]
        with tempfile.TemporaryDirectory(prefix="sparseforge-verify-") as directory:
            try:
                results = run_rtl(config, rtl_cases, build_dir=Path(directory),
                                  simulator=simulator, verilog_path=verilog,
                                  simulators_dir=simulators, seed=group[0][0].index,
                                  **(STALLS if stalled else {}))
            except RuntimeError as error:
                for case, *_ in group:
                    mismatches.append(mismatch(case, "simulator", str(error)[-2000:]))
                continue
        for (case, program, _, golden, predicted), result in zip(group, results):
            simulated += result.seconds
            arrays = {"inputs": case.inputs, "expected": golden, "outputs": result.outputs,
                      "cycles": result.cycles, "predicted": predicted}
            if result.mismatches or not np.array_equal(result.outputs, golden):
                mismatches.append(mismatch(case, "outputs", f"{result.mismatches} of "
                                           f"{golden.size} outputs differ from the golden "
                                           f"model", arrays))
            elif not np.array_equal(result.cycles, predicted):
                layers = np.flatnonzero((result.cycles != predicted).any(axis=0))
                mismatches.append(mismatch(case, "cycles", f"layer(s) {layers.tolist()}: "
                                           f"measured {result.cycles.tolist()}, cycle model "
                                           f"{predicted.tolist()}", arrays))
    return {"pes": pes, "cases": len(indices), "mismatches": mismatches,
            "seconds": time.perf_counter() - started, "simulated_seconds": simulated,
            "node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
            "pid": os.getpid()}


def _crashed(pes: int, indices: list[int], seed: int, networks: str, error) -> dict:
    cause = getattr(error, "cause", None) or error
    detail = f"the batch's task failed: {type(cause).__name__}: {cause}"[:2000]
    return {"pes": pes, "cases": len(indices), "seconds": 0.0, "simulated_seconds": 0.0,
            "node": None,
            "mismatches": [Mismatch(random_case(seed, pes, i, networks).name, pes, seed, i,
                                    "error", detail, case_seed(seed, pes, i), {}, networks)
                           for i in indices]}


# ---- the campaign -------------------------------------------------------------------------

@dataclass
class Campaign:
    """What a campaign checked and found."""
    cases: int
    pes: tuple[int, ...]
    simulator: str
    seed: int
    seconds: float
    mismatches: list[Mismatch]
    per_engine: dict[int, dict]           # pes -> cases, seconds
    nodes: int
    workers: int | None
    address: str | None
    out: Path
    saved: list[Path] = field(default_factory=list)
    networks: str = "linear"

    @property
    def cases_per_second(self) -> float:
        return self.cases / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict:
        return {"cases": self.cases, "networks": self.networks, "pes": list(self.pes),
                "simulator": self.simulator,
                "seed": self.seed, "seconds": round(self.seconds, 2),
                "cases_per_second": round(self.cases_per_second, 2),
                "mismatches": [m.to_json() | {"saved": str(path)}
                               for m, path in zip(self.mismatches, self.saved)],
                "mismatch_count": len(self.mismatches),
                "per_engine": {str(pes): figures for pes, figures in self.per_engine.items()},
                "nodes": self.nodes, "workers": self.workers, "address": self.address,
                "out": str(self.out)}


def _split(cases: int, pes: tuple[int, ...]) -> dict[int, list[int]]:
    """Case indices per engine: ``cases`` shared out as evenly as possible."""
    return {n: list(range(cases // len(pes) + (position < cases % len(pes))))
            for position, n in enumerate(pes)}


def verify(cases: int = 1000, *, pes=None, simulator: str = "verilator", seed: int = 0,
           address: str | None = None, workers: int | None = None, out="build/verify",
           batch: int = 100, only: list[int] | None = None, networks: str = "linear",
           progress: Callable[[int, int, int], None] | None = None) -> Campaign:
    """Run ``cases`` random cases, shared out over the engines for ``pes`` (default
    ``DEFAULT_PES``, ``CONV_DEFAULT_PES`` for conv networks), on Ray.

    ``networks``: ``"linear"`` (chains of Linear layers) or ``"conv"`` (convolutional
    networks on conv-mode engines).  ``only``: run just these case indices (with a single PE
    count), e.g. to reproduce a mismatch.  ``batch``: cases per task (one simulator start
    each).  ``progress(done, total, mismatches)`` is called as batches finish.  Mismatches
    are saved under ``out/mismatches/``; the summary is ``out/verify.json``.
    """
    from sparseforge.compiler.config import check_pes
    from sparseforge.sim.runner import SIMULATORS

    from .cluster import ray_session

    if networks not in NETWORKS:
        raise ValueError(f"networks must be one of {', '.join(NETWORKS)}, not {networks!r}")
    if pes is None:
        pes = CONV_DEFAULT_PES if networks == "conv" else DEFAULT_PES
    pes = tuple(check_pes(n, "pes") for n in ((pes,) if isinstance(pes, int) else pes))
    if not pes or len(set(pes)) != len(pes):
        raise ValueError(f"pes must list distinct PE counts, not {list(pes)}")
    if networks == "conv" and any(n & (n - 1) for n in pes):
        raise ValueError(f"conv-mode engines take a power-of-two PE count, not "
                         f"{[n for n in pes if n & (n - 1)]}")
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, not "
                         f"{simulator!r}")
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an integer >= 1, not {batch!r}")
    if only is not None:
        if len(pes) != 1:
            raise ValueError(f"running single cases needs one PE count, not {list(pes)}")
        if any(not isinstance(i, int) or i < 0 for i in only):
            raise ValueError(f"case indices must be integers >= 0, not {list(only)}")
        plan = {pes[0]: sorted(set(only))}
    else:
        if not isinstance(cases, int) or cases < 1:
            raise ValueError(f"cases must be an integer >= 1, not {cases!r}")
        plan = _split(cases, pes)
    total = sum(len(indices) for indices in plan.values())
    # Linear engines are sized for the generator's worst cases (in each task); conv engines
    # for the campaign's own cases, here.
    configs = {n: engine_config(n, networks, [random_case(seed, n, i, networks)
                                              for i in indices] if networks == "conv" else ())
               for n, indices in plan.items()}
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    simulators_dir = out / "simulators"
    started = time.perf_counter()
    # A batch is one simulator start: the stalled (odd) and the unstalled cases of an engine
    # go in batches of their own.  Batches of each engine in turn, so that the first tasks to
    # start build different engines.
    batches = {}
    for n, indices in plan.items():
        halves = [[i for i in indices if i % 2 == parity] for parity in (0, 1)]
        batches[n] = [half[i:i + batch] for half in halves for i in range(0, len(half), batch)]
    order = [(n, chunk) for round_ in range(max(map(len, batches.values())))
             for n in plan if round_ < len(batches[n]) for chunk in [batches[n][round_]]]
    mismatches: list[Mismatch] = []
    per_engine = {n: {"cases": 0, "seconds": 0.0, "simulated_seconds": 0.0} for n in plan}
    nodes: set[str] = set()
    done = 0
    with ray_session(address, workers) as ray:
        task = ray.remote(num_cpus=1, max_retries=3, scheduling_strategy="SPREAD")(_run_batch)
        submitted = {task.remote(n, seed, chunk, simulator, str(simulators_dir), networks,
                                 configs[n]): (n, chunk)
                     for n, chunk in order}
        waiting = list(submitted)
        if progress:
            progress(0, total, 0)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            try:
                outcome = ray.get(ready[0])
            except ray.exceptions.RayError as error:
                # A batch that crashed past Ray's retries: its cases count as failed checks.
                outcome = _crashed(*submitted[ready[0]], seed, networks, error)
            done += outcome["cases"]
            mismatches += outcome["mismatches"]
            if outcome["node"] is not None:
                nodes.add(outcome["node"])
            figures = per_engine[outcome["pes"]]
            figures["cases"] += outcome["cases"]
            figures["seconds"] += outcome["seconds"]
            figures["simulated_seconds"] += outcome["simulated_seconds"]
            if progress:
                progress(done, total, len(mismatches))
    seconds = time.perf_counter() - started
    for figures in per_engine.values():
        figures["seconds"] = round(figures["seconds"], 2)
        figures["simulated_seconds"] = round(figures["simulated_seconds"], 2)
    mismatches.sort(key=lambda m: (m.pes, m.index))
    campaign = Campaign(total, tuple(plan), simulator, seed, seconds, mismatches, per_engine,
                        len(nodes), workers, address, out, networks=networks)
    # This campaign's reproducers only: an earlier campaign's beside a clean verify.json
    # read as mismatches of this one.
    shutil.rmtree(out / "mismatches", ignore_errors=True)
    campaign.saved = [save_reproducer(m, out / "mismatches", configs[m.pes])
                      for m in mismatches]
    (out / "verify.json").write_text(json.dumps(campaign.to_json(), indent=1) + "\n")
    return campaign


def save_reproducer(mismatch: Mismatch, root: Path, config=None) -> Path:
    """``root/<case>/``: the program (``sparseforge sim`` runs it), the inputs as floats the
    program's input format holds exactly, what was expected and what came out, and
    ``case.json`` with the seed and the command that runs the case again."""
    from sparseforge.compiler.program import compile as compile_program
    from sparseforge.compiler.resources import DoesNotFit

    directory = root / mismatch.name
    directory.mkdir(parents=True, exist_ok=True)
    case = random_case(mismatch.seed, mismatch.pes, mismatch.index, mismatch.networks)
    sim_command = None
    config = config or engine_config(mismatch.pes, mismatch.networks, [case])
    try:
        program = compile_program(case.network, config=config)
    except (DoesNotFit, ValueError):
        program = None
    if program is not None:
        program.save(directory / "program")
        scale = 2.0 ** -program.network.layers[0].input_format.frac
        np.save(directory / "inputs.npy", case.inputs.astype(np.float64) * scale)
        sim_command = (f"sparseforge sim {directory / 'program'} --inputs "
                       f"{directory / 'inputs.npy'}")
    for name, array in mismatch.arrays.items():
        # inputs.npy is the float file sparseforge sim reads; the integers keep their own.
        np.save(directory / f"{'inputs_int' if name == 'inputs' else name}.npy",
                np.asarray(array))
    (directory / "case.json").write_text(json.dumps(
        mismatch.to_json() | {"stalls": STALLS if case.stalled else None,
                              "sim_command": sim_command}, indent=1) + "\n")
    return directory
