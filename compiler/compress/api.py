"""``sf.compress``: Deep Compression's pipeline on a PyTorch model.

capture -> canonical network -> prune with retraining (masks kept) -> share weights by k-means
-> train the shared values -> calibrate fixed-point scales -> the integer network.  Each step is
a function of its own module and usable alone; this one chains them with sensible defaults and
measures accuracy before and after, the compressed one with the integer arithmetic the hardware
uses (``QuantizedNetwork.forward``), never with float fake quantization.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import warnings
from dataclasses import dataclass

import numpy as np

from ..config import check_pes
from ..errors import InputError, InputWarning, SparsityLowered
from ..capture import SWAP_HINT, UnsupportedLayerError
from ..ir import Conv2d, Network, QuantizedNetwork
from ..numerics import FRAC_LIMIT
from .accounting import account, model_weight_counts
from .convert import network_to_torch, to_network, torch_to_network, unwrapped, weight_layers
from .model import CompressedModel
from .prune import choose_sparsities, prune_iteratively, sensitivity_scan
from .quantize import inputs_lost, quantize_network
from .share import from_shared, to_shared
from .swap import Swap, swap_activations, swap_onnx_activations, swap_sklearn_activations
from .training import Dataset, TrainConfig, accuracy, as_dataset, as_pair, score, seeded
from .training import train as fine_tune

__all__ = [
    "CompressionConfig",
    "FULL_SCHEDULE_SAMPLES",
    "compress",
    "distribute_sparsity",
    "reachable_sparsity",
    "float_accuracy",
    "integer_accuracy",
    "network_to_torch",
    "torch_to_network",
]


@dataclass(frozen=True)
class CompressionConfig:
    """Every knob of :func:`compress`; the defaults are the ones the digits figures use.

    sparsity : overall fraction of weights pruned.  The last layer, small and sensitive, is
        pruned at most to ``last_layer_sparsity``; the others make up the difference.  Each
        convolution keeps at least ``min_weights_per_filter`` weights per filter: where that
        puts the overall sparsity out of reach, it is lowered to the highest within reach,
        with a warning.
    per_layer_sparsity : explicit per-layer sparsities instead (one per Linear layer or
        convolution of the model; the layers the compiler adds, such as a max pooling's
        padding, are not pruned).
    fallback_loss : where ``sparsity`` loses more than this on the validation data (else the
        test data, else the training data; a fraction: 0.02 is two points of accuracy, or
        0.02 of R²), the lower overall sparsities of ``FALLBACK_SPARSITIES`` are tried in turn
        and the first within it kept (the one that lost least, if none is).  None:
        ``sparsity`` as given.  :func:`compress` and ``sparseforge compress`` set
        ``DEFAULT_FALLBACK_LOSS`` when no sparsity is given: the default 0.9 suits the digits'
        64-100-10 MLP, and leaves a 4-10-3 one 7 weights.
    sensitivity_budget : choose per-layer sparsities from a sensitivity scan on the validation
        data instead: each layer the highest scanned sparsity whose accuracy loss, pruning that
        layer alone without retraining, stays within this budget (a fraction, 0.01 = 1 point).
    prune_steps, prune_epochs : gradual pruning in this many steps, retraining this many epochs
        after each; ``final_epochs`` of fine-tuning at a tenth of the learning rate follow.
        The epoch counts left None follow the training set's size (:meth:`schedule_for`):
        8, 60 and 40 (30 for ``swap_epochs``) up to ``FULL_SCHEDULE_SAMPLES`` samples, fewer
        in proportion on more, so that a large data set gets about as many optimiser steps.
    weight_bits : code width (1..8); ``levels`` (default ``2**weight_bits``) codebook entries,
        code 0 being the pruned zero.  ``levels=3`` with ``weight_bits=2`` is ternary.
    share_epochs : epochs of training the shared values (centroids and biases).
    act_bits, coef_bits : fixed-point widths of activations and codebook values (8 or 16).
    bias_bits : bias width; None sizes it to the largest bias (at least 8 bits).
    max_acc_bits : the widest accumulator the target engine should need (16 on iCE40, whose
        block RAMs are 16 bits wide); codebook scales get coarser where a layer would exceed it.
    balance_pes : load-balance-aware pruning for that many PEs (ESE): equal nonzeros per PE.
    distill_alpha, distill_temperature : retrain against the uncompressed model's soft targets
        (knowledge distillation) instead of the labels alone; None: labels only.
    task : "classification" (labels are class numbers, the outputs class scores) or
        "regression" (targets are values, one per output; trained on the mean squared error,
        scored by R², and a final Sigmoid or Softmax is refused, not dropped).
    swap_activations : where the model has hidden activations besides ReLU, a leaky ReLU and
        clamps (GELU, Tanh, ELU, SiLU, ...), run ReLU in their place and retrain the model
        ``swap_epochs`` epochs before compressing it (``swap.py``): the engine without
        activation tables, 16-bit activations.  Off: they run as tables (8-bit activations)
        and what cannot (a PReLU per channel, arithmetic such as ``x * tanh(x)``) is refused.
    """
    sparsity: float = 0.9
    fallback_loss: float | None = None
    per_layer_sparsity: tuple[float, ...] | None = None
    sensitivity_budget: float | None = None
    last_layer_sparsity: float = 0.8
    min_weights_per_filter: int = 2
    prune_steps: int = 8
    prune_epochs: int | None = None
    final_epochs: int | None = None
    weight_bits: int = 4
    levels: int | None = None
    share_epochs: int | None = None
    act_bits: int = 8
    coef_bits: int = 8
    bias_bits: int | None = None
    max_acc_bits: int | None = None
    balance_pes: int | None = None
    distill_alpha: float | None = None
    distill_temperature: float = 4.0
    learning_rate: float = 2e-3
    weight_decay: float = 1e-3
    label_smoothing: float = 0.1
    seed: int = 0
    swap_activations: bool = False
    swap_epochs: int | None = None
    task: str = "classification"

    def __post_init__(self):
        def require(ok: bool, field: str, what: str):
            if not ok:
                raise ValueError(f"{field} must be {what}, not {getattr(self, field)!r}")

        require(_real(self.sparsity) and 0.0 <= self.sparsity < 1.0, "sparsity",
                "a number in [0, 1)")
        if self.per_layer_sparsity is not None:
            # A dict (by layer name or index) would become the tuple of its keys.
            require(isinstance(self.per_layer_sparsity, (list, tuple, np.ndarray)),
                    "per_layer_sparsity", "a list or tuple of numbers, one per layer in order")
            object.__setattr__(self, "per_layer_sparsity", tuple(self.per_layer_sparsity))
            require(all(_real(s) and 0.0 <= s < 1.0 for s in self.per_layer_sparsity),
                    "per_layer_sparsity", "a tuple of values in [0, 1)")
        require(self.fallback_loss is None or (_real(self.fallback_loss)
                                               and 0.0 <= self.fallback_loss < 1.0),
                "fallback_loss", "None or in [0, 1)")
        require(self.fallback_loss is None or (self.per_layer_sparsity is None
                                               and self.sensitivity_budget is None),
                "fallback_loss", "None when per_layer_sparsity or sensitivity_budget chooses "
                "each layer's sparsity (it lowers the overall sparsity)")
        require(self.sensitivity_budget is None or (_real(self.sensitivity_budget)
                                                    and 0.0 <= self.sensitivity_budget < 1.0),
                "sensitivity_budget", "None or in [0, 1)")
        require(self.per_layer_sparsity is None or self.sensitivity_budget is None,
                "sensitivity_budget", "None when per_layer_sparsity is given (both choose each "
                "layer's sparsity; give one)")
        require(_real(self.last_layer_sparsity) and 0.0 <= self.last_layer_sparsity < 1.0,
                "last_layer_sparsity", "in [0, 1)")
        require(_int(self.min_weights_per_filter) and self.min_weights_per_filter >= 0,
                "min_weights_per_filter", "an integer >= 0")
        require(_int(self.prune_steps) and self.prune_steps >= 1, "prune_steps",
                "an integer >= 1")
        require(isinstance(self.swap_activations, (bool, np.bool_)), "swap_activations",
                "True or False")
        require(self.task in TASKS, "task", " or ".join(map(repr, TASKS)))
        for field in SCHEDULE:
            require(getattr(self, field) is None
                    or _int(getattr(self, field)) and getattr(self, field) >= 0, field,
                    "an integer >= 0 (None: the default for the data's size)")
        require(_int(self.weight_bits) and 1 <= self.weight_bits <= 8, "weight_bits",
                "an integer from 1 to 8")
        require(self.levels is None or (_int(self.levels)
                                        and 2 <= self.levels <= 1 << self.weight_bits),
                "levels", f"None or from 2 to {1 << self.weight_bits} for "
                          f"{self.weight_bits}-bit codes")
        require(self.act_bits in (8, 16), "act_bits", "8 or 16")
        require(self.coef_bits in (8, 16), "coef_bits", "8 or 16")
        require(self.bias_bits is None or (_int(self.bias_bits) and 2 <= self.bias_bits <= 32),
                "bias_bits", "None or an integer from 2 to 32")
        require(self.max_acc_bits is None or (_int(self.max_acc_bits)
                                              and 16 <= self.max_acc_bits <= 48),
                "max_acc_bits", "None or an integer from 16 to 48")
        if self.balance_pes is not None:
            check_pes(self.balance_pes, "balance_pes")
        require(self.distill_alpha is None or (_real(self.distill_alpha)
                                               and 0.0 <= self.distill_alpha <= 1.0),
                "distill_alpha", "None or in [0, 1]")
        require(self.distill_alpha is None or self.task == "classification", "distill_alpha",
                "None for a regression (distillation matches a teacher's class scores)")
        require(_real(self.distill_temperature) and self.distill_temperature > 0,
                "distill_temperature", "> 0")
        require(_real(self.learning_rate) and 0 < self.learning_rate < math.inf,
                "learning_rate", "a number > 0")
        require(_real(self.weight_decay) and 0 <= self.weight_decay < math.inf,
                "weight_decay", ">= 0")
        require(_real(self.label_smoothing) and 0.0 <= self.label_smoothing < 1.0,
                "label_smoothing", "in [0, 1)")
        require(_int(self.seed) and 0 <= self.seed < 1 << 32, "seed",
                "an integer from 0 to 4294967295")

    @property
    def code_bits(self) -> int:
        """The code width: ``weight_bits``, or fewer when ``levels`` needs fewer."""
        return max(1, math.ceil(math.log2(self.levels))) if self.levels else self.weight_bits

    @property
    def codebook_levels(self) -> int:
        return self.levels or 1 << self.weight_bits

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    def schedule_for(self, samples: int) -> "CompressionConfig":
        """This configuration with every epoch count it leaves None chosen for a training set
        of ``samples``: the full schedule (``SCHEDULE``) up to ``FULL_SCHEDULE_SAMPLES``, and
        on more each phase shortened in proportion, to no fewer than its floor.  An epoch of a
        larger set is that many more steps, so the steps stay about what the full schedule
        gives a set of that size: 164 epochs are minutes on the digits' 1437 samples, and
        would be hours on 60,000 (15 epochs there)."""
        scale = min(1.0, FULL_SCHEDULE_SAMPLES / max(1, samples))
        chosen = {field: max(floor, round(full * scale))
                  for field, (full, floor) in SCHEDULE.items() if getattr(self, field) is None}
        return dataclasses.replace(self, **chosen)


TASKS = ("classification", "regression")
# The overall sparsities ``fallback_loss`` tries, in turn, below the one asked for.
FALLBACK_SPARSITIES = (0.8, 0.7, 0.5, 0.3)
# The loss the default sparsity may cost before a lower one is tried (two points).
DEFAULT_FALLBACK_LOSS = 0.02
# Each phase's epochs on a small training set, and the fewest on a large one.
SCHEDULE = {"prune_epochs": (8, 1), "final_epochs": (60, 2), "share_epochs": (40, 2),
            "swap_epochs": (30, 2)}
FULL_SCHEDULE_SAMPLES = 4096


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _real(value) -> bool:
    """A real number (a NumPy one too), not a bool or a string; NaN fails the range tests."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))


