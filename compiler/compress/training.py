"""Training and evaluation shared by every compression method: deterministic, masked, quiet
unless a progress bar is asked for."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..ir import check_finite

__all__ = [
    "Dataset",
    "TrainConfig",
    "accuracy",
    "as_dataset",
    "as_pair",
    "progress_bar",
    "score",
    "seeded",
    "train",
]


@dataclass(frozen=True, eq=False)
class Dataset:
    x: np.ndarray           # float32, samples x features
    y: np.ndarray           # int64 labels, or a regression's float32 targets (samples x outputs)

    def __len__(self):
        return len(self.y)

    @property
    def regression(self) -> bool:
        return self.y.dtype.kind == "f"


def score(outputs: np.ndarray, y: np.ndarray) -> float:
    """How well ``outputs`` (samples x outputs) answer ``y``: a classifier's top-1 accuracy
    against integer labels, a regression's coefficient of determination R² against float
    targets (samples x outputs: 1 - the squared error over the targets' variance about each
    output's mean, pooled over the outputs; 1 is perfect, 0 is no better than predicting the
    means).  Both are higher-is-better fractions, so the sensitivity budget and the report
    read either."""
    outputs, y = np.asarray(outputs, dtype=np.float64), np.asarray(y)
    if y.dtype.kind != "f":
        return float(np.mean(outputs.argmax(axis=1) == y))
    error = float(np.sum((outputs - y) ** 2))
    spread = float(np.sum((y - y.mean(axis=0)) ** 2))
    if spread == 0.0:
        return 1.0 if error == 0.0 else 0.0
    return 1.0 - error / spread


def as_pair(data, what: str):
    """``data`` as ``(X, y)``: a pair as it is; a torch ``DataLoader`` or map-style
    ``Dataset`` of ``(x, label)`` samples (a torchvision data set with ``ToTensor``, a
    ``TensorDataset``) collected into two arrays, X keeping each sample's shape (images stay
    channels x rows x columns).  Anything else is left for :func:`as_dataset` to refuse."""
    try:
        from torch.utils.data import DataLoader
        from torch.utils.data import Dataset as TorchDataset
    except ImportError:                         # pragma: no cover - torch is a dependency
        return data
    if isinstance(data, DataLoader):
        batches = list(data)
    elif isinstance(data, TorchDataset) and hasattr(data, "__len__"):
        batches = [_as_batch(data[index]) for index in range(len(data))]
    else:
        return data
    if not batches:
        raise InputError(f"{what}: the {type(data).__name__} holds no samples")
    for batch in batches:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise InputError(f"{what}: a {type(data).__name__} must give (x, label) pairs, not "
                             f"{type(batch).__name__}"
                             + (f" of {len(batch)}" if isinstance(batch, (tuple, list)) else ""))
    x = np.concatenate([_numpy(batch[0]) for batch in batches])
    # A label per sample, or a regression's row of targets (kept a row: samples x outputs).
    y = np.concatenate([_numpy(batch[1]).reshape(len(_numpy(batch[0])), -1)
                        for batch in batches])
    return x, y[:, 0] if y.shape[1] == 1 else y


def _as_batch(sample):
    """A Dataset's one sample as a batch of one: ``(x[None], [label])`` (or ``[targets]``)."""
    if isinstance(sample, (tuple, list)) and len(sample) == 2:
        return _numpy(sample[0])[None], np.asarray(_numpy(sample[1]))[None]
    return sample


def _numpy(value) -> np.ndarray:
    return np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)


