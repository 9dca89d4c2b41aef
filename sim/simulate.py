"""``sf.simulate``: run a program's inputs on the generated Verilog and check it bit for bit.

Generates the engine for the program's configuration, runs every input under cocotb (Verilator
by default, Icarus when asked and installed), compares the outputs with the golden model, and
puts the engine's own cycle counters beside the cycle model's prediction and the cost model's
limit and bound.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .reference.cycles import LayerTiming, layer_timing, program_timings
from .reference.golden import engine_integers, real_inputs, run_image
from .rtl import RtlCase, check_stalls, run_rtl

__all__ = ["Simulation", "simulate", "predict"]


@dataclass
class Simulation:
    """What the RTL did for a batch of inputs."""
    outputs: np.ndarray                 # batch x classes, the engine's integer outputs
    golden: np.ndarray                  # batch x classes, the golden model's
    cycles: np.ndarray                  # batch x layers, the engine's cycle counters
    predicted: np.ndarray               # batch x layers, the cycle model's prediction
    limit: np.ndarray                   # batch x layers, ceil(sum_k E_k / N)
    bound: np.ndarray                   # batch x layers, max_k E_k
    overhead: np.ndarray                # layers, the cycle model's fixed per-layer overhead
    work: np.ndarray                    # batch x layers, sum_k E_k
    pes: int
    simulator: str
    seconds: float                      # simulating the inputs
    build_seconds: float                # generating Verilog and compiling the simulator
    waves: Path | None = None
    labels: np.ndarray | None = field(default=None, repr=False)
    program: str = ""                   # the program's digest (Program.digest)
    # A regression program's outputs read as values (Program.dequantize); its labels are then
    # targets (batch x outputs) and ``accuracy`` is R².
    values: np.ndarray | None = field(default=None, repr=False)

    @property
    def mismatches(self) -> int:
        return int(np.count_nonzero(self.outputs != self.golden))

    @property
    def total_cycles(self) -> np.ndarray:
        return self.cycles.sum(axis=1)

    @property
    def efficiency(self) -> float:
        """Load-balance efficiency over the whole run: (sum_k E_k / N) / measured cycles."""
        return float(self.work.sum() / self.pes / self.cycles.sum())

    @property
    def model_error(self) -> float:
        """Largest relative difference between predicted and measured layer cycles."""
        return float(np.max(np.abs(self.predicted - self.cycles) / self.cycles))

    @property
    def metric(self) -> str:
        return "r2" if self.values is not None else "accuracy"

    @property
    def accuracy(self) -> float | None:
        """Top-1 accuracy against ``labels``; a regression's R² against its targets."""
        if self.labels is None:
            return None
        from sparseforge.compiler.compress.training import score

        return score(self.values if self.values is not None else self.outputs, self.labels)

    def to_json(self) -> dict:
        return {
            "program": self.program,
            "simulator": self.simulator, "inputs": int(len(self.outputs)),
            "accuracy": self.accuracy, "metric": self.metric, "mismatches": self.mismatches,
            "cycles": {"per_layer_mean": self.cycles.mean(axis=0).round(2).tolist(),
                       "total_mean": float(self.total_cycles.mean()),
                       "predicted_mean": self.predicted.mean(axis=0).round(2).tolist(),
                       "limit_mean": self.limit.mean(axis=0).round(2).tolist(),
                       "bound_mean": self.bound.mean(axis=0).round(2).tolist(),
                       "overhead": self.overhead.tolist()},
            "efficiency": round(self.efficiency, 4),
            "cycle_model_max_error": round(self.model_error, 4),
            "seconds": round(self.seconds, 2),
            "build_seconds": round(self.build_seconds, 2),
            "cycles_per_second": round(float(self.cycles.sum()) / self.seconds, 1),
        }


def predict(program, x_int) -> list[list[LayerTiming]]:
    """The cycle model for every input (rows) and layer (columns)."""
    if program.config.conv:
        return program_timings(program, x_int)
    activations = run_image(program.config, program.image, x_int, return_layers=True)
    counts = [program.column_counts(layer) for layer in range(program.layer_count)]
    layers = program.network.layers
    return [[layer_timing(program.config, counts[layer], activations[layer][b] != 0,
                          layers[layer].out_features,
                          layers[layer - 1].out_features if layer else None)
             for layer in range(program.layer_count)]
            for b in range(len(activations[0]))]