def distribute_sparsity(sizes: list[int], target: float, last_cap: float,
                        floors: list[int] | None = None) -> list[float]:
    """Per-layer sparsities with the overall ``target``: the layers equal, but none above its
    cap -- the last layer's ``last_cap`` (where others can make up for it), 0.99, and what
    keeps ``floors[i]`` of its weights -- and the others higher to make up for the capped
    ones.  A target out of reach is a ValueError offering the highest within it."""
    caps = _sparsity_caps(sizes, last_cap, floors)
    total = sum(sizes)
    reachable = reachable_sparsity(sizes, last_cap, floors)
    if target > reachable + 1e-12:
        # Rounded down, so the figure offered is one that can be asked for.
        offer = math.floor(reachable * 100) / 100
        floored = [] if floors is None else [
            f"{floor} of {n}" for floor, n, cap in zip(floors, sizes, caps)
            if floor and cap == 1.0 - min(floor, n) / n and cap < 0.99]
        kept = (f", and layers keeping at least {', '.join(floored)} weights" if floored
                else "")
        raise ValueError(f"overall sparsity {target} is out of reach: with the last layer at "
                         f"most {last_cap} and the others at most 0.99{kept} it is "
                         f"{reachable:.4f} (the last layer holds {sizes[-1]} of the "
                         f"{total} weights); ask for sparsity={offer:g} or less "
                         f"(--sparsity {offer:g} on the command line), raise "
                         f"last_layer_sparsity or give per_layer_sparsity, or let a "
                         f"sensitivity scan choose each layer's (--sensitivity-budget)")
    low, high = 0.0, 1.0                # the uncapped layers' sparsity, by bisection
    for _ in range(100):
        middle = (low + high) / 2
        if sum(min(middle, cap) * n for cap, n in zip(caps, sizes)) < target * total:
            low = middle
        else:
            high = middle
    return [min(high, cap) for cap in caps]


