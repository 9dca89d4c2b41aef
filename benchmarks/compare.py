"""The engine beside what a user would run instead, on the same inputs (the digits test split):
PyTorch on the CPU (the float model and the compressed network), NumPy dense and scipy.sparse
CSR matvecs of the compressed network, and the engine on iCEBreaker (iCE40UP5K) and ULX3S-85F
(ECP5): latency per inference, inferences per second and, where a power figure is known,
inferences per joule; plus a check that every implementation of the compressed network makes
the golden model's predictions (``sf.reference``).

    .venv/bin/python benchmarks/compare.py                     # build/demo/{digits.sfm,program}
    .venv/bin/python benchmarks/compare.py --model M.sfm --program DIR --no-build
    .venv/bin/python benchmarks/compare.py --ulx3s-pes 8,32 --build-json icebreaker=B.json
    .venv/bin/python benchmarks/compare.py --power cpu=15 --json

Where the engine's figures come from, per target (board, PEs):

* cycles per inference: measured on the RTL, from ``DIR/sim.json`` (``sparseforge sim DIR
  --json``) or else from an ``sf.simulate`` run here on the first ``--rtl`` images (cached in
  ``--out``); with ``--rtl 0`` the cycle model (``sparseforge.sim.simulate.predict``, exact
  against the RTL) over the whole split.  The table says which.  Cycles are the engine's
  per-layer counters: compute only, not the UART transfer of inputs and outputs.
* clock: nextpnr's Fmax from ``build.json`` (``--build-json BOARD=PATH``, else
  ``DIR/bitstream/build.json``, else a cached build in ``--out``, else ``sf.build`` here unless
  ``--no-build``).  ``--clock pll`` uses the frequency the bitstream's PLL runs at instead.

Each ``--program`` (default: the demo's, an iCEBreaker program) runs on the board it was compiled
for; the ULX3S targets are the same compressed model compiled here with ``board="ulx3s-85f"`` and
``--ulx3s-pes`` PEs (one ECP5-85F build takes minutes; builds are cached in ``--out``, and a
failed build is remembered there until ``--rebuild-failed``).  CPU timings
are medians of ``time.perf_counter`` over repeated calls, on inputs already on the engine's
8-bit input grid, with ``--threads`` torch / BLAS threads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse
import torch
from rich import box
from rich.console import Console
from rich.table import Table

import sparseforge as sf
from sparseforge.boards.registry import board as board_named
from sparseforge.compiler.compress.digits import digits_mlp, load_digits_split, train_float

BOARDS = ("icebreaker", "ulx3s-85f")

# Power figures, watts as a function of the clock in MHz.  None of these parts publishes a
# "typical power" for an arbitrary design: the datasheets (iCE40 UltraPlus FPGA-DS-02008, ECP5
# FPGA-DS-02012) give static supply currents and leave dynamic power to Lattice's Power
# Calculator, which needs the vendor tools.  So the only default is a measured *floor* for the
# UP5K, and inferences per joule on it is an upper bound; pass --power NAME=WATTS for others.
# tinyvision-ai-inc/ice40_power (README, Joulescope JS110 on Lattice's iCE40 UltraPlus breakout
# board): an almost empty design clocked from the PLL (12 MHz in) draws on the 1.219 V rails
# core 1.419 / 2.029 / 2.573 mA and PLL 0.139 / 0.139 / 0.104 mA at 16 / 32 / 48 MHz.
_UP5K_FLOOR_MHZ = (16.0, 32.0, 48.0)
_UP5K_FLOOR_MA = (1.419 + 0.1386, 2.029 + 0.1389, 2.573 + 0.1036)
_UP5K_SOURCE = ("floor measured on a near-empty UP5K with its PLL at this clock, core + PLL "
                "rails at 1.219 V (github.com/tinyvision-ai-inc/ice40_power); the engine's "
                "logic, RAMs and DSPs draw more, so inferences/J is an upper bound")


@dataclass
class Power:
    watts: float | None
    kind: str                     # "floor", "given" or "unknown"
    source: str

    @property
    def mark(self) -> str:
        return "≥" if self.kind == "floor" else ""


def part_power(name: str, mhz: float | None, given: dict[str, float]) -> Power:
    """The power figure for ``name`` (``cpu`` or a board) at ``mhz``."""
    if name in given:
        return Power(given[name], "given", f"--power {name}={given[name]:g} (user's figure)")
    if name == "icebreaker":
        if not mhz:
            return Power(None, "floor", _UP5K_SOURCE + " (no clock: not built)")
        # Piecewise linear through the three points, the end segments extended; never below
        # the 0.1 mA the same board draws with its clock stopped.
        segment = 0 if mhz < _UP5K_FLOOR_MHZ[1] else 1
        (f0, f1), (i0, i1) = (_UP5K_FLOOR_MHZ[segment:segment + 2],
                              _UP5K_FLOOR_MA[segment:segment + 2])
        milliamps = max(0.1, i0 + (i1 - i0) * (mhz - f0) / (f1 - f0))
        return Power(1.219e-3 * milliamps, "floor", _UP5K_SOURCE)
    what = {"cpu": f"CPU ({cpu_name()}, a VM's share of a server part: no TDP to apportion)",
            "ulx3s-85f": "ECP5 LFE5U-85F (datasheet: static current only; dynamic power needs "
                         "Lattice's Power Calculator)"}.get(name, name)
    return Power(None, "unknown", f"{what}: unknown; pass --power {name}=WATTS")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---- the CPU implementations ------------------------------------------------------------------

class Requantize(torch.nn.Module):
    """The engine's write-back in float: round half up to the output grid, saturate, ReLU."""

    def __init__(self, fmt, relu: bool):
        super().__init__()
        self.scale = 2.0 ** fmt.frac
        self.lo, self.hi = float(0 if relu else fmt.min), float(fmt.max)

    def forward(self, x):
        return torch.floor(x * self.scale + 0.5).clamp_(self.lo, self.hi) / self.scale


