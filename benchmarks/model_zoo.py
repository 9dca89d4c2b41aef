"""Other people's networks on other data sets: models written the ways people write them
(input BatchNorm, a one-output logit, Linear -> ReLU -> BatchNorm, a CNN that views flat data
as images, a 1-D CNN on signals, a final Sigmoid, LeakyReLU(0.1) (run as a slope of 2**-3), a
CNN with ReLU6 and LeakyReLU(0.2), GELU and Tanh run as tables, a CNN with Tanh and SiLU as
tables, GELU and Tanh swapped for ReLU by ``swap_activations``, an MLP with two residual
blocks, a ResNet of two basic blocks, one with a 1 x 1 projection, and MNIST's 784-128-10 MLP
and LeNet-5 on the digits enlarged to 28 x 28),
trained here on scikit-learn's bundled data sets and a synthetic signal task, then taken
through the pipeline as a user would: ``sf.compress`` -> ``sf.compile`` for the iCEBreaker
and the ULX3S-85F -> the golden model's accuracy on the test split, the cycle model's cycles
per inference, the load-balance efficiency and the compiler's resource estimate; with
``--simulate N`` also the first N test inputs on the generated Verilog (Verilator), bit for
bit against the golden model.  Prints figures; asserts nothing.

    nice -n 10 .venv/bin/python benchmarks/model_zoo.py                 # ~4 min on 2 cores
    nice -n 10 .venv/bin/python benchmarks/model_zoo.py --simulate 20   # + a Verilator build each
    .venv/bin/python benchmarks/model_zoo.py --only wine-input-bn --json

Everything is seeded: a second run prints the same accuracies and cycles.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import nn

import sparseforge as sf
from sparseforge.boards.registry import board as find_board
from sparseforge.compiler.errors import InputError, InputWarning
from sparseforge.compiler.resources import DoesNotFit, estimate_resources
from sparseforge.sim.simulate import predict

BOARDS = {"icebreaker": {"mlp": 8, "conv": 2}, "ulx3s-85f": {"mlp": 32, "conv": 16}}
# sf.compress's own schedule, as a user gets it; accumulators of 16 bits, as the iCE40's block
# RAMs take them (sparseforge demo's choice), so one compression serves both boards.
COMPRESSION = {"max_acc_bits": 16}


# ---- the data sets ---------------------------------------------------------------------------

def _split(x, y, seed=0):
    """70/15/15, stratified, features standardised on the training split (as people do)."""
    from sklearn.model_selection import train_test_split

    x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.3, random_state=seed,
                                                        stratify=y)
    x_val, x_test, y_val, y_test = train_test_split(x_rest, y_rest, test_size=0.5,
                                                    random_state=seed, stratify=y_rest)
    if x.ndim == 2:
        mean, std = x_train.mean(0), x_train.std(0) + 1e-6
        x_train, x_val, x_test = ((part - mean) / std for part in (x_train, x_val, x_test))
    return tuple((np.asarray(part_x, np.float32), np.asarray(part_y, np.int64))
                 for part_x, part_y in ((x_train, y_train), (x_val, y_val), (x_test, y_test)))


def tabular(name):
    from sklearn import datasets

    loader = {"wine": datasets.load_wine, "iris": datasets.load_iris,
              "breast cancer": datasets.load_breast_cancer}[name]
    x, y = loader(return_X_y=True)
    return _split(x, y)


def many_classes():
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=3000, n_features=100, n_informative=40,
                               n_classes=20, n_clusters_per_class=1, class_sep=2.0,
                               random_state=4)
    return _split(x, y)


def digits_flat():
    """The 8x8 digits as flat rows of 64 pixels in [0, 1] (the CNN views them as images)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return _split(x / 16.0, y)


def digits_28():
    """The 8x8 digits enlarged to MNIST's 28 x 28 (bilinear), flat rows of 784 pixels: a
    model of MNIST's size on data that ships with scikit-learn."""
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    images = zoom(x.reshape(-1, 8, 8) / 16.0, (1, 3.5, 3.5), order=1)
    return _split(np.clip(images, 0, 1).reshape(len(x), 784), y)


def signals():
    """Two-channel signals of 32 samples, three classes by frequency, with noise."""
    rng = np.random.default_rng(7)
    y = rng.integers(0, 3, 1500)
    t = np.arange(32)
    frequency = np.array([2.0, 4.0, 7.0])[y][:, None]
    phase = rng.uniform(0, 2 * np.pi, (1500, 1))
    x = np.stack([np.sin(2 * np.pi * frequency * t / 32 + phase),
                  np.cos(2 * np.pi * frequency * t / 32 + phase)], axis=1)
    x = x + rng.normal(0, 0.4, x.shape)
    return _split(x.astype(np.float32), y)