def reachable_sparsity(sizes: list[int], last_cap: float,
                       floors: list[int] | None = None) -> float:
    """The highest overall sparsity :func:`distribute_sparsity` reaches with these caps."""
    caps = _sparsity_caps(sizes, last_cap, floors)
    return sum(cap * n for cap, n in zip(caps, sizes)) / sum(sizes)


def _sparsity_caps(sizes: list[int], last_cap: float, floors: list[int] | None) -> list[float]:
    floors = [0] * len(sizes) if floors is None else floors
    caps = [1.0 - min(floor, n) / n for floor, n in zip(floors, sizes)]
    if len(sizes) == 1:
        return caps
    caps = [min(cap, 0.99) for cap in caps]
    caps[-1] = min(caps[-1], last_cap)
    return caps


def integer_accuracy(network: QuantizedNetwork, data: Dataset) -> float:
    """Top-1 accuracy (a regression's R², ``training.score``) of the integer network (the
    hardware's arithmetic) on ``data``, its outputs read as their fixed-point values."""
    outputs = network.forward(network.quantize_input(data.x))
    return score(network.dequantize_output(outputs), data.y)


def float_accuracy(network: Network, data: Dataset) -> float:
    """Top-1 accuracy (a regression's R²) of a float network (float64 NumPy) on ``data``."""
    return score(network.forward(data.x), data.y)


