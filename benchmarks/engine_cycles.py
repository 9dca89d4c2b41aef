"""Engine cycles on Verilator against the cost model: an EIE-like 1024 x 1024 layer and the
digits MLP, at N = 4 .. 64 PEs; and on the engine's conv mode a convolution layer (16 -> 32
channels, 3x3, on 12x12 maps, max pooling 2) and the digits CNN.  Prints figures and checks
the engine's acceptance; asserts nothing about time.

For every workload and N one engine is generated and verilated, the program image is loaded
over the host bus and the inputs run through it (``sim/rtl.py``); beside the engine's own cycle
counters stand the cost model's yardsticks (DESIGN.md, ``sim/reference/cycles.py``):

* limit ``ceil(sum_k E_k / N)`` and bound ``max_k E_k`` (E_k: entries, padding included, PE k
  processes for the nonzero inputs), the fixed per-layer overhead the cycle model states
  (``fixed_overhead``: descriptor fetch, codebook load, start, write-back, and the pipeline's
  fill and drain), and its prediction;
* acceptance, for every layer of every input: measured within 10% of bound + overhead (15%
  for a convolution, whose bound and overhead sum over its output positions: ``sum_p max_k
  E_k(p)``, and per position COMPUTE, WRITEBACK, STORE and the pipeline fill, plus the
  layer's prologue), and the cycle model within 5% of the measurement;
* load-balance efficiency ``(sum_k E_k / N) / measured`` (DESIGN.md), the same over the
  compute phase alone (measured minus the stated overhead), and its ceiling over ``sum max_k
  E_k`` (no overhead at all);
* MACs per cycle (nonzero weight x nonzero input products; padding is not a MAC);
* simulation speed: clock cycles simulated per wall second of the cocotb test (image load,
  streaming and the inference itself), and the Verilog generation and Verilator build times.

    nice -n 10 .venv/bin/python benchmarks/engine_cycles.py             # ~10 min on 2 cores
    nice -n 10 .venv/bin/python benchmarks/engine_cycles.py --pes 8 16 --workloads eie --json
    nice -n 10 .venv/bin/python benchmarks/engine_cycles.py --model build/model.sfm --images 200
    nice -n 10 .venv/bin/python benchmarks/engine_cycles.py --workloads conv cnn --pes 4 8 16

The digits model is compressed once with ``sparseforge compress --max-acc-bits 16`` into
``build/benchmarks/digits-acc16.sfm`` and reused (``--model`` takes another .sfm).  Each engine's
build directory is removed after its run unless ``--keep DIR`` is given; with ``--keep`` a
second run reuses the compiled simulators, so its build times are not those of a fresh build.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import sparseforge as sf
from sparseforge.compiler.compress.digits import load_digits_split
from sparseforge.compiler.configure import widest_capacity
from sparseforge.compiler.ir import QuantizedLinear, QuantizedNetwork
from sparseforge.compiler.numerics import FixedFormat, ceil_div
from sparseforge.hw.verilog import write_engine_verilog
from sparseforge.sim.reference.cycles import PIPELINE_FILL, simulate_compute
from sparseforge.sim.reference.golden import run_image
from sparseforge.sim.rtl import RtlCase, run_rtl
from sparseforge.sim.simulate import predict

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "build" / "benchmarks" / "digits-acc16.sfm"
CLOCK_NS = 10                    # the cocotb bench's clock period (sim/benches/engine_bench.py)
BOUND_TOLERANCE = 0.10           # measured within 10% of max_k E_k + overhead
CONV_BOUND_TOLERANCE = 0.15      # a convolution: within 15% of its bound + stated overhead
MODEL_TOLERANCE = 0.05           # cycle model within 5% of the measurement
WORKLOADS = ("eie", "digits", "conv", "cnn")
CNN_MODEL = ROOT / "build" / "benchmarks" / "digits-cnn.sfm"


@dataclass
class Workload:
    name: str
    description: str
    model: object                        # CompressedModel or QuantizedNetwork
    inputs: np.ndarray                   # integer activations, batch x in
    labels: np.ndarray | None = None


@dataclass
class Run:
    """One workload on one engine: the engine's counters beside the cycle model."""
    workload: str
    pes: int
    engine: dict
    measured: np.ndarray                 # batch x layers
    predicted: np.ndarray
    limit: np.ndarray
    bound: np.ndarray
    overhead: np.ndarray                 # layers (fixed: depends on the engine and shapes)
    scan_floor: np.ndarray               # layers: compute cycles of a layer with no work
    scan_groups: np.ndarray              # layers: ceil(in / scan_lanes)
    work: np.ndarray                     # batch x layers, sum_k E_k
    macs: np.ndarray                     # batch x layers, nonzero weight x nonzero input
    mismatches: int
    accuracy: float | None
    seconds: dict = field(default_factory=dict)    # compile, verilog, verilator, simulate
    simulated_cycles: int = 0            # every clock cycle of the cocotb test
    conv_layers: np.ndarray | None = None          # layers: which are convolutions

    @property
    def expected(self) -> np.ndarray:
        """bound + stated overhead, per input and layer."""
        return self.bound + self.overhead[None, :]

    @property
    def bound_deviation(self) -> float:
        """Worst |measured - (bound + overhead)| / (bound + overhead) over inputs and layers."""
        return float(np.max(np.abs(self.measured - self.expected) / self.expected))

    @property
    def model_error(self) -> float:
        return float(np.max(np.abs(self.predicted - self.measured) / self.measured))

    @property
    def efficiency(self) -> float:
        return float(self.work.sum() / self.pes / self.measured.sum())

    @property
    def efficiency_ceiling(self) -> float:
        """(sum_k E_k / N) / sum of max_k E_k: the efficiency of an engine that took exactly
        its most loaded PE's entries per layer, with no overhead at all -- the most any
        hardware reaches with this assignment of rows to PEs and these inputs."""
        return float(self.work.sum() / self.pes / self.bound.sum())

    @property
    def compute_efficiency(self) -> float:
        compute = self.measured - self.overhead[None, :]
        return float(self.work.sum() / self.pes / compute.sum())

    @property
    def macs_per_cycle(self) -> float:
        return float(self.macs.sum() / self.measured.sum())

    @property
    def floor(self) -> np.ndarray:
        """max(bound, scan groups) + overhead per input and layer (a layer with no work: its
        scan floor and the sequencer's steps): the bound with the broadcast unit's scan of every
        ``ceil(in / scan_lanes)`` group counted."""
        busy = np.maximum(self.bound, self.scan_groups[None, :]) + self.overhead[None, :]
        idle = self.scan_floor[None, :] + self.overhead[None, :] - PIPELINE_FILL
        return np.where(self.bound > 0, busy, idle)

    @property
    def floor_deviation(self) -> float:
        return float(np.max(np.abs(self.measured - self.floor) / self.floor))

    @property
    def cycles_per_second(self) -> float:
        """Clock cycles per wall second over the engine's whole cocotb test."""
        return self.simulated_cycles / self.seconds["test"]

    @property
    def bound_ok(self) -> bool:
        if self.conv_layers is not None:
            deviation = np.abs(self.measured - self.expected) / self.expected
            tolerance = np.where(self.conv_layers, CONV_BOUND_TOLERANCE, BOUND_TOLERANCE)
            return bool(np.all(deviation <= tolerance[None, :]))
        return self.bound_deviation <= BOUND_TOLERANCE

    @property
    def model_ok(self) -> bool:
        return self.model_error <= MODEL_TOLERANCE

    def to_json(self) -> dict:
        def mean(array):
            return [round(float(v), 2) for v in array.mean(axis=0)]
        return {
            "workload": self.workload, "pes": self.pes, "engine": self.engine,
            "inputs": int(len(self.measured)),
            "cycles_per_layer": mean(self.measured), "predicted_per_layer": mean(self.predicted),
            "limit_per_layer": mean(self.limit), "bound_per_layer": mean(self.bound),
            "overhead_per_layer": self.overhead.tolist(),
            "scan_floor_per_layer": self.scan_floor.tolist(),
            "scan_groups_per_layer": self.scan_groups.tolist(),
            "floor_mean": round(float(self.floor.sum(axis=1).mean()), 2),
            "floor_deviation_max": round(self.floor_deviation, 4),
            "cycles_mean": round(float(self.measured.sum(axis=1).mean()), 2),
            "bound_plus_overhead_mean": round(float(self.expected.sum(axis=1).mean()), 2),
            "bound_deviation_max": round(self.bound_deviation, 4),
            "cycle_model_max_error": round(self.model_error, 4),
            "efficiency": round(self.efficiency, 4),
            "compute_efficiency": round(self.compute_efficiency, 4),
            "efficiency_ceiling": round(self.efficiency_ceiling, 4),
            "macs_per_cycle": round(self.macs_per_cycle, 3),
            "mismatches": self.mismatches, "accuracy": self.accuracy,
            "simulated_cycles": self.simulated_cycles,
            "cycles_per_second": round(self.cycles_per_second, 1),
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
            "accept_bound": self.bound_ok, "accept_model": self.model_ok,
            **({"conv_layers": self.conv_layers.tolist(),
                "bound_deviation_per_layer": [round(float(v), 4) for v in np.max(
                    np.abs(self.measured - self.expected) / self.expected, axis=0)]}
               if self.conv_layers is not None else {}),
        }


