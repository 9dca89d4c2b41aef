"""Huffman coding of codebook indices and relative indices, for storage accounting (Deep
Compression, section 4): the engine reads fixed-width entries, but a model stored or sent
Huffman-coded takes this many bits."""

from __future__ import annotations

import heapq
import itertools
from collections import Counter

import numpy as np

__all__ = ["huffman_lengths", "huffman_bits", "entropy_bits"]


def huffman_lengths(symbols) -> dict[int, int]:
    """The code length of every symbol of an optimal prefix code for the symbols' frequencies
    (a lone symbol gets one bit)."""
    counts = Counter(int(s) for s in np.asarray(symbols).ravel())
    if not counts:
        return {}
    if len(counts) == 1:
        return {next(iter(counts)): 1}
    tiebreak = itertools.count()
    heap = [(count, next(tiebreak), {symbol: 0}) for symbol, count in counts.items()]
    heapq.heapify(heap)
    while len(heap) > 1:
        count_a, _, a = heapq.heappop(heap)
        count_b, _, b = heapq.heappop(heap)
        merged = {symbol: depth + 1 for symbol, depth in {**a, **b}.items()}
        heapq.heappush(heap, (count_a + count_b, next(tiebreak), merged))
    return heap[0][2]


def huffman_bits(symbols) -> int:
    """Total bits of the symbols Huffman-coded (the code table not counted)."""
    symbols = np.asarray(symbols).ravel()
    lengths = huffman_lengths(symbols)
    counts = Counter(int(s) for s in symbols)
    return sum(lengths[s] * c for s, c in counts.items())


def entropy_bits(symbols) -> float:
    """Shannon entropy of the symbols' distribution, bits per symbol."""
    _, counts = np.unique(np.asarray(symbols).ravel(), return_counts=True)
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())
