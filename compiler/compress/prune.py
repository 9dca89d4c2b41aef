"""Pruning: magnitude (Han et al. 2015), load-balance-aware (ESE, Han et al. 2017), structured
by L1 norm (Li et al. 2017), and per-layer sparsities from a sensitivity scan.

Masks are boolean arrays shaped like the weights (True = kept).  ``MaskKeeper`` re-applies them
after every optimiser step, so pruned weights stay exactly zero through fine-tuning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import check_pes

__all__ = [
    "MaskKeeper",
    "NeuronPruning",
    "balanced_mask",
    "choose_sparsities",
    "global_sparsity",
    "linear_layers",
    "magnitude_mask",
    "pe_nonzeros",
    "prune_filters",
    "prune_iteratively",
    "prune_neurons",
    "sensitivity_scan",
]


def linear_layers(model):
    """The Linear modules of a model, in order."""
    import torch.nn as nn

    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def magnitude_mask(weight: np.ndarray, sparsity: float, keep: np.ndarray | None = None
                   ) -> np.ndarray:
    """Keep the largest-magnitude ``1 - sparsity`` of the weights (ties broken by position);
    weights already pruned (``keep`` False) stay pruned."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be between 0 and 1, not {sparsity}")
    weight = np.asarray(weight, dtype=np.float64)
    magnitude = np.abs(weight).ravel()
    if keep is not None:
        magnitude = np.where(keep.ravel(), magnitude, -1.0)
    kept = round((1.0 - sparsity) * weight.size)
    order = np.argsort(-magnitude, kind="stable")
    mask = np.zeros(weight.size, dtype=bool)
    mask[order[:kept]] = True
    if keep is not None:
        mask &= keep.ravel()
    return mask.reshape(weight.shape)


def balanced_mask(weight: np.ndarray, sparsity: float, pes: int,
                  keep: np.ndarray | None = None) -> np.ndarray:
    """ESE's load-balance-aware pruning: the same overall sparsity, but every PE (rows ``i``
    with ``i mod pes == k``) keeps the same number of weights, its largest in magnitude, so no
    PE waits for a busier one.  Weights already pruned (``keep`` False) stay pruned.  A layer
    of fewer rows than PEs (a classifier's last layer of 3 classes on 8 PEs) has a row on each
    of its first PEs and none on the others: its rows keep the same number each."""
    check_pes(pes)
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be between 0 and 1, not {sparsity}")
    weight = np.asarray(weight, dtype=np.float64)
    pes = min(pes, weight.shape[0])
    keep = np.ones(weight.shape, dtype=bool) if keep is None else np.asarray(keep, bool)
    per_pe = round((1.0 - sparsity) * weight.size / pes)
    mask = np.zeros(weight.shape, dtype=bool)
    for k in range(pes):
        block_keep = keep[k::pes].ravel()
        if per_pe > int(block_keep.sum()):
            raise ValueError(f"PE {k} has only {int(block_keep.sum())} weights left, fewer "
                             f"than the {per_pe} each PE must keep; use fewer PEs or a "
                             f"higher sparsity")
        magnitude = np.where(block_keep, np.abs(weight[k::pes]).ravel(), -1.0)
        kept = np.zeros(magnitude.size, dtype=bool)
        kept[np.argsort(-magnitude, kind="stable")[:per_pe]] = True
        mask[k::pes] = kept.reshape(-1, weight.shape[1])
    return mask


def pe_nonzeros(mask: np.ndarray, pes: int) -> np.ndarray:
    """Nonzeros of each PE (rows ``i mod pes == k``): what load balance equalises."""
    mask = np.asarray(mask) != 0
    return np.array([int(mask[k::pes].sum()) for k in range(pes)], dtype=np.int64)


