"""``sparseforge compile MODEL.sfm --pes N [--board B] -o DIR``: the program image, the engine
configuration, the engine's Verilog, and a report of the encoding and its cost."""

from __future__ import annotations

from pathlib import Path

from .common import add_json_flag, console_for, emit_json, fail


def register(verbs) -> None:
    parser = verbs.add_parser("compile", help="lower a compressed model to a program + Verilog")
    parser.add_argument("model", help="a compressed model (.sfm)")
    parser.add_argument("--pes", type=int, default=8, help="processing elements (1..64)")
    parser.add_argument("--board", help="check the engine fits this board")
    parser.add_argument("--scan-lanes", type=int, help="activations scanned per cycle")
    parser.add_argument("-o", "--output", default="build/program", help="program directory")
    parser.add_argument("--no-verilog", action="store_true", help="skip writing engine.v")
    add_json_flag(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    import sparseforge as sf
    from sparseforge.compiler.configure import DoesNotFit, estimate_resources
    from sparseforge.compiler.compress.model import CompressedModelError
    from sparseforge.sim.reference.workload import layer_stats

    console = console_for(args)
    try:
        compressed = sf.load_compressed(args.model)
        program = sf.compile(compressed, pes=args.pes, board=args.board,
                             scan_lanes=args.scan_lanes)
    except (CompressedModelError, DoesNotFit, ValueError, TypeError) as error:
        return fail(str(error))
    directory = program.save(args.output)
    verilog = None
    if not args.no_verilog:
        from sparseforge.sim.rtl import write_engine_verilog
        with console.status("generating the engine's Verilog..."):
            verilog = write_engine_verilog(program.config, Path(directory) / "engine.v",
                                           program.image)
    stats = layer_stats(program)
    family = "ice40" if args.board == "icebreaker" else "ecp5"
    resources = estimate_resources(program.config, family)
    render(console, program, stats, resources, family)
    console.print(f"wrote {directory}" + (f" and {verilog.name}" if verilog else ""))
    emit_json(args, {
        "output": str(directory), "verilog": str(verilog) if verilog else None,
        "config": program.config.to_json(),
        "layers": [{"name": s.name, "shape": list(s.shape), "nnz": s.nnz,
                    "padding": s.padding, "entries_per_pe": [s.entries_min, s.entries_mean,
                                                             s.entries_max],
                    "memory_bits": s.memory_bits} for s in stats],
        "resources_estimate": {**resources.to_json(), "family": family}})
    return 0


def render(console, program, stats, resources, family) -> None:
    from rich import box
    from rich.table import Table

    table = Table(title=f"Program for {program.config.pes} PEs (scan width "
                        f"{program.config.scan_lanes})", title_justify="left",
                  box=box.SIMPLE_HEAD)
    for column in ("layer", "shape", "nnz", "padding", "entries/PE min", "mean", "max",
                   "memory bits"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for s in stats:
        table.add_row(s.name, f"{s.shape[0]}x{s.shape[1]}", f"{s.nnz:,}", f"{s.padding:,}",
                      str(s.entries_min), f"{s.entries_mean:.1f}", str(s.entries_max),
                      f"{s.memory_bits:,}")
    console.print(table)
    c = program.config
    console.print(f"engine: {c.pes} PEs, {c.act_bits}-bit activations, {c.coef_bits}-bit "
                  f"codebook values, {c.acc_bits}-bit accumulators, {c.entry_depth} entries "
                  f"per PE; estimated {resources.lut:,} LUTs, {resources.bram} block RAMs "
                  f"({family}), {resources.dsp} DSPs")
