"""``sparseforge demo``: the whole pipeline on the embedded default, start to finish.

Trains the digits MLP (64-128-10 on scikit-learn's bundled 8x8 digits), compresses it (90%
pruned, 4-bit shared weights, 8-bit activations), compiles it for the board's engine, checks the
golden model, verifies the generated Verilog bit for bit under cocotb on the whole test split,
builds the bitstream, and writes the report.  Everything lands in ``--out`` (default
``build/demo``):

    digits.sfm                 the compressed model
    program/                   image, engine.json, engine.v, report.json (sparseforge compile)
    program/sim.json           the RTL simulation's figures (sparseforge sim --json)
    program/bitstream/         the bitstream and build.json (sparseforge build)
    program/report/            report.html, report.md and the PNG plots (sparseforge report)
    demo.json                  the summary and every stage's time

A stage whose tool is missing stops the demo with a message saying how to get it; no stage is
skipped silently.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from .common import (
    add_json_flag,
    console_for,
    emit_json,
    fail,
    output_folder,
    positive_int,
    seeds_option,
)


def register(verbs) -> None:
    parser = verbs.add_parser("demo", help="run the whole pipeline on the embedded default",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--board", default="icebreaker", help="target board (default "
                                                               "icebreaker)")
    parser.add_argument("--model", default="mlp", choices=("mlp", "cnn"),
                        help="mlp: the digits MLP 64-128-10 (default); cnn: a small CNN on the "
                             "same images (conv 1->8 3x3, max pool 2, conv 8->16 3x3, max pool "
                             "2, linear 64->10; 72%% of the conv weights pruned), on the "
                             "engine's conv mode")
    parser.add_argument("--pes", type=int, default=None,
                        help="processing elements (default: 8 for the MLP; for the CNN the "
                             "most of 8, 4, 2, 1 whose engine fits the board)")
    parser.add_argument("--out", default="build/demo", help="output directory (default "
                                                            "build/demo)")
    parser.add_argument("--count", type=positive_int,
                        help="simulate only the first COUNT test images (default: all of them)")
    parser.add_argument("--simulator", default="verilator", choices=("verilator", "icarus"))
    parser.add_argument("--skip-build", action="store_true",
                        help="stop before the bitstream (no Fmax, latency or resources)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=positive_int, metavar="N",
                        help="nextpnr placements to try, the best kept (as `sparseforge build "
                             "--seeds`; default 2)")
    add_json_flag(parser)
    parser.set_defaults(run=run)


@dataclass
class Stages:
    """Each stage's one-line result and wall time, printed as they finish."""
    console: object
    times: dict[str, float] = field(default_factory=dict)

    def run(self, name: str, action, describe):
        started = time.perf_counter()
        result = action()
        seconds = time.perf_counter() - started
        self.times[name] = round(seconds, 1)
        self.console.print(f"[green]✓[/green] [bold]{name:<9}[/bold] {describe(result)} "
                           f"[dim]({seconds:.0f} s)[/dim]")
        return result


def run(args) -> int:
    from sparseforge.boards.bitstream import BuildError
    from sparseforge.boards.registry import board as find_board
    from sparseforge.compiler.config import check_pes
    from sparseforge.compiler.configure import DoesNotFit
    from sparseforge.hw.toolchain import ToolNotFoundError

    console = console_for(args)
    try:
        board = find_board(args.board)
        if args.pes is not None:
            check_pes(args.pes, "--pes")
            _check_fit(args.pes, board)
        _check_tools(args, board)
        out = output_folder(args.out)
    except (ValueError, ToolNotFoundError) as error:
        return fail(str(error))
    engine = f"{args.pes}-PE" if args.pes else ("8-PE" if args.model == "mlp" else "a")
    console.rule(f"sparseforge demo: digits {args.model.upper()} -> {engine} sparse "
                 f"engine -> {board.title}")
    stages = Stages(console)
    started = time.perf_counter()
    try:
        figures = _pipeline(args, board, out, stages, console)
    except (ValueError, DoesNotFit, BuildError, ToolNotFoundError) as error:
        return fail(str(error))
    figures["stage_seconds"] = stages.times
    figures["total_seconds"] = round(time.perf_counter() - started, 1)
    (out / "demo.json").write_text(json.dumps(figures, indent=2) + "\n")
    render(console, figures)
    emit_json(args, figures)
    return 0 if figures["bit_exact"] else 1