class MaskKeeper:
    """Holds one mask per Linear layer and zeroes the pruned weights of a model on call; and
    keeps each tied layer's copies equal (``ties``: per layer None, or each input's group, as
    ``Linear.tied_columns``), each set to their mean: training them as the one weight they
    are, where each copy's gradient differs."""

    def __init__(self, masks: list[np.ndarray], ties=None):
        import torch

        self.masks = [torch.from_numpy(np.asarray(mask, dtype=np.float32)) for mask in masks]
        self.ties = [None if columns is None else torch.from_numpy(np.asarray(columns))
                     for columns in (ties or [None] * len(masks))]

    def __call__(self, model) -> None:
        import torch

        with torch.no_grad():
            for layer, mask, columns in zip(linear_layers(model), self.masks, self.ties):
                layer.weight.mul_(mask)
                if columns is not None:
                    layer.weight.copy_(_tied(layer.weight, columns)[:, columns])


def _tied(weight, columns):
    """The mean of each group of tied columns of ``weight`` (out x groups)."""
    import torch

    groups = int(columns.max()) + 1
    sums = weight.new_zeros(weight.shape[0], groups).index_add_(1, columns, weight)
    counts = torch.bincount(columns, minlength=groups).to(weight.dtype)
    return sums / counts


def global_sparsity(model) -> float:
    layers = linear_layers(model)
    zeros = sum(int((layer.weight == 0).sum()) for layer in layers)
    return zeros / sum(layer.weight.numel() for layer in layers)