def dequantized_layers(network):
    """(weight out x in, bias, output format, relu) per layer, float32 and exact: every value
    is an integer times a power of two, and every sum fits float32's 24-bit mantissa because
    the engine's accumulators are at most 24 bits wide (checked)."""
    layers = []
    for layer in network.layers:
        scale = 2.0 ** -layer.weight_format.frac
        bias_scale = 2.0 ** -layer.accumulator_frac
        layers.append((layer.weights.astype(np.float32) * np.float32(scale),
                       (layer.bias * bias_scale).astype(np.float32), layer.output_format,
                       layer.relu))
    return layers


def torch_compressed(layers) -> torch.nn.Sequential:
    modules = []
    for weight, bias, fmt, relu in layers:
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(weight))
            linear.bias.copy_(torch.from_numpy(bias))
        modules += [linear, Requantize(fmt, relu)]
    return torch.nn.Sequential(*modules).eval()


def requantize_np(x: np.ndarray, fmt, relu: bool) -> np.ndarray:
    scale = np.float32(2.0 ** fmt.frac)
    q = np.floor(x * scale + np.float32(0.5))
    np.clip(q, 0 if relu else fmt.min, fmt.max, out=q)
    return q / scale


def numpy_dense(layers):
    prepared = [(np.ascontiguousarray(w.T), b, fmt, relu) for w, b, fmt, relu in layers]

    def run(x: np.ndarray) -> np.ndarray:
        for weight_t, bias, fmt, relu in prepared:
            x = requantize_np(x @ weight_t + bias, fmt, relu)
        return x
    return run


def scipy_csr(layers):
    prepared = [(scipy.sparse.csr_matrix(w), b, fmt, relu) for w, b, fmt, relu in layers]

    def run(x: np.ndarray) -> np.ndarray:
        single = x.ndim == 1
        x = x if single else x.T
        for matrix, bias, fmt, relu in prepared:
            x = requantize_np(matrix @ x + (bias if single else bias[:, None]), fmt, relu)
        return x if single else x.T
    return run


