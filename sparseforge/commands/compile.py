"""``sparseforge compile MODEL.sfm --pes N [--board B] -o DIR``: lower a compressed model to a
program (image + engine.json), optionally the engine's Verilog, and report the encoding (per
layer: shape, nnz, padding, per-PE load, memory bits) and the engine's estimated resources
against the board.  With ``--json``, one JSON object on stdout (also written to
``DIR/report.json``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import add_json_flag, console_for, emit_json, fail


def register(verbs) -> None:
    parser = verbs.add_parser("compile", help="lower a compressed model to a program image",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a compressed model (.sfm, from `sparseforge compress`)")
    parser.add_argument("--pes", type=int, help="processing elements, 1..64 (default 8; "
                                                "with --board, the most that fit when 8 do "
                                                "not)")
    parser.add_argument("--board", help="refuse an engine that does not fit this board")
    parser.add_argument("--scan-lanes", type=int, help="activations scanned per cycle "
                                                       "(default: largest of 1, 2, 4, 8 "
                                                       "dividing --pes; 1 on iCE40 boards)")
    parser.add_argument("--fifo-depth", type=int, help="activation queue depth (default 8; "
                                                       "2 on an iCE40, to fit)")
    parser.add_argument("--headroom", type=float, help="spare capacity as a fraction (0.5: "
                                                       "memories 50%% deeper) for later models")
    parser.add_argument("--writeback-lanes", type=int,
                        help="requantizers at write-back (0: one per PE; 2 on 8 PEs: each "
                             "shared by 4). Default: one per PE, or on a board the least "
                             "sharing that fits")
    parser.add_argument("--skip-zeros", action="store_true",
                        help="on a one-lane iCE40 engine, skip zero activations (EIE's "
                             "leading-nonzero detection), when its block RAM and cells fit")
    parser.add_argument("--no-balance", action="store_true",
                        help="keep every layer's row order (no row balancing over the PEs)")
    parser.add_argument("--keep-dead-units", action="store_true",
                        help="keep the hidden units no output depends on (pruned away)")
    parser.add_argument("-o", "--output", default="build/program", help="program directory")
    parser.add_argument("--no-verilog", action="store_true", help="skip writing engine.v")
    add_json_flag(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    import sparseforge as sf
    from sparseforge.compiler.compress.model import CompressedModelError

    console = console_for(args)
    model, output = Path(args.model).resolve(), Path(args.output).resolve()
    if output in model.parents:
        return fail(f"{args.model} lies inside {args.output}, which compile replaces whole "
                    f"with the program: write the program elsewhere (-o) or move the model "
                    f"out first")
    foreign = _not_a_programs(Path(args.output))
    if foreign:
        return fail(f"{args.output} holds files no sparseforge verb wrote there "
                    f"({', '.join(foreign)}), and compile replaces the folder whole: move "
                    f"them out first, or write the program elsewhere (-o)")
    try:
        compressed = sf.load_compressed(args.model)
        program = sf.compile(compressed, pes=args.pes, board=args.board,
                             scan_lanes=args.scan_lanes, fifo_depth=args.fifo_depth,
                             headroom=args.headroom, writeback_lanes=args.writeback_lanes,
                             skip_zeros=args.skip_zeros, balance=not args.no_balance,
                             remove_dead=not args.keep_dead_units)
    except (CompressedModelError, ValueError, TypeError) as error:
        return fail(str(error))
    directory = Path(args.output)
    verilog = None if args.no_verilog else directory / "engine.v"
    payload = summary(program, directory, verilog)
    payload["dead_units_removed"] = removed_units(compressed.network, program.network)
    if program.inputs is not None:
        payload["inputs_removed"] = {"inputs": program.inputs.features,
                                     "kept": len(program.inputs.columns)}
    if program.output_order is not None:
        payload["output_order"] = [int(row) for row in program.output_order]

    def extra(folder: Path) -> None:
        # Written into the program's new folder before it is renamed into place, so that
        # engine.v and report.json are always this program's.
        if verilog is not None:
            with console.status("generating the engine's Verilog..."):
                write_verilog(program, folder)
        (folder / "report.json").write_text(json.dumps(payload, indent=2) + "\n")

    program.save(directory, extra=extra)
    render(console, program, payload)
    console.print(f"wrote {directory}" + (f" (with {verilog.name})" if verilog else ""))
    emit_json(args, payload)
    return 0


# What the verbs write into a program's folder beside the files program.json lists.
_PROGRAM_OUTPUTS = frozenset({"program.json", "report.json", "engine.v", "sim", "sim.json",
                              "bitstream", "report"})


def _not_a_programs(directory: Path) -> list[str]:
    """The entries of an existing program folder that no verb wrote (the user's own files,
    which replacing the folder removes)."""
    manifest = directory / "program.json"
    if not manifest.is_file():
        return []
    try:
        listed = set(json.loads(manifest.read_text()).get("files", {}))
    except (OSError, ValueError, AttributeError):
        listed = set()
    # A name ending .tmp is a verb's write cut short.
    return sorted(entry.name for entry in directory.iterdir()
                  if entry.name not in listed | _PROGRAM_OUTPUTS
                  and not entry.name.startswith(".") and not entry.name.endswith(".tmp"))


def removed_units(model, network) -> list[dict]:
    """The hidden layers the dead-unit pass narrowed (``compiler/dead_units.py``)."""
    return [{"layer": mine.name, "units": mine.out_features, "kept": theirs.out_features}
            for mine, theirs in zip(model.layers[:-1], network.layers[:-1])
            if mine.out_features != theirs.out_features]


def write_verilog(program, directory) -> Path:
    """``DIR/engine.v``, generated as for the program's board (e.g. iCE40 SPRAM) if it has one."""
    from sparseforge.hw.verilog import write_engine_verilog

    platform = None
    if program.board:
        from sparseforge.boards.registry import board as find_board
        platform = find_board(program.board).make_platform()
    return write_engine_verilog(program.config, Path(directory) / "engine.v", program.image,
                                platform=platform)


