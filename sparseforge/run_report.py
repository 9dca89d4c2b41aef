"""The run report: one self-contained HTML page (and a Markdown twin) next to the build.

The design brief asks for "tables in the terminal plus plots (weight histograms, per-layer
sparsity, PE load balance) written next to the build".
:func:`write_report` gathers every figure of a run -- the compressed model, the compiled
program, and, when they exist, the RTL simulation and the bitstream build -- and writes:

* ``report.html``: the summary table, per-layer tables and every plot embedded as a base64
  PNG (``<img src="data:image/png;base64,...">``), so the page is one file that opens offline
  (no JavaScript, no fonts or styles from a CDN);
* ``report.md``: the same tables, with the plots linked as the PNG files beside it;
* one PNG per plot, and ``summary.json`` with the raw figures for scripts.

Plots are drawn with matplotlib's object API on the Agg canvas (``matplotlib.figure.Figure``),
never through pyplot: no global backend switch, no GUI, nothing left open in the caller's
process.

Every number on the page says where it comes from: the cost model's ``E_k``, limit and bound
are exact counts over the program image for the given inputs (``sim.reference.workload``); the
cycle model is ``sim.reference.cycles``; "measured" cycles and the hardware accuracy are the
RTL's own counters under cocotb; Fmax and utilisation are nextpnr's, or the compiler's resource
estimate when there is no build (and then labelled as an estimate).
"""

from __future__ import annotations

import base64
import html
import io
import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparseforge.compiler.errors import InputError
from sparseforge.compiler.outputs import write_folder

__all__ = [
    "BuildFigures",
    "Plot",
    "SimFigures",
    "SummaryRow",
    "build_figures",
    "sim_figures",
    "summary_rows",
    "write_report",
]

# Colours: one per meaning, used the same way in every plot (colour-blind safe, Okabe-Ito).
BLUE, ORANGE, GREEN, RED, PURPLE, GREY = ("#0072B2", "#E69F00", "#009E73", "#D55E00",
                                          "#CC79A7", "#999999")
DPI = 110


# ---- normalised inputs ------------------------------------------------------------------------

@dataclass(frozen=True)
class SimFigures:
    """What the report uses of an RTL simulation: per-layer means over the inputs.

    Made from a :class:`sparseforge.sim.simulate.Simulation` or from its ``to_json()`` (what
    ``sparseforge sim --json`` prints), so a saved run can be reported without re-simulating.
    """
    simulator: str
    inputs: int
    accuracy: float | None
    mismatches: int
    measured: np.ndarray            # layers: mean measured cycles per inference
    predicted: np.ndarray           # layers: the cycle model's mean
    limit: np.ndarray               # layers: mean ceil(sum_k E_k / N)
    bound: np.ndarray               # layers: mean max_k E_k
    overhead: np.ndarray            # layers: the cycle model's fixed per-layer overhead
    efficiency: float               # (sum_k E_k / N) / measured cycles, over the whole run
    # The mean total as the simulation gave it (sim --json's total_mean): the sum of the
    # rounded layer means is off in the last digit (218.55 for sim's 218.54).
    total_mean: float | None = None

    @property
    def total(self) -> float:
        return float(self.measured.sum()) if self.total_mean is None else self.total_mean


def sim_figures(simulation) -> SimFigures | None:
    """A :class:`SimFigures` from a Simulation, its JSON dict, or None."""
    if simulation is None:
        return None
    if isinstance(simulation, SimFigures):
        return simulation
    payload = simulation if isinstance(simulation, dict) else simulation.to_json()
    try:
        cycles = payload["cycles"]
        return SimFigures(
            simulator=str(payload.get("simulator", "?")), inputs=int(payload["inputs"]),
            accuracy=None if payload.get("accuracy") is None else float(payload["accuracy"]),
            mismatches=int(payload["mismatches"]),
            measured=np.asarray(cycles["per_layer_mean"], dtype=float),
            predicted=np.asarray(cycles["predicted_mean"], dtype=float),
            limit=np.asarray(cycles["limit_mean"], dtype=float),
            bound=np.asarray(cycles["bound_mean"], dtype=float),
            overhead=np.asarray(cycles["overhead"], dtype=float),
            efficiency=float(payload["efficiency"]),
            total_mean=(float(cycles["total_mean"]) if cycles.get("total_mean") is not None
                        else None))
    except (KeyError, TypeError) as error:
        raise ValueError(f"the simulation figures lack or mangle {error} (expected what "
                         f"'sparseforge sim --json' prints)") from None


@dataclass(frozen=True)
class BuildFigures:
    """What the report uses of a bitstream build (``sf.build`` or its ``build.json``)."""
    board: str
    fmax_mhz: float
    target_mhz: float               # the engine clock the bitstream runs at
    utilisation: dict               # resource -> (used, available)

    @property
    def timing_met(self) -> bool:
        return self.fmax_mhz >= self.target_mhz


def build_figures(build) -> BuildFigures | None:
    """A :class:`BuildFigures` from a Build, its JSON dict (``build.json``), or None."""
    if build is None:
        return None
    if isinstance(build, BuildFigures):
        return build
    payload = build if isinstance(build, dict) else build.to_json()
    try:
        return BuildFigures(
            board=str(payload["board"]), fmax_mhz=float(payload["fmax_mhz"]),
            target_mhz=float(payload["target_mhz"]),
            utilisation={name: (int(use["used"]), int(use["available"]))
                         for name, use in payload["utilisation"].items()})
    except (KeyError, TypeError) as error:
        raise ValueError(f"the build figures lack or mangle {error} (expected a build.json "
                         f"written by 'sparseforge build')") from None


