"""Packed words shared by the engine, the compiler, the golden model and the testbenches.

Every word the engine reads from a memory is an Amaranth ``data.StructLayout`` defined here:
the hardware decodes ``Signal(layout)``, and the compiler, the NumPy golden model and cocotb
encode and decode with :func:`pack` / :func:`unpack`, which read the field offsets from the same
layout.  The host bus address map is ``bus.py``'s.

Sparse-matrix entry (EIE, Han et al. 2016, section III-B): the PE's nonzeros of a column, in
increasing local row, each as (zero run ``z``, codebook index ``c``): the entry sits ``z`` rows
below the previous one (the first sits at local row ``z``).  A gap wider than ``2**idx_bits - 1``
inserts a padding entry ``(2**idx_bits - 1, 0)``: code 0 is the zero weight.

Column pointers (EIE section III-B, "pointer read unit"): per PE and layer, ``p[0..in]``; column
``j`` holds entries ``p[j] .. p[j+1]-1``.  EIE reads ``p[j]`` and ``p[j+1]`` in one cycle from
two banks; the engine stores both in one *column word* ``(start = p[j], count = p[j+1]-p[j])`` at
pointer index ``pointer_base + j``, in a per-PE parameter memory that also holds the biases
(read only at write-back), which saves two block RAMs per PE on small FPGAs.

Scale word (sparseforge, engines with ``multiplier_bits``): per output row, the multiplier, the
rounding term, the shift and the half-to-even flag of ``numerics.requantize_rows``, kept in a
memory beside the requantizer that serves the row's PE (the bias stays in the PE).

Occupancy word (sparseforge, not in EIE): one bit per (column, PE) saying ``p[j+1] > p[j]``, in
groups of ``scan_lanes`` columns, so the broadcast unit only queues work a PE has
(docs/architecture.md).

Geometry word (sparseforge, conv engines): per layer, the walk over its input map that the
engine's address generators follow (``compiler/lowering.py``: ``Walk``).
"""

from __future__ import annotations

import numpy as np
from amaranth import signed
from amaranth.lib import data

from .bus import BUS_DATA_BITS, Region, Register, bus_address, chunk_index, chunks_of
from .config import EngineConfig, _bits_for
from .numerics import ceil_div

__all__ = ["entry_layout", "entry_memory_layout", "entry_words", "column_layout",
           "parameter_bits", "column_words", "descriptor_layout", "occupancy_layout",
           "scale_layout", "geometry_layout", "MAP_BITS", "KERNEL_BITS",
           "group_layout", "pack", "unpack", "activation_index", "lane_bits", "stream_layout",
           "image_bus_writes", "layer_cycles"]


def entry_layout(config: EngineConfig) -> data.StructLayout:
    """A sparse-matrix entry: ``zero_run`` (rows skipped before it) and ``code``."""
    return data.StructLayout({
        "zero_run": config.idx_bits,
        "code": config.code_bits,
    })


def entry_memory_layout(config: EngineConfig) -> data.StructLayout:
    """An entry as a PE's entry memory holds it: ``entry_layout``, or with
    ``config.decoded_weights`` the zero run and the code's value in the layer's codebook."""
    if not config.decoded_weights:
        return entry_layout(config)
    return data.StructLayout({
        "zero_run": config.idx_bits,
        "weight": signed(config.coef_bits),
    })


def entry_words(config: EngineConfig, image, pe: int) -> np.ndarray:
    """PE ``pe``'s entry memory words for ``image``: its image entries as they are, or with
    ``config.decoded_weights`` each code replaced by its value in its layer's codebook (the
    layers' entry ranges come from the descriptors and pointers).  Padding (code 0) decodes
    to 0 like every code 0."""
    entries = np.asarray(image.entries[pe], dtype=np.uint64)
    if not config.decoded_weights:
        return entries
    fields = unpack(entry_layout(config), entries)
    codebook = np.asarray(image.codebook, dtype=np.int64).reshape(-1, config.codebook_size)
    layer_of = np.full(len(entries), -1, dtype=np.int64)
    descriptors = unpack(descriptor_layout(config),
                         np.array([int(d) for d in image.descriptors], dtype=object))
    pointers = np.asarray(image.pointers[pe], dtype=np.int64)
    for layer in range(int(image.layer_count)):
        base = int(descriptors["pointer_base"][layer])
        first, end = pointers[base], pointers[base + int(descriptors["in_features"][layer])]
        layer_of[first:end] = layer
    if np.any(layer_of < 0):
        raise ValueError(f"PE {pe}: entries {np.flatnonzero(layer_of < 0)[:5].tolist()} belong "
                         f"to no layer's columns")
    weights = codebook[layer_of, fields["code"].astype(np.int64)]
    return pack(entry_memory_layout(config), zero_run=fields["zero_run"], weight=weights)