# Without a board, the estimate is shown against each family's largest part of those the
# boards carry, and beside it the engine that board's --board would shape.
_UNSHAPED_BOARDS = {"iCE40UP5K": "icebreaker", "LFE5U-85F": "ulx3s-85f"}


def resource_rows(program) -> list[dict]:
    """The estimate against the program's board, or against each family's largest part of
    those the boards carry when no board was given: this engine's (not shaped for the part),
    and under ``shaped`` the engine ``--board`` would make for it (one scan lane and
    accumulators in block RAM on an iCE40, retimed links on ECP5)."""
    from sparseforge.boards.registry import board as find_board
    from sparseforge.compiler.configure import derive_config
    from sparseforge.compiler.parts import PARTS
    from sparseforge.compiler.resources import estimate_resources

    if program.board:
        parts = [find_board(program.board).part]
    else:
        parts = [PARTS[name] for name in _UNSHAPED_BOARDS]
    rows = []
    for part in parts:
        use = estimate_resources(program.config, part)
        row = {"part": part.name, "family": part.family, "estimate": use.to_json(),
               "available": {"lut": part.luts, "bram": part.brams, "dsp": part.dsps,
                             "spram": part.sprams}}
        if not program.board:
            board = _UNSHAPED_BOARDS[part.name]
            try:
                shaped = derive_config(program.network, program.config.pes, board=board,
                                       fit_check=False)
            except ValueError:
                shaped = None             # no engine for it at all; the row says enough
            if shaped is not None:
                row["shaped"] = {"board": board,
                                 "estimate": estimate_resources(shaped, part).to_json()}
        rows.append(row)
    return rows


