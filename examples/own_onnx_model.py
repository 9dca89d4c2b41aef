"""A model from an ONNX file: export a PyTorch MLP with ``torch.onnx.export``, then bring the
file in through sparseforge's ONNX capture (``compiler/capture.py``: ``capture_onnx``).

    python examples/own_onnx_model.py                 # export, compress, compile, check, simulate
    python examples/own_onnx_model.py --images 0      # skip the RTL simulation (no Verilator)

Any framework that writes ONNX works the same way, as long as the graph is a chain of Gemm (or
MatMul + Add), Relu, Flatten/Reshape, BatchNormalization, Dropout/Identity and a final Softmax.
The data here is synthetic (scikit-learn's ``make_classification``: 20 features, 3 classes).
The example also writes the data as ``data.npz`` (``x_train``, ``y_train``, ``x_val``, ...),
so the same file goes through the command line too:

    sparseforge compress build/example-onnx/mlp.onnx --data build/example-onnx/data.npz \\
        -o build/example-onnx/cli.sfm
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


def make_data(seed: int):
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split

    x, y = make_classification(n_samples=1500, n_features=20, n_informative=10, n_redundant=4,
                               n_classes=3, class_sep=1.5, random_state=seed)
    x = np.clip(x / 4, -1, 1).astype(np.float32)      # roughly [-1, 1]
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.4, random_state=seed)
    x_val, x_test, y_val, y_test = train_test_split(x_rest, y_rest, test_size=0.5,
                                                    random_state=seed)
    return (x_train, y_train), (x_val, y_val), (x_test, y_test)


def train_and_export(path: Path, x: np.ndarray, y: np.ndarray, epochs: int, seed: int):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(x.shape[1], 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                          nn.Linear(32, int(y.max()) + 1))
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    for _ in range(epochs):
        for batch in torch.randperm(len(xt)).split(64):
            optimiser.zero_grad()
            F.cross_entropy(model(xt[batch]), yt[batch]).backward()
            optimiser.step()
    model.eval()
    # A final Softmax, as many deployed models have: capture drops it (argmax is unchanged).
    deployed = nn.Sequential(model, nn.Softmax(dim=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    # dynamo=False: the TorchScript exporter, which needs only the onnx package (the default
    # torch.export-based exporter also needs onnxscript).  Torch flags it as legacy with a
    # DeprecationWarning; it still writes a standard ONNX file.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(deployed, (xt[:1],), str(path), input_names=["features"],
                          output_names=["probabilities"], dynamo=False,
                          dynamic_axes={"features": {0: "batch"}, "probabilities": {0: "batch"}})
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="float training epochs")
    parser.add_argument("--images", type=int, default=8,
                        help="test inputs to simulate on the RTL (0: skip the simulation)")
    parser.add_argument("--pes", type=int, default=4, help="processing elements")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="build/example-onnx", help="output directory")
    args = parser.parse_args(argv)
    out = Path(args.out)
    started = time.perf_counter()
    torch.set_num_threads(1)

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = make_data(args.seed)
    onnx_path = out / "mlp.onnx"
    model = train_and_export(onnx_path, x_train, y_train, args.epochs, args.seed)
    np.savez(out / "data.npz", x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val,
             x_test=x_test, y_test=y_test)
    with torch.no_grad():
        float_accuracy = np.mean(model(torch.from_numpy(x_test)).numpy().argmax(1) == y_test)
    print(f"exported {onnx_path} (float test accuracy {100 * float_accuracy:.2f}%)")

    # What capture reads from the file: the ops in order, before the passes.
    from sparseforge.compiler.capture import capture_onnx

    graph = capture_onnx(onnx_path)
    print("captured: " + ", ".join(f"{op.kind.value} {op.name}" for op in graph.ops))

    # sf.compress takes the ONNX path where it takes an nn.Module.
    cm = sf.compress(onnx_path, train=(x_train, y_train), val=(x_val, y_val),
                     test=(x_test, y_test), sparsity=0.85, weight_bits=4, act_bits=8,
                     prune_steps=4, prune_epochs=4, final_epochs=20, share_epochs=20,
                     seed=args.seed)
    cm.save(out / "mlp.sfm")
    report = cm.report
    print(f"compress: sparsity {100 * report.sparsity:.1f}%, compression "
          f"{report.compression_ratio:.1f}x; accuracy float {100 * report.accuracy_float:.2f}% "
          f"-> fixed point {100 * report.accuracy_quantized:.2f}%")

    prog = sf.compile(cm, pes=args.pes, board="icebreaker")
    prog.save(out / "program")
    ref = sf.reference(prog, x_test)
    print(f"reference: accuracy {100 * np.mean(ref.argmax(1) == y_test):.2f}% on "
          f"{len(x_test)} test inputs ({prog.config.pes} PEs, {prog.layer_count} layers)")

    if args.images > 0:
        sim = sf.simulate(prog, x_test[:args.images], labels=y_test[:args.images],
                          build_dir=out / "program" / "sim")
        exact = np.array_equal(sim.outputs, ref[:args.images])
        print(f"simulate: {len(sim.outputs)} inputs on {sim.simulator}, "
              f"{'bit-exact' if exact else f'{sim.mismatches} MISMATCHES'} against the "
              f"golden model; {sim.total_cycles.mean():.1f} cycles per inference, "
              f"efficiency {100 * sim.efficiency:.1f}%")
        if not exact:
            return 1
    print(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