def simulate(program, X, *, labels=None, simulator: str = "verilator", integer: bool = False,
             waves: bool = False, build_dir=None, input_idle: float = 0.0,
             output_stall: float = 0.0) -> Simulation:
    """Run inputs ``X`` (floats, or integers with ``integer=True``) on the generated engine.

    ``labels`` (optional) gives the accuracy; ``waves`` writes an FST (Verilator) or VCD
    (Icarus) into ``build_dir``; ``input_idle`` / ``output_stall`` inject stalls on the streams.
    Without ``build_dir`` the simulator is built in a temporary folder that is removed
    afterwards (kept only for ``waves``, whose file is in it).
    """
    check_stalls(input_idle, output_stall)
    x_int = engine_integers(program, X) if integer else real_inputs(program, X)
    if labels is not None:
        labels = (checked_targets if program.task == "regression" else checked_labels)(
            labels, len(x_int), program.network.layers[-1].out_features)
    golden = run_image(program.config, program.image, x_int)
    timings = predict(program, x_int)
    if build_dir is None and not waves:
        with tempfile.TemporaryDirectory(prefix="sparseforge-") as scratch:
            return _simulate(program, x_int, golden, timings, labels, simulator, waves,
                             Path(scratch), input_idle, output_stall)
    build_dir = Path(build_dir) if build_dir else Path(tempfile.mkdtemp(prefix="sparseforge-"))
    return _simulate(program, x_int, golden, timings, labels, simulator, waves, build_dir,
                     input_idle, output_stall)


def checked_targets(targets, count: int, outputs: int) -> np.ndarray:
    """A regression program's ``targets`` as ``count`` x ``outputs`` float32 values, checked
    before the simulator is built."""
    targets = np.asarray(targets)
    if targets.dtype.kind not in "biuf":
        raise ValueError(f"a regression's targets must be numbers, not {targets.dtype} values")
    if targets.ndim == 1 and outputs == 1:
        targets = targets[:, None]
    if targets.shape != (count, outputs):
        raise ValueError(f"a regression's targets must be {count} x {outputs} (one value per "
                         f"output of each input), not of shape {targets.shape}")
    targets = targets.astype(np.float32)
    if not np.all(np.isfinite(targets)):
        raise ValueError("a regression's targets must be finite numbers")
    return targets


def checked_labels(labels, count: int, classes: int) -> np.ndarray:
    """``labels`` as ``count`` integer classes of the model, checked before the simulator is
    built (a label no output can match would only show as a low accuracy)."""
    labels = np.asarray(labels)
    if labels.dtype.kind == "f" and np.isfinite(labels).all() and (labels == np.round(labels)).all():
        labels = labels.astype(np.int64)          # whole numbers stored as floats (a CSV's)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers (class numbers), not {labels.dtype} values "
                         f"(the program is a classifier's; a regression model is compressed "
                         f"with task='regression')")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]                       # a column of labels: the vector it holds
    if labels.shape != (count,):
        raise ValueError(f"labels must be a vector (or a single column) of one class per "
                         f"input ({count}), not of shape {labels.shape}")
    outside = (labels < 0) | (labels >= classes)
    if outside.any():
        raise ValueError(f"label {int(labels[outside][0])} is not a class of the model's "
                         f"{classes} outputs (0 to {classes - 1})")
    return labels.astype(np.int64)


def _simulate(program, x_int, golden, timings, labels, simulator, waves, build_dir,
              input_idle, output_stall) -> Simulation:
    started = time.perf_counter()
    (result,) = run_rtl(program.config, [RtlCase("program", program.image, x_int, golden)],
                        build_dir=build_dir, simulator=simulator, waves=waves,
                        input_idle=input_idle, output_stall=output_stall)
    wall = time.perf_counter() - started

    def table(attribute):
        return np.array([[getattr(t, attribute) for t in row] for row in timings])

    waves_file = None
    if waves:
        found = sorted(build_dir.rglob("*.fst")) + sorted(build_dir.rglob("*.vcd"))
        waves_file = found[0] if found else None
    return Simulation(
        outputs=program.network_output(result.outputs),
        golden=program.network_output(golden), cycles=result.cycles,
        predicted=table("cycles"), limit=table("limit"), bound=table("bound"),
        overhead=np.array([t.overhead for t in timings[0]]),
        work=np.array([[int(t.work.sum()) for t in row] for row in timings]),
        pes=program.config.pes, simulator=simulator, seconds=result.seconds,
        build_seconds=wall - result.seconds, waves=waves_file,
        labels=labels, program=program.digest(),
        values=(program.dequantize(program.network_output(result.outputs))
                if program.task == "regression" else None))