def compress(model, train=None, val=None, *, sparsity: float | None = None,
             weight_bits: int = 4, act_bits: int = 8, test=None, progress: bool = False,
             config: CompressionConfig | None = None, **options) -> CompressedModel:
    """Compress ``model`` (an ``nn.Module``, an ONNX path or a float ``Network``) with
    training data ``train=(X, y)`` (NumPy arrays or torch tensors; for a network with
    convolutions X is batch x channels x rows x columns, which gives the module its input
    shape) or a torch ``Dataset`` / ``DataLoader`` of ``(x, label)`` samples, collected.

    ``val`` (default: the training data) drives the sensitivity scan; the reported accuracies
    are on ``test`` when given, else on ``val``.  With ``task="regression"`` ``y`` holds each
    sample's target values (a vector for one output, samples x outputs for several) and the
    accuracies are R² (``training.score``).  Options are the fields of
    :class:`CompressionConfig` (or pass ``config=``); ``sparsity`` is 0.9 unless given, and
    cannot be given beside ``per_layer_sparsity`` or ``sensitivity_budget`` (which choose each
    layer's).  The model is not modified.
    """
    if train is None:
        raise TypeError("compress needs training data: train=(X, y)")
    if config is None:
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(CompressionConfig)})
        if unknown:
            raise TypeError(f"compress got unknown option(s) {', '.join(unknown)}; the options "
                            f"are the fields of CompressionConfig")
        chosen = [name for name in ("per_layer_sparsity", "sensitivity_budget")
                  if options.get(name) is not None]
        if sparsity is not None and chosen:
            raise InputError(f"give sparsity= or {chosen[0]}=, not both: {chosen[0]} chooses "
                             f"each layer's sparsity, and the overall sparsity={sparsity} "
                             f"would be ignored")
        if sparsity is None and not chosen:
            options.setdefault("fallback_loss", DEFAULT_FALLBACK_LOSS)
        config = CompressionConfig(sparsity=0.9 if sparsity is None else sparsity,
                                   weight_bits=weight_bits, act_bits=act_bits, **options)
    elif options or sparsity is not None:
        given = sorted(options) + (["sparsity"] if sparsity is not None else [])
        raise TypeError(f"pass either config= or options, not both (got {given})")
    train, val, test = (None if data is None else as_pair(data, what)
                        for data, what in ((train, "train"), (val, "val"), (test, "test")))
    from ..sklearn_capture import is_sklearn_regressor

    if is_sklearn_regressor(model) and not config.regression:
        # The estimator says what its outputs are: values (a classifier's task would read
        # the targets as class labels and refuse them).
        config = dataclasses.replace(config, task="regression")
    regression = config.regression
    train_set = as_dataset(train, "train", regression=regression)
    config = config.schedule_for(len(train_set))
    val_set = as_dataset(val, "val", regression=regression) if val is not None else train_set
    test_set = as_dataset(test, "test", regression=regression) if test is not None else None
    network, swaps = _captured(model, train, config)
    _check_channels_first(network, _input_shape(train))
    _check_tables(network, config.act_bits)
    for name, data in (("train", train_set), ("val", val_set), ("test", test_set)):
        if data is not None and data.x.shape[1] != network.input_size:
            raise ValueError(f"the model takes {network.input_size} inputs but the {name} data "
                             f"has {data.x.shape[1]} features")
        if data is not None and regression and data.y.shape[1] != network.output_size:
            raise InputError(f"the {name} data has {data.y.shape[1]} target"
                             f"{'s' if data.y.shape[1] != 1 else ''} a sample but the model "
                             f"has {network.output_size} output"
                             f"{'s' if network.output_size != 1 else ''} (y: a row of "
                             f"{network.output_size} per sample, samples x outputs)")
        if data is not None and not regression and data.y.max() >= network.output_size:
            # Compression fine-tunes with cross-entropy on class labels.  A one-output model
            # is a binary classifier's logit, which the passes made two classes (0, logit)
            # (passes.binary_logit_as_two_classes): it takes labels 0 and 1, no others.
            last = network.layers[-1]
            one_output = (network.output_size == 2 and not np.any(last.weight[0])
                          and not last.bias[0])
            why = (" (one output: sparseforge runs it as a binary classifier's logit, labels "
                   "0 and 1; for a regression model pass task='regression', --task "
                   "regression)"
                   if one_output else
                   f" (labels are class indices 0 .. {network.output_size - 1}"
                   + (f"; the {name} data holds {distinct} distinct labels: renumber them "
                      f"0 .. {distinct - 1}, e.g. np.unique(y, return_inverse=True)[1], the "
                      f"same numbering for every set)"
                      if (distinct := len(np.unique(data.y))) <= network.output_size
                      else ")"))
            raise ValueError(f"the {name} data has label {int(data.y.max())} but the model "
                             f"has {1 if one_output else network.output_size} "
                             f"output{'' if one_output else 's'}{why}")
    # What the engine's one input format sees: the inputs as the host scales them (an input
    # normalisation the model starts with, ir.InputScaling).
    seen = (train_set.x if network.input_scaling is None
            else network.input_scaling.apply(train_set.x.reshape(len(train_set.x), -1)))
    _check_input_scale(seen, config.act_bits)
    if not regression:
        _warn_of_class_coverage(train_set, val_set, test_set)
    _warn_of_lost_inputs(seen, config.act_bits)
    _warn_of_weak_settings(network, config)
    report_set = test_set or val_set
    swapping = {}
    if swaps:
        network, swapping = _retrained(model, network, swaps, train, train_set, report_set,
                                       config, progress)
    accuracy_float = float_accuracy(network, report_set)
    if not regression:
        _warn_of_label_order(network, report_set, "test" if test_set is not None
                             else "validation" if val is not None else "training")

    # The default sparsity's judge: data the training did not see, where there is any (a
    # model at 100% on its training data makes every pruned one look worse than it is).
    judge, judged_on = ((val_set, "validation data") if val is not None
                        else (test_set, "test data") if test_set is not None
                        else (train_set, "training data"))
    attempt = _compressed_at(network, config, train_set, val_set, judge, progress)
    tried = [attempt.tried]
    if config.fallback_loss is not None:
        attempt, tried = _fallen_back(network, config, train_set, val_set, judge, progress,
                                      attempt)
    if len(tried) > 1:
        warnings.warn("the default sparsity " + fallback_summary(
            tried, judged_on, attempt.sparsity, regression) + " (sparsity= chooses)",
            SparsityLowered, stacklevel=2)
    config = dataclasses.replace(config, sparsity=attempt.sparsity)
    sparsities, masks, pruned_weights = attempt.sparsities, attempt.masks, attempt.pruned_weights
    float_network, quantized = attempt.float_network, attempt.quantized
    report = account(quantized, accuracy_float=accuracy_float,
                     accuracy_quantized=integer_accuracy(quantized, report_set),
                     accuracy_shared=float_accuracy(float_network, report_set),
                     accuracy_data=("test data" if test_set is not None
                                    else "validation data" if val is not None
                                    else "training data"),
                     metric="r2" if regression else "accuracy",
                     model_counts=_model_counts(network, quantized))
    provenance = {
        "source": network.source, "config": dataclasses.asdict(config),
        "sparsities": [round(s, 4) for s in sparsities],
        "train_samples": len(train_set), "val_samples": len(val_set),
        "test_samples": len(test_set) if test_set is not None else 0,
        "accuracy_float_val": float_accuracy(network, val_set),
        "accuracy_quantized_val": integer_accuracy(quantized, val_set), **swapping,
        **({"sparsity_tried": tried, "sparsity_tried_on": judged_on}
           if len(tried) > 1 else {})}
    return CompressedModel(quantized, float_network, report, provenance,
                           masks=tuple(np.asarray(m, dtype=bool) for m in masks),
                           pruned_weights=pruned_weights)


@dataclass(frozen=True)
class _Attempt:
    """The network compressed at one overall sparsity, and its loss on the validation data."""
    sparsity: float
    sparsities: list[float]
    masks: list
    pruned_weights: tuple
    float_network: Network
    quantized: QuantizedNetwork
    loss: float
    reached: float            # the overall sparsity reached (below a target out of reach)

    @property
    def tried(self) -> dict:
        """The provenance's record of it."""
        return {"sparsity": self.sparsity, "reached": round(self.reached, 4),
                "loss": round(self.loss, 4)}


