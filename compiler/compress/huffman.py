"""Huffman coding of codebook indices and relative indices, for storage accounting (Deep
Compression, section 4).  The engine reads fixed-width entries; a model stored or sent
Huffman-coded takes this many bits.

An optimal prefix code's average length ``L`` satisfies ``H <= L < H + 1`` for the symbols'
entropy ``H`` (bits per symbol).  Codes are canonical, so a decoder needs only the length of
each symbol's code: :func:`huffman_table_bits` is what that table costs.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter

import numpy as np

__all__ = [
    "canonical_codes",
    "entropy_bits",
    "huffman_bits",
    "huffman_decode",
    "huffman_encode",
    "huffman_lengths",
    "huffman_table_bits",
]


def huffman_lengths(symbols) -> dict[int, int]:
    """The code length of every symbol of an optimal prefix code for the symbols' frequencies
    (a lone symbol gets one bit; ties broken by symbol value, so the result is deterministic)."""
    counts = Counter(int(s) for s in np.asarray(symbols).ravel())
    if not counts:
        return {}
    if len(counts) == 1:
        return {next(iter(counts)): 1}
    tiebreak = itertools.count()
    heap = [(count, next(tiebreak), {symbol: 0}) for symbol, count in sorted(counts.items())]
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
    return sum(lengths[int(s)] * c for s, c in Counter(symbols.tolist()).items())


def entropy_bits(symbols) -> float:
    """Shannon entropy of the symbols' distribution, bits per symbol."""
    _, counts = np.unique(np.asarray(symbols).ravel(), return_counts=True)
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def canonical_codes(lengths: dict[int, int]) -> dict[int, tuple[int, int]]:
    """Symbol -> (code, length) of the canonical prefix code with these lengths: symbols
    ordered by (length, value), each code the previous plus one, shifted to its length."""
    codes, code, previous = {}, 0, 0
    for symbol, length in sorted(lengths.items(), key=lambda item: (item[1], item[0])):
        code <<= length - previous
        codes[symbol] = (code, length)
        code, previous = code + 1, length
    return codes


def huffman_table_bits(lengths: dict[int, int], alphabet: int) -> int:
    """Bits to store a canonical code's table: one length per symbol of the alphabet
    (0 = unused), each as wide as the longest length needs."""
    if not lengths:
        return 0
    return alphabet * max(1, max(lengths.values()).bit_length())


def huffman_encode(symbols) -> tuple[str, dict[int, int]]:
    """The symbols as a bit string ('0'/'1') and the code lengths; for tests and inspection."""
    symbols = np.asarray(symbols).ravel()
    lengths = huffman_lengths(symbols)
    codes = canonical_codes(lengths)
    return "".join(format(codes[int(s)][0], f"0{codes[int(s)][1]}b") for s in symbols), lengths


def huffman_decode(bits: str, lengths: dict[int, int]) -> list[int]:
    """The inverse of :func:`huffman_encode`."""
    decode = {format(code, f"0{length}b"): symbol
              for symbol, (code, length) in canonical_codes(lengths).items()}
    out, word = [], ""
    for bit in bits:
        word += bit
        if word in decode:
            out.append(decode[word])
            word = ""
    if word:
        raise ValueError(f"{len(word)} trailing bits do not form a code")
    return out