def summary(program, directory, verilog) -> dict:
    import dataclasses

    from sparseforge.sim.reference.workload import layer_stats

    stats = layer_stats(program)
    return {
        "output": str(directory), "verilog": str(verilog) if verilog else None,
        "board": program.board, "pes": program.config.pes,
        # Every field (engine.json leaves out those at their default, to stay what earlier
        # versions wrote).
        "config": dataclasses.asdict(program.config),
        "layers": [s.to_json() for s in stats],
        "entries": int(sum(len(e) for e in program.image.entries)),
        "memory_bits": int(sum(s.memory_bits for s in stats)),
        "resources": resource_rows(program),
    }


def render(console, program, payload) -> None:
    from rich import box
    from rich.table import Table

    config = program.config
    sharing = config.writeback_period
    plural = "s" if config.pes > 1 else ""
    table = Table(title=f"Program for {config.pes} PE{plural} (scan lanes {config.scan_lanes}"
                        f"{', zeros skipped' if config.skip_zeros else ''}, requantizers "
                        f"{'one per PE' if sharing == 1 else f'shared by {sharing} PEs'}, "
                        f"{config.idx_bits}-bit zero runs; entries per PE, padding "
                        f"included; memory bits)", title_justify="left",
                  box=box.SIMPLE_HEAD)
    for column in ("layer", "shape", "nnz", "density", "padding", "PE min", "PE mean",
                   "PE max", "bits", "activation"):
        table.add_column(column, justify="left" if column in ("layer", "activation")
                         else "right")
    for layer in payload["layers"]:
        per_pe = layer["entries_per_pe"]
        table.add_row(layer["name"], "x".join(map(str, layer["shape"])), f"{layer['nnz']:,}",
                      f"{100 * layer['density']:.1f}%", f"{layer['padding']:,}",
                      str(per_pe["min"]), f"{per_pe['mean']:.1f}", str(per_pe["max"]),
                      f"{layer['memory_bits']:,}", layer["activation"])
    console.print(table)
    for layer in payload.get("dead_units_removed", []):
        console.print(f"{layer['layer']}: {layer['units'] - layer['kept']} of its "
                      f"{layer['units']} units removed, no output depends on them "
                      f"(--keep-dead-units keeps them)")
    if "inputs_removed" in payload:
        inputs = payload["inputs_removed"]
        console.print(f"inputs: {inputs['inputs'] - inputs['kept']} of the model's "
                      f"{inputs['inputs']} are read by no weight; the host sends the other "
                      f"{inputs['kept']} (--keep-dead-units keeps them all)")
    if "output_order" in payload:
        console.print(f"outputs: the last layer's {len(payload['output_order'])} rows are "
                      f"placed over the PEs to even their entries; the host reads them back "
                      f"in the model's order (--no-balance keeps them in it)")
    console.print(f"engine: {config.act_bits}-bit activations, {config.code_bits}-bit codes, "
                  f"{config.coef_bits}-bit codebook values, {config.acc_bits}-bit "
                  f"accumulators, {config.entry_depth} entries per PE, "
                  f"{config.max_features} features")
    resources = Table(title="Estimated resources (a linear model, not a synthesis result)",
                      title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("part", "LUT4", "BRAM", "DSP", "SPRAM"):
        resources.add_column(column, justify="left" if column == "part" else "right")
    for row in payload["resources"]:
        use, have = row["estimate"], row["available"]
        cells = []
        for key in ("lut", "bram", "dsp", "spram"):
            text = f"{use[key]:,} / {have[key]:,}"
            cells.append(f"[red]{text}[/red]" if use[key] > have[key] else text)
        resources.add_row(row["part"], *cells)
    console.print(resources)
    for row in payload["resources"]:
        if "shaped" in row:
            shaped, have = row["shaped"], row["available"]
            console.print(f"{row['part']}: this engine is not shaped for a board; with --board "
                          f"{shaped['board']} it would take about "
                          f"{shaped['estimate']['lut']:,} of {have['lut']:,} LUT4 and "
                          f"{shaped['estimate']['bram']} of {have['bram']} BRAM")
