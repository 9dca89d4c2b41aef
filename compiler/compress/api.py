"""``sf.compress``: Deep Compression's pipeline on a PyTorch model.

capture -> canonical network -> prune with retraining (masks kept) -> share weights by k-means
-> train the shared values -> calibrate fixed-point scales -> the integer network.  Each step is
a function of its own module and usable alone; this one chains them with sensible defaults and
measures accuracy before and after with the integer arithmetic the hardware uses.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ..capture import capture
from ..ir import Linear, Network
from ..passes import canonicalize
from .model import CompressedModel
from .prune import prune_iteratively, sensitivity_scan, choose_sparsities
from .quantize import quantize_network
from .report import account
from .share import from_shared, to_shared
from .training import TrainConfig, accuracy, as_dataset, seeded
from .training import train as fine_tune

__all__ = ["CompressionConfig", "compress", "network_to_torch", "distribute_sparsity",
           "integer_accuracy"]


@dataclass(frozen=True)
class CompressionConfig:
    """Every knob of :func:`compress`.

    sparsity : overall fraction of weights pruned (the last layer, which is small and sensitive,
        is pruned at most to ``last_layer_sparsity``; the others make up the difference).
    per_layer_sparsity : explicit per-layer sparsities instead.
    sensitivity_budget : choose per-layer sparsities from a sensitivity scan, each layer the
        highest whose accuracy loss alone stays within this budget.
    weight_bits : codebook index width; ``levels`` (default ``2**weight_bits``) entries.
    balance_pes : load-balance-aware pruning for that many PEs (ESE).
    max_acc_bits : the widest accumulator the target engine should need (16 on iCE40, whose
        block RAMs are 16 bits wide); codebook scales get coarser where a layer would exceed it.
    """
    sparsity: float = 0.9
    per_layer_sparsity: tuple[float, ...] | None = None
    sensitivity_budget: float | None = None
    last_layer_sparsity: float = 0.8
    prune_steps: int = 8
    prune_epochs: int = 8
    final_epochs: int = 30
    weight_bits: int = 4
    levels: int | None = None
    share_epochs: int = 20
    act_bits: int = 8
    coef_bits: int = 8
    bias_bits: int | None = None
    max_acc_bits: int | None = None
    balance_pes: int | None = None
    learning_rate: float = 2e-3
    weight_decay: float = 1e-3
    label_smoothing: float = 0.1
    seed: int = 0

    def __post_init__(self):
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), not {self.sparsity}")
        if not 1 <= self.weight_bits <= 8:
            raise ValueError(f"weight_bits must be from 1 to 8, not {self.weight_bits}")
        if self.levels is not None and not 2 <= self.levels <= 1 << self.weight_bits:
            raise ValueError(f"levels must be from 2 to {1 << self.weight_bits} for "
                             f"{self.weight_bits}-bit codes, not {self.levels}")
        if self.act_bits not in (8, 16) or self.coef_bits not in (8, 16):
            raise ValueError(f"act_bits and coef_bits must be 8 or 16, not {self.act_bits} "
                             f"and {self.coef_bits}")


def network_to_torch(network: Network):
    """The canonical network as an ``nn.Sequential`` of Linear and ReLU (a fresh copy)."""
    import torch
    import torch.nn as nn

    modules = []
    for layer in network.layers:
        linear = nn.Linear(layer.in_features, layer.out_features)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(layer.weight.astype(np.float32)))
            linear.bias.copy_(torch.from_numpy(layer.bias.astype(np.float32)))
        modules.append(linear)
        if layer.relu:
            modules.append(nn.ReLU())
    return nn.Sequential(*modules)


def distribute_sparsity(sizes: list[int], target: float, last_cap: float) -> list[float]:
    """Per-layer sparsities with the overall ``target``: the last layer at most ``last_cap``,
    the rest equal and higher to make up for it (never above 0.99)."""
    if len(sizes) == 1 or target <= last_cap:
        return [target] * len(sizes)
    pruned = target * sum(sizes) - last_cap * sizes[-1]
    rest = min(0.99, pruned / sum(sizes[:-1]))
    return [rest] * (len(sizes) - 1) + [last_cap]


def integer_accuracy(network, data) -> float:
    """Accuracy of the integer network (the hardware's arithmetic) on ``data``."""
    outputs = network.forward(network.quantize_input(data.x))
    return float(np.mean(outputs.argmax(axis=1) == data.y))


def compress(model, train=None, val=None, *, sparsity: float = 0.9, weight_bits: int = 4,
             act_bits: int = 8, test=None, progress: bool = False,
             config: CompressionConfig | None = None, **options) -> CompressedModel:
    """Compress ``model`` (an ``nn.Module`` or an ONNX path) with data ``train=(X, y)``.

    ``val`` (default: the training data) drives the sensitivity scan and the reported
    accuracies; ``test``, when given, is reported too.  Other options are the fields of
    :class:`CompressionConfig`.
    """
    if train is None:
        raise TypeError("compress needs training data: train=(X, y)")
    config = config or CompressionConfig(sparsity=sparsity, weight_bits=weight_bits,
                                         act_bits=act_bits, **options)
    train_set = as_dataset(train, "train")
    val_set = as_dataset(val, "val") if val is not None else train_set
    test_set = as_dataset(test, "test") if test is not None else None
    network = canonicalize(capture(model))
    if network.input_size != train_set.x.shape[1]:
        raise ValueError(f"the model takes {network.input_size} inputs but the training data "
                         f"has {train_set.x.shape[1]} features")
    torch_model = network_to_torch(network)
    report_set = test_set or val_set
    accuracy_float = accuracy(torch_model, report_set)

    sizes = [layer.weight.size for layer in network.layers]
    if config.per_layer_sparsity is not None:
        sparsities = list(config.per_layer_sparsity)
    elif config.sensitivity_budget is not None:
        curves = sensitivity_scan(torch_model, val_set)
        sparsities = choose_sparsities(curves, accuracy(torch_model, val_set),
                                       config.sensitivity_budget, sizes)
    else:
        sparsities = distribute_sparsity(sizes, config.sparsity, config.last_layer_sparsity)
    tuning = TrainConfig(epochs=config.prune_epochs, learning_rate=config.learning_rate,
                         weight_decay=config.weight_decay,
                         label_smoothing=config.label_smoothing, seed=config.seed)
    masks = prune_iteratively(torch_model, train_set, sparsities, steps=config.prune_steps,
                              epochs_per_step=config.prune_epochs,
                              final_epochs=config.final_epochs,
                              balance_pes=config.balance_pes, train_config=tuning,
                              progress=progress)

    levels = config.levels or 1 << config.weight_bits
    with seeded(config.seed):
        to_shared(torch_model, levels, masks)
    fine_tune(torch_model, train_set, dataclasses.replace(tuning, epochs=config.share_epochs),
              description="training the shared weights", progress=progress)
    shared = from_shared(torch_model)
    float_network = Network(tuple(
        Linear(layer.name, codebook[codes], bias, layer.relu)
        for layer, (codes, codebook, bias) in zip(network.layers, shared)), network.source)
    code_bits = max(1, math.ceil(math.log2(levels)))
    quantized = quantize_network(
        float_network, train_set.x, act_bits=config.act_bits, coef_bits=config.coef_bits,
        code_bits=code_bits, bias_bits=config.bias_bits, max_acc_bits=config.max_acc_bits,
        codebooks=[(codes, _pad(codebook, code_bits)) for codes, codebook, _ in shared])
    report = account(quantized, accuracy_float=accuracy_float,
                     accuracy_quantized=integer_accuracy(quantized, report_set),
                     accuracy_data="test data" if test_set is not None else "validation data")
    provenance = {"source": network.source, "config": dataclasses.asdict(config),
                  "sparsities": [round(s, 4) for s in sparsities],
                  "accuracy_float_val": accuracy(network_to_torch(network), val_set),
                  "accuracy_quantized_val": integer_accuracy(quantized, val_set)}
    return CompressedModel(quantized, float_network, report, provenance)


def _pad(codebook: np.ndarray, code_bits: int) -> np.ndarray:
    padded = np.zeros(1 << code_bits)
    padded[:len(codebook)] = codebook
    return padded