def median_seconds(call, inputs: list, repeats: int, warmup: int) -> float:
    """Median wall time of ``call(inputs[i % len(inputs)])`` over ``repeats`` calls."""
    for index in range(warmup):
        call(inputs[index % len(inputs)])
    times = []
    for index in range(repeats):
        x = inputs[index % len(inputs)]
        start = time.perf_counter()
        call(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---- the engine targets -----------------------------------------------------------------------

@dataclass
class Target:
    board: str
    pes: int
    program: object
    directory: Path | None            # the user's program directory, or None
    cache: Path                       # where builds and simulations made here go
    build: dict | None = None
    build_source: str = ""
    build_error: str | None = None
    cycles: float | None = None       # mean cycles per inference
    cycles_source: str = ""
    rtl_inputs: int = 0
    rtl_mismatches: int | None = None
    model_cycles: float | None = None  # the cycle model's mean over the whole split
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.board}, {self.pes} PEs"


def fingerprint(program) -> str:
    digest = hashlib.sha256(json.dumps(program.config.to_json(), sort_keys=True).encode())
    digest.update(np.ascontiguousarray(program.bus_writes()).tobytes())
    return digest.hexdigest()[:10]


def find_build(target: Target, given: dict[str, Path]) -> None:
    candidates = []
    key = next((k for k in (f"{target.board}:{target.pes}", target.board) if k in given), None)
    if key is not None:
        candidates.append((given.pop(key), "--build-json"))
    if target.directory is not None:
        candidates.append((target.directory / "bitstream" / "build.json", "program dir"))
    candidates.append((target.cache / "bitstream" / "build.json", "cached"))
    for path, source in candidates:
        if path.is_file():
            build = json.loads(path.read_text())
            if build.get("board") not in (None, target.board):
                target.notes.append(f"{path} is a build for {build.get('board')}, not "
                                    f"{target.board}: ignored")
                continue
            target.build, target.build_source = build, f"{source}: {path}"
            if source == "--build-json" and target.directory is None:
                target.notes.append(f"{path}: taken to be a build of the program compiled here "
                                    f"({target.pes} PEs); not checked")
            elif (target.directory is not None and source != "cached" and path.stat().st_mtime
                    < (target.directory / "program.json").stat().st_mtime):
                target.notes.append(f"{path} is older than the program it should be a build of")
            return
    failed = target.cache / "bitstream" / "build-failed.json"
    if failed.is_file():
        target.build_error = failure_reason(json.loads(failed.read_text())["message"])