def column_layout(config: EngineConfig) -> data.StructLayout:
    """A column word of a PE's parameter memory: where its column starts and how many entries."""
    return data.StructLayout({
        "start": config.pointer_bits,
        "count": config.count_bits,
    })


def parameter_bits(config: EngineConfig) -> int:
    """Width of a PE's parameter memory: column words and biases share it."""
    return max(column_layout(config).size, config.bias_bits)


def column_words(config: EngineConfig, pointers) -> np.ndarray:
    """A PE's column words from its pointer array (all layers): word ``i`` describes the column
    that starts at ``pointers[i]``; the word at a layer's last index ``p[in]`` is never read."""
    pointers = np.asarray(pointers, dtype=np.int64)
    counts = np.diff(pointers, append=pointers[-1:]) if pointers.size else pointers
    counts = np.where(counts < 0, 0, counts)       # across a layer boundary: never read
    return pack(column_layout(config), start=pointers, count=counts)


def descriptor_layout(config: EngineConfig) -> data.StructLayout:
    """A layer descriptor, one per layer, read by the sequencer.

    Fields: ``in_features`` and ``out_features``; ``rows`` = ceil(out / pes) accumulator rows
    per PE; ``groups`` = ceil(in / scan_lanes) scan steps; ``pointer_base`` (index of the
    layer's ``p[0]`` in every PE's pointer memory), ``bias_base`` (of its row 0 in every PE's
    bias memory), ``occupancy_base``; ``shift`` (requantize shift) and ``relu``.  With
    ``config.multiplier_bits`` also ``low`` and ``high``, the layer's output range (ReLU
    folded in); the shift then comes per row from the scale words (the field is 0).  With
    ``config.layer_activation`` ``low``, ``high`` and ``leak`` (``numerics.requantize_rows``);
    with ``config.table_slots`` ``table`` (the layer's output is its table's) and
    ``table_slot``.
    """
    fields = {
        "in_features": config.feature_bits,
        "out_features": config.feature_bits,
        "rows": config.row_bits,
        "groups": _bits_for(ceil_div(config.max_features, config.scan_lanes)),
        "pointer_base": _bits_for(config.pointer_depth - 1),
        "bias_base": _bits_for(config.bias_depth - 1),
        "occupancy_base": _bits_for(config.occupancy_depth - 1),
        "shift": config.shift_bits,
        "relu": 1,
    }
    if config.row_scales or config.layer_activation:
        fields["low"] = signed(config.act_bits)
        fields["high"] = signed(config.act_bits)
    if config.layer_activation:
        fields["leak"] = LEAK_BITS
    if config.table_slots:
        fields["table"] = 1
        fields["table_slot"] = max(1, (config.table_slots - 1).bit_length())
    return data.StructLayout(fields)


LEAK_BITS = 4       # a layer's leak (ir.MAX_LEAK = 15)


MAP_BITS = 8        # a map's rows or columns (maps up to 255 x 255)
KERNEL_BITS = 4     # a kernel's, stride's, padding's or pooling window's size (up to 15)


