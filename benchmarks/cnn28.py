"""A 28x28 CNN (MNIST-sized) on the engine's conv mode: compile for the ULX3S-85F, the fit
check on the iCEBreaker, golden == RTL on Verilator, and optionally the ULX3S-85F build.

The network: conv 1 -> 8, 5x5, padding 2, ReLU, max pool 2; conv 8 -> 16, 5x5, padding 2,
ReLU, max pool 2; flatten; linear 784 -> 10.  No MNIST download: it is trained on
scikit-learn's 8x8 digits scaled up to 28x28 (each pixel a 3x3 block, 2 blank rows and
columns around), which is what the engine sees of the network either way.  Prints figures;
asserts nothing about time.

    nice -n 10 .venv/bin/python benchmarks/cnn28.py                  # compile, fit, 20 on RTL
    nice -n 10 .venv/bin/python benchmarks/cnn28.py --build          # and the ULX3S-85F build
    nice -n 10 .venv/bin/python benchmarks/cnn28.py --pes 16 --images 20 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sparseforge as sf  # noqa: E402
from sparseforge.compiler.compress.digits import load_digits_split  # noqa: E402



def upscale(x: np.ndarray) -> np.ndarray:
    """8x8 images (flat) as 28x28 (batch x 1 x 28 x 28)."""
    images = x.reshape(-1, 8, 8)
    big = np.kron(images, np.ones((3, 3), dtype=x.dtype))             # 24 x 24
    return np.pad(big, ((0, 0), (2, 2), (2, 2)))[:, None].astype(np.float32)


def network():
    import torch.nn as nn

    from sparseforge.compiler.compress.training import seeded

    with seeded(0):
        return nn.Sequential(nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(8, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(784, 10))


def compressed_model(model_path: Path, fresh: bool, say):
    if model_path.exists() and not fresh:
        say(f"reusing {model_path} (--fresh to train and compress again)")
        return sf.load_compressed(model_path)
    import torch.nn as nn

    from sparseforge.compiler.compress.training import Dataset, TrainConfig, train

    splits = load_digits_split()
    train_set, val, test = (Dataset(upscale(s.x).reshape(len(s.y), -1), s.y) for s in splits)
    model = network()
    say("training the float 28x28 CNN")
    train(nn.Sequential(nn.Unflatten(1, (1, 28, 28)), model), train_set,
          TrainConfig(epochs=15, learning_rate=3e-3, label_smoothing=0.1))
    say("compressing it (75% of the conv weights pruned, 4-bit shared weights)")
    cm = sf.compress(model, (upscale(splits[0].x), train_set.y), (upscale(splits[1].x), val.y),
                     test=(upscale(splits[2].x), test.y), per_layer_sparsity=(0.5, 0.75, 0.8),
                     prune_steps=4, prune_epochs=3, final_epochs=10, share_epochs=10)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    cm.save(model_path)
    return cm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pes", type=int, default=16, help="PEs on the ULX3S-85F (default 16)")
    parser.add_argument("--images", type=int, default=20, help="test images on the RTL")
    parser.add_argument("--build", action="store_true", help="build the ULX3S-85F bitstream")
    parser.add_argument("--fresh", action="store_true", help="train and compress again")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "benchmarks" / "cnn28")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args()

    def say(message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr if args.json else None,
              flush=True)

    figures = {}
    # Beside --out's folder (build/benchmarks/cnn28.sfm by default), not always there.
    cm = compressed_model(args.out.with_suffix(".sfm"), args.fresh, say)
    report = cm.report
    figures["accuracy_float"] = report.accuracy_float
    figures["accuracy_compressed"] = report.accuracy_quantized
    figures["layers"] = [{"name": row.name, "kernel_matrix": list(row.shape),
                          "nnz": row.nnz, "weights": row.weights} for row in report.layers]
    say(f"accuracy float {100 * report.accuracy_float:.2f}%, compressed "
        f"{100 * report.accuracy_quantized:.2f}%")

    from sparseforge.compiler.configure import DoesNotFit

    try:
        sf.compile(cm, pes=8, board="icebreaker")
        figures["icebreaker"] = "fits"
    except DoesNotFit as error:
        figures["icebreaker"] = str(error)
    say(f"iCEBreaker (8 PEs): {figures['icebreaker']}")

    program = sf.compile(cm, pes=args.pes, board="ulx3s-85f")
    config = program.config
    figures["ulx3s_85f"] = {"pes": config.pes, "scan_lanes": config.scan_lanes,
                            "act_words": config.act_words, "entry_depth": config.entry_depth,
                            "entries": [int(program.column_counts(index).sum())
                                        for index in range(program.layer_count)]}
    say(f"ULX3S-85F: {config.pes} PEs, activation buffer {config.act_words} words of "
        f"{config.pes}, entries per layer {figures['ulx3s_85f']['entries']}")

    test = load_digits_split()[2]
    x = upscale(test.x[:args.images]).reshape(args.images, -1)
    started = time.perf_counter()
    simulation = sf.simulate(program, x, labels=test.y[:args.images],
                             build_dir=args.out / "sim")
    figures["rtl"] = {"images": len(simulation.outputs), "mismatches": simulation.mismatches,
                      "bit_exact": simulation.mismatches == 0,
                      "cycles_per_inference": float(simulation.total_cycles.mean()),
                      "cycle_model_max_error": simulation.model_error,
                      "accuracy": simulation.accuracy,
                      "seconds": round(time.perf_counter() - started, 1)}
    say(f"RTL on Verilator: {figures['rtl']}")

    if args.build:
        started = time.perf_counter()
        build = sf.build(program, "ulx3s-85f", build_dir=args.out / "bitstream")
        figures["build"] = {**build.to_json(), "seconds": round(time.perf_counter() - started)}
        say(f"ULX3S-85F build: Fmax {build.fmax_mhz:.1f} MHz, "
            + ", ".join(f"{name} {r.used}/{r.available}"
                        for name, r in sorted(build.utilisation.items())))
    if args.json:
        print(json.dumps(figures, indent=1, default=str))


if __name__ == "__main__":
    main()
