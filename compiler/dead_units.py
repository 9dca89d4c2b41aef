"""Dead-unit removal: a compiler pass that drops the hidden units no output depends on.

Pruning leaves hidden units that carry nothing: a unit whose outgoing weights (its column in the
next layer) are all pruned, or whose incoming weights (its row) are all pruned, so that its
activation is a constant.  The engine would still pay for each: a row to write back, a column
for the next layer's scan to look at (the scan's floor is ``ceil(in / scan_lanes)`` cycles), and
an accumulator and activation slot.  The digits MLP compressed for the iCEBreaker has 34 of its
128 hidden units dead.

Removing them changes no output of the network, bit for bit:

* a unit with no outgoing weight adds nothing to any sum of the next layer;
* a unit with no incoming weight outputs the same integer ``c`` for every input (its bias,
  requantized: ``layer.forward`` of zeros).  If ``c`` is 0 it adds nothing; otherwise its
  contribution ``w_rj * c`` to each row ``r`` of the next layer is a constant of that row's
  accumulator, and moves into the row's bias (biases are at the accumulator's scale), when
  the new bias still fits ``bias_bits`` -- else the unit stays.

The network's outputs (the last layer's rows) are the user's and stay; so do convolutions'
channels (conv mode lays them out itself) and at least one unit of each hidden layer.  The pass
runs before row balancing (``balance.py``).

The network's inputs are the user's too, but an input no weight reads (a first-layer column
pruned whole: 16 of the digits MLP's 64 pixels) costs the engine a scan cycle and the link two
bytes per inference.  :func:`remove_unused_inputs` drops those columns and returns the
:class:`InputSelection` the program keeps: the host takes the user's inputs at their full width
and sends only the selected ones (``Program.quantize_input``).  It runs after the hidden units
go, since a unit removed can leave an input unread.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .balance import take_rows
from .ir import QuantizedLinear, QuantizedNetwork

__all__ = ["InputSelection", "dead_units", "remove_dead_units", "remove_unused_inputs"]


def dead_units(layer: QuantizedLinear, following: QuantizedLinear
               ) -> tuple[np.ndarray, np.ndarray]:
    """Of ``layer``'s outputs, the units that can go: a boolean mask (out_features,) and the
    constant each contributes to ``following``'s biases when it goes (``following.out_features``
    integers, the sum over the removed units of ``w_rj * c_j``)."""
    unused = ~following.weights.astype(bool).any(axis=0)
    constant = ~layer.weights.astype(bool).any(axis=1)
    value = layer.forward(np.zeros((1, layer.in_features), np.int64))[0]
    removable = unused | constant
    # A constant unit that feeds the next layer moves into its biases (exact: an integer sum).
    folded = constant & ~unused & (value != 0)
    offsets = following.weights[:, folded] @ value[folded].astype(np.int64)
    if folded.any():
        bias = following.bias.astype(np.int64) + offsets
        low, high = -(1 << (following.bias_bits - 1)), (1 << (following.bias_bits - 1)) - 1
        if bias.min() < low or bias.max() > high:
            # The folded bias would not fit: keep the constant units that feed anything.
            removable = removable & ~folded
            offsets = np.zeros(following.out_features, np.int64)
    if removable.all():
        # A hidden layer keeps one unit (the engine has no layer of width 0).
        keep = int(np.flatnonzero(unused)[0]) if unused.any() else 0
        removable[keep] = False
        if folded[keep]:
            offsets = offsets - following.weights[:, keep] * int(value[keep])
    return removable, offsets


def remove_dead_units(network: QuantizedNetwork
                      ) -> tuple[QuantizedNetwork, list[np.ndarray | None]]:
    """``network`` without its dead hidden units, and per layer the indices of the outputs kept
    (``None``: all of them).  The network's outputs are unchanged for every input."""
    layers = list(network.layers)
    kept: list[np.ndarray | None] = [None] * len(layers)
    for index in range(len(layers) - 1):
        layer, following = layers[index], layers[index + 1]
        # Exactly Linear: a QuantizedConv2d is a QuantizedLinear too, laid out by lowering.py.
        if type(layer) is not QuantizedLinear or type(following) is not QuantizedLinear:
            continue
        removable, offsets = dead_units(layer, following)
        if not removable.any():
            continue
        keep = np.flatnonzero(~removable)
        layers[index] = take_rows(layer, keep)
        layers[index + 1] = dataclasses.replace(
            following, codes=np.ascontiguousarray(following.codes[:, keep]),
            bias=(following.bias.astype(np.int64) + offsets).astype(following.bias.dtype))
        kept[index] = keep
    if all(k is None for k in kept):
        return network, kept
    return QuantizedNetwork(tuple(layers)), kept



@dataclass(frozen=True)
class InputSelection:
    """The model's inputs the program's network takes: of ``features`` inputs, the
    ``columns`` (increasing) that a first-layer weight reads."""
    features: int
    columns: tuple[int, ...]

    def __post_init__(self):
        columns = self.columns
        if not isinstance(self.features, int) or self.features < 1:
            raise ValueError(f"features must be a positive integer, not {self.features!r}")
        if (not columns or not all(isinstance(c, int) for c in columns)
                or any(b <= a for a, b in zip(columns, columns[1:]))
                or columns[0] < 0 or columns[-1] >= self.features):
            raise ValueError(f"columns must be increasing integers in 0..{self.features - 1}, "
                             f"at least one")

    def select(self, x: np.ndarray) -> np.ndarray:
        """The selected columns of ``x`` (batch x ``features``)."""
        return np.asarray(x)[:, list(self.columns)]

    def narrow(self, network: QuantizedNetwork) -> QuantizedNetwork:
        """``network`` (whose first layer, Linear, takes ``features`` inputs) reading only the
        selected ones: the first layer's other columns dropped."""
        first = network.layers[0]
        if type(first) is not QuantizedLinear or first.in_features != self.features:
            raise ValueError(f"the selection is of {self.features} inputs of a Linear first "
                             f"layer, not of {first.name}")
        codes = np.ascontiguousarray(first.codes[:, list(self.columns)])
        scaling = (None if first.input_scaling is None
                   else first.input_scaling.take(self.columns))
        return QuantizedNetwork((dataclasses.replace(first, codes=codes, input_scaling=scaling),
                                 *network.layers[1:]))

    def to_json(self) -> dict:
        return {"features": self.features, "columns": list(self.columns)}

    @classmethod
    def from_json(cls, value) -> InputSelection:
        if not isinstance(value, dict) or set(value) != {"features", "columns"}:
            raise ValueError("must be an object with 'features' and 'columns'")
        if not isinstance(value["columns"], list):
            raise ValueError("'columns' must be a list")
        return cls(value["features"], tuple(value["columns"]))


def remove_unused_inputs(network: QuantizedNetwork
                         ) -> tuple[QuantizedNetwork, InputSelection | None]:
    """``network`` without the inputs no first-layer weight reads, and the selection of the
    model's inputs it takes (``None``: all of them, or a first layer that is not exactly
    Linear).  Its outputs for the selected inputs are the model's for all of them."""
    first = network.layers[0]
    if type(first) is not QuantizedLinear:
        return network, None
    used = first.weights.astype(bool).any(axis=0)
    if used.all():
        return network, None
    if not used.any():
        used[0] = True                  # the engine has no layer of width 0
    selection = InputSelection(first.in_features, tuple(int(c) for c in np.flatnonzero(used)))
    return selection.narrow(network), selection