def _check_fit(pes: int, board) -> None:
    """What can be refused before training: the engine takes a DSP multiplier per PE."""
    from sparseforge.compiler.errors import InputError

    part = board.part
    if pes > part.dsps:
        raise InputError(f"{pes} PEs do not fit the {board.title}: each PE takes a DSP "
                         f"multiplier and its {part.name} has {part.dsps}; pass --pes "
                         f"{part.dsps} or fewer")


def _compile_fitting(sf, compressed, args, board):
    """The program for ``--pes``, or without it the MLP's 8 PEs and the CNN's largest power
    of two up to 8 that the fit check accepts (conv-mode engines are larger: on the
    iCEBreaker the digits CNN fits 2)."""
    from sparseforge.compiler.configure import DoesNotFit

    if args.pes is not None or args.model == "mlp":
        return sf.compile(compressed, pes=args.pes or 8, board=board.name)
    refusals = []
    for pes in (8, 4, 2, 1):
        try:
            return sf.compile(compressed, pes=pes, board=board.name)
        except DoesNotFit as refusal:
            refusals.append(f"{pes} PEs: {str(refusal).splitlines()[1].strip()}")
    raise DoesNotFit(f"the CNN's engine fits the {board.title} at no PE count:\n  "
                     + "\n  ".join(refusals))


def _check_tools(args, board) -> None:
    """Fail before minutes of work, not after: the simulator and, unless the build is
    skipped, synthesis and place and route must be there."""
    from sparseforge.hw.toolchain import require

    require({"verilator": "verilator", "icarus": "iverilog"}[args.simulator])
    if not args.skip_build:
        require("yosys")
        require(f"nextpnr-{board.part.family}")