def _compressed_at(network: Network, config: CompressionConfig, train_set: Dataset,
                   val_set: Dataset, judge: Dataset, progress: bool) -> _Attempt:
    """Prune, share and quantize ``network`` at ``config``'s sparsity (a fresh copy of it:
    each attempt starts from the float model), and measure its loss on ``judge``."""
    torch_model = network_to_torch(network)
    _freeze_structural(torch_model, network)
    sparsities = _sparsities(config, network, torch_model, val_set)
    tuning = TrainConfig(epochs=config.prune_epochs, learning_rate=config.learning_rate,
                         weight_decay=config.weight_decay,
                         label_smoothing=config.label_smoothing, seed=config.seed)
    loss_fn = None
    if config.distill_alpha is not None:
        from .distill import teacher_loss

        loss_fn = teacher_loss(network_to_torch(network), config.distill_temperature,
                               config.distill_alpha)
    masks = prune_iteratively(torch_model, train_set, sparsities, steps=config.prune_steps,
                              epochs_per_step=config.prune_epochs,
                              final_epochs=config.final_epochs,
                              balance_pes=config.balance_pes, train_config=tuning,
                              loss_fn=loss_fn, progress=progress,
                              ties=[getattr(layer, "tied_columns", None)
                                    for layer in network.layers])

    # The weights before sharing, for the report's before/after histograms.
    pruned_weights = tuple(np.where(np.asarray(mask, dtype=bool),
                                    layer.weight.detach().numpy().astype(np.float64), 0.0)
                           for layer, mask in zip(weight_layers(torch_model), masks))
    with seeded(config.seed):
        to_shared(torch_model, config.codebook_levels, masks)
    _freeze_structural(torch_model, network)
    fine_tune(torch_model, train_set,
              dataclasses.replace(tuning, epochs=config.share_epochs, seed=config.seed + 100),
              loss_fn=loss_fn, description="training the shared weights", progress=progress)
    shared = from_shared(torch_model)
    float_network = torch_to_network(torch_model, network)
    quantized = quantize_network(
        float_network, train_set.x, act_bits=config.act_bits, coef_bits=config.coef_bits,
        code_bits=config.code_bits, bias_bits=config.bias_bits,
        max_acc_bits=config.max_acc_bits,
        codebooks=[(codes, codebook) for codes, codebook, _ in shared])
    loss = float_accuracy(network, judge) - integer_accuracy(quantized, judge)
    reached = account(quantized, model_counts=_model_counts(network, quantized)).sparsity
    return _Attempt(config.sparsity, sparsities, masks, pruned_weights, float_network,
                    quantized, float(loss), float(reached))


def _model_counts(network: Network, quantized: QuantizedNetwork) -> list:
    """Per layer, the model's weights and nonzeros where the matrix holds more entries than
    the model has weights (the report and the overall sparsity count those)."""
    return [model_weight_counts(model_layer, layer.codes)
            for model_layer, layer in zip(network.layers, quantized.layers)]


# How far below its target an attempt may reach and still count as that target.
REACHED_TOLERANCE = 0.01


def _fallen_back(network: Network, config: CompressionConfig, train_set: Dataset,
                 val_set: Dataset, judge: Dataset, progress: bool,
                 first: _Attempt) -> tuple[_Attempt, list]:
    """``first`` when its loss is within ``config.fallback_loss``, else the first of the
    lower sparsities of ``FALLBACK_SPARSITIES`` within it (or the one that lost least), and
    every sparsity tried with its loss."""
    attempts = [first]
    for sparsity in (s for s in FALLBACK_SPARSITIES if s < config.sparsity):
        if attempts[-1].loss <= config.fallback_loss:
            break
        if sparsity > attempts[-1].reached - REACHED_TOLERANCE:
            # A target out of reach was lowered to about this one already: no new attempt.
            continue
        if progress:
            print(f"sparsity {_tried_label(attempts[-1].tried)} lost "
                  f"{_loss(attempts[-1].loss, config.regression)} (more than "
                  f"{_loss(config.fallback_loss, config.regression)}): trying {sparsity:g}",
                  file=sys.stderr)
        attempts.append(_compressed_at(network, dataclasses.replace(config, sparsity=sparsity),
                                       train_set, val_set, judge, progress))
    tried = [attempt.tried for attempt in attempts]
    if attempts[-1].loss <= config.fallback_loss:
        return attempts[-1], tried
    return min(attempts, key=lambda attempt: attempt.loss), tried


def fallback_summary(tried: list[dict], judged_on: str, chosen: float,
                     regression: bool) -> str:
    """How the default sparsity lowered itself, from the provenance's ``sparsity_tried``."""
    return (f"lowered itself ("
            + ", ".join(f"{_tried_label(t)} lost {_loss(t['loss'], regression)}"
                        for t in tried)
            + f" on the {judged_on}): compressed at {chosen:g}")


def _tried_label(tried: dict) -> str:
    """A sparsity tried, with the one reached where the target was out of reach."""
    reached = tried.get("reached", tried["sparsity"])
    return (f"{tried['sparsity']:g}" if tried["sparsity"] - reached < REACHED_TOLERANCE
            else f"{tried['sparsity']:g} (reached {reached:.3g})")


def _loss(loss: float, regression: bool) -> str:
    return f"{loss:.3f} of R²" if regression else f"{100 * loss:.1f} points"


def _freeze_structural(torch_model, network: Network) -> None:
    """Keep the structural layers' weights and biases out of training: they compute what
    the passes made them for (a max pooling's padding: zeros around the map)."""
    for module, layer in zip(weight_layers(torch_model), network.layers):
        if layer.structural:
            module.requires_grad_(False)


