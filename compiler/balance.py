"""Row balancing: a compiler pass that spreads a hidden layer's heavy rows over the PEs.

The engine interleaves rows (row ``i`` of a layer on PE ``i mod N``, EIE's layout), and a layer
takes as long as its most loaded PE: a PE that holds more entries than the others keeps them
waiting.  Pruning leaves rows of very different lengths (the digits MLP's first layer: 127
entries on one PE, 50 on another), so the interleave alone can leave most PEs idle for much of
a layer.

Permuting a hidden layer's outputs changes nothing the network computes, only where its rows
sit: the layer's rows, biases and row scales move together, and the next layer's columns
follow them, so every output of the network is the same integer (a sum of the same products,
and a ReLU and requantization per row).  The last layer keeps its order (its outputs are the
user's), and so do convolutions (conv mode lays channels out itself, ``lowering.py``).

The permutation is the longest-processing-time rule under the interleave's slot counts: rows
by entries, heaviest first, each to the PE with the fewest entries so far that still has a
free slot.  It is kept only when it lowers the most entries any PE holds of the layer (zero-run
padding included, as ``encode.encode_layer`` stores them) and does not raise the most any PE
holds of all layers together (the entry memory's depth), so a layer that is already balanced
keeps its order.  Balancing is static: it evens the entries, not the work of a given input, which
also depends on which of its activations are zero.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .config import check_pes
from .encode import encode_layer
from .ir import QuantizedLinear, QuantizedNetwork

__all__ = ["balance_outputs", "balance_rows", "balanced_order", "output_network", "pe_entries",
           "row_orders", "take_rows"]


def pe_entries(codes: np.ndarray, pes: int, max_run: int) -> np.ndarray:
    """Entries (padding included) each PE holds of a layer's code matrix (``out x in``)."""
    return np.array([len(pe.codes) for pe in encode_layer(codes, pes, max_run)], np.int64)


def balanced_order(codes: np.ndarray, pes: int) -> np.ndarray:
    """A permutation ``order`` of a layer's rows (row ``order[i]`` goes to position ``i``, so
    to PE ``i mod pes``) that evens the nonzeros per PE (longest processing time first)."""
    codes = np.asarray(codes)
    out_features = codes.shape[0]
    nonzeros = np.count_nonzero(codes, axis=1)
    slots = [len(range(pe, out_features, pes)) for pe in range(pes)]
    load = np.zeros(pes, np.int64)
    members: list[list[int]] = [[] for _ in range(pes)]
    # Stable: rows of equal length keep their relative order.
    for row in np.argsort(-nonzeros, kind="stable"):
        open_pes = [pe for pe in range(pes) if len(members[pe]) < slots[pe]]
        pe = min(open_pes, key=lambda k: (load[k], k))
        members[pe].append(int(row))
        load[pe] += nonzeros[row]
    order = np.empty(out_features, np.int64)
    for pe, rows in enumerate(members):
        # Within a PE, ascending original order: its rows' zero runs stay as short as they were.
        for slot, row in enumerate(sorted(rows)):
            order[slot * pes + pe] = row
    return order


def balance_rows(network: QuantizedNetwork, pes: int, max_run: int = 15
                 ) -> tuple[QuantizedNetwork, list[np.ndarray | None]]:
    """``network`` with each hidden Linear layer's rows permuted (and the next layer's
    columns) where that lowers the most entries a PE holds; and per layer the order kept
    (``None``: unchanged).  The network's outputs are unchanged for every input."""
    pes = check_pes(pes)
    layers = list(network.layers)
    orders: list[np.ndarray | None] = [None] * len(layers)
    # Each PE's entries of every layer: what its entry memory holds (a column permutation of
    # the next layer leaves these the same).
    entries = [pe_entries(layer.codes, pes, max_run) for layer in layers]
    for index in range(len(layers) - 1):
        layer, following = layers[index], layers[index + 1]
        # Exactly Linear: a QuantizedConv2d is a QuantizedLinear too, laid out by lowering.py.
        if type(layer) is not QuantizedLinear or type(following) is not QuantizedLinear:
            continue
        order = balanced_order(layer.codes, pes)
        balanced = pe_entries(layer.codes[order], pes, max_run)
        totals = sum(entries) - entries[index]
        # Kept when it lowers the layer's most loaded PE without deepening the entry memory.
        if (balanced.max() >= entries[index].max()
                or (totals + balanced).max() > (totals + entries[index]).max()):
            continue
        entries[index] = balanced
        layers[index] = take_rows(layer, order)
        layers[index + 1] = dataclasses.replace(
            following, codes=np.ascontiguousarray(following.codes[:, order]))
        orders[index] = order
    if not any(order is not None for order in orders):
        return network, orders
    return QuantizedNetwork(tuple(layers)), orders