def _pipeline(args, board, out: Path, stages: Stages, console) -> dict:
    import numpy as np

    import sparseforge as sf
    from sparseforge.compiler.compress.api import CompressionConfig
    from sparseforge.compiler.compress.digits import (
        DIGITS_SHAPE,
        load_digits_split,
        train_float,
        train_float_cnn,
    )
    from sparseforge.run_report import write_report

    from .compile import summary as compile_summary
    from .compile import write_verilog

    train, val, test = load_digits_split()
    cnn = args.model == "cnn"

    def images(split):
        """The split's inputs as the model takes them (a CNN: batch x 1 x 8 x 8)."""
        return split.x.reshape(-1, *DIGITS_SHAPE) if cnn else split.x

    model = stages.run(
        "train", lambda: (train_float_cnn if cnn else train_float)(seed=args.seed,
                                                                   progress=True),
        lambda m: f"float {'CNN' if cnn else 'MLP 64-128-10'}, "
                  f"{100 * _accuracy(m, images(test), test.y):.2f}% on the "
                  f"{len(test.y)} test images")

    # iCE40 block RAMs are 16 bits wide: keep the accumulators within them.  The CNN's first
    # convolution has 9 weights a filter: pruned least (its sensitivity), the second most.
    config = CompressionConfig(seed=args.seed,
                               max_acc_bits=16 if board.part.family == "ice40" else None,
                               per_layer_sparsity=CNN_SPARSITY if cnn else None)
    compressed = stages.run(
        "compress", lambda: sf.compress(model, (images(train), train.y),
                                        (images(val), val.y), test=(images(test), test.y),
                                        config=config, progress=True),
        lambda c: f"{100 * c.report.sparsity:.1f}% pruned, 4-bit shared weights, "
                  f"{c.report.compression_ratio:.1f}x smaller, "
                  f"{100 * c.report.accuracy_quantized:.2f}% fixed point")

    def compile_program():
        program = _compile_fitting(sf, compressed, args, board)
        directory = out / "program"

        def extra(folder):
            verilog = write_verilog(program, folder)
            (folder / "report.json").write_text(json.dumps(
                compile_summary(program, directory, directory / verilog.name), indent=2) + "\n")

        program.save(directory, extra=extra)
        # Saved once the engine fits: a refused model leaves no file behind.
        compressed.save(out / ("digits_cnn.sfm" if cnn else "digits.sfm"))
        return program

    program = stages.run(
        "compile", compile_program,
        lambda p: f"{sum(len(e) for e in p.image.entries):,} entries over {p.config.pes} PEs, "
                  f"{p.config.acc_bits}-bit accumulators, engine.v written"
                  + ("; entries per layer " + ", ".join(
                      f"{e['layer']} {e['image']} (its kernel: {e['kernel']})"
                      for e in _image_entries(p)) if p.config.conv else ""))
    directory = out / "program"

    golden = stages.run(
        "golden", lambda: sf.reference(program, test.x),
        lambda g: f"golden model {100 * np.mean(g.argmax(axis=1) == test.y):.2f}% "
                  f"(compression stage said {100 * compressed.report.accuracy_quantized:.2f}%)")
    golden_accuracy = float(np.mean(golden.argmax(axis=1) == test.y))

    count = args.count or len(test.y)
    with console.status(f"simulating {count} test images on {args.simulator} "
                        f"(Verilator compiles the engine first)..."):
        simulation = stages.run(
            "simulate", lambda: sf.simulate(program, test.x[:count], labels=test.y[:count],
                                            simulator=args.simulator,
                                            build_dir=directory / "sim"),
            lambda s: (f"{len(s.outputs)} images, "
                       + ("[green]bit-exact[/green]" if s.mismatches == 0
                          else f"[red]{s.mismatches} outputs differ[/red]")
                       + f", {s.total_cycles.mean():.0f} cycles per inference, "
                         f"cycle model within {100 * s.model_error:.1f}%"))
    (directory / "sim.json").write_text(json.dumps(simulation.to_json(), indent=2) + "\n")

    build = None
    if not args.skip_build:
        with console.status("synthesis, place and route...") as status:
            build = stages.run(
                "build", lambda: sf.build(program, board.name, build_dir=directory / "bitstream",
                                          progress=lambda text: status.update(text),
                                          **seeds_option(args)),
                lambda b: f"Fmax {b.fmax_mhz:.1f} MHz, engine clock {b.target_mhz:.1f} MHz, "
                          + ", ".join(f"{name} {r.used}/{r.available}"
                                      for name, r in sorted(b.utilisation.items())))

    html = stages.run(
        "report", lambda: write_report(directory / "report", compressed=compressed,
                                       program=program, simulation=simulation.to_json(),
                                       build=None if build is None else build.to_json(),
                                       inputs=test.x[:count]),
        lambda path: f"{path}")

    report = compressed.report
    cycles = float(simulation.total_cycles.mean())
    figures = {
        "board": board.name, "pes": program.config.pes, "output": str(out),
        "accuracy_float": report.accuracy_float,
        "accuracy_compressed": report.accuracy_quantized,
        "accuracy_golden": golden_accuracy,
        "accuracy_hardware": simulation.accuracy,
        "hardware_images": len(simulation.outputs),
        "bit_exact": simulation.mismatches == 0,
        "compression_ratio": round(report.compression_ratio, 2),
        "compression_ratio_huffman": round(report.compression_ratio_huffman, 2),
        "nonzeros": int(report.nnz), "weights": int(report.weights),
        "cycles_per_inference": round(cycles, 1),
        "cost_model_limit": round(float(simulation.limit.sum(axis=1).mean()), 1),
        "cost_model_bound": round(float(simulation.bound.sum(axis=1).mean()), 1),
        "cost_model_overhead": int(simulation.overhead.sum()),
        "cycle_model_max_error": round(simulation.model_error, 4),
        "efficiency": round(simulation.efficiency, 4),
        "report": str(html),
        "image_entries": _image_entries(program),
    }
    if build is not None:
        figures |= {
            "fmax_mhz": round(build.fmax_mhz, 2), "clock_mhz": round(build.target_mhz, 3),
            "timing_met": build.timing_met,
            "latency_us": round(cycles / build.target_mhz, 2),
            "utilisation": {name: r.to_json() for name, r in build.utilisation.items()},
            "bitstream": str(build.bitstream),
        }
    return figures