def _check_input_scale(x: np.ndarray, act_bits: int) -> None:
    """Refuse inputs whose magnitude no fixed-point format of the engine holds (its binary
    point lies within ``FRAC_LIMIT`` bits either way): 1e-30 would round to 0 everywhere,
    1e30 saturate everywhere."""
    largest = float(np.abs(x).max()) if x.size else 0.0
    if largest == 0.0:
        raise InputError(f"the training inputs are all 0: the network cannot tell samples "
                         f"apart")
    frac = math.floor(math.log2(((1 << (act_bits - 1)) - 1) / largest))
    if abs(frac) > FRAC_LIMIT:
        raise InputError(
            f"the training inputs' largest magnitude is {largest:.3g}: the engine's "
            f"{act_bits}-bit fixed point places its binary point at most {FRAC_LIMIT} bits "
            f"either way and would need {frac}; scale the inputs (standardise each feature: "
            f"zero mean, unit variance)")


def _warn_of_label_order(network: Network, data: Dataset, where: str) -> None:
    """Warn where the labels are numbered otherwise than the model's outputs (a table's class
    names numbered in sorted order for a model trained in another order): every accuracy,
    and fine-tuning itself, would follow the wrong numbering."""
    if network.output_size < 2 or not len(data.y):
        return
    hint = renumbering_hint(network.forward(data.x).argmax(axis=1), data.y,
                            network.output_size, where)
    if hint is not None:
        warnings.warn(hint, InputWarning, stacklevel=3)


def renumbering_hint(predicted: np.ndarray, labels: np.ndarray, outputs: int,
                     where: str) -> str | None:
    """Where the model's answers (``predicted``) agree with ``labels`` far better once the
    labels are renumbered, what to say (with the renumbering), else None."""
    from scipy.optimize import linear_sum_assignment

    agreement = np.zeros((outputs, outputs), dtype=np.int64)
    np.add.at(agreement, (np.asarray(labels, dtype=np.int64), predicted), 1)
    rows, best = linear_sum_assignment(agreement, maximize=True)
    accuracy = np.trace(agreement) / len(labels)
    renumbered = agreement[rows, best].sum() / len(labels)
    # A model trained in another numbering scores below chance on these labels and well on
    # the renumbered ones; an untrained model's answers may follow the data's clusters too,
    # but not that well.
    if accuracy > 1 / len(np.unique(labels)) or renumbered < 0.8:
        return None
    moves = ", ".join(f"{label} as {output}" for label, output in zip(rows, best)
                      if label != output and agreement[label].any())
    return (f"the model's outputs agree with the {where} labels on {100 * accuracy:.1f}% of "
            f"the samples, and on {100 * renumbered:.1f}% with the labels renumbered "
            f"({moves}): are the labels numbered as the model's outputs? (a table's class "
            f"names are numbered in sorted order; give class numbers in the model's order)")


def _warn_of_class_coverage(train: Dataset, *others: Dataset | None) -> None:
    """Warn, before the training starts, of training labels that cannot teach a classifier:
    one class only, no class 0 (labels counted from 1), or classes that only the validation
    or test data hold."""
    present = set(np.unique(train.y).tolist())
    if len(present) == 1:
        warnings.warn(f"the training data holds one class only ({present.pop()}): the network "
                      f"learns nothing to tell classes apart", InputWarning, stacklevel=3)
        return
    if 0 not in present:
        warnings.warn(f"the training data has no label 0 (its labels run from {min(present)} "
                      f"to {max(present)}); class 0 gets an output nothing trains: if the labels "
                      f"count from 1, subtract 1", InputWarning, stacklevel=3)
    elsewhere = sorted({int(label) for data in others if data is not None
                        for label in np.unique(data.y)} - present)
    if elsewhere:
        shown = ", ".join(map(str, elsewhere[:8])) + (", ..." if len(elsewhere) > 8 else "")
        warnings.warn(f"class(es) {shown} appear in the validation or test data but never in "
                      f"the training data: the network cannot learn them", InputWarning,
                      stacklevel=3)


def _warn_of_lost_inputs(x: np.ndarray, act_bits: int) -> None:
    """Warn, before the training starts, when the inputs' one fixed-point format (set by the
    largest input) rounds some features to 0 in every training sample."""
    lost, input_format = inputs_lost(x, act_bits)
    if len(lost) == 0:
        return
    shown = ", ".join(str(int(column)) for column in lost[:8]) + (", ..." if len(lost) > 8
                                                                  else "")
    warnings.warn(f"{len(lost)} of the {x.reshape(len(x), -1).shape[1]} input features "
                  f"({shown}) round to 0 in every training sample: the inputs share one "
                  f"{act_bits}-bit format ({input_format.frac} fraction bits), set by the "
                  f"largest input (|x| up to {float(np.abs(x).max()):.4g}), and these are "
                  f"below its step {input_format.scale:.3g}; the network will not see them. "
                  f"Scale the inputs (standardize each feature) before training and "
                  f"compressing (or begin the model with a scaling, an input BatchNorm or "
                  f"(x - mean) / std in its forward, which the host applies)",
                  InputWarning, stacklevel=3)


def _warn_of_weak_settings(network: Network, config: CompressionConfig) -> None:
    """Warn, before the training starts, of settings that wreck accuracy without failing:
    a codebook of two levels, and weights so small that a fine-tuning step (Adam moves a
    weight by about the learning rate) is larger than they are."""
    if config.codebook_levels == 2:
        warnings.warn("a codebook of 2 levels holds 0 and one value: every weight a layer "
                      "keeps gets the same value, and so the same sign; 3 levels (ternary, "
                      "--levels 3) is the fewest that keeps signs", InputWarning, stacklevel=3)
    for layer in network.layers:
        # Named as the model names it (its position among the weight layers is not the
        # module's: 'head', or '4' after a Conv, a ReLU, a pooling and a Flatten).
        magnitudes = np.abs(layer.weight[layer.weight != 0])
        # A folded average's weights are its Linear's over the window: small by the window's
        # size, and each entry trains on its own (measured: no worse than a scaled rate).
        folded = layer.parameters is not None and layer.parameters < magnitudes.size
        if magnitudes.size and not folded and float(np.median(magnitudes)) < config.learning_rate:
            warnings.warn(f"layer {layer.name}'s weights are small (median |w| "
                          f"{float(np.median(magnitudes)):.2g}) against the fine-tuning "
                          f"learning rate {config.learning_rate:g}: each step moves a weight "
                          f"by about the learning rate, so fine-tuning may wreck this layer; "
                          f"pass a learning rate well below its weights (--learning-rate, "
                          f"CompressionConfig.learning_rate)", InputWarning, stacklevel=3)