# ---- the figures ------------------------------------------------------------------------------

@dataclass(frozen=True)
class SummaryRow:
    """One line of the summary table: ``key`` for scripts, ``label`` and ``value`` for a
    person, ``source`` saying where the number comes from."""
    key: str
    label: str
    value: str
    source: str


@dataclass(frozen=True)
class Plot:
    """A rendered plot: its file name, caption and PNG bytes."""
    name: str
    caption: str
    png: bytes


@dataclass(frozen=True)
class _Context:
    """Everything the report draws from, gathered once."""
    program: object
    compressed: object | None
    sim: SimFigures | None
    build: BuildFigures | None
    work: list | None               # LayerWork per layer for the inputs, or None
    predicted: np.ndarray | None    # batch x layers cycle-model cycles for the inputs
    float_accuracy: float | None
    quantized_accuracy: float | None
    accuracy_data: str
    resources: list                 # (title, {resource: (used, available)}, estimate?)
    clock_mhz: float | None         # the engine clock latency is computed at
    clock_source: str


def _percent(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def _layer_names(program) -> list[str]:
    return [layer.name for layer in program.network.layers]


def summary_rows(ctx: _Context) -> list[SummaryRow]:
    """The summary figures, in reading order."""
    program, sim, build = ctx.program, ctx.sim, ctx.build
    pes = program.config.pes
    rows = [SummaryRow("engine", "Engine", f"{pes} PE{'s' if pes > 1 else ''}, "
                       f"{program.config.act_bits}-bit activations, "
                       f"{program.config.code_bits}-bit codes, board "
                       f"{program.board or 'none'}", "engine.json")]
    data = f" ({ctx.accuracy_data})" if ctx.accuracy_data else ""
    # A regression model's figures are R² (compress's ``training.score``), not percentages.
    figure, name = ((lambda v: "n/a" if v is None else f"{v:.4f}", "R²")
                    if program.task == "regression" else (_percent, "accuracy"))
    rows.append(SummaryRow("accuracy_float", f"Float {name}", figure(ctx.float_accuracy),
                           f"uncompressed model, float64 NumPy{data}"))
    rows.append(SummaryRow("accuracy_compressed", f"Compressed {name}",
                           figure(ctx.quantized_accuracy),
                           f"integer network (the hardware's arithmetic){data}"))
    if sim is not None:
        rows.append(SummaryRow("accuracy_hardware", f"Hardware {name}", figure(sim.accuracy),
                               f"RTL outputs ({sim.simulator}, {sim.inputs} inputs); "
                               f"{sim.mismatches} mismatches vs the golden model"))
    else:
        rows.append(SummaryRow("accuracy_hardware", "Hardware accuracy", "n/a",
                               "no RTL simulation given"))
    def count(network) -> tuple[int, int]:
        return (sum(layer.nnz for layer in network.layers),
                sum(layer.codes.size for layer in network.layers))

    nnz, weights = count(program.network)
    model = None if ctx.compressed is None else count(ctx.compressed.network)
    if model is not None:
        rows.append(SummaryRow("nonzeros", "Nonzero weights",
                               f"{model[0]:,} of {model[1]:,} "
                               f"({100 * model[0] / model[1]:.2f}%)",
                               "compressed model (codes != 0)"))
    if model is None or model[1] != weights:
        # The compiler removed dead units and unread inputs: the engine's network is
        # smaller than the model, and its density is of the smaller matrices.
        rows.append(SummaryRow("nonzeros_engine", "Nonzero weights on the engine",
                               f"{nnz:,} of {weights:,} ({100 * nnz / weights:.2f}%)",
                               "program network (codes != 0)"
                               + ("" if model is None else
                                  ": dead units and unread inputs removed by compile")))
    if ctx.compressed is not None:
        report = ctx.compressed.report
        rows.append(SummaryRow(
            "compression_ratio", "Compression ratio",
            f"{report.compression_ratio:.1f}x ({report.compression_ratio_huffman:.1f}x with "
            f"Huffman, {report.compression_ratio_with_pointers:.1f}x with pointers)",
            "32-bit dense vs codes + indices + codebook + biases (docs/compression.md)"))
    else:
        rows.append(SummaryRow("compression_ratio", "Compression ratio", "n/a",
                               "no compressed model given (--model)"))
    limit = bound = None
    if ctx.work is not None:
        limit = float(sum(w.limit.mean() for w in ctx.work))
        bound = float(sum(w.bound.mean() for w in ctx.work))
    if sim is not None:
        limit, bound = float(sim.limit.sum()), float(sim.bound.sum())
        overhead = float(sim.overhead.sum())
        rows.append(SummaryRow(
            "cycles", "Cycles per inference",
            f"{sim.total:.1f} measured; limit {limit:.1f}, bound {bound:.1f}, "
            f"bound + overhead {bound + overhead:.1f}; cycle model {sim.predicted.sum():.1f}",
            f"RTL cycle counters, mean over {sim.inputs} inputs; limit = ceil(sum E_k / N), "
            f"bound = max E_k (cost model)"))
        rows.append(SummaryRow("efficiency", "Load-balance efficiency",
                               _percent(sim.efficiency, 1),
                               "(sum_k E_k / N) / measured cycles, over the whole run"))
    elif ctx.predicted is not None:
        total = float(ctx.predicted.sum(axis=1).mean())
        rows.append(SummaryRow(
            "cycles", "Cycles per inference",
            f"{total:.1f} predicted; limit {limit:.1f}, bound {bound:.1f}",
            f"cycle model (no RTL simulation), mean over {len(ctx.predicted)} inputs"))
        work = sum(float(w.total.sum()) for w in ctx.work) / program.config.pes
        rows.append(SummaryRow("efficiency", "Load-balance efficiency",
                               _percent(work / float(ctx.predicted.sum()), 1),
                               "(sum_k E_k / N) / cycle-model cycles (no RTL simulation)"))
    else:
        # Said, not left out: a reader looks for the cycles first.
        rows.append(SummaryRow("cycles", "Cycles per inference", "n/a",
                               "no inputs to count them on: give some (--inputs, inputs=); "
                               "the digits test split is the default of 64-input programs"))
    cycles = sim.total if sim is not None else (
        float(ctx.predicted.sum(axis=1).mean()) if ctx.predicted is not None else None)
    if build is not None:
        verdict = "met" if build.timing_met else "missed"
        rows.append(SummaryRow("fmax", "Fmax", f"{build.fmax_mhz:.2f} MHz (engine clock "
                               f"{build.target_mhz:.2f} MHz, timing {verdict})",
                               f"nextpnr, {build.board} build"))
    else:
        rows.append(SummaryRow("fmax", "Fmax", "n/a", "no bitstream build given"))
    if cycles is not None and ctx.clock_mhz:
        latency = cycles / ctx.clock_mhz
        rows.append(SummaryRow("latency", "Latency per inference",
                               f"{latency:.2f} us ({1e6 / latency:,.0f} inferences/s)",
                               f"{cycles:.1f} cycles at {ctx.clock_mhz:.2f} MHz "
                               f"({ctx.clock_source})"))
    for title, use, estimate in ctx.resources:
        text = ", ".join(f"{name} {used}/{available} ({100 * used / available:.0f}%)"
                         for name, (used, available) in use.items() if available)
        rows.append(SummaryRow("resources", "Resources", f"{title}: {text}",
                               "compiler estimate (no build)" if estimate else "nextpnr"))
    return rows


# ---- plots ------------------------------------------------------------------------------------

def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return figure


def _png(figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _weights(ctx: _Context, index: int) -> tuple[np.ndarray | None, np.ndarray, np.ndarray,
                                                   np.ndarray]:
    """(kept weights before sharing or None, codebook values, codebook counts, shared
    weights) of one layer, in real units."""
    layer = ctx.program.network.layers[index]
    scale = layer.weight_format.scale
    codebook = layer.codebook.astype(float) * scale
    counts = np.bincount(layer.codes.ravel(), minlength=len(codebook))
    shared = codebook[layer.codes[layer.codes != 0]]
    before = None
    compressed = ctx.compressed
    if compressed is not None and getattr(compressed, "pruned_weights", None) is not None:
        weight = compressed.pruned_weights[index]
        before = weight[compressed.masks[index]]
    return before, codebook, counts, shared


def _weight_plot(ctx: _Context, index: int) -> Plot:
    layer = ctx.program.network.layers[index]
    before, codebook, counts, shared = _weights(ctx, index)
    used = [c for c in range(1, len(codebook)) if counts[c]]
    if not used:
        # Every weight of the layer pruned or rounded to zero: only the zero code is left.
        used = [0]
    panels = 2 if before is not None else 1
    figure = _figure(9.5, 2.9 * panels + 0.9)
    axes = figure.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    low = min([codebook[used].min()] + ([before.min()] if before is not None else []))
    high = max([codebook[used].max()] + ([before.max()] if before is not None else []))
    margin = 0.05 * (high - low or 1.0)
    if before is not None:
        axis = axes[0]
        axis.hist(before, bins=80, range=(low - margin, high + margin), color=BLUE,
                  alpha=0.85, label=f"{before.size:,} kept weights")
        axis.set_title(f"Before sharing: pruned float weights of {layer.name}")
        axis.set_ylabel("weights per bin")
        _integer_ticks(axis)
    axis = axes[-1]
    width = 0.012 * (high - low + 2 * margin)
    axis.bar(codebook[used], counts[used], width=width, color=ORANGE,
             label=f"{shared.size:,} shared weights")
    distinct = len(np.unique(codebook[used]))
    axis.set_title(f"After sharing: weights at the {len(used)} used codebook values"
                   + (f" ({distinct} distinct after rounding)" if distinct < len(used) else ""))
    axis.set_ylabel("weights")
    _integer_ticks(axis)
    axis.set_xlabel(f"weight value (real units; codebook in {layer.weight_format.bits}-bit "
                    f"fixed point, step 2^-{layer.weight_format.frac})")
    for axis in axes:
        for c, value in enumerate(codebook[used]):
            axis.axvline(value, color=RED, linewidth=0.8, linestyle="--",
                         label="codebook values" if c == 0 else None)
        axis.axvline(0.0, color="black", linewidth=0.6)
        axis.set_xlim(low - margin, high + margin)
        axis.grid(axis="y", alpha=0.3)
        axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    # Why the lower panel can show weights where the upper has none: said on the figure.
    note = (f"A codebook value is its cluster's centroid, fine-tuned by retraining and rounded "
            f"to the {layer.weight_format.bits}-bit format (step 2^-{layer.weight_format.frac}): "
            f"it can sit where few or no weights were, and several codes can round to one "
            f"value.")
    if before is not None and before.size != shared.size:
        note += (f"  {before.size - shared.size:,} kept weight(s) ended on the zero code.")
    figure.supxlabel(textwrap.fill(note, 150), fontsize=7.5, ha="left", x=0.01)
    out, inp = layer.codes.shape
    figure.suptitle(f"Layer {index} ({layer.name}, {out}x{inp}): weight distribution and "
                    f"its {layer.code_bits}-bit codebook", fontweight="bold")
    caption = (f"Layer {layer.name}: the nonzero weights before k-means sharing (top, when "
               f"the model file holds them) and after (bottom), codebook values dashed.  A "
               f"codebook value is its cluster's centroid, then fine-tuned by retraining and "
               f"rounded to the {layer.weight_format.bits}-bit format, so the shared weights "
               f"can sit at values no weight had before sharing (between two clumps, or past "
               f"the largest), and several codes can round to one value.")
    return Plot(f"weights_{index}_{_slug(layer.name)}.png", caption, _png(figure))


def _sparsity_plot(ctx: _Context) -> Plot:
    layers = ctx.program.network.layers
    names = _layer_names(ctx.program)
    kept = np.array([100.0 * layer.nnz / layer.codes.size for layer in layers])
    figure = _figure(max(5.0, 1.4 * len(layers) + 3), 3.8)
    axis = figure.subplots()
    x = np.arange(len(layers))
    axis.bar(x, kept, color=BLUE, label="kept (nonzero)")
    axis.bar(x, 100 - kept, bottom=kept, color=GREY, alpha=0.35, label="pruned")
    for i, layer in enumerate(layers):
        axis.text(i, min(kept[i] + 2, 92), f"{layer.nnz:,} / {layer.codes.size:,}\n"
                  f"{kept[i]:.1f}% kept", ha="center", va="bottom", fontsize=8)
    axis.set_xticks(x, [f"{n}\n{layer.codes.shape[0]}x{layer.codes.shape[1]}"
                        for n, layer in zip(names, layers)])
    axis.set_ylim(0, 100)
    axis.set_ylabel("% of the layer's weights")
    axis.set_xlabel("layer (out x in)")
    axis.set_title("Per-layer sparsity after pruning", fontweight="bold")
    axis.legend(loc="upper right", fontsize=8, framealpha=0.9)
    return Plot("sparsity.png", "Weights kept and pruned per layer.", _png(figure))


def _pe_load_plot(ctx: _Context) -> Plot:
    program = ctx.program
    pes = program.config.pes
    layers = program.network.layers
    rows = 2 if ctx.work is not None else 1
    figure = _figure(max(6.0, 3.6 * len(layers)), 3.2 * rows + 0.4)
    axes = figure.subplots(rows, len(layers), squeeze=False)
    pe = np.arange(pes)
    for index, layer in enumerate(layers):
        entries = program.column_counts(index).sum(axis=1)
        nonzero = np.array([int(np.count_nonzero(layer.codes[k::pes])) for k in range(pes)])
        axis = axes[0, index]
        axis.bar(pe, nonzero, color=BLUE, label="nonzero entries")
        axis.bar(pe, entries - nonzero, bottom=nonzero, color=ORANGE, label="padding entries")
        axis.axhline(entries.mean(), color="black", linestyle="--", linewidth=0.9,
                     label=f"mean {entries.mean():.1f}")
        # Two short lines: one long line per panel ran into its neighbours' with 3+ layers.
        axis.set_title(f"{layer.name}: entries per PE\n(max/mean "
                       f"{entries.max() / max(entries.mean(), 1e-9):.2f})", fontsize=9)
        axis.set_xlabel("PE")
        axis.set_ylabel("entries stored")
        _integer_ticks(axis)
        axis.set_xticks(pe)
        axis.grid(axis="y", alpha=0.3)
        axis.set_ylim(0, 1.45 * max(entries.max(), 1))
        axis.legend(fontsize=7, loc="upper right", framealpha=0.9)
        if ctx.work is not None:
            work = ctx.work[index].work
            mean = work.mean(axis=0)
            axis = axes[1, index]
            axis.bar(pe, mean, color=GREEN, label="mean E_k")
            axis.errorbar(pe, mean, yerr=[mean - work.min(axis=0), work.max(axis=0) - mean],
                          fmt="none", ecolor="black", capsize=3, linewidth=0.8,
                          label="min..max over inputs")
            axis.axhline(work.sum(axis=1).mean() / pes, color=PURPLE, linestyle="--",
                         linewidth=0.9, label=f"sum E_k / N = {work.sum(axis=1).mean() / pes:.1f}")
            axis.set_title(f"{layer.name}: work E_k per PE\n({len(work)} inputs)", fontsize=9)
            axis.set_xlabel("PE")
            axis.set_ylabel("entries processed per inference")
            _integer_ticks(axis)
            axis.set_xticks(pe)
            axis.grid(axis="y", alpha=0.3)
            axis.set_ylim(0, 1.45 * max(work.max(), 1))
            axis.legend(fontsize=7, loc="upper right", framealpha=0.9)
    figure.suptitle(f"Load balance over {pes} PEs (row i on PE i mod {pes})", fontweight="bold")
    caption = ("Entries stored per PE (nonzeros and zero-run padding) per layer"
               + ("; below, the work E_k each PE does per inference for the given inputs "
                  "(mean, with the range over the inputs)." if ctx.work is not None else "."))
    return Plot("pe_load.png", caption, _png(figure))


def _cycles_plot(ctx: _Context) -> Plot | None:
    sim = ctx.sim
    if sim is not None:
        limit, bound, overhead = sim.limit, sim.bound, sim.overhead
        predicted, measured, count = sim.predicted, sim.measured, sim.inputs
    elif ctx.predicted is not None:
        limit = np.array([w.limit.mean() for w in ctx.work])
        bound = np.array([w.bound.mean() for w in ctx.work])
        from sparseforge.sim.reference.cycles import fixed_overhead

        overhead = _overheads(ctx.program, fixed_overhead)
        predicted, measured, count = ctx.predicted.mean(axis=0), None, len(ctx.predicted)
    else:
        return None
    names = _layer_names(ctx.program) + ["total"]
    stack = lambda a: np.append(a, a.sum())     # noqa: E731 - per-layer values and their total
    scan = stack(_scan_floor(ctx.program))
    limit, bound, overhead, predicted = map(stack, (limit, bound, overhead, predicted))
    series = [("limit ceil(sum E_k / N)", limit, BLUE), ("bound max E_k", bound, GREEN),
              ("cycle model", predicted, PURPLE)]
    if measured is not None:
        series.append(("measured (RTL)", stack(measured), RED))
    figure = _figure(max(7.0, 2.4 * len(names) + 2), 4.4)
    axis = figure.subplots()
    x = np.arange(len(names))
    width = 0.8 / len(series)
    for s, (label, values, colour) in enumerate(series):
        offset = x - 0.4 + width * (s + 0.5)
        axis.bar(offset, values, width, color=colour, label=label)
        if s < 2:       # the cost model's yardsticks plus the stated fixed overhead
            axis.bar(offset, overhead, width, bottom=values, color="white", edgecolor=colour,
                     hatch="//", linewidth=0.8, label="+ fixed overhead" if s == 0 else None)
            # The label sits on the whole bar, so it names both parts.
            labels = [f"{v:.0f}+{o:.0f}" for v, o in zip(values, overhead)]
            tops = values + overhead
        else:
            labels, tops = [f"{v:.0f}" for v in values], values
        for xo, top, label in zip(offset, tops, labels):
            axis.text(xo, top, label, ha="center", va="bottom", fontsize=7)
    axis.hlines(scan, x - 0.45, x + 0.45, colors="black", linestyles=":", linewidth=1.4,
                label="scan floor: the cycle model's cycles for an input of zeros")
    axis.set_xticks(x, names)
    axis.set_xlabel("layer")
    axis.set_ylabel("clock cycles per inference (mean)")
    _integer_ticks(axis)
    source = (f"{count} inputs, RTL on {sim.simulator}" if sim is not None
              else f"{count} inputs, cycle model only (no RTL simulation)")
    axis.set_title(f"Cycles per layer vs the cost model ({source})", fontweight="bold")
    axis.grid(axis="y", alpha=0.3)
    axis.set_ylim(0, max((limit + overhead).max(), (bound + overhead).max(), scan.max(),
                         predicted.max(), stack(measured).max() if measured is not None
                         else 0) * 1.15)
    axis.legend(fontsize=8, loc="upper left", framealpha=0.9)
    caption = ("Mean cycles per inference per layer: the cost model's limit and bound (hatched: "
               "the cycle model's fixed per-layer overhead on top), the cycle model's prediction"
               + (" and the RTL's cycle counters" if measured is not None else "")
               + "; labels: cost model + fixed overhead.  Dotted: the cycle model's layer for an "
                 "input of zeros (the sequencer's steps, the scan of every input group and the "
                 "pipeline fill), a floor whatever the sparsity.")
    return Plot("cycles.png", caption, _png(figure))


def _resources_plot(ctx: _Context) -> Plot | None:
    if not ctx.resources:
        return None
    figure = _figure(7.5, 1.2 + 2.2 * len(ctx.resources))
    axes = figure.subplots(len(ctx.resources), 1, squeeze=False)[:, 0]
    for axis, (title, use, estimate) in zip(axes, ctx.resources):
        names = [name for name, (_, available) in use.items() if available]
        percent = [100.0 * use[n][0] / use[n][1] for n in names]
        y = np.arange(len(names))
        colours = [RED if p > 100 else ORANGE if p > 85 else BLUE for p in percent]
        axis.barh(y, percent, color=colours)
        for yi, name, p in zip(y, names, percent):
            axis.text(min(p, 100) + 1, yi, f"{use[name][0]:,} / {use[name][1]:,} ({p:.0f}%)",
                      va="center", fontsize=8)
        axis.axvline(100, color="black", linewidth=0.8)
        axis.set_yticks(y, names)
        axis.invert_yaxis()
        axis.set_xlim(0, max(125, max(percent, default=0) + 25))
        axis.set_xlabel("% of the part used (used / available)")
        axis.set_title(f"{title} ({'compiler estimate, no build' if estimate else 'nextpnr'})")
        axis.grid(axis="x", alpha=0.3)
    figure.suptitle("Resources used vs the part's capacity", fontweight="bold")
    return Plot("resources.png", "FPGA resources used against the part's capacity.",
                _png(figure))


def _scan_floor(program) -> np.ndarray:
    """Per layer, the fewest cycles it can take: the cycle model's whole layer (the
    sequencer's steps and the compute phase, whose scan of the input groups and pipeline fill
    happen whatever the sparsity) for an input of zeros.  (The fixed overhead is not added on
    top: the compute phase already holds the pipeline fill it counts.)"""
    from sparseforge.sim.reference.cycles import layer_timing

    config, layers = program.config, program.network.layers
    if config.conv:
        return np.array([t.cycles for t in _conv_zero_timings(program)], dtype=float)
    return np.array([layer_timing(config, np.zeros((config.pes, layer.in_features), int),
                                  np.zeros(layer.in_features, dtype=bool), layer.out_features,
                                  layers[index - 1].out_features if index else None).cycles
                     for index, layer in enumerate(layers)], dtype=float)


def _integer_ticks(axis) -> None:
    """Counts have whole-number ticks (matplotlib picks 0.5 steps for small ranges)."""
    from matplotlib.ticker import MaxNLocator

    axis.yaxis.set_major_locator(MaxNLocator(integer=True))


def _conv_zero_timings(program):
    """A conv-mode program's cycle model for an input of zeros (every position's prologue,
    fixed cycles, scan and fill: what no sparsity saves)."""
    from sparseforge.sim.reference.cycles import program_timings

    return program_timings(program, np.zeros((1, program.in_features), dtype=np.int64))[0]


def _overheads(program, fixed_overhead) -> np.ndarray:
    if program.config.conv:
        # Per layer: its prologue and every position's fixed cycles and pipeline fill.
        return np.array([t.overhead for t in _conv_zero_timings(program)], dtype=float)
    layers = program.network.layers
    return np.array([fixed_overhead(program.config, layer.out_features,
                                    layers[index - 1].out_features if index else None)
                     for index, layer in enumerate(layers)], dtype=float)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


# ---- writing ----------------------------------------------------------------------------------

def write_report(out_dir, *, compressed=None, program, simulation=None, build=None,
                 inputs=None, float_accuracy: float | None = None,
                 quantized_accuracy: float | None = None, accuracy_data: str | None = None,
                 title: str | None = None) -> Path:
    """Write the report into ``out_dir`` (created); returns the HTML file's path.

    compressed : the ``sf.CompressedModel`` the program came from (weights before and after
        sharing, compression ratio, accuracies), or None.
    program : the ``sf.Program``.
    simulation : an ``sf.simulate`` result or its JSON dict (``sparseforge sim --json``).
    build : an ``sf.build`` result or its JSON dict (``build.json``).
    inputs : float inputs (batch x features) for the per-PE work ``E_k`` and, without a
        simulation, the cycle model; they should be the ones simulated.
    float_accuracy, quantized_accuracy : override the compressed model's recorded figures;
        ``accuracy_data`` names the data they are on.
    """
    out_dir = Path(out_dir)
    ctx = _context(program, compressed, sim_figures(simulation), build_figures(build), inputs,
                   float_accuracy, quantized_accuracy, accuracy_data)
    plots = [_sparsity_plot(ctx)]
    plots += [_weight_plot(ctx, index) for index in range(program.layer_count)]
    plots += [p for p in (_pe_load_plot(ctx), _cycles_plot(ctx), _resources_plot(ctx)) if p]
    rows = summary_rows(ctx)
    layers = _layer_table(ctx)
    title = title or f"sparseforge report: {' -> '.join(_layer_names(program))}"
    notes = _notes(ctx)

    def fill(folder: Path) -> None:
        for plot in plots:
            (folder / plot.name).write_bytes(plot.png)
        (folder / "report.md").write_text(_markdown(title, rows, layers, plots, notes))
        (folder / "summary.json").write_text(json.dumps(
            _summary_json(ctx, rows, layers, plots), indent=2) + "\n")
        (folder / "report.html").write_text(_html(title, rows, layers, plots, notes))

    # The whole folder at once: no plot of an earlier report beside this one's page.
    write_folder(out_dir, fill, what="report",
                 replaceable=lambda folder: (folder / "report.html").is_file())
    return out_dir / "report.html"


def _narrowed(network, selection):
    """``network`` reading only the selected inputs, or None when it cannot be the model they
    were selected from."""
    try:
        return selection.narrow(network)
    except ValueError:
        return None


class NotTheSimulatedInputs(InputError):
    """The inputs given to the report are not those the simulation ran: the E_k plotted beside
    its measured cycles would be of other inputs.  ``detail`` says which figure differs."""

    def __init__(self, detail: str):
        super().__init__(f"the inputs are not the ones the simulation ran ({detail}): give "
                         f"those, or simulate these")
        self.detail = detail


def check_simulated_inputs(program, sim: SimFigures, x_int) -> None:
    """Raise :class:`NotTheSimulatedInputs` when the cycle model's figures for the first
    ``sim.inputs`` of ``x_int`` (the cycles, limit and bound a simulation records, per layer,
    means rounded to 0.01) are not the simulation's: other inputs, most often.  Fewer inputs
    than it ran cannot be told apart and are let through."""
    from sparseforge.sim.simulate import predict

    if len(x_int) < sim.inputs:
        return
    timings = predict(program, x_int[:sim.inputs])
    names = _layer_names(program)
    for attribute, label, recorded in (("cycles", "cycle-model cycles", sim.predicted),
                                       ("limit", "limit ceil(sum E_k / N)", sim.limit),
                                       ("bound", "bound max E_k", sim.bound)):
        mine = np.array([[getattr(t, attribute) for t in row] for row in timings],
                        dtype=float).mean(axis=0)
        if mine.shape != recorded.shape:
            continue                                # a layer count that differs: said apart
        far = np.abs(mine - recorded) > 0.006       # JSON keeps two decimals
        if far.any():
            layer = int(np.argmax(far))
            raise NotTheSimulatedInputs(
                f"layer {names[layer]}: mean {label} {mine[layer]:.2f} for the inputs given, "
                f"{recorded[layer]:.2f} in the simulation")


def _context(program, compressed, sim, build, inputs, float_accuracy, quantized_accuracy,
             accuracy_data) -> _Context:
    from sparseforge.compiler.balance import row_orders
    from sparseforge.compiler.dead_units import remove_dead_units
    from sparseforge.compiler.resources import estimate_resources

    if sim is not None and len(sim.measured) != program.layer_count:
        raise ValueError(f"the simulation has {len(sim.measured)} layers, the program "
                         f"{program.layer_count}")
    if compressed is not None:
        # The program's network is the model's, its dead hidden units perhaps removed, its
        # inputs perhaps narrowed to the ones read (compiler/dead_units.py) and its hidden
        # rows permuted (compiler/balance.py).
        candidates = [compressed.network, remove_dead_units(compressed.network)[0]]
        if program.inputs is not None:
            candidates = [_narrowed(network, program.inputs) for network in candidates]
        if all(candidate is None or row_orders(candidate, program.network) is None
               for candidate in candidates):
            raise ValueError("the compressed model is not the one the program was compiled "
                             "from (its layers or codes differ)")
        report = compressed.report
        float_accuracy = report.accuracy_float if float_accuracy is None else float_accuracy
        if quantized_accuracy is None:
            quantized_accuracy = report.accuracy_quantized
        accuracy_data = report.accuracy_data if accuracy_data is None else accuracy_data
    work = predicted = None
    if inputs is not None:
        from sparseforge.sim.reference.workload import workload

        x_int = program.quantize_input(inputs)
        work = workload(program, x_int)
        if sim is not None:
            check_simulated_inputs(program, sim, x_int)
        else:
            from sparseforge.sim.simulate import predict

            predicted = np.array([[t.cycles for t in row] for row in predict(program, x_int)],
                                 dtype=float)
    resources, clock_mhz, clock_source = [], None, ""
    if build is not None:
        resources.append((f"{build.board} build", build.utilisation, False))
        clock_mhz, clock_source = build.target_mhz, f"the {build.board} bitstream's engine clock"
    board_name = build.board if build is not None else program.board
    if board_name:
        from sparseforge.boards.registry import board as find_board

        board = find_board(board_name)
        if build is None:
            use = estimate_resources(program.config, board.part)
            resources.append((f"{board.part.name} on {board_name}",
                              {"LUT": (use.lut, board.part.luts),
                               "BRAM": (use.bram, board.part.brams),
                               "DSP": (use.dsp, board.part.dsps),
                               "SPRAM": (use.spram, board.part.sprams)}, True))
            clock_mhz = board.target_mhz
            clock_source = f"{board_name}'s target clock; no build, so not a measured Fmax"
    return _Context(program, compressed, sim, build, work, predicted, float_accuracy,
                    quantized_accuracy, accuracy_data or "", resources, clock_mhz, clock_source)


def _layer_table(ctx: _Context) -> list[dict]:
    """One row per layer: shape, activation, nonzeros, density, padding, entries per PE,
    cycles."""
    from sparseforge.sim.reference.workload import layer_stats

    rows = []
    for index, stats in enumerate(layer_stats(ctx.program)):
        row = {"layer": stats.name, "shape": f"{stats.shape[0]}x{stats.shape[1]}",
               "activation": stats.activation, "nonzeros": f"{stats.nnz:,}", "density": f"{100 * stats.density:.2f}%",
               "padding": f"{stats.padding:,}",
               "entries per PE (min/mean/max)": f"{stats.entries_min}/"
                                                f"{stats.entries_mean:.1f}/{stats.entries_max}"}
        if ctx.work is not None:
            work = ctx.work[index]
            row["nonzero inputs (mean)"] = (
                f"{work.nonzero.mean():.1f} of {work.positions * stats.shape[1]}"
                + (f" ({work.positions} patches of {stats.shape[1]})"
                   if work.positions > 1 else ""))
        if ctx.compressed is not None:
            report = ctx.compressed.report.layers[index]
            rows_, columns = ctx.compressed.network.layers[index].codes.shape
            row["compression"] = f"{report.compression_ratio:.1f}x" + (
                "" if (rows_, columns) == tuple(stats.shape)
                else f" (the model's {rows_}x{columns} layer)")
        if ctx.sim is not None:
            sim = ctx.sim
            row["cycles measured"] = f"{sim.measured[index]:.1f}"
            row["limit / bound"] = f"{sim.limit[index]:.1f} / {sim.bound[index]:.1f}"
            row["cycle model"] = f"{sim.predicted[index]:.1f}"
            row["overhead"] = f"{sim.overhead[index]:.0f}"
        elif ctx.predicted is not None:
            row["limit / bound"] = (f"{ctx.work[index].limit.mean():.1f} / "
                                    f"{ctx.work[index].bound.mean():.1f}")
            row["cycle model"] = f"{ctx.predicted[:, index].mean():.1f}"
        rows.append(row)
    return rows


def _notes(ctx: _Context) -> list[str]:
    notes = []
    if ctx.compressed is None:
        notes.append("No compressed model was given: the weight plots show the program's "
                     "integer codebook only, and the compression ratio is not known.")
    elif getattr(ctx.compressed, "pruned_weights", None) is None:
        notes.append("The model file does not hold the weights before sharing (written by an "
                     "older sparseforge): the weight plots show the shared weights only.")
    if ctx.sim is None:
        notes.append("No RTL simulation was given: cycles are the cycle model's, and the "
                     "hardware accuracy is not known (run 'sparseforge report DIR --simulate').")
    if ctx.work is not None:
        count = len(ctx.work[0].work)
        notes.append(f"E_k, limits and bounds are exact counts over the program image for the "
                     f"{count} inputs given (golden model activations).")
    if ctx.build is None and ctx.resources:
        notes.append("No bitstream build was given: resources are the compiler's estimate "
                     "and latency uses the board's target clock, not a measured Fmax.")
    return notes


def _summary_json(ctx: _Context, rows, layers, plots) -> dict:
    sim = ctx.sim
    # Without an RTL simulation the cycles are the cycle model's (exact against the RTL), as
    # in the table; ``cycles_source`` says which.
    cycles = efficiency = source = None
    if sim is not None:
        cycles, efficiency, source = round(sim.total, 2), sim.efficiency, "rtl"
    elif ctx.predicted is not None and ctx.work is not None:
        work = sum(float(w.total.sum()) for w in ctx.work) / ctx.program.config.pes
        cycles = round(float(ctx.predicted.sum(axis=1).mean()), 2)
        efficiency, source = work / float(ctx.predicted.sum()), "cycle model"
    return {
        "summary": [row.__dict__ for row in rows], "layers": layers,
        "plots": [plot.name for plot in plots],
        "accuracy_float": ctx.float_accuracy, "accuracy_compressed": ctx.quantized_accuracy,
        "accuracy_hardware": None if sim is None else sim.accuracy,
        "compression_ratio": (None if ctx.compressed is None
                              else round(ctx.compressed.report.compression_ratio, 4)),
        "cycles_per_inference": cycles, "cycles_source": source, "efficiency": efficiency,
        "fmax_mhz": None if ctx.build is None else ctx.build.fmax_mhz,
        "clock_mhz": ctx.clock_mhz,
    }


def _markdown(title, rows, layers, plots, notes) -> str:
    def cell(text) -> str:
        return str(text).replace("|", "\\|")

    lines = [f"# {title}", "", "## Summary", "", "| figure | value | source |", "|---|---|---|"]
    lines += [f"| {cell(r.label)} | {cell(r.value)} | {cell(r.source)} |" for r in rows]
    lines += ["", "## Layers", ""]
    if layers:
        header = list(layers[0])
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cell(row[h]) for h in header) + " |" for row in layers]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    lines += ["", "## Plots", ""]
    for plot in plots:
        lines += [f"![{plot.caption}]({plot.name})", "", f"*{plot.caption}*", ""]
    return "\n".join(lines) + "\n"


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.source { color: #666; font-size: 0.9em; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
"""


def _html(title, rows, layers, plots, notes) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{e(title)}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>",
             f"<h1>{e(title)}</h1>", "<h2>Summary</h2>",
             '<table class="summary"><tr><th>figure</th><th>value</th><th>source</th></tr>']
    parts += [f'<tr data-key="{e(r.key)}"><th>{e(r.label)}</th><td>{e(r.value)}</td>'
              f'<td class="source">{e(r.source)}</td></tr>' for r in rows]
    parts += ["</table>", "<h2>Layers</h2>", '<table class="layers">']
    if layers:
        parts.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in layers[0]) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in row.values()) + "</tr>"
                  for row in layers]
    parts.append("</table>")
    if notes:
        parts += ["<h2>Notes</h2>", "<ul>"] + [f"<li>{e(n)}</li>" for n in notes] + ["</ul>"]
    parts.append("<h2>Plots</h2>")
    for plot in plots:
        data = base64.b64encode(plot.png).decode("ascii")
        parts.append(f'<figure id="{e(plot.name)}"><img src="data:image/png;base64,{data}" '
                     f'alt="{e(plot.caption)}"><figcaption>{e(plot.caption)} '
                     f"({e(plot.name)})</figcaption></figure>")
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"
