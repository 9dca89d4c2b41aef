"""Between the compiler's float :class:`~sparseforge.compiler.ir.Network` and torch.

Compression trains in torch and hands the compiler a ``Network``.  Capture
(``compiler/capture.py``) and the passes (``compiler/passes.py``) turn any supported
``nn.Module`` into a ``Network`` (BatchNorm folded, ReLU fused); :func:`network_to_torch`
goes the other way, to a plain ``nn.Sequential`` of Linear (a convolution as the
``nn.Linear`` :class:`~.convolution.MatrixConv2d` whose weight is its kernel matrix) and ReLU
that can be fine-tuned, and :func:`torch_to_network` reads the trained weights back, keeping
the layer names and ReLU flags of the network the model came from.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..errors import InputError
from ..ir import Conv2d, Linear, Network
from .convolution import InputScalingModule, MatrixConv2d

__all__ = ["network_to_torch", "to_network", "torch_to_network", "with_weights"]


def network_to_torch(network: Network):
    """The network as an ``nn.Sequential`` of ``nn.Linear`` (float32; a convolution as a
    :class:`~.convolution.MatrixConv2d`), ``nn.ReLU``, ``nn.LeakyReLU`` and ``nn.Hardtanh`` (a
    layer's clamp), after the inputs' scaling (``InputScalingModule``), if any: a fresh copy,
    training it leaves ``network`` unchanged.  It takes flat inputs, as the network does."""
    import torch
    import torch.nn as nn

    if not isinstance(network, Network):
        raise TypeError(f"network_to_torch takes a Network, not {type(network).__name__}")
    modules = []
    if network.input_scaling is not None:
        modules.append(InputScalingModule(network.input_scaling.scale,
                                          network.input_scaling.shift))
    for layer in network.layers:
        linear = (MatrixConv2d(layer.geometry) if isinstance(layer, Conv2d)
                  else nn.Linear(layer.in_features, layer.out_features))
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(layer.weight.astype(np.float32)))
            linear.bias.copy_(torch.from_numpy(layer.bias.astype(np.float32)))
        modules.append(linear)
        if layer.relu:
            modules.append(nn.ReLU())
        if layer.leak:
            modules.append(nn.LeakyReLU(math.ldexp(1.0, -layer.leak)))
        if layer.function is not None:
            modules.append(layer.function.torch_module())
        if layer.clamp is not None:
            # A side left open is an infinite bound (capture reads it back as open).
            low, high = layer.clamp
            modules.append(nn.Hardtanh(-math.inf if low is None else low,
                                       math.inf if high is None else high))
    return nn.Sequential(*modules)





def torch_to_network(model, like: Network) -> Network:
    """The weights of ``model`` (made by :func:`network_to_torch` from ``like``, then trained,
    pruned or weight-shared) as a Network with ``like``'s layer names, ReLU flags and source.

    Reads every layer with a ``weight`` and ``bias`` in order: ``nn.Linear`` (and
    ``MatrixConv2d``) and the weight-shared ``SharedLinear`` (whose weight is
    ``codebook[codes]``) alike.  A convolution's geometry is the module's (structured pruning
    may have narrowed it).
    """
    layers = weight_layers(model)
    if len(layers) != len(like.layers):
        raise ValueError(f"the model has {len(layers)} Linear layers, the network "
                         f"{len(like.layers)}")
    out = []
    for module, template in zip(layers, like.layers):
        weight = module.weight.detach().cpu().numpy().astype(np.float64)
        geometry = getattr(module, "geometry", None)
        if (geometry is None) != (not isinstance(template, Conv2d)):
            raise ValueError(f"layer {template.name}: the model's layer is "
                             f"{'a convolution' if geometry is not None else 'not one'}, the "
                             f"network's {'is not' if geometry is not None else 'is'}")
        if geometry is None and weight.shape != template.weight.shape:
            raise ValueError(f"layer {template.name}: the model's weight is {weight.shape}, the "
                             f"network's {template.weight.shape}")
        bias = (module.bias.detach().cpu().numpy().astype(np.float64)
                if module.bias is not None else np.zeros(weight.shape[0]))
        # The template's name and activation; the geometry as the module has it.
        out.append(dataclasses.replace(template, weight=weight, bias=bias,
                                       **({"geometry": geometry} if geometry else {})))
    return Network(tuple(out), like.source)


def with_weights(layer: Linear, weight: np.ndarray, bias: np.ndarray | None = None) -> Linear:
    """``layer`` (a Linear or a Conv2d) with another weight matrix (and bias)."""
    return dataclasses.replace(layer, weight=weight,
                               bias=layer.bias if bias is None else bias)


def weight_layers(model) -> list:
    """The Linear-like modules of ``model`` in order: ``nn.Linear`` and ``SharedLinear``."""
    import torch.nn as nn

    from .share import SharedLinear

    return [m for m in model.modules() if isinstance(m, (nn.Linear, SharedLinear))]


def to_network(model, input_shape=None, *, regression: bool = False) -> Network:
    """An ``nn.Module``, an ONNX path or a Network as the canonical float Network, through the
    compiler's capture and passes (the one place BatchNorm is folded and ReLU fused).
    ``input_shape`` (channels, rows, columns): a module's input map, for convolutions;
    ``regression``: its outputs are values, not class scores (``passes.REGRESSION_PASSES``)."""
    if isinstance(model, Network):
        return model
    from ..capture import capture
    from ..passes import canonicalize

    return canonicalize(capture(unwrapped(model), input_shape), regression=regression)


def unwrapped(model):
    """The user's module inside a wrapper that holds it unchanged: ``nn.DataParallel`` and
    ``DistributedDataParallel`` (``.module``), ``torch.compile``'s ``OptimizedModule``
    (``._orig_mod``).  A TorchScript module or a state_dict, which hold no traceable
    ``forward``, are refused saying what to pass instead."""
    import torch
    import torch.nn as nn

    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif (type(model).__name__ == "OptimizedModule"
              and isinstance(getattr(model, "_orig_mod", None), nn.Module)):
            model = model._orig_mod
        else:
            break
    if isinstance(model, torch.jit.ScriptModule):
        raise InputError(f"the model is a TorchScript module ({type(model).__name__}, from "
                         f"torch.jit.script, torch.jit.trace or torch.jit.load), whose forward "
                         f"torch.fx cannot trace: pass the original nn.Module, or export it to "
                         f"ONNX and give the .onnx file")
    if isinstance(model, dict) and model and all(isinstance(value, torch.Tensor)
                                                 for value in model.values()):
        raise InputError("the model is a state_dict (names -> tensors), which holds the "
                         "weights but not the layers: load it into your module "
                         "(model.load_state_dict(state)) and pass the module")
    return model