# ---- the models, as people write them ---------------------------------------------------------

class ViewsDigitsAsImages(nn.Module):
    """The MNIST-example style: flat input viewed as images, functional pooling, log_softmax."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 16, 3)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = x.view(-1, 1, 8, 8)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.relu(self.conv2(x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return F.log_softmax(self.fc(x), dim=1)


class SignalCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv1d(2, 8, 5, padding=2), nn.Conv1d(8, 16, 3, stride=2)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        x = F.max_pool1d(F.relu(self.conv1(x)), 2)
        x = F.relu(self.conv2(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool1d(x, 1), 1))


class ResidualMLP(nn.Module):
    """Two residual blocks, one summed before its ReLU and one after, as MLP-Mixer-like
    tabular models write them."""

    def __init__(self, features=64, width=48, classes=10):
        super().__init__()
        self.stem = nn.Linear(features, width)
        self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, width)
        self.fc3, self.fc4 = nn.Linear(width, width), nn.Linear(width, width)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        h = F.relu(self.stem(x))
        h = F.relu(self.fc2(F.relu(self.fc1(h))) + h)
        h = h + F.relu(self.fc4(F.relu(self.fc3(h))))
        return self.head(h)


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block, with its 1 x 1 projection where the stride or the
    channels change."""

    def __init__(self, channels, out, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, out, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.conv2 = nn.Conv2d(out, out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.downsample = None if stride == 1 and channels == out else nn.Sequential(
            nn.Conv2d(channels, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


def small_resnet():
    return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 4, 3, padding=1, bias=False),
                         nn.BatchNorm2d(4), nn.ReLU(), BasicBlock(4, 4), BasicBlock(4, 8, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


@dataclass
class Case:
    name: str
    data_name: str
    data: callable
    model: callable
    kind: str = "mlp"                       # mlp or conv (the PE counts per board)
    # How it is trained: cross-entropy, BCEWithLogitsLoss on one output ("logit"), or binary
    # cross-entropy of sigmoid outputs against one-hot labels ("sigmoid").
    loss: str = "cross-entropy"
    sparsity: float = 0.7
    epochs: int = 150                       # full-batch Adam steps of the float training
    options: dict = field(default_factory=dict)     # sf.compress's, beside COMPRESSION
    figures: dict = field(default_factory=dict)


CASES = [
    Case("wine-input-bn", "wine (13 features, 3 classes)", lambda: tabular("wine"),
         lambda: nn.Sequential(nn.BatchNorm1d(13), nn.Linear(13, 32), nn.ReLU(),
                               nn.Dropout(0.2), nn.Linear(32, 3))),
    Case("breast-cancer-logit", "breast cancer (30 features, 2 classes)",
         lambda: tabular("breast cancer"),
         lambda: nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 1)),
         loss="logit"),
    Case("iris-relu-bn", "iris (4 features, 3 classes)", lambda: tabular("iris"),
         lambda: nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.BatchNorm1d(16),
                               nn.Linear(16, 3)), sparsity=0.5),
    Case("many-classes-sigmoid", "make_classification (100 features, 20 classes)",
         many_classes,
         lambda: nn.Sequential(nn.Linear(100, 128), nn.ReLU(), nn.Linear(128, 20),
                               nn.Sigmoid()), loss="sigmoid", sparsity=0.8, epochs=600),
    Case("digits-cnn-view", "digits as flat 64-pixel rows (10 classes)", digits_flat,
         ViewsDigitsAsImages, kind="conv", sparsity=0.6),
    Case("signals-cnn-1d", "2-channel signals of 32 samples (3 classes)", signals, SignalCNN,
         kind="conv", sparsity=0.5),
    Case("wine-leaky-relu", "wine (13 features, 3 classes)", lambda: tabular("wine"),
         lambda: nn.Sequential(nn.Linear(13, 32), nn.LeakyReLU(0.1), nn.Linear(32, 3))),
    # MobileNet's clamp after a convolution, and a GAN discriminator's slope of 0.2 (2**-2).
    Case("digits-cnn-relu6", "digits as flat 64-pixel rows (10 classes)", digits_flat,
         lambda: nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 8, 3, padding=1),
                               nn.ReLU6(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(128, 32),
                               nn.LeakyReLU(0.2), nn.Linear(32, 10)),
         kind="conv", sparsity=0.6),
    # GELU and Tanh as they are: each layer's table (8-bit activations).
    Case("digits-gelu-tables", "digits as flat 64-pixel rows (10 classes)", digits_flat,
         lambda: nn.Sequential(nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 32), nn.Tanh(),
                               nn.Linear(32, 10))),
    # A CNN with Tanh after its convolution (before the pooling, as LeNet had it) and SiLU.
    Case("digits-cnn-tanh-silu", "digits as flat 64-pixel rows (10 classes)", digits_flat,
         lambda: nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 8, 3, padding=1),
                               nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(128, 32),
                               nn.SiLU(), nn.Linear(32, 10)),
         kind="conv", sparsity=0.6),
    # The same kind of model with the activations swapped for ReLU and retrained.
    Case("digits-gelu-swapped", "digits as flat 64-pixel rows (10 classes)", digits_flat,
         lambda: nn.Sequential(nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 32), nn.Tanh(),
                               nn.Linear(32, 10)), options={"swap_activations": True}),
    # Skip connections: carried through their blocks as extra rows (compiler/residual.py).
    Case("digits-residual-mlp", "digits as flat 64-pixel rows (10 classes)", digits_flat,
         ResidualMLP),
    Case("digits-resnet", "digits as flat 64-pixel rows (10 classes)", digits_flat,
         small_resnet, kind="conv", sparsity=0.5),
    # MNIST's sizes: the 784-128-10 MLP and LeNet-5 (on the iCEBreaker, entries in SPRAM).
    Case("digits28-mlp", "digits enlarged to 28 x 28 (784 pixels, 10 classes)", digits_28,
         lambda: nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10)),
         sparsity=0.9),
    Case("digits28-lenet5", "digits enlarged to 28 x 28 (784 pixels, 10 classes)", digits_28,
         lambda: nn.Sequential(nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, 6, 5), nn.ReLU(),
                               nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                               nn.MaxPool2d(2), nn.Flatten(), nn.Linear(256, 120), nn.ReLU(),
                               nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10)),
         kind="conv", sparsity=0.8),
]