# ---- workloads --------------------------------------------------------------------------------

def eie_layer(size: int, density: float, act_density: float, vectors: int,
              seed: int) -> Workload:
    """A random integer ``size x size`` layer: 4-bit codes at ``density``, an 8-bit codebook,
    16-bit biases, ReLU; ``vectors`` 8-bit inputs with ``act_density`` nonzero."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(1, 16, (size, size))
    codes[rng.random((size, size)) >= density] = 0
    codebook = rng.integers(-128, 128, 16)
    codebook[0] = 0
    input_format = FixedFormat(8, 4)
    layer = QuantizedLinear("fc", codes.astype(np.uint8), codebook,
                            rng.integers(-2000, 2000, size), 4, input_format, FixedFormat(8, 6),
                            FixedFormat(8, 2), 16, True)
    magnitude = rng.integers(1, 129, (vectors, size))
    x = np.where(rng.random((vectors, size)) < 0.5, -magnitude, np.minimum(magnitude, 127))
    x[rng.random((vectors, size)) >= act_density] = 0
    measured = np.count_nonzero(codes) / codes.size
    return Workload(f"eie-{size}",
                    f"random {size}x{size} layer, {100 * measured:.1f}% weights, "
                    f"{100 * np.count_nonzero(x) / x.size:.1f}% nonzero inputs, "
                    f"{vectors} vectors", QuantizedNetwork((layer,)), x.astype(np.int64))


def digits_model(path: Path | None, images: int, fresh: bool, say) -> Workload:
    """The digits MLP compressed with ``--max-acc-bits 16`` (the iCE40 setting) and the first
    ``images`` test images."""
    if path is None:
        path = DEFAULT_MODEL
        if fresh or not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            say(f"compressing the digits MLP: sparseforge compress -o {path} --max-acc-bits 16")
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "sparseforge", "compress", "-o",
                                   str(path), "--max-acc-bits", "16", "--json"],
                                  capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError("sparseforge compress failed:\n" + done.stderr[-2000:])
            figures = json.loads(done.stdout)
            say(f"  accuracy float {100 * figures['accuracy_float']:.2f}%, fixed point "
                f"{100 * figures['accuracy_quantized']:.2f}%, sparsity "
                f"{100 * figures['sparsity']:.1f}%")
            say(f"  compressed in {time.perf_counter() - started:.0f} s")
        else:
            say(f"reusing {path} (--fresh-model to compress again)")
    cm = sf.load_compressed(path)
    test = load_digits_split()[2]
    x = cm.network.quantize_input(test.x[:images])
    widths = [cm.network.layers[0].in_features] + [l.out_features for l in cm.network.layers]
    density = sum(np.count_nonzero(l.codes) for l in cm.network.layers) / sum(
        l.codes.size for l in cm.network.layers)
    return Workload("digits", f"digits MLP {'-'.join(map(str, widths))} ({path.name}), "
                    f"{100 * density:.1f}% weights, {len(x)} test images", cm, x,
                    test.y[:images])


def conv_layer(seed: int, images: int) -> Workload:
    """A random integer convolution, 16 -> 32 channels, 3x3, padding 1, on 12x12 maps, ReLU and
    max pooling 2x2, 4-bit codes at 30% density; inputs 50% nonzero."""
    from sparseforge.compiler.conv import ConvGeometry, Pool
    from sparseforge.compiler.ir import QuantizedConv2d

    rng = np.random.default_rng(seed)
    geometry = ConvGeometry(16, 12, 12, 32, 3, 1, 1, Pool(2, 2))
    codes = rng.integers(1, 16, (32, geometry.patch_size))
    codes[rng.random(codes.shape) >= 0.3] = 0
    codebook = rng.integers(-128, 128, 16)
    codebook[0] = 0
    layer = QuantizedConv2d("conv", codes.astype(np.uint8), codebook,
                            rng.integers(-2000, 2000, 32), 4, FixedFormat(8, 4),
                            FixedFormat(8, 8), FixedFormat(8, 2), 16, True, geometry=geometry)
    x = rng.integers(-128, 128, (images, geometry.in_size))
    x[rng.random(x.shape) >= 0.5] = 0
    return Workload("conv", "convolution 16->32 3x3 pad 1 on 12x12, max pool 2, 30% weights, "
                    f"50% nonzero inputs, {images} inputs", QuantizedNetwork((layer,)),
                    x.astype(np.int64))


def digits_cnn(path: Path, images: int, fresh: bool, say) -> Workload:
    """The digits CNN as ``sparseforge demo --model cnn`` compresses it (iCE40 accumulators),
    and the first ``images`` test images."""
    from sparseforge.commands.demo import CNN_SPARSITY
    from sparseforge.compiler.compress.api import CompressionConfig
    from sparseforge.compiler.compress.digits import DIGITS_SHAPE, train_float_cnn

    train, val, test = load_digits_split()
    if fresh or not path.exists():
        say(f"training and compressing the digits CNN into {path}")
        model = train_float_cnn()
        cm = sf.compress(model, (train.x.reshape(-1, *DIGITS_SHAPE), train.y),
                         (val.x.reshape(-1, *DIGITS_SHAPE), val.y),
                         test=(test.x.reshape(-1, *DIGITS_SHAPE), test.y),
                         config=CompressionConfig(max_acc_bits=16,
                                                  per_layer_sparsity=CNN_SPARSITY))
        path.parent.mkdir(parents=True, exist_ok=True)
        cm.save(path)
    else:
        say(f"reusing {path} (--fresh-model to compress again)")
    cm = sf.load_compressed(path)
    x = cm.network.quantize_input(test.x[:images])
    return Workload("cnn", f"digits CNN ({path.name}), {len(x)} test images", cm, x,
                    test.y[:images])


# ---- one run ----------------------------------------------------------------------------------

def workload_layers(workload: Workload):
    return getattr(workload.model, "network", workload.model).layers


def run_engine(workloads: list[Workload], pes: int, work_dir: Path, say) -> list[Run]:
    """Generate and verilate one engine of ``pes`` PEs that runs every workload (each
    capacity field the largest any needs; scan lanes, queues and write-back as derived for
    ``pes``), load each workload's image over the host bus and run its inputs."""
    tag = escape(f"[{'+'.join(w.name for w in workloads)} N={pes}]")
    started = time.perf_counter()
    programs = [sf.compile(w.model, pes=pes) for w in workloads]
    config = programs[0].config
    if len(programs) > 1:
        config = dataclasses.replace(config, **widest_capacity(p.config for p in programs))
        programs = [sf.compile(w.model, config=config) for w in workloads]
    compile_seconds = time.perf_counter() - started
    engine = {"scan_lanes": config.scan_lanes, "fifo_depth": config.fifo_depth,
              "writeback_lanes": config.writeback_lanes, "acc_bits": config.acc_bits,
              "entry_depth": config.entry_depth, "max_features": config.max_features,
              "shared_by": [w.name for w in workloads]}
    plans = []
    for workload, program in zip(workloads, programs):
        if config.conv:
            plans.append(_conv_plan(config, program, workload.inputs))
            continue
        x = program.taken_inputs(workload.inputs)       # the inputs a weight reads
        golden = run_image(config, program.image, x)
        timings = predict(program, x)
        activations = run_image(config, program.image, x, return_layers=True)
        # Real MACs: each nonzero input times the nonzero weights of its column.
        column_nnz = [np.count_nonzero(layer.codes, axis=0) for layer in program.network.layers]
        macs = np.array([[int(column_nnz[l][activations[l][b] != 0].sum())
                          for l in range(program.layer_count)] for b in range(len(x))])
        empty = [simulate_compute(config, np.zeros((pes, layer.in_features), dtype=np.int64),
                                  np.zeros(layer.in_features, dtype=bool))
                 for layer in program.network.layers]
        plans.append((golden, timings, macs, np.array(empty)))
    inputs = [p.engine_input(w.inputs) if config.conv else p.taken_inputs(w.inputs)
              for w, p in zip(workloads, programs)]
    say(f"{tag} compiled in {compile_seconds:.1f} s (scan lanes {config.scan_lanes}, queues "
        f"{config.fifo_depth}, {config.entry_depth} entries per PE); the cycle model predicts "
        + ", ".join(f"{w.name} {np.mean([sum(t.cycles for t in row) for row in plan[1]]):.0f}"
                    for w, plan in zip(workloads, plans)) + " cycles per input")

    started = time.perf_counter()
    verilog = write_engine_verilog(config, work_dir / "engine.v")
    verilog_seconds = time.perf_counter() - started
    say(f"{tag} Verilog generated in {verilog_seconds:.1f} s "
        f"({verilog.stat().st_size / 1e6:.1f} MB); verilating, then running "
        + ", ".join(f"{len(w.inputs)} {w.name} inputs" for w in workloads))
    started = time.perf_counter()
    results = run_rtl(config, [RtlCase(w.name, p.image, x, plan[0])
                               for w, p, x, plan in zip(workloads, programs, inputs, plans)],
                      build_dir=work_dir, verilog_path=verilog)
    wall = time.perf_counter() - started
    test_seconds, sim_ns = _cocotb_test_time(work_dir)
    test_seconds = test_seconds or sum(r.seconds for r in results)
    seconds = {"compile": compile_seconds, "verilog": verilog_seconds,
               "verilator": wall - test_seconds, "test": test_seconds}
    say(f"{tag} Verilator build {seconds['verilator']:.0f} s, simulation {test_seconds:.1f} s "
        f"({sim_ns / CLOCK_NS / test_seconds / 1e3:.0f} k clock cycles per second)")

    runs = []
    for workload, (golden, timings, macs, empty), result in zip(workloads, plans, results):
        def table(attribute):
            return np.array([[getattr(t, attribute) for t in row] for row in timings])

        from sparseforge.compiler.ir import QuantizedConv2d

        layers = workload_layers(workload)
        engine_layers = programs[workloads.index(workload)].engine_layers
        outcome = Run(
            workload=workload.name, pes=pes, engine=engine, measured=result.cycles,
            predicted=table("cycles"), limit=table("limit"), bound=table("bound"),
            overhead=np.array([t.overhead for t in timings[0]]), scan_floor=empty,
            scan_groups=np.array([ceil_div(layer.in_features, config.scan_lanes)
                                  for layer in engine_layers]),
            conv_layers=(np.array([isinstance(layer, QuantizedConv2d) for layer in layers])
                         if config.conv else None),
            work=np.array([[int(t.work.sum()) for t in row] for row in timings]), macs=macs,
            mismatches=result.mismatches,
            accuracy=(None if workload.labels is None
                      else float(np.mean(programs[workloads.index(workload)].network_output(
                          result.outputs).argmax(axis=1) == workload.labels))),
            seconds={**seconds, "simulate": result.seconds},
            simulated_cycles=int(sim_ns // CLOCK_NS))
        say(f"{tag} {workload.name}: {outcome.measured.sum(axis=1).mean():.0f} cycles per input "
            f"(model {outcome.predicted.sum(axis=1).mean():.0f}), {outcome.mismatches} "
            f"mismatches, {result.seconds:.1f} s in the simulator")
        runs.append(outcome)
    return runs


def _conv_plan(config, program, network_inputs):
    """Golden outputs, timings, MACs and each layer's compute cycles with no work, in conv mode
    (a layer's figures summed over its positions)."""
    from sparseforge.sim.reference.cycles import program_timings
    from sparseforge.sim.reference.golden import run_conv_image

    x = program.engine_input(network_inputs)
    golden = run_image(config, program.image, x)
    timings = predict(program, x)
    _, patches = run_conv_image(config, program.image, x, return_patches=True)
    # Real MACs: each offered activation times the nonzero weights of its column.
    column_nnz = [np.count_nonzero(layer.codes, axis=0) for layer in program.engine_layers]
    macs = np.array([[int((patches[index][b] * column_nnz[index][None, :]).sum())
                      for index in range(program.layer_count)] for b in range(len(x))])
    empty = np.array([t.compute for t in program_timings(
        program, np.zeros((1, program.in_features), dtype=np.int64))[0]])
    return golden, timings, macs, empty


def _cocotb_test_time(work_dir: Path) -> tuple[float | None, float]:
    """(wall seconds, simulated ns) of the cocotb test, from its results.xml."""
    found = sorted(work_dir.glob("verilator_*/results.xml"))
    if not found:
        return None, 0.0
    case = ElementTree.parse(found[-1]).getroot().find(".//testcase")
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    return float(case.get("time")), float(properties.get("sim_time_duration", 0.0))


# ---- report -----------------------------------------------------------------------------------

def render(runs: list[Run], console: Console) -> None:
    summary = Table(title="engine cycles on Verilator vs the cost model (means per input, all "
                          "layers summed)", title_justify="left")
    for column in ("workload", "N", "cycles", "limit", "bound", "ovh", "bound+ovh",
                   "dev", "dev fl", "model", "err", "eff", "eff cmp", "eff max", "MAC/cyc",
                   "ok",
                   "kcyc/s", "build s", "sim s", "accept"):
        summary.add_column(column, justify="left" if column == "workload" else "right",
                           no_wrap=True)
    for r in runs:
        summary.add_row(
            r.workload, str(r.pes), _n(r.measured), _n(r.limit), _n(r.bound),
            f"{int(r.overhead.sum())}",
            _n(r.expected), f"{100 * r.bound_deviation:.1f}%",
            f"{100 * r.floor_deviation:.1f}%", _n(r.predicted),
            f"{100 * r.model_error:.1f}%", f"{100 * r.efficiency:.0f}%",
            f"{100 * r.compute_efficiency:.0f}%", f"{100 * r.efficiency_ceiling:.0f}%",
            f"{r.macs_per_cycle:.2f}",
            ("yes" if r.mismatches == 0 else f"[red]{r.mismatches} diff[/red]")
            + (f" {100 * r.accuracy:.0f}%" if r.accuracy is not None else ""),
            f"{r.cycles_per_second / 1e3:.0f}", f"{r.seconds['verilator']:.0f}",
            f"{r.seconds['simulate']:.1f}",
            ("[green]pass[/green]" if r.bound_ok and r.model_ok
             else "[red]FAIL[/red] " + ",".join(
                 name for name, ok in (("bound", r.bound_ok), ("model", r.model_ok)) if not ok)))
    console.print(summary)
    console.print(
        "cycles: the engine's counters; limit = ceil(sum_k E_k / N); bound = max_k E_k; ovh = the "
        "cycle model's fixed per-layer overhead (fetch, codebook load, start, write-back, "
        f"and the pipeline's fill and drain, {PIPELINE_FILL} cycles); "
        "dev = worst |cycles - (bound+ovh)| / (bound+ovh) over layers and inputs "
        f"(accept <= {100 * BOUND_TOLERANCE:.0f}%); dev fl = the same deviation from "
        "max(bound, ceil(in / scan lanes)) + ovh, i.e. with the broadcast unit's scan of every "
        "input group counted -- not an acceptance, a diagnosis; model = the cycle model's "
        "prediction, err = its "
        f"worst error per layer (accept <= {100 * MODEL_TOLERANCE:.0f}%); eff = (sum_k E_k / "
        "N) / cycles, eff cmp = the same over cycles - ovh, eff max = the same over sum of "
        "bound (no overhead, the most loaded PE's entries only: the ceiling of this row "
        "assignment for these inputs); MAC/cyc = nonzero-weight x "
        "nonzero-input products per cycle; ok = outputs equal the golden model (and top-1 "
        "accuracy); kcyc/s = clock cycles simulated per wall second over the engine's cocotb "
        "test (image loads included); build s = Verilog generation excluded, Verilator build "
        "and cocotb start; sim s = the workload's image load and inputs.")
    engines = sorted({(r.pes, r.engine["scan_lanes"], r.engine["fifo_depth"],
                       r.engine["writeback_lanes"]) for r in runs})
    console.print("engines (N: scan lanes / queue depth / write-back lanes, 0 = one requantizer "
                  "per PE): " + ", ".join(f"{n}: {a}/{b}/{c}" for n, a, b, c in engines))
    shared = {tuple(r.engine["shared_by"]) for r in runs if len(r.engine["shared_by"]) > 1}
    if shared:
        console.print("one engine per N ran " + ", ".join(" and ".join(s) for s in shared)
                      + " (capacities of both; build s and kcyc/s are that engine's)")
    for r in runs:
        if len(r.overhead) > 1:
            console.print(f"{r.workload} N={r.pes}: per layer cycles {_per_layer(r.measured)}, "
                          f"bound {_per_layer(r.bound)}, scan groups {r.scan_groups.tolist()}, "
                          f"overhead {r.overhead.tolist()}, model {_per_layer(r.predicted)}")


def _n(array: np.ndarray) -> str:
    return f"{array.sum(axis=1).mean():.0f}" if array.ndim == 2 else f"{array.sum():.0f}"


def _per_layer(array: np.ndarray) -> list[float]:
    return [round(float(v), 1) for v in array.mean(axis=0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pes", type=int, nargs="+", default=[4, 8, 16, 32, 64],
                        help="numbers of PEs (default 4 8 16 32 64)")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--size", type=int, default=1024, help="EIE layer size (default 1024)")
    parser.add_argument("--density", type=float, default=0.09,
                        help="EIE weight density (default 0.09)")
    parser.add_argument("--act-density", type=float, default=0.35,
                        help="EIE input activation density (default 0.35)")
    parser.add_argument("--vectors", type=int, default=4, help="EIE input vectors (default 4)")
    parser.add_argument("--images", type=int, default=50,
                        help="digits test images (default 50)")
    parser.add_argument("--model", type=Path, help="a .sfm to use instead of the digits model")
    parser.add_argument("--fresh-model", action="store_true",
                        help="compress the digits model again even if it is cached")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep build directories under DIR (and reuse simulators there)")
    parser.add_argument("--separate", action="store_true",
                        help="build each workload its own engine (default: one engine per N, "
                             "sized for both, each model loaded over the bus)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args()

    console = Console(stderr=args.json)
    if not console.is_terminal:       # logs and pipes: wide enough for the summary table
        console = Console(width=200, stderr=args.json)

    def say(message: str) -> None:
        console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}", highlight=False)

    workloads = []
    if "eie" in args.workloads:
        workloads.append(eie_layer(args.size, args.density, args.act_density, args.vectors,
                                   args.seed))
    if "digits" in args.workloads:
        workloads.append(digits_model(args.model, args.images, args.fresh_model, say))
    convolutions = []
    if "conv" in args.workloads:
        convolutions.append(conv_layer(args.seed, args.vectors))
    if "cnn" in args.workloads:
        convolutions.append(digits_cnn(CNN_MODEL, args.images, args.fresh_model, say))
    for w in workloads + convolutions:
        say(f"{w.name}: {w.description}")

    # One engine per N serves every workload (loaded over the bus, as the host changes
    # models), one for the Linear ones and one in conv mode for the convolutional ones;
    # --separate builds each workload's own engine (what sf.compile derives for it).
    groups = []
    for kind in (workloads, convolutions):
        if kind:
            groups += [[w] for w in kind] if args.separate or len(kind) == 1 else [kind]
    workloads = workloads + convolutions
    runs, failures = [], []
    started = time.perf_counter()
    for pes in args.pes:
        for group in groups:
            name = "+".join(w.name for w in group)
            if args.keep:
                work_dir = args.keep / f"{name}-N{pes}"
                work_dir.mkdir(parents=True, exist_ok=True)
            else:
                work_dir = Path(tempfile.mkdtemp(prefix=f"engine-cycles-{name}-N{pes}-"))
            try:
                runs.extend(run_engine(group, pes, work_dir, say))
            except Exception as error:            # report it, go on with the other engines
                failures.append({"workload": name, "pes": pes, "error": str(error)})
                tag = escape(f"[{name} N={pes}]")
                say(f"[red]{tag} failed:[/red] {escape(str(error))}")
            finally:
                if not args.keep:
                    shutil.rmtree(work_dir, ignore_errors=True)
    runs.sort(key=lambda r: (WORKLOADS.index(r.workload.split("-")[0]), r.pes))
    total = time.perf_counter() - started
    say(f"all runs in {total / 60:.1f} min")

    accepted = all(r.bound_ok and r.model_ok and r.mismatches == 0 for r in runs)
    if args.json:
        print(json.dumps({"workloads": {w.name: w.description for w in workloads},
                          "runs": [r.to_json() for r in runs], "failures": failures,
                          "accept": accepted and not failures,
                          "tolerances": {"bound": BOUND_TOLERANCE,
                                         "conv_bound": CONV_BOUND_TOLERANCE,
                                         "model": MODEL_TOLERANCE},
                          "seconds": round(total, 1)}, indent=1))
    console.print()
    render(runs, console)
    for failure in failures:
        console.print(f"[red]failed[/red] {failure['workload']} N={failure['pes']}: "
                      f"{escape(failure['error'])}")
    console.print(f"acceptance (bit-exact, within {100 * BOUND_TOLERANCE:.0f}% of bound + "
                  f"overhead ({100 * CONV_BOUND_TOLERANCE:.0f}% for a convolution), cycle "
                  f"model within {100 * MODEL_TOLERANCE:.0f}%): "
                  + ("[green]met[/green]" if accepted and not failures else "[red]not met[/red]"))


if __name__ == "__main__":
    main()
