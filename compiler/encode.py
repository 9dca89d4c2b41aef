"""EIE encoding of a network for N processing elements, its exact inverse, and the program image.

Pure functions over NumPy arrays, vectorised over nonzeros and PEs (no Python loop over
entries), implementing the format of docs/architecture.md (Han et al., EIE, ISCA 2016,
section III-B):

* row ``i`` belongs to PE ``i mod N`` as local row ``i div N`` (:func:`interleave_rows`);
* a PE stores its nonzeros column by column, in increasing local row, each as (zero run, code):
  the zero run counts the zero rows since the previous entry of the column (for the first,
  since local row 0); a gap wider than ``max_run = 2**idx_bits - 1`` is bridged by padding
  entries ``(max_run, 0)`` that advance ``max_run + 1`` rows and add nothing (:func:`encode_csc`,
  :func:`encode_layer`);
* pointers ``p[0..in]`` per PE: column ``j`` holds entries ``p[j] .. p[j+1]-1``;
* :func:`pack_image` lays every layer out one after another in each memory (entries, pointers,
  biases, codebooks, occupancy words, descriptors) as the packed words of ``compiler/isa.py``.

The inverse functions (:func:`decode_csc`, :func:`decode_layer`, :func:`deinterleave_rows`)
exist for the property tests (``decode(encode(W)) == W``) and the program loader's checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import isa
from .config import EngineConfig, check_pes
from .lowering import lower
from .numerics import ceil_div

__all__ = [
    "PECSC",
    "Image",
    "decode_csc",
    "decode_layer",
    "deinterleave_rows",
    "encode_csc",
    "encode_layer",
    "interleave_rows",
    "layer_bases",
    "occupancy_words",
    "pack_image",
]


@dataclass(frozen=True, eq=False)
class PECSC:
    """One PE's slice of one layer: entries as (zero run, code) and column pointers.

    ``pointers`` are relative to the slice (``p[0] == 0``); :func:`pack_image` offsets them by
    the entries of the layers before."""
    zero_runs: np.ndarray        # int64, one per entry (padding included)
    codes: np.ndarray            # int64, 0 for padding
    pointers: np.ndarray         # int64, in_features + 1, starting at 0

    @property
    def entries(self) -> int:
        return len(self.codes)

    @property
    def padding(self) -> int:
        """Padding entries: those with code 0 (a real entry never has code 0)."""
        return int(np.count_nonzero(self.codes == 0))

    @property
    def column_counts(self) -> np.ndarray:
        return np.diff(self.pointers)


def interleave_rows(matrix: np.ndarray, pes: int) -> list[np.ndarray]:
    """The rows each PE owns: PE ``k`` gets rows ``k, k+N, k+2N, ...`` in that order, so its
    local row ``r`` is global row ``r*N + k`` (EIE's interleaving balances rows across PEs)."""
    check_pes(pes)
    matrix = np.asarray(matrix)
    return [matrix[k::pes] for k in range(pes)]


def deinterleave_rows(parts: list[np.ndarray], out_features: int) -> np.ndarray:
    """The inverse of :func:`interleave_rows`: the ``out_features`` rows in global order."""
    pes = len(parts)
    check_pes(pes)
    out = np.zeros((out_features,) + parts[0].shape[1:], dtype=parts[0].dtype)
    for k, part in enumerate(parts):
        expected = len(range(k, out_features, pes))
        if len(part) != expected:
            raise ValueError(f"PE {k} holds {len(part)} rows; {out_features} rows over {pes} "
                             f"PEs give it {expected}")
        out[k::pes] = part
    return out


def _check_codes(codes) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"a layer's codes must be a 2-D (out x in) array, not {codes.shape}")
    if codes.dtype.kind not in "ui":
        raise TypeError(f"codes must be integers, not {codes.dtype}")
    if codes.size and codes.min() < 0:
        raise ValueError(f"codes must be >= 0, not {int(codes.min())}")
    return codes


