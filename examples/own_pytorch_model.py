"""Bring your own PyTorch model and data: a small classifier on scikit-learn's breast-cancer set.

    python examples/own_pytorch_model.py                # train, compress, compile, check, simulate
    python examples/own_pytorch_model.py --images 0     # skip the RTL simulation (no Verilator)

The model is a user ``nn.Module`` with its own ``forward`` (captured with ``torch.fx``: it must
be a chain of supported layers -- Linear, ReLU, BatchNorm1d, Dropout, Flatten, Identity, a final
Softmax).  BatchNorm is folded into the Linear before it and Dropout is erased on the way in.
The data are NumPy arrays; any ``(X, y)`` with integer class labels works the same way.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import sparseforge as sf


class Classifier(nn.Module):
    """30 features -> 64 -> 32 -> 2 classes."""

    def __init__(self, features: int, classes: int):
        super().__init__()
        self.fc1 = nn.Linear(features, 64)
        self.bn1 = nn.BatchNorm1d(64)
        self.drop = nn.Dropout(0.1)
        self.fc2 = nn.Linear(64, 32)
        self.out = nn.Linear(32, classes)

    def forward(self, x):
        x = self.drop(F.relu(self.bn1(self.fc1(x))))
        x = F.relu(self.fc2(x))
        return self.out(x)


def load_data(seed: int):
    """Breast-cancer features standardised with the training split's statistics, and clipped
    to 4 standard deviations (a rare outlier would otherwise set a coarse input scale)."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.4, random_state=seed,
                                                        stratify=y)
    x_val, x_test, y_val, y_test = train_test_split(x_rest, y_rest, test_size=0.5,
                                                    random_state=seed, stratify=y_rest)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)

    def scale(a):
        return np.clip((a - mean) / std, -4, 4).astype(np.float32)

    return ((scale(x_train), y_train), (scale(x_val), y_val), (scale(x_test), y_test))


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> None:
    torch.manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(xt)).split(32):
            optimiser.zero_grad()
            F.cross_entropy(model(xt[batch]), yt[batch]).backward()
            optimiser.step()
    model.eval()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="float training epochs")
    parser.add_argument("--images", type=int, default=8,
                        help="test inputs to simulate on the RTL (0: skip the simulation)")
    parser.add_argument("--pes", type=int, default=4, help="processing elements")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="build/example-pytorch", help="output directory")
    args = parser.parse_args(argv)
    out = Path(args.out)
    started = time.perf_counter()
    torch.set_num_threads(1)        # small model: threads cost more than they give

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = load_data(args.seed)
    torch.manual_seed(args.seed)
    model = Classifier(x_train.shape[1], int(y_train.max()) + 1)
    train(model, x_train, y_train, args.epochs, args.seed)
    with torch.no_grad():
        float_logits = model(torch.from_numpy(x_test)).numpy()
    print(f"float model: test accuracy {100 * np.mean(float_logits.argmax(1) == y_test):.2f}% "
          f"({len(x_train)} training samples, {args.epochs} epochs)")

    # Prune 80% of the weights, share them in 16 values (4-bit codes), 8-bit activations.
    # Short schedules: the model is small and so is the data.
    cm = sf.compress(model, train=(x_train, y_train), val=(x_val, y_val), test=(x_test, y_test),
                     sparsity=0.8, weight_bits=4, act_bits=8, prune_steps=4, prune_epochs=4,
                     final_epochs=20, share_epochs=20, seed=args.seed)
    cm.save(out / "model.sfm")
    report = cm.report
    print(f"compress: layers {[layer.name for layer in cm.network.layers]}, sparsity "
          f"{100 * report.sparsity:.1f}%, compression {report.compression_ratio:.1f}x; "
          f"accuracy float {100 * report.accuracy_float:.2f}% -> fixed point "
          f"{100 * report.accuracy_quantized:.2f}%")

    prog = sf.compile(cm, pes=args.pes, board="icebreaker")
    prog.save(out / "program")
    print(f"compile: {prog.config.pes} PEs, {prog.in_features} of the model's "
          f"{prog.model_in_features} inputs read -> {prog.out_features} outputs in {prog.layer_count} layers, fits the iCEBreaker")

    # The golden model; its dequantized logits differ from the pruned and shared float network
    # (cm.float_network) only by the fixed-point rounding of the activations.
    ref = sf.reference(prog, x_test)
    shared_logits = cm.float_network.forward(x_test)
    error = np.abs(prog.dequantize(ref) - shared_logits).max()
    spread = np.abs(shared_logits).max()
    print(f"reference: accuracy {100 * np.mean(ref.argmax(1) == y_test):.2f}% on "
          f"{len(x_test)} test inputs; logits within {error:.3f} of the compressed float "
          f"network's (whose logits reach {spread:.1f})")

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