def as_dataset(data, what: str, *, regression: bool = False) -> Dataset:
    """``(X, y)`` from NumPy arrays or torch tensors, checked: X is samples x features (or
    images, flattened), finite; y holds one integer label per sample, or with ``regression``
    the sample's target values (one, or a row of them: samples x outputs)."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{what} must be a pair (X, y), not {type(data).__name__}")
    x, y = (np.asarray(d.detach().cpu().numpy() if hasattr(d, "detach") else d) for d in data)
    if x.ndim < 2 or len(x) == 0:
        raise InputError(f"{what}: X must hold at least one sample of features, not shape "
                         f"{x.shape}")
    if x.dtype.kind not in "biuf":
        raise InputError(f"{what}: X must hold real numbers, not {x.dtype} values")
    with np.errstate(over="ignore"):          # beyond float32: named below
        x = x.reshape(len(x), -1).astype(np.float32)
    if regression:
        _check_finite_x(data, x, what)
        return Dataset(x, _targets(y, len(x), what))
    if y.ndim == 2 and y.shape[1] > 1 and len(y) == len(x):
        if y.dtype.kind == "f" and not np.allclose(y.sum(axis=1), 1.0):
            # Neither one-hot nor class scores: a value per output, as a regression has.
            raise InputError(f"{what}: y holds rows of {y.shape[1]} values (shape {y.shape}), "
                             f"not class labels: targets that are values are a regression: "
                             f"compress with --task regression (sf.compress(..., "
                             f"task='regression')); for one-hot rows or class scores, "
                             f"y.argmax(axis=1) gives the labels")
        raise InputError(f"{what}: y must hold one class label per sample, not rows of "
                         f"{y.shape[1]} (one-hot or scores, shape {y.shape}); "
                         f"y.argmax(axis=1) gives the labels")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.ndim != 1 or len(x) != len(y):
        raise InputError(f"{what}: X has {len(x)} samples but y has "
                         f"{len(y) if y.ndim == 1 else f'shape {y.shape}'}")
    _check_finite_x(data, x, what)
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        bad = np.flatnonzero(~np.isfinite(y))
        raise InputError(f"{what}: y holds {y[bad[0]]} labels ({len(bad)} of {len(y)}, the "
                         f"first at sample {int(bad[0])}); every sample needs a class label")
    if y.dtype.kind in "USO":
        # Class names ("setosa", "benign"): the network has one output per class number.
        raise InputError(f"{what}: y must hold integer class labels, not {y.dtype} values "
                         f"({', '.join(map(repr, y.ravel()[:3].tolist()))}...): number the "
                         f"classes 0 .. K-1, e.g. names, y = np.unique(y, return_inverse=True), "
                         f"the same numbering for every set")
    if y.dtype.kind not in "iu" and not (y.dtype.kind in "fb" and np.all(y == np.round(y))):
        fraction = y[y != np.round(y)][:3] if y.dtype.kind == "f" else y.ravel()[:3]
        raise InputError(f"{what}: y must hold integer class labels, not {y.dtype} values "
                         f"({', '.join(f'{v:g}' for v in fraction.tolist())}, ...); targets "
                         f"that are values are a regression: compress with --task regression "
                         f"(sf.compress(..., task='regression')) and a model of its own")
    if y.size and y.min() < 0:
        # -1 / +1 (a binary target as SVMs take it) or -1 for "unknown".
        raise InputError(f"{what}: y holds the negative label {int(y.min())}; labels are "
                         f"class numbers 0 .. K-1: renumber them, e.g. "
                         f"np.unique(y, return_inverse=True)[1] (-1 / +1 become 0 / 1)")
    if y.size:
        largest, distinct = int(y.max()), len(np.unique(y))
        # A classifier has one output per label number: labels like 1000000 (ids, years,
        # codes) would make a network of a million outputs, trained for hours.
        if largest >= 1000 and largest + 1 > 10 * distinct:
            raise InputError(f"{what}: y's largest label is {largest} but it holds only "
                             f"{distinct} distinct labels; labels are class numbers 0 .. K-1 "
                             f"(one output each): renumber them, e.g. "
                             f"np.unique(y, return_inverse=True)[1]")
    return Dataset(x, y.astype(np.int64))


def _check_finite_x(data, x: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(x)):
        # The check runs on the float32 copy the training uses: a finite float64 beyond
        # float32's range is named as that, not as NaN.
        raw = np.asarray(data[0].detach().cpu().numpy() if hasattr(data[0], "detach")
                         else data[0])
        if raw.dtype.kind == "f" and np.all(np.isfinite(raw)):
            raise InputError(f"{what}: X reaches |x| = {float(np.abs(raw).max()):.3g}, beyond "
                             f"float32's range (3.4e38), which training uses: scale the inputs "
                             f"(standardise each feature)")
        # Named by sample and feature, as the other verbs name them (ir.check_finite): a
        # column of a CSV that failed to parse is then found at once.
        check_finite(x, f"{what}: X holds")


def _targets(y: np.ndarray, samples: int, what: str) -> np.ndarray:
    """A regression's targets as float32, samples x outputs."""
    if y.dtype.kind not in "biuf":
        raise InputError(f"{what}: y must hold target values (numbers), not {y.dtype} values")
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or len(y) != samples:
        raise InputError(f"{what}: X has {samples} samples but y has shape {y.shape} (one "
                         f"target, or a row of them, per sample)")
    with np.errstate(over="ignore"):
        targets = y.astype(np.float32)
    if not np.all(np.isfinite(targets)):
        bad = np.argwhere(~np.isfinite(targets))[0]
        raise InputError(f"{what}: y holds {y[tuple(bad)]} at sample {int(bad[0])}; every "
                         f"target must be a finite float32")
    return targets


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    seed: int = 0