def train(case: Case, model: nn.Module, train_set, epochs: int = 150) -> nn.Module:
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.from_numpy(train_set[0]), torch.from_numpy(train_set[1])
    model.train()
    for _ in range(epochs):
        optimizer.zero_grad()
        out = model(x)
        if case.loss == "logit":
            loss = F.binary_cross_entropy_with_logits(out[:, 0], y.float())
        elif case.loss == "sigmoid":
            loss = F.binary_cross_entropy(out, F.one_hot(y, out.shape[1]).float())
        else:
            loss = F.cross_entropy(out, y)
        loss.backward()
        optimizer.step()
    return model.eval()


def float_accuracy(case: Case, model: nn.Module, test_set) -> float:
    with torch.no_grad():
        out = model(torch.from_numpy(test_set[0]))
    predicted = (out[:, 0] > 0).long() if case.loss == "logit" else out.argmax(1)
    return float((predicted.numpy() == test_set[1]).mean())


# ---- the pipeline -----------------------------------------------------------------------------

def run_case(case: Case, simulate: int, log) -> None:
    started = time.perf_counter()
    train_set, val_set, test_set = case.data()
    torch.manual_seed(0)
    model = train(case, case.model(), train_set, case.epochs)
    case.figures["float"] = float_accuracy(case, model, test_set)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", InputWarning)
            compressed = sf.compress(model, train=train_set, val=val_set, test=test_set,
                                     sparsity=case.sparsity, seed=0, **COMPRESSION,
                                     **case.options)
    except InputError as error:
        case.figures["refused"] = str(error)
        log(f"{case.name}: refused by compress: {str(error)[:120]}...")
        return
    case.figures["warnings"] = [str(w.message) for w in caught]
    if "swapped_activations" in compressed.provenance:
        log(f"{case.name}: " + next(w for w in case.figures["warnings"] if " swapped " in w))
        case.figures["retrained"] = compressed.provenance["accuracy_swapped_retrained"]
    case.figures["compressed"] = compressed.report.accuracy_quantized
    case.figures["boards"] = {}
    for board_name, pes_by_kind in BOARDS.items():
        entry = {}
        case.figures["boards"][board_name] = entry
        program = None
        # As a user follows the compiler's advice: fewer PEs until the engine fits (a conv
        # engine takes a power of two).
        for pes in _pe_counts(pes_by_kind[case.kind], case.kind):
            try:
                program = sf.compile(compressed, pes=pes, board=board_name)
                break
            except DoesNotFit as error:
                # The shortfalls, not the ways out (the compiler prints those).
                lines = [line.strip() for line in str(error).splitlines()]
                entry.setdefault("refused", {})[pes] = "; ".join(
                    line for line in lines[1:] if not line.startswith("ways out"))
        if program is None:
            entry["does_not_fit"] = "does not fit with 1 PE: " + entry["refused"][1]
            continue
        entry["pes"] = pes
        x_test, y_test = test_set
        outputs = sf.reference(program, x_test)
        entry["accuracy"] = float((outputs.argmax(1) == y_test).mean())
        timings = predict(program, program.quantize_input(x_test[:100]))
        cycles = np.array([[t.cycles for t in row] for row in timings], dtype=np.float64)
        work = np.array([[np.sum(t.work) for t in row] for row in timings], dtype=np.float64)
        board = find_board(board_name)
        entry["cycles"] = float(cycles.sum(axis=1).mean())
        entry["efficiency"] = float(work.sum() / pes / cycles.sum())
        entry["latency_us"] = entry["cycles"] / board.target_mhz
        estimate = estimate_resources(program.config, board.part)
        entry["lut"], entry["luts"] = estimate.lut, board.part.luts
        entry["bram"], entry["brams"] = estimate.bram, board.part.brams
        if simulate:
            result = sf.simulate(program, x_test[:simulate], labels=y_test[:simulate])
            entry["simulated"] = simulate
            entry["mismatches"] = int(result.mismatches)
    case.figures["seconds"] = round(time.perf_counter() - started, 1)
    log(f"{case.name}: done in {case.figures['seconds']} s")