def _image_entries(program) -> list[dict]:
    """Per layer, its entries in the program image beside its weight matrix's (a
    convolution's kernel's) own encoding for the engine's PEs: equal, whatever the number of
    output positions, since each kernel is stored once."""
    from sparseforge.compiler.encode import encode_layer

    out = []
    for index, layer in enumerate(program.network.layers):
        kernel = sum(csc.entries for csc in encode_layer(layer.codes, program.config.pes,
                                                         program.config.max_zero_run))
        geometry = getattr(layer, "geometry", None)
        out.append({"layer": layer.name, "image": int(program.column_counts(index).sum()),
                    "kernel": int(kernel),
                    "positions": geometry.positions if geometry is not None else 1})
    return out


# The digits CNN's per-layer sparsities (conv1, conv2, fc): 72% of the conv weights pruned.
CNN_SPARSITY = (0.3, 0.75, 0.6)


def _accuracy(model, x, y) -> float:
    import torch

    with torch.no_grad():
        logits = model(torch.as_tensor(x, dtype=torch.float32))
    return float((logits.argmax(dim=1).numpy() == y).mean())


def render(console, figures: dict) -> None:
    from rich import box
    from rich.table import Table

    def percent(value):
        return "-" if value is None else f"{100 * value:.2f}%"

    table = Table(title="Summary", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("how it was measured")
    table.add_row("accuracy, float", percent(figures["accuracy_float"]),
                  "the trained network in float64 NumPy, test split")
    table.add_row("accuracy, compressed", percent(figures["accuracy_compressed"]),
                  "fixed point with the engine's integer arithmetic")
    table.add_row("accuracy, hardware", percent(figures["accuracy_hardware"]),
                  f"generated Verilog under cocotb, {figures['hardware_images']} images, "
                  + ("bit-exact vs the golden model" if figures["bit_exact"]
                     else "[red]NOT bit-exact[/red]"))
    table.add_row("compression ratio", f"{figures['compression_ratio']:.1f}x",
                  f"Deep Compression accounting ({figures['compression_ratio_huffman']:.1f}x "
                  f"with Huffman)")
    table.add_row("nonzero weights", f"{figures['nonzeros']:,} / {figures['weights']:,}",
                  "after pruning")
    table.add_row("cycles per inference", f"{figures['cycles_per_inference']:.1f}",
                  f"measured in simulation (the cycle model is off by at most "
                  f"{100 * figures['cycle_model_max_error']:.1f}%)")
    table.add_row("cost model", f"{figures['cost_model_limit']:.1f}",
                  f"limit ceil(sum E_k / N), summed over the layers; bound max E_k "
                  f"{figures['cost_model_bound']:.1f}; plus {figures['cost_model_overhead']} "
                  f"cycles of stated per-layer overhead (descriptor, codebook load, "
                  f"write-back, pipeline fill)")
    table.add_row("load-balance efficiency", percent(figures["efficiency"]),
                  "(sum of PE work / N) / measured cycles")
    if "fmax_mhz" in figures:
        table.add_row("Fmax", f"{figures['fmax_mhz']:.1f} MHz",
                      f"nextpnr; the engine clock is {figures['clock_mhz']:.2f} MHz")
        table.add_row("latency per inference", f"{figures['latency_us']:.1f} µs",
                      "measured cycles / engine clock")
        for name, use in sorted(figures["utilisation"].items()):
            table.add_row(f"{name}", f"{use['used']:,} / {use['available']:,}",
                          f"{100 * use['used'] / max(use['available'], 1):.0f}% of the part")
    else:
        table.add_row("Fmax, resources", "-", "not built (--skip-build)")
    console.print(table)
    times = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in
                      figures["stage_seconds"].items())
    console.print(f"stage times: {times}; total {figures['total_seconds']:.0f} s")
    console.print(f"report: {figures['report']}")