def failure_reason(message: str) -> str:
    """A failed build in a few words: the over-full resources, else the first ERROR line."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    over = [" ".join(line.removeprefix("Info:").split()) for line in lines
            if line.startswith("Info:") and "/" in line and line.endswith("%")
            and line.rstrip("%").split()[-1].isdigit() and int(line.rstrip("%").split()[-1]) > 100]
    if over:
        return "does not fit: " + ", ".join(over)
    reason = next((line for line in lines if line.startswith("ERROR")), lines[0] if lines else "?")
    return reason[:120]


def run_build(target: Target, console: Console) -> None:
    from sparseforge.boards.bitstream import BuildError
    from sparseforge.hw.toolchain import ToolNotFoundError

    directory = target.cache / "bitstream"
    started = time.perf_counter()
    with console.status(f"building {target.name} (ECP5 builds take minutes)...") as status:
        try:
            result = sf.build(target.program, target.board, build_dir=directory,
                              progress=lambda text: status.update(f"{target.name}: {text}"))
        except (BuildError, ToolNotFoundError, ValueError) as error:
            target.build_error = failure_reason(str(error))
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "build-failed.json").write_text(json.dumps(
                {"error": target.build_error, "message": str(error)}, indent=2))
            console.print(f"[red]{target.name}: build failed[/red]: {target.build_error}")
            return
    target.build, target.build_source = result.to_json(), f"built here: {directory}/build.json"
    console.print(f"{target.name}: built in {time.perf_counter() - started:.0f} s, Fmax "
                  f"{result.fmax_mhz:.1f} MHz")


def find_cycles(target: Target, x: np.ndarray, labels: np.ndarray, golden: np.ndarray,
                rtl: int, console: Console) -> None:
    from sparseforge.sim.simulate import predict

    x_int = target.program.quantize_input(x)
    timings = predict(target.program, x_int)
    model = np.array([[t.cycles for t in row] for row in timings]).sum(axis=1)
    target.model_cycles = float(model.mean())
    paths = ([target.directory / "sim.json"] if target.directory is not None else []) \
        + [target.cache / "sim.json"]
    for path in paths:
        if path.is_file():
            sim = json.loads(path.read_text())
            break
    else:
        sim = None
        if rtl > 0:
            count = min(rtl, len(x))
            with console.status(f"simulating {count} inputs on the RTL of {target.name}..."):
                result = sf.simulate(target.program, x[:count], labels=labels[:count],
                                     build_dir=target.cache / "sim")
            sim = result.to_json()
            path = target.cache / "sim.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(sim, indent=2))
    if sim is None:
        target.cycles, target.cycles_source = target.model_cycles, f"cycle model, {len(x)} inputs"
        return
    count = int(sim["inputs"])
    target.cycles = float(sim["cycles"]["total_mean"])
    target.rtl_inputs, target.rtl_mismatches = count, int(sim["mismatches"])
    target.cycles_source = f"RTL ({sim.get('simulator', '?')}), {count} inputs"
    expected = float(model[:count].mean())
    if count > len(x) or abs(expected - target.cycles) > 0.01:
        target.notes.append(f"{path}: {target.cycles:.2f} mean cycles on {count} inputs, the "
                            f"cycle model says {expected:.2f} for the first {count} test images: "
                            f"not a run of this program on this split?")
    accuracy = sim.get("accuracy")
    if accuracy is not None and count <= len(x):
        golden_accuracy = float(np.mean(golden[:count].argmax(axis=1) == labels[:count]))
        if abs(accuracy - golden_accuracy) > 1e-9:
            target.notes.append(f"{path}: accuracy {accuracy:.4f}, golden model "
                                f"{golden_accuracy:.4f} on the same images")


def clock_of(target: Target, clock: str) -> tuple[float | None, float | None]:
    """(MHz used for the latency, the other figure) from the target's build."""
    if target.build is None:
        return None, None
    fmax, pll = target.build.get("fmax_mhz"), target.build.get("target_mhz")
    return (fmax, pll) if clock == "fmax" else (pll, fmax)


# ---- main -------------------------------------------------------------------------------------

def parse_pairs(pairs: list[str], convert, flag: str) -> dict:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"{flag} takes NAME=VALUE, not {pair!r}")
        out[name.strip()] = convert(value)
    return out


