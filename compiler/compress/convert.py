"""Between the compiler's float :class:`~sparseforge.compiler.ir.Network` and torch.

Compression trains in torch and hands the compiler a ``Network``.  Capture
(``compiler/capture.py``) and the passes (``compiler/passes.py``) turn any supported
``nn.Module`` into a ``Network`` (BatchNorm folded, ReLU fused); :func:`network_to_torch`
goes the other way, to a plain ``nn.Sequential`` of Linear and ReLU that can be fine-tuned,
and :func:`torch_to_network` reads the trained weights back, keeping the layer names and ReLU
flags of the network the model came from.
"""

from __future__ import annotations

import numpy as np

from ..ir import Linear, Network

__all__ = ["network_to_torch", "to_network", "torch_to_network"]


def network_to_torch(network: Network):
    """The network as an ``nn.Sequential`` of ``nn.Linear`` (float32) and ``nn.ReLU``, a fresh
    copy: training it leaves ``network`` unchanged."""
    import torch
    import torch.nn as nn

    if not isinstance(network, Network):
        raise TypeError(f"network_to_torch takes a Network, not {type(network).__name__}")
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


def torch_to_network(model, like: Network) -> Network:
    """The weights of ``model`` (made by :func:`network_to_torch` from ``like``, then trained,
    pruned or weight-shared) as a Network with ``like``'s layer names, ReLU flags and source.

    Reads every layer with a ``weight`` and ``bias`` in order: ``nn.Linear`` and the
    weight-shared ``SharedLinear`` (whose weight is ``codebook[codes]``) alike.
    """
    layers = weight_layers(model)
    if len(layers) != len(like.layers):
        raise ValueError(f"the model has {len(layers)} Linear layers, the network "
                         f"{len(like.layers)}")
    out = []
    for module, template in zip(layers, like.layers):
        weight = module.weight.detach().cpu().numpy().astype(np.float64)
        if weight.shape != template.weight.shape:
            raise ValueError(f"layer {template.name}: the model's weight is {weight.shape}, the "
                             f"network's {template.weight.shape}")
        bias = (module.bias.detach().cpu().numpy().astype(np.float64)
                if module.bias is not None else np.zeros(weight.shape[0]))
        out.append(Linear(template.name, weight, bias, template.relu))
    return Network(tuple(out), like.source)


def weight_layers(model) -> list:
    """The Linear-like modules of ``model`` in order: ``nn.Linear`` and ``SharedLinear``."""
    import torch.nn as nn

    from .share import SharedLinear

    return [m for m in model.modules() if isinstance(m, (nn.Linear, SharedLinear))]


def to_network(model) -> Network:
    """An ``nn.Module``, an ONNX path or a Network as the canonical float Network, through the
    compiler's capture and passes (the one place BatchNorm is folded and ReLU fused)."""
    if isinstance(model, Network):
        return model
    from ..capture import capture
    from ..passes import canonicalize

    return canonicalize(capture(model))