@contextlib.contextmanager
def seeded(seed: int):
    """Deterministic torch for the duration (single thread: results do not depend on cores)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    try:
        yield torch.Generator().manual_seed(seed)
    finally:
        torch.set_num_threads(threads)


def accuracy(model, data: Dataset) -> float:
    """The torch ``model``'s :func:`score` on ``data``: accuracy, or a regression's R²."""
    import torch

    model.eval()
    with torch.no_grad():
        outputs = model(torch.from_numpy(data.x))
    return score(outputs.numpy(), data.y)


# Without a terminal (a pipe, a log, CI) a slow phase says how far it got in plain lines: one
# when it ends, if it took this long, and one every HEARTBEAT seconds while it runs.  Fast
# phases (the digits' take a second or two) print nothing.
SLOW_PHASE = 5.0
HEARTBEAT = 60.0


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool):
    """A rich progress bar on stderr when it is a terminal, or nothing; yields ``advance()``.
    Pipes and logs get no bar and no stray blank lines, but a phase slower than
    ``SLOW_PHASE`` seconds is told in a line (``pruning, step 2 of 8: 8 epochs in 21 s``)."""
    from rich.console import Console

    console = Console(stderr=True)
    if not enabled:
        yield lambda: None
        return
    if not console.is_terminal:
        with plain_progress(description, total) as advance:
            yield advance
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                  transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda: progress.advance(task)


@contextlib.contextmanager
def plain_progress(description: str, total: int):
    """Progress as plain lines on stderr (see ``SLOW_PHASE``); yields ``advance()``."""
    import sys
    import time

    started = last = time.monotonic()
    done = 0

    def advance():
        nonlocal done, last
        done += 1
        now = time.monotonic()
        if done < total and now - last >= HEARTBEAT:
            print(f"{description}: epoch {done} of {total}, {now - started:.0f} s",
                  file=sys.stderr, flush=True)
            last = now

    yield advance
    seconds = time.monotonic() - started
    if seconds >= SLOW_PHASE:
        print(f"{description}: {total} epoch{'s' if total != 1 else ''} in {seconds:.0f} s",
              file=sys.stderr, flush=True)


def train(model, data: Dataset, config: TrainConfig, *, loss_fn=None, after_step=None,
          description: str = "training", progress: bool = False) -> None:
    """Adam on cross-entropy, a regression's (``data.regression``) on the mean squared error
    (or ``loss_fn(model, x, y)``); ``after_step(model)`` runs after every optimiser step
    (pruning masks use it to keep pruned weights at zero)."""
    import torch
    import torch.nn.functional as F

    with seeded(config.seed) as generator:
        parameters = [p for p in model.parameters() if p.requires_grad]
        optimiser = torch.optim.Adam(parameters, lr=config.learning_rate,
                                     weight_decay=config.weight_decay)
        x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
        with progress_bar(description, config.epochs, progress) as advance:
            for epoch in range(config.epochs):
                model.train()
                order = torch.randperm(len(y), generator=generator)
                for start in range(0, len(y), config.batch_size):
                    batch = order[start:start + config.batch_size]
                    optimiser.zero_grad()
                    loss = (loss_fn(model, x[batch], y[batch]) if loss_fn
                            else F.mse_loss(model(x[batch]), y[batch]) if data.regression
                            else F.cross_entropy(model(x[batch]), y[batch],
                                                 label_smoothing=config.label_smoothing))
                    if not torch.isfinite(loss):
                        raise _diverged(description, epoch, loss.item(), data, config)
                    loss.backward()
                    optimiser.step()
                    if after_step is not None:
                        after_step(model)
                advance()
        model.eval()


def _diverged(description: str, epoch: int, loss: float, data: Dataset,
              config: TrainConfig) -> InputError:
    """The error for a loss that became NaN or infinite: whatever the model writes after it
    is garbage (a "compressed" model of 0% accuracy that looks like a result)."""
    largest = float(np.abs(data.x).max()) if data.x.size else 0.0
    hint = (f"the inputs reach |x| = {largest:.3g}: standardise each feature (zero mean, unit "
            f"variance) before training" if largest > 1e3 else
            f"lower the learning rate ({config.learning_rate:g})")
    return InputError(f"{description} diverged: the loss became {loss} in epoch {epoch + 1}; "
                     f"{hint}")