def geometry_layout(config: EngineConfig) -> data.StructLayout:
    """A layer's geometry word (conv engines): its walk, ``lowering.Walk``'s fields.  Group
    addresses and steps are ``config.group_address_bits`` wide and wrap around (a patch's
    origin may lie before its map); ``out_base`` is a word address."""
    address = config.group_address_bits
    fields = {"origin": address, "out_base": max(1, (config.act_words - 1).bit_length())}
    for name in ("height", "width"):
        fields[name] = MAP_BITS
    for name in ("pad_rows", "pad_cols", "kernel_rows", "kernel_cols"):
        fields[name] = KERNEL_BITS
    for name in ("channel_groups", "pixel_groups", "row_groups"):
        fields[name] = address
    for name in ("stride_rows", "stride_cols"):
        fields[name] = KERNEL_BITS
    for name in ("step_rows", "step_cols"):
        fields[name] = address
    for name in ("pool_rows", "pool_cols"):
        fields[name] = MAP_BITS
    for name in ("window_rows", "window_cols"):
        fields[name] = KERNEL_BITS
    for name in ("window_step_rows", "window_step_cols"):
        fields[name] = MAP_BITS
    for name in ("window_addr_rows", "window_addr_cols"):
        fields[name] = address
    return data.StructLayout(fields)


def scale_layout(config: EngineConfig) -> data.StructLayout:
    """A row's scale word (engines with ``multiplier_bits``): ``multiplier`` (signed),
    ``rounding`` (unsigned), ``shift`` and ``half_even``."""
    return data.StructLayout({
        "multiplier": signed(config.multiplier_bits),
        "rounding": max(1, config.rounding_bits),
        "shift": config.shift_bits,
        "half_even": 1,
    })


def occupancy_layout(config: EngineConfig) -> data.ArrayLayout:
    """``scan_lanes`` columns x ``pes`` bits: bit ``[lane][pe]`` is set when PE ``pe`` holds
    entries in column ``group * scan_lanes + lane``."""
    return data.ArrayLayout(config.pes, config.scan_lanes)


def group_layout(config: EngineConfig) -> data.StructLayout:
    """What the broadcast unit queues for a PE: the pointer index of the group's first column
    (``pointer_base + group * G``; the group covers columns ``group * G .. group * G + G - 1``)
    and the ``G`` activation values; with several lanes, also which of them hold work for this
    PE (nonzero activation and an occupied column), as the first such lane (``first``), the
    others (``rest``, a mask) and whether there are none (``single``).  The broadcast unit
    works these out before the group is queued, so that the PE's front end takes its first
    column straight from the queue, without a leading-nonzero detector behind the queue's
    memory.  (With one lane the broadcast unit
    queues a group only for a PE with work in it.)"""
    fields = {
        "pointer": _bits_for(config.pointer_depth - 1),
        "values": data.ArrayLayout(signed(config.act_bits), config.scan_lanes),
    }
    if config.scan_lanes > 1:
        fields["first"] = _bits_for(config.scan_lanes - 1)
        fields["rest"] = config.scan_lanes
        fields["single"] = 1
    return data.StructLayout(fields)


def pack(layout: data.StructLayout, **fields) -> np.ndarray:
    """Pack NumPy arrays of field values into words (Python ints in an object array when wider
    than 63 bits, else uint64).  Signed fields are stored in two's complement."""
    names = {name for name, _ in layout}
    if set(fields) != names:
        raise ValueError(f"pack needs exactly the fields {sorted(names)}, got {sorted(fields)}")
    wide = layout.size > 63
    words = None
    for name, field in layout:
        values = np.asarray(fields[name], dtype=np.int64)
        mask = (1 << field.width) - 1
        signed = field.shape.signed if hasattr(field.shape, "signed") else False
        low = -(1 << (field.width - 1)) if signed else 0
        high = (1 << (field.width - 1)) - 1 if signed else mask
        if values.size and (values.min() < low or values.max() > high):
            raise ValueError(f"field {name!r} value out of range for {field.width} bits: "
                             f"{int(values.min())} .. {int(values.max())}")
        if wide:
            part = np.array([(int(v) & mask) << field.offset for v in values.ravel()],
                            dtype=object).reshape(values.shape)
        else:
            part = (values.astype(np.uint64) & np.uint64(mask)) << np.uint64(field.offset)
        words = part if words is None else words | part
    return words