def _captured(model, train, config: CompressionConfig) -> tuple[Network, list[Swap]]:
    """The model as a float Network, and the activations swapped for ReLU on the way
    (``config.swap_activations``: every hidden activation besides the engine's own, which
    otherwise run as tables or are refused)."""
    shape = _input_shape(train)
    module = unwrapped(model)
    if config.swap_activations and not isinstance(module, Network):
        swapped, swaps = _swapped(module)
        if swaps:
            return to_network(swapped, shape, regression=config.regression), swaps
    try:
        return to_network(model, shape, regression=config.regression), []
    except UnsupportedLayerError as refusal:
        from ..sklearn_capture import is_sklearn_model

        if isinstance(module, Network) or _is_torch_module(module) or is_sklearn_model(module):
            raise
        # Arithmetic that is no function the engine has a table of (x * tanh(x)), which the
        # capture refuses as a node off the chain: named here as the activation it is.
        _, swaps = swap_onnx_activations(module)
        if not swaps:
            raise
        named = ", ".join(map(str, swaps))
        raise UnsupportedLayerError(refusal.where, refusal.kind,
                                    f"the model's activations the engine does not "
                                    f"have: {named}; {SWAP_HINT}") from None


def _check_tables(network: Network, act_bits: int) -> None:
    """Refused before training, not after: a table of 2**act_bits values per layer is for 8-bit
    activations (quantize.py says the same of a Network given to it)."""
    functions = [f"layer {layer.name!r} with {layer.function}" for layer in network.layers
                 if layer.function is not None]
    if functions and act_bits != 8:
        raise InputError(f"the model's activation functions run as tables of 256 values, for "
                         f"8-bit activations, not {act_bits}-bit: {', '.join(functions)}; "
                         f"compress with act_bits=8 (--act-bits 8), or with ReLU in their place "
                         f"(swap_activations=True, --swap-activations)")


def _is_torch_module(model) -> bool:
    import torch

    return isinstance(model, torch.nn.Module)


def _swapped(model) -> tuple[object, list[Swap]]:
    """``model`` (a module, an ONNX model or a scikit-learn MLP) with its hidden activations
    besides ReLU, a leaky ReLU and clamps swapped for ReLU, and the swaps."""
    from ..sklearn_capture import is_sklearn_model

    if _is_torch_module(model):
        return swap_activations(model)
    if is_sklearn_model(model):
        return swap_sklearn_activations(model)
    return swap_onnx_activations(model)


def _retrained(model, network: Network, swaps: list[Swap], train, train_set: Dataset,
               report_set: Dataset, config: CompressionConfig, progress: bool
               ) -> tuple[Network, dict]:
    """``network`` (the model with ReLU in the place of ``swaps``) retrained on the labels
    for ``config.swap_epochs``, and the provenance of the swap: what was swapped, and the
    accuracy of the model as given, with ReLU before retraining and after (warned of, since
    the network compressed is no longer the one the user trained)."""
    before = float_accuracy(network, report_set)
    torch_model = network_to_torch(network)
    fine_tune(torch_model, train_set,
              TrainConfig(epochs=config.swap_epochs, learning_rate=config.learning_rate,
                          weight_decay=config.weight_decay,
                          label_smoothing=config.label_smoothing, seed=config.seed + 200),
              description="retraining with ReLU", progress=progress)
    network = torch_to_network(torch_model, network)
    after = float_accuracy(network, report_set)
    own = _own_accuracy(unwrapped(model), train, report_set)
    named = ", ".join(map(str, swaps))
    figure = "{:.4f}".format if config.regression else "{:.1%}".format
    warnings.warn(f"swap_activations: {named} swapped for ReLU and the "
                  f"model retrained ({config.swap_epochs} epochs): "
                  f"{'R²' if config.regression else 'accuracy'} "
                  + (f"{figure(own)} as given, " if own is not None else "")
                  + f"{figure(before)} with ReLU, {figure(after)} retrained; compression "
                  f"starts from the retrained model", InputWarning, stacklevel=3)
    return network, {"swapped_activations": [{"where": swap.where, "kind": swap.kind}
                                             for swap in swaps],
                     "accuracy_as_given": own, "accuracy_swapped": before,
                     "accuracy_swapped_retrained": after}


def _own_accuracy(model, train, data: Dataset) -> float | None:
    """Top-1 accuracy of the user's own model (a module, run by torch, an ONNX model, run
    by onnxruntime, or a scikit-learn MLP, by itself) on ``data``, shaped as the training data was; None where its outputs are
    not one score per class (a single logit) or the model cannot run the data as given
    (grey images without their channel axis, say)."""
    import torch

    from ..sklearn_capture import is_sklearn_model

    shape = tuple(getattr(train[0], "shape", ()))[1:] or (data.x.shape[1],)
    x = data.x.reshape((-1, *shape))
    if is_sklearn_model(model):
        outputs = model.predict(x) if data.regression else model.predict_proba(x)
    elif isinstance(model, torch.nn.Module):
        training = model.training               # the user's module is left as it was
        try:
            with torch.no_grad():
                outputs = model.eval()(torch.from_numpy(x)).numpy()
        except RuntimeError:        # data shaped otherwise than its forward takes: left out
            return None
        finally:
            model.train(training)
    else:
        import onnx
        import onnxruntime

        proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
        try:
            session = onnxruntime.InferenceSession(proto.SerializeToString(),
                                                   providers=["CPUExecutionProvider"])
            graph_input = session.get_inputs()[0]
            dims = graph_input.shape[1:]
            if all(isinstance(d, int) for d in dims) and int(np.prod(dims)) == x[0].size:
                x = x.reshape((-1, *dims))
            outputs = session.run(None, {graph_input.name: x})[0]
        except Exception:       # onnxruntime's own Fail, InvalidArgument, ...: figure left out
            return None
    if data.regression:
        outputs = outputs.reshape(len(outputs), -1)
        return score(outputs, data.y) if outputs.shape == data.y.shape else None
    if outputs.ndim != 2 or outputs.shape[1] < 2:
        return None
    return score(outputs, data.y)