def balance_outputs(network: QuantizedNetwork, pes: int, max_run: int = 15
                    ) -> np.ndarray | None:
    """A placement of the last layer's rows over the PEs that evens their entries, as
    :func:`balance_rows` does for the hidden layers (the same rule and the same test), or
    ``None`` where it does not lower the most entries a PE holds of the layer.

    The last layer's outputs are the user's, so this order is not folded into the network: the
    program keeps it (``Program.output_order``), the engine stores the rows in it, and the host
    reads them back into the network's order (``Program.network_output``).  Only an exactly
    Linear last layer is placed (conv mode lays its outputs out itself)."""
    pes = check_pes(pes)
    layers = network.layers
    last = layers[-1]
    if type(last) is not QuantizedLinear:
        return None
    entries = [pe_entries(layer.codes, pes, max_run) for layer in layers]
    order = balanced_order(last.codes, pes)
    balanced = pe_entries(last.codes[order], pes, max_run)
    totals = sum(entries) - entries[-1]
    if (balanced.max() >= entries[-1].max()
            or (totals + balanced).max() > (totals + entries[-1]).max()):
        return None
    return order


def output_network(network: QuantizedNetwork, order: np.ndarray | None) -> QuantizedNetwork:
    """``network`` as the engine stores it: the last layer's rows in ``order`` (see
    :func:`balance_outputs`; ``None``: as they are)."""
    if order is None:
        return network
    return QuantizedNetwork((*network.layers[:-1], take_rows(network.layers[-1], order)))


def take_rows(layer: QuantizedLinear, order: np.ndarray) -> QuantizedLinear:
    """``layer`` with the rows ``order`` (a permutation or a selection of its outputs), their
    codes, biases and row scales together."""
    requant = layer.requant
    if requant is not None:
        requant = dataclasses.replace(
            requant, multiplier=requant.multiplier[order], shift=requant.shift[order],
            rounding=requant.rounding[order], half_even=requant.half_even[order])
    return dataclasses.replace(layer, codes=np.ascontiguousarray(layer.codes[order]),
                               bias=layer.bias[order], requant=requant)


def row_orders(model: QuantizedNetwork, permuted: QuantizedNetwork
               ) -> list[np.ndarray] | None:
    """The orders that make ``permuted`` from ``model`` (as :func:`balance_rows` does: a
    hidden layer's rows, with their biases and row scales, and the next layer's columns), one
    per layer (the last one the identity); ``None`` if ``permuted`` is not such a network (a
    different model: other layers, codes, codebooks, biases or formats)."""
    if len(model.layers) != len(permuted.layers):
        return None
    orders, columns = [], None
    for index, (mine, theirs) in enumerate(zip(model.layers, permuted.layers)):
        if (type(mine) is not type(theirs) or mine.codes.shape != theirs.codes.shape
                or _scalars(mine) != _scalars(theirs)):
            return None
        codes = mine.codes if columns is None else mine.codes[:, columns]
        rows = _row_keys(codes, mine)
        following = model.layers[index + 1] if index + 1 < len(model.layers) else None
        permutes = type(mine) is QuantizedLinear and type(following) is QuantizedLinear
        if not permutes:
            # The last layer, and a convolution or the layer before one (its columns are a
            # map's channels and positions), keep their rows: balancing permutes only rows
            # between two Linear layers.
            order = np.arange(codes.shape[0])
        else:
            where: dict[bytes, list[int]] = {}
            for row, key in enumerate(rows):
                where.setdefault(key, []).append(row)
            try:
                order = np.array([where[key].pop(0) for key in _row_keys(theirs.codes, theirs)],
                                 np.int64)
            except (KeyError, IndexError):
                return None
        if _row_keys(codes[order], take_rows(mine, order)) != _row_keys(theirs.codes, theirs):
            return None
        orders.append(order)
        columns = order if permutes else None
    return orders


def _row_keys(codes: np.ndarray, layer: QuantizedLinear) -> list[bytes]:
    """Each row's codes, bias and row scale, as bytes to compare rows by."""
    parts = [np.ascontiguousarray(codes).astype(np.int64), layer.bias[:, None].astype(np.int64)]
    if layer.requant is not None:
        parts += [np.asarray(getattr(layer.requant, field), np.int64)[:, None]
                  for field in ("multiplier", "shift", "rounding", "half_even")]
    return [row.tobytes() for row in np.concatenate(parts, axis=1)]


def _scalars(layer: QuantizedLinear) -> list:
    """What a layer holds besides its rows: every other field (the codebook as a tuple), and
    its row scales' output range."""
    fields = [(field.name, getattr(layer, field.name)) for field in dataclasses.fields(layer)
              if field.name not in ("codes", "bias", "requant", "codebook")]
    requant = layer.requant
    return fields + [("codebook", tuple(int(v) for v in layer.codebook)),
                     ("range", None if requant is None else (requant.low, requant.high))]
