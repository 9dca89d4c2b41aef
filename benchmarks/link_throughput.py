"""Inferences per second over the host link, in the board simulation, against the link's own
limit.

The board is simulated whole (``LinkedEngine``: UART, link bridge, engine, in Verilator under
cocotb) at the board's clocks and baud rate (the iCEBreaker: engine 33 MHz from the PLL, link
on the 12 MHz oscillator, 3 Mbaud), and the host's ``Device`` talks to it over the simulated
line.  The same inputs go through ``Device.infer`` (LOAD_INPUT, RUN, READ_OUTPUT, READ_CYCLES,
each waiting for its answer) and through ``Device.infer_many`` (one INFER frame per input, up to
``window`` unanswered).  Times are simulated seconds, not wall time.

The link's limit is the busier direction: a UART carries both at once, so a stream of
inferences can go no faster than ``baud / 10`` bytes per second over the bytes one inference
puts on that direction (its frames as sent, SLIP escapes and delimiters included).

    .venv/bin/python benchmarks/link_throughput.py [--board icebreaker] [--inputs 32]
        [--windows 1,2,4] [--model digits.sfm] [--json]
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from digits_model import ensure_model  # noqa: E402


def wire_bytes(inputs, out_features: int, layers: int) -> dict:
    """Mean bytes per inference on each direction of the line, frames as sent."""
    from sparseforge.boards.protocol import Opcode, Status, encode_frame, reply_length

    session, seq = 0x1234, 7

    def reply(opcode, count=0):
        # A reply's contents do not matter for its length but through escapes: zeros.
        return len(encode_frame(seq, Status.OK, bytes(reply_length(opcode, count))))

    one_by_one, streamed = [], []
    for x in inputs:
        values = struct.pack(f"<{len(x)}h", *(int(v) for v in x))
        to_board = (len(encode_frame(seq, Opcode.LOAD_INPUT, struct.pack("<H", session) + values))
                    + len(encode_frame(seq, Opcode.RUN, struct.pack("<H", session)))
                    + len(encode_frame(seq, Opcode.READ_OUTPUT, struct.pack("<H", out_features)))
                    + len(encode_frame(seq, Opcode.READ_CYCLES, struct.pack("<H", layers))))
        to_host = (reply(Opcode.LOAD_INPUT) + reply(Opcode.RUN)
                   + reply(Opcode.READ_OUTPUT, out_features) + reply(Opcode.READ_CYCLES, layers))
        one_by_one.append((to_board, to_host))
        streamed.append((len(encode_frame(seq, Opcode.INFER,
                                          struct.pack("<HH", session, out_features) + values)),
                         reply(Opcode.INFER, out_features)))
    return {"infer": np.mean(one_by_one, axis=0).tolist(),
            "infer_many": np.mean(streamed, axis=0).tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--board", default="icebreaker")
    parser.add_argument("--pes", type=int, default=8)
    parser.add_argument("--model", type=Path, help="a .sfm (default: the digits model)")
    parser.add_argument("--inputs", type=int, default=32, help="inferences per method")
    parser.add_argument("--windows", default="1,2,4",
                        help="infer_many windows to measure (comma-separated)")
    parser.add_argument("--keep", type=Path, help="keep the simulation's files here")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import sparseforge as sf
    from sparseforge.boards.simulate import LinkTiming, simulate_board
    from sparseforge.compiler.compress.digits import load_digits_split

    program = sf.compile(sf.load_compressed(ensure_model(args.model)), pes=args.pes,
                         board=args.board)
    x_test = load_digits_split()[2].x[:args.inputs]
    inputs = program.quantize_input(x_test)
    expected = np.asarray(sf.reference(program, x_test))
    timing = LinkTiming.of(args.board)
    windows = [int(w) for w in args.windows.split(",")]
    out_features, layers = program.out_features, program.image.layer_count
    with tempfile.TemporaryDirectory(prefix="sparseforge-link-throughput-") as scratch:
        result = simulate_board(program.config, program.image, inputs,
                                out_features=out_features, build_dir=args.keep or scratch,
                                timing=timing, windows=windows)
    if result["failures"]:
        raise SystemExit(f"inferences failed: {result['failures'][:3]}")

    byte_rate = timing.baud / 10
    sizes = wire_bytes(inputs, out_features, layers)
    count = len(inputs)
    rows = []

    def row(method, window, seconds, outputs, size):
        limit = byte_rate / max(size)
        rate = count / seconds
        rows.append({"method": method, "window": window, "bytes_to_board": size[0],
                     "bytes_to_host": size[1], "limit_per_s": limit, "measured_per_s": rate,
                     "ratio": rate / limit,
                     "bit_exact": bool(np.array_equal(program.network_output(outputs), expected))})

    row("infer", None, result["seconds"], result["outputs"], sizes["infer"])
    for streamed in result["streamed"]:
        row("infer_many", streamed["window"], streamed["seconds"], streamed["outputs"],
            sizes["infer_many"])
    figures = {"board": args.board, "baud": timing.baud, "link_mhz": timing.link_hz / 1e6,
               "clocks_per_bit": timing.clocks_per_bit, "engine_mhz": timing.engine_hz / 1e6,
               "inputs": count, "in_features": program.in_features,
               "out_features": out_features,
               "engine_cycles_per_inference": float(np.mean(
                   [sum(c) for c in result["cycles"]])),
               "rows": rows}
    if args.json:
        print(json.dumps(figures))
        return
    print(f"{args.board}: {timing.baud} baud ({timing.clocks_per_bit} cycles of the "
          f"{timing.link_hz / 1e6:g} MHz link clock per bit), engine at "
          f"{timing.engine_hz / 1e6:g} MHz, {figures['engine_cycles_per_inference']:.0f} "
          f"engine cycles per inference; {count} inferences of {program.in_features} inputs "
          f"and {out_features} outputs; simulated time")
    print(f"{'method':18s} {'bytes to board':>15s} {'to host':>8s} {'limit/s':>9s} "
          f"{'measured/s':>11s} {'ratio':>7s} {'bit-exact':>10s}")
    for r in rows:
        name = r["method"] + (f" w={r['window']}" if r["window"] else "")
        print(f"{name:18s} {r['bytes_to_board']:15.1f} {r['bytes_to_host']:8.1f} "
              f"{r['limit_per_s']:9.0f} {r['measured_per_s']:11.0f} {r['ratio']:7.1%} "
              f"{'yes' if r['bit_exact'] else 'NO':>10s}")
    print("limit: baud / 10 bytes per second over the busier direction's bytes per inference")


if __name__ == "__main__":
    main()