def _check_channels_first(network: Network, shape: tuple[int, ...] | None) -> None:
    """Refuse images given channels last to a network that takes them channels first (an
    ONNX graph states its input's shape, so the data's is not used to capture it, and a
    channels-last batch of the same size would be read, wrongly, without a word)."""
    first = network.layers[0] if network.layers else None
    if shape is None or not isinstance(first, Conv2d):
        return
    channels, rows, columns = first.geometry.in_shape
    expected, last, order = (((channels, rows, columns), (rows, columns, channels),
                              "x.transpose(0, 3, 1, 2)") if rows > 1 or len(shape) == 3
                             else ((channels, columns), (columns, channels),
                                   "x.transpose(0, 2, 1)"))
    if len(shape) == len(expected) and shape != expected and shape == last:
        raise InputError(f"the training data's samples are {' x '.join(map(str, shape))}, "
                         f"the model takes {' x '.join(map(str, expected))} (channels "
                         f"first, as PyTorch's convolutions do): channels last? {order} puts "
                         f"the channels first")


def _input_shape(train) -> tuple[int, ...] | None:
    """The input map's (channels, rows, columns) when the training data is a batch of maps,
    or (channels, length) when it is a batch of 1-D signals."""
    x = train[0] if isinstance(train, (tuple, list)) and train else None
    shape = tuple(getattr(x, "shape", ()))
    return tuple(int(d) for d in shape[1:]) if len(shape) in (3, 4) else None


def _sparsities(config: CompressionConfig, network: Network, torch_model, val_set
                ) -> list[float]:
    """Each layer's sparsity, the fraction of its weight matrix pruned.  The model's own
    layers get the configuration's, counted in the weights the model has (``parameters``: a
    depthwise kernel's, not the full kernel's zeros across channels; a Linear's, not the
    repeats of them an average pooling folded in makes); a structural layer
    (``Linear.structural``: made by the passes, a copy or an average) the fraction of its
    weights that are zero already, so pruning keeps every weight it has."""
    own = [index for index, layer in enumerate(network.layers) if not layer.structural]
    sizes = [_parameters(network.layers[index]) for index in own]
    if config.per_layer_sparsity is not None:
        if len(config.per_layer_sparsity) != len(sizes):
            made = len(network.layers) - len(own)
            raise ValueError(f"per_layer_sparsity has {len(config.per_layer_sparsity)} values "
                             f"for {len(sizes)} layers" + (f" (the {made} layer(s) the "
                                                           f"compiler made are not pruned)"
                                                           if made else ""))
        chosen = list(config.per_layer_sparsity)
    elif config.sensitivity_budget is not None:
        curves = sensitivity_scan(torch_model, val_set)
        everyone = choose_sparsities(curves, accuracy(torch_model, val_set),
                                     config.sensitivity_budget,
                                     [layer.weight.size for layer in network.layers])
        chosen = [everyone[index] for index in own]
    else:
        # Each convolution keeps at least min_weights_per_filter weights per filter: its few
        # weights serve every position (Deep Compression prunes convolutions far less than
        # fully connected layers), and a small CNN's first one holds a few dozen, which at
        # 90% left filters none.  A Linear layer's hidden units may all go: the compiler
        # removes the dead ones, a smaller layer.
        floors = [min(config.min_weights_per_filter * len(network.layers[index].weight), size)
                  if isinstance(network.layers[index], Conv2d) else 0
                  for index, size in zip(own, sizes)]
        last = config.last_layer_sparsity
        target = config.sparsity
        if config.fallback_loss is not None and target > reachable_sparsity(sizes, last):
            # The default, out of reach of a model whose last layer holds most of its weights:
            # lowered, as it lowers itself for accuracy (a sparsity given is refused).
            target = math.floor(1000 * reachable_sparsity(sizes, last)) / 1000
            warnings.warn(f"the default sparsity {config.sparsity:g} is out of reach: the last "
                          f"layer, pruned at most {last:g}, holds {sizes[-1]} of the model's "
                          f"{sum(sizes)} weights; pruned to {target:g} instead",
                          InputWarning, stacklevel=3)
        if reachable_sparsity(sizes, last) >= target > reachable_sparsity(sizes, last, floors):
            asked, target = target, reachable_sparsity(sizes, last, floors)
            warnings.warn(f"overall sparsity {asked:g} would leave convolutions "
                          f"fewer than {config.min_weights_per_filter} weights per filter: "
                          f"pruned to {target:.3f} instead, each keeping at least that many "
                          f"(the model has {sum(sizes)} weights; --min-weights-per-filter 0 "
                          f"(min_weights_per_filter=0) lifts it, a sensitivity scan chooses "
                          f"each layer's: --sensitivity-budget 0.01)", InputWarning,
                          stacklevel=3)
        chosen = distribute_sparsity(sizes, target, last, floors)
    sparsities = [float(np.mean(layer.weight == 0)) for layer in network.layers]
    for index, sparsity in zip(own, chosen):
        layer = network.layers[index]
        if layer.parameters is not None:
            # Of the entries that can be nonzero (a depthwise kernel's own; every repeat of a
            # folded weight), the same fraction is kept.
            kept = (1.0 - sparsity) * np.count_nonzero(layer.weight) / layer.weight.size
            sparsity = float(min(1.0 - kept, 0.999))
        sparsities[index] = sparsity
    return sparsities


def _parameters(layer) -> int:
    """The weights the model has for ``layer`` (what the overall sparsity counts)."""
    return layer.weight.size if layer.parameters is None else layer.parameters
