"""The whole pipeline through the Python API, on the embedded default (an MLP on 8x8 digits).

    python examples/api_end_to_end.py                 # compress, compile, golden model, RTL sim
    python examples/api_end_to_end.py --images 20     # simulate 20 test images instead of 8
    python examples/api_end_to_end.py --build         # also build the iCEBreaker bitstream

Steps: train the float 64-128-10 MLP on scikit-learn's bundled digits (``train_float``), prune /
share / quantize it (``sf.compress``), lower it for 8 PEs on the iCEBreaker (``sf.compile``),
run the test split through the bit-exact golden model (``sf.reference``), run a few images on
the generated Verilog under cocotb and Verilator (``sf.simulate``) and, with ``--build``, make
the bitstream with Yosys + nextpnr (``sf.build``: minutes with the YoWASP tools).
Everything is written under ``--out`` (default build/example-api).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import sparseforge as sf
from sparseforge.compiler.compress.digits import load_digits_split, train_float


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8,
                        help="test images to simulate on the RTL (0: skip the simulation)")
    parser.add_argument("--build", action="store_true",
                        help="also build the bitstream (Yosys + nextpnr; minutes)")
    parser.add_argument("--out", default="build/example-api", help="output directory")
    args = parser.parse_args(argv)
    out = Path(args.out)
    started = time.perf_counter()

    # 1. The float model and its data: a fixed split of the 1797 digits (no download).
    train, val, test = load_digits_split()
    model = train_float(seed=0)     # nn.Sequential: fc1 Linear(64, 128), ReLU, fc2 Linear(128, 10)

    # 2. Compress: 90% of the weights pruned, 4-bit shared weights, 8-bit activations.  The
    #    iCE40's block RAMs are 16 bits wide, so the accumulators are capped at 16 bits.
    cm = sf.compress(model, train=(train.x, train.y), val=(val.x, val.y),
                     test=(test.x, test.y), sparsity=0.9, weight_bits=4, act_bits=8,
                     max_acc_bits=16)
    report = cm.report
    cm.save(out / "digits.sfm")
    print(f"compress: sparsity {100 * report.sparsity:.1f}%, compression "
          f"{report.compression_ratio:.1f}x; accuracy float {100 * report.accuracy_float:.2f}% "
          f"-> fixed point {100 * report.accuracy_quantized:.2f}%")

    # 3. Compile for 8 processing elements; the engine is checked against the iCE40UP5K.
    prog = sf.compile(cm, pes=8, board="icebreaker")
    prog.save(out / "program")
    config = prog.config
    entries = sum(len(e) for e in prog.image.entries)
    print(f"compile: {config.pes} PEs, {entries} entries ({config.entry_depth} per PE at "
          f"most), {config.acc_bits}-bit accumulators -> {out / 'program'}")

    # 4. The golden model: integer outputs exactly as the engine computes them.
    ref = sf.reference(prog, test.x)
    accuracy = np.mean(ref.argmax(axis=1) == test.y)
    logits = prog.dequantize(ref)
    print(f"reference: {len(test.x)} test images, accuracy {100 * accuracy:.2f}%; "
          f"first image logits {np.round(logits[0], 2).tolist()}")

    # 5. The generated Verilog under cocotb + Verilator, compared bit for bit.
    if args.images > 0:
        x, y = test.x[:args.images], test.y[:args.images]
        sim = sf.simulate(prog, x, labels=y, simulator="verilator",
                          build_dir=out / "program" / "sim")
        exact = np.array_equal(sim.outputs, ref[:args.images])
        print(f"simulate: {len(x)} images on Verilator, "
              f"{'bit-exact' if exact else f'{sim.mismatches} MISMATCHES'} against the "
              f"golden model; accuracy {100 * sim.accuracy:.2f}%; "
              f"{sim.total_cycles.mean():.1f} cycles per inference "
              f"(per layer {sim.cycles.mean(axis=0).round(1).tolist()}); load-balance "
              f"efficiency {100 * sim.efficiency:.1f}%")
        if not exact:
            return 1

    # 6. Optional: the bitstream (minutes; the first YoWASP run compiles WebAssembly).
    if args.build:
        hw = sf.build(prog, board="icebreaker", build_dir=out / "program" / "bitstream")
        used = ", ".join(f"{name} {r.used}/{r.available}"
                         for name, r in sorted(hw.utilisation.items()))
        print(f"build: Fmax {hw.fmax_mhz:.1f} MHz, engine clock {hw.target_mhz:.2f} MHz "
              f"(timing {'met' if hw.timing_met else 'missed'}); {used}; {hw.bitstream}")

    print(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