def unpack(layout: data.StructLayout, words) -> dict[str, np.ndarray]:
    """The inverse of :func:`pack`: a dict of int64 arrays, one per field."""
    words = np.asarray(words)
    out = {}
    for name, field in layout:
        mask = (1 << field.width) - 1
        if words.dtype == object:
            values = np.array([(int(w) >> field.offset) & mask for w in words.ravel()],
                              dtype=np.int64).reshape(words.shape)
        else:
            values = ((words.astype(np.uint64) >> np.uint64(field.offset))
                      & np.uint64(mask)).astype(np.int64)
        signed = field.shape.signed if hasattr(field.shape, "signed") else False
        if signed:
            values = np.where(values >= (1 << (field.width - 1)), values - (1 << field.width),
                              values)
        out[name] = values
    return out


# ---- the host bus's view of the image -------------------------------------------------------

def activation_index(i: int, config: EngineConfig) -> int:
    """Bus index of activation ``i``: word ``i // pes`` and lane ``i % pes`` as bit fields."""
    return ((i // config.pes) << lane_bits(config)) | (i % config.pes)


def lane_bits(config: EngineConfig) -> int:
    return (config.pes - 1).bit_length()


def stream_layout(config: EngineConfig) -> data.StructLayout:
    """The input and output streams' payload: one activation, and ``last`` on the final one.
    On the input stream ``last`` starts the run."""
    return data.StructLayout({"value": signed(config.act_bits), "last": 1})


def layer_cycles(cumulative) -> list[int]:
    """Per-layer cycle counts from the CYCLES region's cumulative ones."""
    cumulative = [int(c) for c in cumulative]
    return [c - p for c, p in zip(cumulative, [0] + cumulative[:-1])]


def image_bus_writes(config: EngineConfig, image) -> np.ndarray:
    """Every host-bus write that loads ``image`` into an engine built for ``config``.

    ``image`` has ``layer_count``, ``descriptors``, ``codebook`` (layers x codes), ``occupancy``,
    and per PE ``entries``, ``pointers`` and ``biases`` (and ``scales`` with
    ``config.multiplier_bits``).  Returns an (n, 2) uint64 array of
    (address, data), wide words as 32-bit chunks lowest first.  Loading it and then writing
    nothing else reproduces the memories an engine generated with this image starts with.
    """
    writes: list[tuple[int, int]] = []

    def wide(region, words, width, pe=0):
        for word_index, word in enumerate(words):
            for chunk in range(chunks_of(width)):
                writes.append((bus_address(region, chunk_index(word_index, chunk, width), pe),
                               (int(word) >> (BUS_DATA_BITS * chunk)) & 0xFFFFFFFF))

    writes.append((bus_address(Region.REGISTERS, Register.LAYER_COUNT),
                   int(image.layer_count)))
    wide(Region.DESCRIPTORS, image.descriptors, descriptor_layout(config).size)
    codebook = np.asarray(image.codebook, dtype=np.int64).reshape(-1)
    writes += [(bus_address(Region.CODEBOOK, i), int(c) & 0xFFFFFFFF)
               for i, c in enumerate(codebook)]
    wide(Region.OCCUPANCY, image.occupancy, occupancy_layout(config).size)
    for pe in range(config.pes):
        writes += [(bus_address(Region.ENTRIES, i, pe), int(e))
                   for i, e in enumerate(entry_words(config, image, pe))]
        writes += [(bus_address(Region.POINTERS, i, pe), int(w))
                   for i, w in enumerate(column_words(config, image.pointers[pe]))]
        writes += [(bus_address(Region.BIASES, i, pe), int(b) & 0xFFFFFFFF)
                   for i, b in enumerate(image.biases[pe])]
        if config.row_scales:
            wide(Region.SCALES, image.scales[pe], scale_layout(config).size, pe)
    if config.conv:
        wide(Region.GEOMETRY, image.geometry, geometry_layout(config).size)
    if config.table_slots:
        tables = np.asarray(image.tables, dtype=np.int64).reshape(-1)
        writes += [(bus_address(Region.TABLES, i), int(t) & 0xFFFFFFFF)
                   for i, t in enumerate(tables)]
    return np.array(writes, dtype=np.uint64).reshape(-1, 2)