def prune_iteratively(model, train_set, sparsities: list[float], *, steps: int = 8,
                      epochs_per_step: int = 8, final_epochs: int = 30,
                      balance_pes: int | None = None, train_config=None, loss_fn=None,
                      progress: bool = False, ties=None) -> list[np.ndarray]:
    """Deep Compression's prune-retrain loop with Zhu and Gupta's gradual schedule: in ``steps``
    steps the sparsity of each layer follows ``target * (1 - (1 - t)**3)`` (most of the pruning
    early, gently at the end), each step retrained with the masks held; then a final
    fine-tune at a tenth of the learning rate.  Returns the final masks.

    With ``balance_pes`` every step prunes with :func:`balanced_mask`, so each PE keeps the
    same number of weights in every layer.  Weights that are zero on entry stay pruned (a
    model pruned before); a layer already sparser than asked keeps its sparsity.
    ``loss_fn(model, x, y)`` replaces cross-entropy (e.g. :func:`.distill.distillation_loss`
    against the unpruned teacher).  ``ties`` (per layer None or ``Linear.tied_columns``):
    a tied layer is pruned a group of copies at a time, by their mean, and its copies kept
    equal through the training.
    """
    import dataclasses

    from .training import TrainConfig, train

    layers = linear_layers(model)
    if len(sparsities) != len(layers):
        raise ValueError(f"{len(sparsities)} sparsities for {len(layers)} Linear layers")
    for index, target in enumerate(sparsities):
        if not 0.0 <= target < 1.0:
            raise ValueError(f"the sparsity of Linear layer {index} must be in [0, 1), "
                             f"not {target}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    config = train_config or TrainConfig(epochs=epochs_per_step, learning_rate=1e-3)
    # Weights that are exactly zero already (a model pruned before, e.g. with
    # torch.nn.utils.prune) stay pruned: the masks start from them.
    masks = [layer.weight.detach().numpy() != 0 for layer in layers]
    for step in range(1, steps + 1):
        schedule = 1.0 - (1.0 - step / steps) ** 3
        for index, (layer, target) in enumerate(zip(layers, sparsities)):
            weight = layer.weight.detach().numpy()
            columns = None if ties is None else ties[index]
            if columns is not None:
                # The model's weights, one per group of copies (each group is whole).
                firsts = np.unique(columns, return_index=True)[1]
                weight, masks[index] = weight[:, firsts], masks[index][:, firsts]
            fraction = target * schedule
            if balance_pes:
                # Never ask a PE for more weights than it still has.
                owners = min(balance_pes, weight.shape[0])      # PEs with a row
                fewest = pe_nonzeros(masks[index], owners).min()
                fraction = max(fraction, 1.0 - fewest * owners / weight.size)
            masks[index] = (balanced_mask(weight, fraction, balance_pes, masks[index])
                            if balance_pes else magnitude_mask(weight, fraction, masks[index]))
            if columns is not None:
                masks[index] = masks[index][:, columns]
        keeper = MaskKeeper(masks, ties)
        keeper(model)
        train(model, train_set, dataclasses.replace(config, epochs=epochs_per_step,
                                                    seed=config.seed + step),
              after_step=keeper, loss_fn=loss_fn,
              description=f"pruning, step {step} of {steps}",
              progress=progress)
    if final_epochs:
        train(model, train_set,
              dataclasses.replace(config, epochs=final_epochs,
                                  learning_rate=config.learning_rate / 10,
                                  seed=config.seed + steps + 1),
              after_step=keeper, loss_fn=loss_fn, description="fine-tuning the pruned model",
              progress=progress)
    return masks


def sensitivity_scan(model, val_set, sparsities=(0.5, 0.7, 0.8, 0.9, 0.95, 0.97)
                     ) -> dict[int, list[tuple[float, float]]]:
    """Deep Compression's sensitivity analysis: for each layer alone, the validation accuracy
    after magnitude pruning it to each sparsity (no retraining)."""
    import torch

    from .training import accuracy

    curves: dict[int, list[tuple[float, float]]] = {}
    for index, layer in enumerate(linear_layers(model)):
        original = layer.weight.detach().clone()
        curves[index] = []
        for sparsity in sparsities:
            mask = magnitude_mask(original.numpy(), sparsity)
            with torch.no_grad():
                layer.weight.copy_(original * torch.from_numpy(mask.astype(np.float32)))
            curves[index].append((sparsity, accuracy(model, val_set)))
        with torch.no_grad():
            layer.weight.copy_(original)
    return curves


def choose_sparsities(curves, baseline: float, budget: float, sizes: list[int]) -> list[float]:
    """Per layer, the highest scanned sparsity whose accuracy stays within ``budget`` of the
    baseline (thresholds chosen from the sensitivity scan)."""
    chosen = []
    for index in range(len(sizes)):
        ok = [s for s, acc in curves[index] if baseline - acc <= budget]
        chosen.append(max(ok) if ok else 0.0)
    return chosen


@dataclass(frozen=True)
class NeuronPruning:
    layer: int
    kept: np.ndarray        # indices of the neurons kept, in order


def prune_neurons(model, layer_index: int, keep: int) -> NeuronPruning:
    """Structured pruning: keep the ``keep`` output neurons of Linear ``layer_index`` with the
    largest L1 norm of incoming weights, and remove the matching input columns of the next
    Linear; the layers physically shrink.  For a convolution (``MatrixConv2d``) a neuron is a
    filter (a row of its kernel matrix: L1 over input channels and kernel) and the next layer
    loses that input channel: a convolution's ``kh * kw`` columns of it, a Linear after the
    flattened map its ``rows * columns`` columns."""
    import torch
    import torch.nn as nn

    from .convolution import MatrixConv2d

    layers = linear_layers(model)
    if 0 <= layer_index < len(layers) and isinstance(layers[layer_index], MatrixConv2d):
        return _prune_filters_of(model, layers, layer_index, keep)
    if not 0 <= layer_index < len(layers) - 1:
        raise ValueError(f"layer_index must name a Linear layer followed by another "
                         f"(0 .. {len(layers) - 2}), not {layer_index}")
    layer, following = layers[layer_index], layers[layer_index + 1]
    if not 1 <= keep <= layer.out_features:
        raise ValueError(f"keep must be between 1 and {layer.out_features}, not {keep}")
    norms = layer.weight.detach().abs().sum(dim=1).numpy()
    kept = np.sort(np.argsort(-norms, kind="stable")[:keep])
    index = torch.from_numpy(kept)
    with torch.no_grad():
        shrunk = nn.Linear(layer.in_features, keep, bias=layer.bias is not None)
        shrunk.weight.copy_(layer.weight[index])
        if layer.bias is not None:
            shrunk.bias.copy_(layer.bias[index])
        narrowed = nn.Linear(keep, following.out_features, bias=following.bias is not None)
        narrowed.weight.copy_(following.weight[:, index])
        if following.bias is not None:
            narrowed.bias.copy_(following.bias)
    # A BatchNorm1d between the two normalises the removed neurons too: narrow it alike.
    modules = list(model.modules())
    between = modules[modules.index(layer) + 1:modules.index(following)]
    for norm in between:
        if isinstance(norm, nn.BatchNorm1d) and norm.num_features == layer.out_features:
            _replace_module(model, norm, _narrowed_batchnorm(norm, index))
    _replace_module(model, layer, shrunk)
    _replace_module(model, following, narrowed)
    return NeuronPruning(layer_index, kept)


def _prune_filters_of(model, layers, layer_index: int, keep: int) -> NeuronPruning:
    """:func:`prune_neurons` for a ``MatrixConv2d``: filters, and the next layer's channels."""
    import dataclasses

    import torch
    import torch.nn as nn

    from .convolution import MatrixConv2d

    if not 0 <= layer_index < len(layers) - 1:
        raise ValueError(f"layer_index must name a layer followed by another "
                         f"(0 .. {len(layers) - 2}), not {layer_index}")
    layer, following = layers[layer_index], layers[layer_index + 1]
    geometry = layer.geometry
    if not 1 <= keep <= geometry.out_channels:
        raise ValueError(f"keep must be between 1 and {geometry.out_channels}, not {keep}")
    norms = layer.weight.detach().abs().sum(dim=1).numpy()
    kept = np.sort(np.argsort(-norms, kind="stable")[:keep])
    shrunk = MatrixConv2d(dataclasses.replace(geometry, out_channels=keep))
    # The next layer's columns of each kept channel: a kernel's (channel-major patch) or a
    # flattened map's (channel-major too).
    if isinstance(following, MatrixConv2d):
        block = following.geometry.kernel[0] * following.geometry.kernel[1]
        narrowed = MatrixConv2d(dataclasses.replace(following.geometry, in_channels=keep))
    else:
        block = geometry.out_height * geometry.out_width
        narrowed = nn.Linear(keep * block, following.out_features,
                             bias=following.bias is not None)
    columns = torch.from_numpy((kept[:, None] * block + np.arange(block)).reshape(-1))
    index = torch.from_numpy(kept)
    with torch.no_grad():
        shrunk.weight.copy_(layer.weight[index])
        shrunk.bias.copy_(layer.bias[index])
        narrowed.weight.copy_(following.weight[:, columns])
        if following.bias is not None:
            narrowed.bias.copy_(following.bias)
    _replace_module(model, layer, shrunk)
    _replace_module(model, following, narrowed)
    return NeuronPruning(layer_index, kept)


def _narrowed_batchnorm(norm, index):
    """``norm`` keeping only the features ``index`` (statistics and affine parameters)."""
    import torch.nn as nn

    narrowed = nn.BatchNorm1d(len(index), eps=norm.eps, momentum=norm.momentum,
                              affine=norm.affine, track_running_stats=norm.track_running_stats)
    state = {name: (value[index] if value.ndim == 1 else value)
             for name, value in norm.state_dict().items()}
    narrowed.load_state_dict(state)
    narrowed.train(norm.training)
    return narrowed


def prune_filters(conv, keep: int):
    """Structured pruning of a Conv2d: the ``keep`` filters with the largest L1 norm, as a new,
    smaller Conv2d, and their indices (to narrow the next layer's input channels).  A torch-level
    utility: the engine runs Linear layers today."""
    import torch
    import torch.nn as nn

    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"prune_filters takes an nn.Conv2d, not {type(conv).__name__}")
    if conv.groups != 1:
        raise ValueError(f"prune_filters handles groups=1 convolutions, not groups={conv.groups}")
    if not 1 <= keep <= conv.out_channels:
        raise ValueError(f"keep must be between 1 and {conv.out_channels}, not {keep}")
    norms = conv.weight.detach().abs().sum(dim=(1, 2, 3)).numpy()
    kept = np.sort(np.argsort(-norms, kind="stable")[:keep])
    index = torch.from_numpy(kept)
    shrunk = nn.Conv2d(conv.in_channels, keep, conv.kernel_size, conv.stride, conv.padding,
                       conv.dilation, conv.groups, conv.bias is not None)
    with torch.no_grad():
        shrunk.weight.copy_(conv.weight[index])
        if conv.bias is not None:
            shrunk.bias.copy_(conv.bias[index])
    return shrunk, kept


def _replace_module(model, old, new) -> None:
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is old:
                setattr(parent, name, new)
                return
    raise ValueError("the layer to replace is not part of the model")
