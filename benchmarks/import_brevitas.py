"""Issue 18's acceptance run: Brevitas-trained MLPs on the digits, imported with their own
quantization, checked against Brevitas, the reference executors and the RTL.

For W4A4, W2A2 and W1A2 (weights / activations bits; a 4-bit unsigned input quantizer, an
8-bit output quantizer, per-channel weight scales, Int32 biases; the 4- and 2-bit models pruned
to 90% while they train, the binary one dense): train, export to QONNX (PyTorch's dynamo
exporter, Brevitas's default) and to ONNX QDQ (binary weights: converted from the QONNX export,
which Brevitas's QDQ exporter refuses), import each, and print per model and format

* Brevitas' own test accuracy, the imported integer network's, the reference executor's;
* the outputs (of 450 test images x 10 classes) where the golden model, dequantized, differs
  from the reference executor's (qonnx's executor for QONNX, onnxruntime for QDQ);
* the imported networks of both formats compared (they must be the same integers);
* the engine under cocotb on Verilator: the test images' outputs against the golden model,
  and the cycle counters against the cycle model (``--rtl``);
* the iCEBreaker build of the W4A4 model: Fmax and resources (``--build``; 5-10 minutes).

    .venv/bin/python benchmarks/import_brevitas.py [--epochs 40] [--rtl] [--build] [--out DIR]
    .venv/bin/python benchmarks/import_brevitas.py --build-only     # from an earlier run's model

Writes ``DIR/results.json`` (default ``build/import_brevitas``) and the models beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = [(4, 4), (2, 2), (1, 2)]


def same_network(a, b) -> bool:
    return all(np.array_equal(x.codes, y.codes) and np.array_equal(x.codebook, y.codebook)
               and np.array_equal(x.bias, y.bias)
               and all(np.array_equal(getattr(x.requant, f), getattr(y.requant, f))
                       for f in ("multiplier", "shift", "rounding", "half_even"))
               and (x.requant.low, x.requant.high) == (y.requant.low, y.requant.high)
               for x, y in zip(a.layers, b.layers))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--pes", type=int, default=8)
    parser.add_argument("--rtl", action="store_true", help="run the test images on Verilator")
    parser.add_argument("--build", action="store_true", help="build the W4A4 iCEBreaker engine")
    parser.add_argument("--build-only", action="store_true",
                        help="only build the W4A4 engine, from DIR/w4a4.sfm of an earlier run")
    parser.add_argument("--out", default="build/import_brevitas")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")

    import sparseforge as sf
    from sparseforge.compiler.compress.digits import load_digits_split
    from sparseforge.compiler.quantized.reference import compare, reference_outputs
    from tests.brevitas_models import export, train_mlp

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.build_only:
        figures = build_w4a4(sf, out)
        (out / "icebreaker.json").write_text(json.dumps(figures, indent=2, default=str) + "\n")
        return 0
    _, _, test = load_digits_split()
    results = {}
    for weight_bits, act_bits in MODELS:
        name = f"W{weight_bits}A{act_bits}"
        started = time.perf_counter()
        trained = train_mlp(weight_bits, act_bits, hidden=args.hidden, epochs=args.epochs,
                            sparsity=0.9 if weight_bits > 1 else 0.0)
        paths = export(trained, out, dynamo=True)
        row = {"brevitas_accuracy": trained.accuracy, "sparsity": trained.sparsity,
               "train_seconds": round(time.perf_counter() - started, 1)}
        networks = {}
        for kind, path in paths.items():
            imported = sf.load_quantized(path)
            networks[kind] = imported
            reference = reference_outputs(path, test.x)
            program = sf.compile(imported, pes=args.pes)
            golden = sf.reference(program, test.x)
            details = imported.provenance["import"]["layers"]
            row[kind] = {
                "path": path,
                "accuracy_imported": float(np.mean(golden.argmax(axis=1) == test.y)),
                "accuracy_reference": float(np.mean(reference.argmax(axis=1) == test.y)),
                "mismatches": compare(imported.network, reference, golden),
                "outputs_compared": int(reference.size),
                "brevitas_equals_reference": bool(np.array_equal(
                    reference, trained.logits.astype(np.float32))),
                "act_bits": imported.network.act_bits,
                "multiplier_bits": [layer["multiplier_bits"] for layer in details],
                "shifts": [layer["shifts"] for layer in details],
                "weight_sparsity": [round(layer["sparsity"], 4) for layer in details],
                "engine": {"multiplier_bits": program.config.multiplier_bits,
                           "rounding_bits": program.config.rounding_bits,
                           "acc_bits": program.config.acc_bits},
            }
            print(f"{name} {kind:5s}: Brevitas {100 * trained.accuracy:.2f}%, imported "
                  f"{100 * row[kind]['accuracy_imported']:.2f}%, reference "
                  f"{100 * row[kind]['accuracy_reference']:.2f}%, golden vs reference: "
                  f"{row[kind]['mismatches']} of {row[kind]['outputs_compared']} outputs "
                  f"differ; multipliers {row[kind]['multiplier_bits']} bits", flush=True)
        row["same_network"] = same_network(networks["qonnx"].network, networks["qdq"].network)
        if args.rtl:
            imported = networks["qonnx"]
            program = sf.compile(imported, pes=args.pes)
            simulation = sf.simulate(program, test.x, labels=test.y)
            row["rtl"] = {
                "images": int(len(test.x)), "mismatches": simulation.mismatches,
                "cycles_equal_model": bool(np.array_equal(simulation.cycles,
                                                          simulation.predicted)),
                "cycles_per_inference": float(simulation.total_cycles.mean()),
                "accuracy": float(np.mean(simulation.outputs.argmax(axis=1) == test.y)),
                "build_seconds": round(simulation.build_seconds, 1),
                "seconds": round(simulation.seconds, 1),
            }
            print(f"{name} RTL (Verilator, {args.pes} PEs): {row['rtl']['mismatches']} of "
                  f"{simulation.outputs.size} outputs differ from the golden model on "
                  f"{len(test.x)} images; cycles as modelled: {row['rtl']['cycles_equal_model']}"
                  f"; {row['rtl']['cycles_per_inference']:.0f} cycles per inference", flush=True)
        results[name] = row
        networks["qonnx"].save(out / f"{name.lower()}.sfm")
    if args.build:
        results["W4A4"]["icebreaker"] = build_w4a4(sf, out)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {out / 'results.json'}")
    return 0


def build_w4a4(sf, out: Path) -> dict:
    """The W4A4 model's iCEBreaker engine: 8 PEs if it fits the UP5K, else 4 (the refusal is
    printed with its numbers)."""
    from sparseforge.compiler.resources import DoesNotFit

    imported = sf.load_compressed(out / "w4a4.sfm")
    refused = None
    for pes in (8, 4):
        try:
            program = sf.compile(imported, pes=pes, board="icebreaker")
            break
        except DoesNotFit as error:
            refused = str(error)
            print(f"{pes} PEs: {error}")
    started = time.perf_counter()
    build = sf.build(program, board="icebreaker", build_dir=out / "bitstream-icebreaker")
    figures = {"pes": program.config.pes, "fmax_mhz": build.fmax_mhz,
               "target_mhz": build.target_mhz, "utilisation": build.utilisation,
               "seconds": round(time.perf_counter() - started, 1),
               "engine": program.config.to_json(), "refused_first": refused}
    print(f"W4A4 iCEBreaker ({program.config.pes} PEs): Fmax {build.fmax_mhz:.1f} MHz "
          f"(target {build.target_mhz:.1f}); {build.utilisation}", flush=True)
    return figures


if __name__ == "__main__":
    sys.exit(main())