def _check_max_run(max_run) -> None:
    if not isinstance(max_run, (int, np.integer)) or max_run < 1 \
            or (int(max_run) + 1) & int(max_run):
        raise ValueError(f"max_run must be 2**idx_bits - 1 (1, 3, 7, 15, ...), not {max_run!r}")


def encode_layer(codes, pes: int, max_run: int = 15) -> list[PECSC]:
    """Every PE's slice of a layer's code matrix (``out x in``, 0 = zero weight), in one
    vectorised pass over the nonzeros of all PEs."""
    codes = _check_codes(codes)
    check_pes(pes)
    _check_max_run(max_run)
    in_features = codes.shape[1]
    rows, columns = np.nonzero(codes)
    values = codes[rows, columns].astype(np.int64)
    pe, local = rows % pes, rows // pes
    order = np.lexsort((local, columns, pe))            # by PE, then column, then local row
    pe, local, columns, values = pe[order], local[order], columns[order], values[order]
    # Zero rows since the previous entry of the same (PE, column); -1 before the first.
    key = pe * in_features + columns
    first = np.ones(len(key), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    previous = np.where(first, -1, np.concatenate(([-1], local[:-1])))
    gaps = local - previous - 1
    pads = gaps // (max_run + 1)                        # padding entries before each nonzero
    per_nonzero = pads + 1
    total = int(per_nonzero.sum())
    zero_runs = np.full(total, max_run, dtype=np.int64)
    entry_codes = np.zeros(total, dtype=np.int64)
    real = np.cumsum(per_nonzero) - 1                   # each nonzero follows its padding
    zero_runs[real] = gaps - pads * (max_run + 1)
    entry_codes[real] = values
    counts = np.bincount(key, weights=per_nonzero, minlength=pes * in_features)
    counts = counts.astype(np.int64).reshape(pes, in_features)
    per_pe = counts.sum(axis=1)
    bounds = np.concatenate(([0], np.cumsum(per_pe)))
    slices = []
    for k in range(pes):                                # a split, not a loop over entries
        pointers = np.concatenate(([0], np.cumsum(counts[k]))).astype(np.int64)
        slices.append(PECSC(zero_runs[bounds[k]:bounds[k + 1]],
                            entry_codes[bounds[k]:bounds[k + 1]], pointers))
    return slices


def encode_csc(codes, max_run: int = 15) -> PECSC:
    """CSC with relative row indices of one PE's rows (``rows x in`` codes, 0 = zero weight):
    :func:`encode_layer` with one PE."""
    return encode_layer(codes, 1, max_run)[0]


def decode_csc(csc: PECSC, rows: int) -> np.ndarray:
    """The inverse of :func:`encode_csc`: the ``rows x in`` code matrix.  Raises ValueError
    for pointers that decrease or entries that land outside ``rows``."""
    pointers = np.asarray(csc.pointers, dtype=np.int64)
    in_features = len(pointers) - 1
    counts = np.diff(pointers)
    if np.any(counts < 0):
        raise ValueError(f"pointers must not decrease (at column "
                         f"{int(np.argmax(counts < 0))})")
    if pointers[0] != 0 or pointers[-1] != len(csc.codes):
        raise ValueError(f"pointers span {pointers[0]} .. {pointers[-1]}, not the "
                         f"{len(csc.codes)} entries")
    columns = np.repeat(np.arange(in_features), counts)
    running = np.cumsum(np.asarray(csc.zero_runs, dtype=np.int64) + 1)
    before = np.concatenate(([0], running))[pointers[:-1]]   # rows advanced before column j
    positions = running - np.repeat(before, counts) - 1       # local row of every entry
    codes = np.asarray(csc.codes, dtype=np.int64)
    keep = codes != 0
    if np.any(positions[keep] >= rows):
        bad = int(np.argmax(keep & (positions >= rows)))
        raise ValueError(f"entry {bad} (column {int(columns[bad])}) lands on local row "
                         f"{int(positions[bad])}, beyond the PE's {rows} rows")
    out = np.zeros((rows, in_features), dtype=np.int64)
    out[positions[keep], columns[keep]] = codes[keep]
    return out


def decode_layer(slices: list[PECSC], out_features: int) -> np.ndarray:
    """The inverse of :func:`encode_layer`: the ``out x in`` code matrix."""
    pes = len(slices)
    return deinterleave_rows([decode_csc(csc, len(range(k, out_features, pes)))
                              for k, csc in enumerate(slices)], out_features)


def occupancy_words(slices: list[PECSC], scan_lanes: int) -> np.ndarray:
    """A layer's occupancy words (``isa.occupancy_layout``): word ``g`` has bit
    ``lane * N + k`` set when PE ``k`` holds an entry (padding included) in column
    ``g * scan_lanes + lane``; columns past ``in`` are 0.  An object array of Python ints
    (a word is ``N * scan_lanes`` bits, up to 256)."""
    pes = len(slices)
    in_features = len(slices[0].pointers) - 1
    groups = ceil_div(in_features, scan_lanes)
    occupied = np.zeros((pes, groups * scan_lanes), dtype=bool)
    occupied[:, :in_features] = np.stack([s.column_counts > 0 for s in slices])
    bits = occupied.T.reshape(groups, scan_lanes * pes)       # [group, lane * pes + k]
    packed = np.packbits(bits, axis=1, bitorder="little")
    return np.array([int.from_bytes(row.tobytes(), "little") for row in packed] or [],
                    dtype=object)


# ---- the program image ------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Image:
    """The contents of every engine memory (docs/architecture.md) for ``config``.

    Per PE (tuples of ``config.pes`` arrays): ``entries`` (uint64 ``entry_layout`` words),
    ``pointers`` (int64 ``p[0..in]`` of every layer, one after another, absolute entry
    addresses), ``biases`` (int64, ``ceil(out/N)`` rows of every layer), and with
    ``config.multiplier_bits`` ``scales`` (``isa.scale_layout`` words as Python ints in object
    arrays, a row's at its bias index; else None).  Shared: ``codebook`` (int64, layers x
    ``2**code_bits``), ``occupancy`` and ``descriptors`` (object arrays of Python ints: the
    words are wider than 64 bits for wide engines), ``layer_count``; with ``config.conv``
    ``geometry``, each layer's ``isa.geometry_layout`` word (object array of Python ints);
    with ``config.table_slots`` ``tables`` (int64, slots x ``2**act_bits``: slot ``s``'s
    output for the value ``v`` at ``v + 2**(act_bits-1)``; unused slots 0).
    """
    config: EngineConfig
    entries: tuple[np.ndarray, ...]
    pointers: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    codebook: np.ndarray
    occupancy: np.ndarray
    descriptors: np.ndarray
    layer_count: int
    scales: tuple[np.ndarray, ...] | None = None
    geometry: np.ndarray | None = None
    tables: np.ndarray | None = None

    def bus_writes(self) -> np.ndarray:
        """(address, data) rows, an ``(n, 2)`` uint64 array, that load this image through the
        host bus: the ``layer_count`` register, descriptors and occupancy words in 32-bit
        chunks (chunk ``c`` holds bits ``[32c, 32c+32)``, at index ``word << chunk_bits |
        c``), the codebook, and per PE (the address's PE field) entries, column words and
        biases.  Signed values are written in two's complement."""
        return isa.image_bus_writes(self.config, self)

    def descriptor_fields(self) -> dict[str, np.ndarray]:
        """The layer descriptors unpacked: field name -> int64 array over layers."""
        return isa.unpack(isa.descriptor_layout(self.config), self.descriptors)

    def entry_fields(self, pe: int) -> dict[str, np.ndarray]:
        """PE ``pe``'s entries unpacked: ``zero_run`` and ``code`` arrays."""
        return isa.unpack(isa.entry_layout(self.config), self.entries[pe])

    def geometry_fields(self) -> dict[str, np.ndarray]:
        """The geometry words unpacked (conv engines): field name -> int64 array over
        layers."""
        return isa.unpack(isa.geometry_layout(self.config), self.geometry)

    def scale_fields(self, pe: int) -> dict[str, np.ndarray]:
        """PE ``pe``'s scale words unpacked (engines with ``multiplier_bits``)."""
        return isa.unpack(isa.scale_layout(self.config), self.scales[pe])


def layer_bases(shapes, pes: int, scan_lanes: int) -> list[dict[str, int]]:
    """Where each layer (``(out, in)`` shapes) starts in the pointer, bias and occupancy
    memories: the ``pointer_base``, ``bias_base`` and ``occupancy_base`` of its descriptor."""
    bases, pointer, bias, occupancy = [], 0, 0, 0
    for out_features, in_features in shapes:
        bases.append({"pointer_base": pointer, "bias_base": bias, "occupancy_base": occupancy})
        pointer += in_features + 1
        bias += ceil_div(out_features, pes)
        occupancy += ceil_div(in_features, scan_lanes)
    return bases


def pack_image(config: EngineConfig, network, encoded=None) -> Image:
    """The program image of a ``QuantizedNetwork`` for an engine ``config`` it fits (see
    ``configure.fit``).  ``encoded`` (each layer's :func:`encode_layer` slices; in conv mode
    of the lowered layers, ``lowering.lower``) is computed when not given.  Field values that
    do not fit their packed widths raise ValueError."""
    pes, lanes = config.pes, config.scan_lanes
    lowering = lower(network, pes, lanes) if config.conv else None
    layers = lowering.engine.layers if lowering else network.layers
    if encoded is None:
        encoded = [encode_layer(layer.codes, pes, config.max_zero_run) for layer in layers]
    entry = isa.entry_layout(config)
    offsets = np.zeros(pes, dtype=np.int64)
    entries, pointers, biases, scales = ([[] for _ in range(pes)] for _ in range(4))
    occupancy = []
    codebook = np.zeros((len(layers), config.codebook_size), dtype=np.int64)
    for index, (layer, slices) in enumerate(zip(layers, encoded)):
        rows = ceil_div(layer.out_features, pes)
        bias = np.zeros(rows * pes, dtype=np.int64)
        bias[:layer.out_features] = layer.bias
        words = _scale_words(config, layer, rows * pes) if config.row_scales else None
        for k, csc in enumerate(slices):
            entries[k].append(isa.pack(entry, zero_run=csc.zero_runs, code=csc.codes))
            pointers[k].append(csc.pointers + offsets[k])
            offsets[k] += csc.entries
            biases[k].append(bias[k::pes])
            if words is not None:
                scales[k].append(words[k::pes])
        occupancy.append(occupancy_words(slices, lanes))
        codebook[index, :len(layer.codebook)] = layer.codebook
    bases = layer_bases([(l.out_features, l.in_features) for l in layers], pes, lanes)
    ranges = {}
    if config.row_scales:
        rows_of = [layer.row_requant() for layer in layers]
        ranges = {"low": [r.low for r in rows_of], "high": [r.high for r in rows_of]}
    elif config.layer_activation:
        forms = [_activation(layer) for layer in layers]
        ranges = {"low": [f[1] for f in forms], "high": [f[2] for f in forms],
                  "leak": [f[3] for f in forms]}
    tables = None
    if config.table_slots:
        tables, slots = _tables(config, layers)
        ranges.update(table=[int(slot is not None) for slot in slots],
                      table_slot=[slot or 0 for slot in slots])
    elif any(layer.table is not None for layer in layers):
        raise ValueError("a layer runs an activation function as a table, which this engine "
                         "(table_slots 0) does not have")
    out_counts = lowering.out_counts if lowering else [l.out_features for l in layers]
    descriptors = isa.pack(
        isa.descriptor_layout(config),
        in_features=[l.in_features for l in layers], out_features=list(out_counts),
        rows=[ceil_div(l.out_features, pes) for l in layers],
        groups=[ceil_div(l.in_features, lanes) for l in layers],
        pointer_base=[b["pointer_base"] for b in bases], bias_base=[b["bias_base"] for b in bases],
        occupancy_base=[b["occupancy_base"] for b in bases],
        shift=[0 if config.row_scales else _activation(l)[0] if config.layer_activation
               else _power_of_two(l)[0] for l in layers],
        relu=[int(l.relu if config.row_scales or config.layer_activation
                  else _power_of_two(l)[1]) for l in layers],
        **ranges)
    return Image(
        config=config,
        entries=tuple(np.concatenate(e).astype(np.uint64) for e in entries),
        pointers=tuple(np.concatenate(p).astype(np.int64) for p in pointers),
        biases=tuple(np.concatenate(b).astype(np.int64) for b in biases),
        codebook=codebook,
        occupancy=np.array([int(w) for words in occupancy for w in words], dtype=object),
        descriptors=np.array([int(d) for d in descriptors], dtype=object),
        layer_count=len(layers),
        scales=tuple(np.array([int(w) for words in per_pe for w in words], dtype=object)
                     for per_pe in scales) if config.row_scales else None,
        geometry=_geometry_words(config, lowering) if lowering else None, tables=tables)


def _geometry_words(config: EngineConfig, lowering) -> np.ndarray:
    """Each layer's geometry word (``isa.geometry_layout``): its walk, addresses modulo the
    engine's group address width."""
    layout = isa.geometry_layout(config)
    wrap = (1 << config.group_address_bits) - 1
    addresses = {"origin", "channel_groups", "pixel_groups", "row_groups", "step_rows",
                 "step_cols", "window_addr_rows", "window_addr_cols"}
    fields = {name: [getattr(walk, name) & wrap if name in addresses else getattr(walk, name)
                     for walk in lowering.walks] for name, _ in layout}
    return np.array([int(w) for w in isa.pack(layout, **fields)], dtype=object)


def _power_of_two(layer) -> tuple[int, bool]:
    form = layer.power_of_two_form()
    if form is None:
        raise ValueError(f"layer {layer.name} needs per-row requantization, which this engine "
                         f"(multiplier_bits 0) does not have")
    return form


def _tables(config: EngineConfig, layers) -> tuple[np.ndarray, list[int | None]]:
    """The engine's table words (slots x ``2**act_bits``) and each layer's slot (None: no
    table), the layers with one in order."""
    tables = np.zeros((config.table_slots, 1 << config.act_bits), dtype=np.int64)
    slots: list[int | None] = []
    for layer in layers:
        if layer.table is None:
            slots.append(None)
            continue
        slot = sum(s is not None for s in slots)
        if slot >= config.table_slots or len(layer.table) != tables.shape[1]:
            raise ValueError(f"layer {layer.name}: its table does not fit the engine's "
                             f"{config.table_slots} table slots of {tables.shape[1]} values")
        tables[slot] = layer.table
        slots.append(slot)
    return tables, slots


def _activation(layer) -> tuple[int, int, int, int]:
    form = layer.activation_form()
    if form is None:
        raise ValueError(f"layer {layer.name} needs per-row requantization, which this engine "
                         f"(multiplier_bits 0) does not have")
    return form


def _scale_words(config: EngineConfig, layer, rows: int) -> np.ndarray:
    """A layer's scale words (``isa.scale_layout``) for ``rows`` rows (0 past its outputs)."""
    requant = layer.row_requant()
    fields = {name: np.zeros(rows, dtype=np.int64)
              for name in ("multiplier", "rounding", "shift", "half_even")}
    count = layer.out_features
    fields["multiplier"][:count] = requant.multiplier
    fields["rounding"][:count] = requant.rounding
    fields["shift"][:count] = requant.shift
    fields["half_even"][:count] = requant.half_even
    words = isa.pack(isa.scale_layout(config), **fields)
    return np.array([int(w) for w in words], dtype=object)
