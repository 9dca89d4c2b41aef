"""A CNN from an ONNX file: export a small PyTorch CNN (convolutions, BatchNorm, max pooling,
global average pooling) with ``torch.onnx.export``, then compress, compile and simulate it on
the engine's conv mode, where each kernel is stored once and applied at every position.

    python examples/own_onnx_cnn.py                 # export, compress, compile, check, simulate
    python examples/own_onnx_cnn.py --images 0      # skip the RTL simulation (no Verilator)

The data are scikit-learn's 8x8 digits (bundled, no download).  The graph read from the file
is Conv, Relu, MaxPool, Conv, Relu, GlobalAveragePool, Flatten, Gemm (the exporter folds the
BatchNorm into the first convolution; a BatchNormalization node would be folded by capture):
the passes fuse the max pooling into the first convolution's write-back and fold the global
average pooling into the classifier (docs/compiler.md).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import sparseforge as sf


def train_and_export(path: Path, x: np.ndarray, y: np.ndarray, epochs: int, seed: int):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(xt)).split(64):
            optimiser.zero_grad()
            F.cross_entropy(model(xt[batch]), yt[batch]).backward()
            optimiser.step()
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    # dynamo=False: the TorchScript exporter, which needs only the onnx package.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (xt[:1],), str(path), input_names=["image"],
                          output_names=["logits"], dynamo=False,
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    return model


def compile_fitting(model, board: str, pe_counts):
    """The program for the first PE count whose engine fits ``board``: a conv-mode engine
    takes more logic than a Linear one, and the fit check says how much."""
    from sparseforge.compiler.configure import DoesNotFit

    for pes in pe_counts:
        try:
            return sf.compile(model, pes=pes, board=board)
        except DoesNotFit as refusal:
            if pes == pe_counts[-1]:
                raise
            print(f"compile: {pes} PEs refused ({str(refusal).splitlines()[1].strip()})")
    raise ValueError("no PE count to try")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40, help="float training epochs")
    parser.add_argument("--images", type=int, default=8,
                        help="test images to simulate on the RTL (0: skip the simulation)")
    parser.add_argument("--board", default="icebreaker", help="the board to compile for")
    parser.add_argument("--pes", type=int, default=None,
                        help="processing elements (default: the most of 4, 2, 1 that fit)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="build/example-onnx-cnn", help="output directory")
    args = parser.parse_args(argv)
    out = Path(args.out)
    started = time.perf_counter()
    torch.set_num_threads(1)

    from sparseforge.compiler.compress.digits import DIGITS_SHAPE, load_digits_split

    train, val, test = load_digits_split()

    def images(split):
        return split.x.reshape(-1, *DIGITS_SHAPE)

    onnx_path = out / "cnn.onnx"
    model = train_and_export(onnx_path, images(train), train.y, args.epochs, args.seed)
    with torch.no_grad():
        float_accuracy = np.mean(model(torch.from_numpy(images(test))).numpy().argmax(1)
                                 == test.y)
    print(f"exported {onnx_path} (float test accuracy {100 * float_accuracy:.2f}%)")

    from sparseforge.compiler.capture import capture_onnx

    graph = capture_onnx(onnx_path)
    print("captured: " + ", ".join(f"{op.kind.value} {op.name}" for op in graph.ops))

    # The ONNX file states its input shape (1 x 8 x 8); the data may be flat or images.
    cm = sf.compress(onnx_path, train=(images(train), train.y), val=(images(val), val.y),
                     test=(images(test), test.y), per_layer_sparsity=(0.3, 0.7, 0.5),
                     weight_bits=4, act_bits=8, prune_steps=4, prune_epochs=4,
                     final_epochs=20, share_epochs=20, seed=args.seed)
    cm.save(out / "cnn.sfm")
    report = cm.report
    print("compress: " + ", ".join(f"{row.name} {row.shape[0]}x{row.shape[1]} "
                                   f"{100 * row.nnz / row.weights:.0f}% kept"
                                   for row in report.layers)
          + f"; accuracy float {100 * report.accuracy_float:.2f}% -> fixed point "
            f"{100 * report.accuracy_quantized:.2f}%")

    prog = compile_fitting(cm, args.board, [args.pes] if args.pes else [4, 2, 1])
    prog.save(out / "program")
    stored = [sum(int(c.sum()) for c in prog.column_counts(layer))
              for layer in range(prog.layer_count)]
    print(f"compile: conv mode {prog.config.conv}, entries per layer {stored} (each kernel "
          f"once), activation buffer {prog.config.act_words} words of {prog.config.pes}, "
          f"{prog.config.pes} PEs for the {args.board}")
    ref = sf.reference(prog, test.x)
    print(f"reference: accuracy {100 * np.mean(ref.argmax(1) == test.y):.2f}% on "
          f"{len(test.y)} test images")

    if args.images > 0:
        sim = sf.simulate(prog, test.x[:args.images], labels=test.y[:args.images],
                          build_dir=out / "program" / "sim")
        exact = np.array_equal(sim.outputs, ref[:args.images])
        print(f"simulate: {len(sim.outputs)} images on {sim.simulator}, "
              f"{'bit-exact' if exact else f'{sim.mismatches} MISMATCHES'} against the "
              f"golden model; {sim.total_cycles.mean():.0f} cycles per inference, "
              f"cycle model within {100 * sim.model_error:.1f}%")
        if not exact:
            return 1
    print(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