def load_float_model(path: Path | None, compressed):
    """The float model: a state_dict of the digits MLP, or the default retrained with the
    compressed model's seed (training is seeded and deterministic)."""
    hidden = compressed.network.layers[0].out_features
    if path is not None:
        model = digits_mlp(hidden)
        model.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
        return model.eval(), f"state_dict {path}"
    shapes = [layer.codes.shape for layer in compressed.network.layers]
    if shapes != [(hidden, 64), (10, hidden)]:
        return None, "not the digits MLP: pass --float-model"
    seed = int(compressed.provenance.get("config", {}).get("seed", 0))
    return train_float(hidden=hidden, seed=seed).eval(), f"retrained (train_float, seed {seed})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("build/demo/digits.sfm"),
                        help="the compressed model (default: the demo's)")
    parser.add_argument("--program", type=Path, action="append",
                        help="a compiled program, run on the board it was compiled for; may be "
                             "repeated (default: build/demo/program; compiled here for "
                             "icebreaker with 8 PEs when missing)")
    parser.add_argument("--ulx3s-pes", default="8",
                        help="comma-separated PE counts to compile for ULX3S-85F ('' for none)")
    parser.add_argument("--build-json", action="append", default=[], metavar="BOARD[:PES]=PATH",
                        help="a build.json (from `sparseforge build`) for the board's target "
                             "(with :PES, for that PE count)")
    parser.add_argument("--no-build", action="store_true",
                        help="never run Yosys/nextpnr; targets without a build say 'not built'")
    parser.add_argument("--rebuild-failed", action="store_true",
                        help="retry builds that failed on an earlier run")
    parser.add_argument("--rtl", type=int, default=450, metavar="N",
                        help="without a sim.json, simulate the first N images on the RTL "
                             "(default: all 450; 0: the cycle model)")
    parser.add_argument("--clock", choices=("fmax", "pll"), default="fmax",
                        help="latency at nextpnr's Fmax (default) or at the bitstream's PLL clock")
    parser.add_argument("--power", action="append", default=[], metavar="NAME=WATTS",
                        help="power figure for cpu, icebreaker or ulx3s-85f")
    parser.add_argument("--float-model", type=Path, help="state_dict of the float digits MLP")
    parser.add_argument("--no-float", action="store_true", help="leave out the float model")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    parser.add_argument("--repeats", type=int, default=2000,
                        help="timed batch-1 calls (batch 256: repeats/40)")
    parser.add_argument("--out", type=Path, default=Path("build/compare"),
                        help="cache for programs, builds and simulations made here")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()

    console = Console(stderr=args.json)
    if not console.is_terminal:
        console = Console(stderr=args.json, width=160)
    build_json = parse_pairs(args.build_json, Path, "--build-json")
    given_power = parse_pairs(args.power, float, "--power")
    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits
    threadpool_limits(args.threads)

    if not args.model.is_file():
        console.print(f"[red]no compressed model at {args.model}[/red]: run `make demo` or "
                      f"`sparseforge compress -o {args.model} --max-acc-bits 16`, or pass --model")
        return 2
    compressed = sf.load_compressed(args.model)
    _, _, test = load_digits_split()
    x, labels = test.x, test.y

    # ---- the engine targets: compile, find or make builds and cycles
    targets = []
    for directory in args.program or [Path("build/demo/program")]:
        if (directory / "program.json").is_file():
            program = sf.load_program(directory)
            board = program.board or "icebreaker"
            targets.append(Target(board, program.config.pes, program, directory, args.out
                                  / f"{board}-{program.config.pes}pe-{fingerprint(program)}"))
        elif args.program:
            console.print(f"[red]no program at {directory}[/red]")
            return 2
        else:
            console.print(f"no program at {directory}: compiling for icebreaker with 8 PEs")
            program = sf.compile(compressed, pes=8, board="icebreaker")
            targets.append(Target("icebreaker", 8, program, None,
                                  args.out / f"icebreaker-8pe-{fingerprint(program)}"))
    for pes in [int(p) for p in args.ulx3s_pes.split(",") if p.strip()]:
        program = sf.compile(compressed, pes=pes, board="ulx3s-85f")
        targets.append(Target("ulx3s-85f", pes, program, None,
                              args.out / f"ulx3s-85f-{pes}pe-{fingerprint(program)}"))
    for target in targets:
        if target.directory is None:
            target.cache.mkdir(parents=True, exist_ok=True)
            if not (target.cache / "program.json").is_file():
                target.program.save(target.cache)
        find_build(target, build_json)
        if target.build_error and args.rebuild_failed:
            target.build_error = None
        if target.build is None and target.build_error is None and not args.no_build:
            run_build(target, console)

    golden = sf.reference(targets[0].program, x)
    for target in targets:
        find_cycles(target, x, labels, golden, args.rtl, console)
        if not np.array_equal(sf.reference(target.program, x), golden):
            target.notes.append("its golden model disagrees with the first target's")
    golden_pred = golden.argmax(axis=1)
    golden_accuracy = float(np.mean(golden_pred == labels))
    model_agrees = np.array_equal(compressed.predict(x), golden)

    # ---- the CPU implementations
    network = targets[0].program.network
    bounds = network.accumulator_bounds()
    if max(bounds) >= 1 << 24:
        console.print("[yellow]accumulators wider than 24 bits: the float32 CPU versions are "
                      "not exact[/yellow]")
    layers = dequantized_layers(network)
    # The compiled network, so on the inputs it reads (the ones no weight reads are dropped).
    taken = targets[0].program.taken_inputs(x)
    grid = network.input_format.dequantize(network.quantize_input(taken)).astype(np.float32)
    implementations = {}
    float_model, float_source = ((None, "--no-float") if args.no_float
                                 else load_float_model(args.float_model, compressed))
    if float_model is not None:
        implementations["PyTorch, float"] = (
            lambda batch: float_model(batch), torch.from_numpy(np.ascontiguousarray(x)), True)
    compressed_torch = torch_compressed(layers)
    implementations["PyTorch, compressed"] = (
        lambda batch: compressed_torch(batch), torch.from_numpy(grid), True)
    implementations["NumPy, dense"] = (numpy_dense(layers), grid, False)
    implementations["scipy.sparse, CSR"] = (scipy_csr(layers), grid, False)

    rows = []
    load = os.getloadavg()[0]
    out_scale = 2.0 ** network.output_format.frac
    float_accuracy = None
    cpu_power = part_power("cpu", None, given_power)
    with torch.inference_mode():
        for name, (call, inputs, is_torch) in implementations.items():
            outputs = call(inputs)
            outputs = outputs.numpy() if is_torch else outputs
            predictions = outputs.argmax(axis=1)
            if name == "PyTorch, float":
                float_accuracy = float(np.mean(predictions == labels))
                agreement = {"same_predictions": int(np.sum(predictions == golden_pred)),
                             "bit_exact": None}
            else:
                agreement = {"same_predictions": int(np.sum(predictions == golden_pred)),
                             "bit_exact": bool(np.array_equal(
                                 np.rint(outputs * out_scale).astype(np.int64), golden))}
            singles = [inputs[i:i + 1] if is_torch else inputs[i] for i in range(len(x))]
            batch = inputs[:256]
            for size, samples, repeats in ((1, singles, args.repeats),
                                           (256, [batch], max(10, args.repeats // 40))):
                seconds = median_seconds(call, samples, repeats, warmup=min(100, repeats))
                per = seconds / size
                rows.append({
                    "implementation": name, "where": f"CPU ({args.threads} thr.)",
                    "batch": size, "clock_mhz": None,
                    "cycles": None, "latency_s": seconds, "per_inference_s": per,
                    "inferences_per_s": 1 / per, "power_w": cpu_power.watts,
                    "power_kind": cpu_power.kind,
                    "inferences_per_j": (None if cpu_power.watts is None
                                         else 1 / (per * cpu_power.watts)),
                    "agreement": agreement, "source": f"median of {repeats} calls"})
    for target in targets:
        mhz, other = clock_of(target, args.clock)
        power = part_power(target.board, mhz, given_power)
        per = None if mhz is None or target.cycles is None else target.cycles / (mhz * 1e6)
        if target.build is not None:
            status = "built"
        elif target.build_error:
            status = f"build failed: {target.build_error}"
        else:
            status = "not built" + (" (--no-build)" if args.no_build else "")
        rows.append({
            "implementation": f"engine, {target.pes} PEs",
            "where": {"icebreaker": "iCE40UP5K", "ulx3s-85f": "ECP5-85F"}.get(target.board,
                                                                               target.board),
            "board": target.board, "batch": 1, "clock_mhz": mhz,
            "clock": args.clock, "other_clock_mhz": other, "cycles": target.cycles,
            "cycles_source": target.cycles_source, "model_cycles_full_split": target.model_cycles,
            "latency_s": per, "per_inference_s": per,
            "inferences_per_s": None if per is None else 1 / per,
            "power_w": power.watts if per is not None else None, "power_kind": power.kind,
            "inferences_per_j": None if per is None or power.watts is None
            else 1 / (per * power.watts),
            "agreement": {"same_predictions": None if target.rtl_mismatches is None else
                          (target.rtl_inputs if target.rtl_mismatches == 0 else None),
                          "rtl_inputs": target.rtl_inputs,
                          "rtl_mismatches": target.rtl_mismatches},
            "build": status, "build_source": target.build_source,
            "utilisation": (target.build or {}).get("utilisation"),
            "timing_met": (target.build or {}).get("timing_met"),
            "notes": target.notes, "power_source": power.source})

    powers = {name: part_power(name, next((r["clock_mhz"] for r in rows if r.get("board") == name
                                          and r["clock_mhz"]), None), given_power)
              for name in ("cpu",) + BOARDS}
    summary = {
        "inputs": len(x), "data": "digits test split (load_digits_split)",
        "model": str(args.model),
        "programs": [str(t.directory or t.cache) for t in targets],
        "torch_threads": torch.get_num_threads(), "blas_threads": args.threads,
        "load_average": round(load, 2),
        "cpu": cpu_name(), "torch": torch.__version__, "numpy": np.__version__,
        "scipy": scipy.__version__,
        "golden_accuracy": golden_accuracy, "float_accuracy": float_accuracy,
        "float_model": float_source, "compressed_model_agrees_with_golden": model_agrees,
        "nnz": sum(layer.nnz for layer in network.layers),
        "dense_macs": sum(layer.codes.size for layer in network.layers),
        "power": {name: {"watts": p.watts, "kind": p.kind, "source": p.source}
                  for name, p in powers.items()},
        "rows": rows,
    }
    render(console, summary, args)
    if args.json:
        print(json.dumps(summary, default=lambda v: v.item() if isinstance(v, np.generic)
                         else str(v)))
    agree = model_agrees and all(r["agreement"].get("bit_exact") is not False
                                 and not r["agreement"].get("rtl_mismatches") for r in rows)
    return 0 if agree else 1


def render(console: Console, summary: dict, args) -> None:
    table = Table(title=f"Digits MLP, {summary['inputs']} test images: the engine beside the "
                        f"CPU", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("implementation", "where", "batch", "MHz", "cycles", "call",
                   "per inference", "inf/s", "power", "inf/J", "vs golden"):
        table.add_column(column, justify="left" if column in ("implementation", "where",
                                                               "vs golden") else "right")
    for row in summary["rows"]:
        agreement = row["agreement"]
        if "rtl_inputs" in agreement:
            if agreement["rtl_mismatches"] is None:
                versus = "no RTL run"
            elif agreement["rtl_mismatches"] == 0:
                versus = f"exact, {agreement['rtl_inputs']} RTL"
            else:
                versus = f"[red]{agreement['rtl_mismatches']} outputs differ[/red]"
        elif agreement["bit_exact"] is None:
            versus = f"{agreement['same_predictions']}/{summary['inputs']} argmax"
        elif agreement["bit_exact"]:
            versus = f"exact, {summary['inputs']}"
        else:
            versus = f"[red]{agreement['same_predictions']}/{summary['inputs']} same[/red]"
        engine = "board" in row
        cycles = f"{row['cycles']:.1f}" if row["cycles"] else ("-" if engine else "")
        if engine and row["per_inference_s"] is None:
            reason = (row["build"].split(":")[0] + (": does not fit" if "does not fit" in
                      row["build"] else "") if row["build"] != "built" else "no cycles")
            table.add_row(row["implementation"], row["where"], str(row["batch"]), "-", cycles,
                          f"[yellow]{reason}[/yellow]", "-", "-", "-", "-", versus)
            continue
        floor = row["power_kind"] == "floor"
        power = "?" if row["power_w"] is None else ("≥" if floor else "") + _watts(row["power_w"])
        per_joule = ("?" if row["inferences_per_j"] is None
                     else ("≤" if floor else "") + _two_figures(row["inferences_per_j"]))
        clock = f"{row['clock_mhz']:.1f}" if row["clock_mhz"] else ""
        if row.get("timing_met") is False:
            clock += "[red]*[/red]"
        table.add_row(row["implementation"], row["where"], str(row["batch"]), clock, cycles,
                      _time(row["latency_s"]), _time(row["per_inference_s"]),
                      f"{row['inferences_per_s']:,.0f}", power, per_joule, versus)
    console.print(table)
    notes = [f"golden model (sf.reference) accuracy {100 * summary['golden_accuracy']:.2f}%; "
             f"float PyTorch model {_pct(summary['float_accuracy'])} ({summary['float_model']}); "
             f"the compressed network has {summary['nnz']:,} nonzero weights of "
             f"{summary['dense_macs']:,}."]
    for row in summary["rows"]:
        if "board" not in row:
            continue
        line = f"{row['board']} ({row['where']}), {row['implementation'].split(', ')[1]}: " \
               f"cycles from " \
               f"{row['cycles_source']}"
        if row["model_cycles_full_split"] is not None:
            line += f" (cycle model over all {summary['inputs']}: " \
                    f"{row['model_cycles_full_split']:.1f})"
        if row["build"] == "built":
            other = row["other_clock_mhz"]
            line += f"; clock = {'nextpnr Fmax' if row['clock'] == 'fmax' else 'PLL'}" \
                    f" from {row['build_source']}"
            if other:
                line += f" ({'PLL' if row['clock'] == 'fmax' else 'Fmax'} {other:.1f} MHz)"
            if row["timing_met"] is False:
                line += " [red]* timing not met at the PLL clock[/red]"
            use = row["utilisation"] or {}
            if use:
                line += "; " + ", ".join(f"{k} {v['used']}/{v['available']}"
                                         for k, v in sorted(use.items()))
        else:
            line += f"; {row['build']}"
        notes.append(line)
        notes += [f"  [yellow]note[/yellow]: {note}" for note in row["notes"]]
    notes.append("call = one call (batch 1: one image; batch 256: 256 images); per inference "
                 "= call / batch; vs golden = outputs bit-exact against sf.reference (the float "
                 "model: argmax agreeing with it).")
    notes.append(f"CPU: {summary['cpu']}, torch {summary['torch']} with "
                 f"set_num_threads({summary['torch_threads']}), BLAS threads "
                 f"{summary['blas_threads']}; numpy {summary['numpy']}, scipy "
                 f"{summary['scipy']}; load average {summary['load_average']} when timing; "
                 f"batch 1 = median single call over the images in turn, "
                 f"batch 256 = median call on the first 256 images / 256; inputs already on "
                 f"the 8-bit grid (float model: raw pixels).")
    notes.append("Compressed network on the CPU: float32 weights = codebook value x 2^-frac, "
                 "with the engine's write-back (round half up, saturate, ReLU) between layers, "
                 "which makes it bit-exact.")
    rates = ", ".join(f"{name} {board_named(name).baud / 1e6:g} Mbaud" for name in BOARDS)
    notes.append(f"Engine latency = mean cycles / clock: the compute only, not the UART link "
                 f"({rates}; benchmarks/link_throughput.py measures inferences per second "
                 f"over it).")
    for name, power in summary["power"].items():
        mark = {"floor": "lower bound", "given": "given", "unknown": "unknown"}[power["kind"]]
        watts = "" if power["watts"] is None else f"{_watts(power['watts'])} "
        notes.append(f"power, {name}: {watts}({mark}) {power['source']}")
    for note in notes:
        console.print(note, highlight=False)


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} µs"
    return f"{seconds * 1e3:.2f} ms"


def _two_figures(value: float) -> str:
    """Two significant figures with an SI prefix: the power figures allow no more."""
    exponent = max(0, min(12, int(math.floor(math.log10(value))) // 3 * 3))
    return f"{float(f'{value:.2g}') / 10 ** exponent:g}" + {0: "", 3: "k", 6: "M", 9: "G",
                                                             12: "T"}[exponent]


def _watts(watts: float) -> str:
    return f"{watts * 1e3:.1f} mW" if watts < 1 else f"{watts:.1f} W"


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


if __name__ == "__main__":
    sys.exit(main())