def _pe_counts(most: int, kind: str) -> list[int]:
    if kind == "conv":
        return [most >> shift for shift in range(most.bit_length())]
    return list(range(most, 0, -1))


def render(console: Console, cases: list[Case], simulate: int) -> None:
    table = Table(title="Other people's networks through the pipeline (accuracy on the test "
                        "split; cycles: the cycle model, mean of up to 100 test inputs; "
                        "latency at the board's target clock; resources: the estimate)",
                  title_justify="left")
    for column in ("model", "data", "float", "compressed", "board", "N", "hardware",
                   "cycles", "efficiency", "latency µs", "LUT", "BRAM") + (
                       ("Verilog",) if simulate else ()):
        table.add_column(column, justify="left" if column in ("model", "data", "board")
                         else "right")
    refused = []
    for case in cases:
        f = case.figures
        if "refused" in f:
            refused.append(case)
            continue
        for board_name, entry in f["boards"].items():
            first = board_name == next(iter(f["boards"]))
            swapped = (f" (ReLU, retrained: {100 * f['retrained']:.1f}%)"
                       if "retrained" in f else "")
            head = ([case.name, case.data_name, f"{100 * f['float']:.1f}%{swapped}",
                     f"{100 * f['compressed']:.1f}%"] if first else ["", "", "", ""])
            if "does_not_fit" in entry:
                table.add_row(*head, board_name, "-", entry["does_not_fit"])
                continue
            refused = sorted(entry.get("refused", ()))
            pes = str(entry["pes"]) + (
                "" if not refused else f" ({refused[0]} refused)" if len(refused) == 1
                else f" ({refused[0]}-{refused[-1]} refused)")
            row = head + [board_name, pes, f"{100 * entry['accuracy']:.1f}%",
                          f"{entry['cycles']:.1f}", f"{100 * entry['efficiency']:.1f}%",
                          f"{entry['latency_us']:.2f}", f"{entry['lut']:,} / {entry['luts']:,}",
                          f"{entry['bram']} / {entry['brams']}"]
            if simulate:
                row.append("bit-exact" if entry["mismatches"] == 0
                           else f"{entry['mismatches']} mismatches")
            table.add_row(*row)
    console.print(table)
    for case in refused:
        console.print(f"{case.name} ({case.data_name}, float {100 * case.figures['float']:.1f}%)"
                      f": refused: {_reason(case.figures['refused'])}", highlight=False)


def _reason(message: str) -> str:
    """The part of a refusal a table cell can hold: what it is, and what to do."""
    first = message.split("; supported:")[0]
    advice = message.rsplit("; ", 1)[-1] if "; supported:" in message else ""
    return f"{first}; {advice}" if advice else first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--simulate", type=int, default=0, metavar="N",
                        help="run the first N test inputs of each design on Verilator")
    parser.add_argument("--only", nargs="+", choices=[case.name for case in CASES],
                        help="these cases only")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args()
    console = Console(stderr=args.json)
    if not console.is_terminal:
        console = Console(stderr=args.json, width=200)      # a file or a pipe: no wrapping
    cases = [case for case in CASES if not args.only or case.name in args.only]
    for case in cases:
        run_case(case, args.simulate, lambda text: console.print(text, highlight=False))
    if args.json:
        print(json.dumps({case.name: case.figures for case in cases}, indent=1))
    else:
        render(console, cases, args.simulate)


if __name__ == "__main__":
    main()
