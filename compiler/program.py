"""The program: a compiled model = engine configuration + program image (+ the network).

``compile`` encodes every layer of a :class:`QuantizedNetwork` for N PEs (``encode.py``), lays
the layers out one after another in each memory, derives the smallest engine that runs them
(``configure.py``) or checks them against a given engine or board, and returns a
:class:`Program`.  On disk a program is a directory: ``image.npz`` (arrays only, loaded with
``allow_pickle=False``), ``network.npz``, ``program.json`` (format version, layer table,
provenance) and ``engine.json`` (the EngineConfig).  Saving is atomic and loading validates every
array against the configuration, naming the field that is wrong.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparseforge.hw import isa
from sparseforge.hw.config import EngineConfig

from . import configure
from .encode import encode_layer
from .ir import QuantizedLinear, QuantizedNetwork
from .numerics import FixedFormat

__all__ = ["Image", "Program", "compile", "load_program", "ProgramError", "FORMAT_VERSION"]

FORMAT_VERSION = 1


class ProgramError(ValueError):
    """A program directory or image that cannot be right; the message names the field."""


@dataclass(frozen=True, eq=False)
class Image:
    """The contents of every engine memory (docs/architecture.md), per PE where per PE."""
    entries: tuple[np.ndarray, ...]       # packed entry words
    pointers: tuple[np.ndarray, ...]      # p[0..in] of every layer, one after another
    biases: tuple[np.ndarray, ...]        # rows of every layer
    codebook: np.ndarray                  # layers x 2**code_bits
    occupancy: np.ndarray                 # packed occupancy words (Python ints)
    descriptors: np.ndarray               # packed descriptor words (Python ints)
    layer_count: int

    def bus_writes(self, config: EngineConfig) -> np.ndarray:
        """(address, data) rows that load this image through the host bus."""
        return isa.image_bus_writes(config, self)


@dataclass(frozen=True, eq=False)
class Program:
    """A compiled model: run it with ``sf.reference``, ``sf.simulate`` or on a board."""
    config: EngineConfig
    image: Image
    network: QuantizedNetwork
    board: str | None = None

    @property
    def layer_count(self) -> int:
        return self.image.layer_count

    @property
    def in_features(self) -> int:
        return self.network.layers[0].in_features

    @property
    def out_features(self) -> int:
        return self.network.layers[-1].out_features

    def quantize_input(self, x) -> np.ndarray:
        """Float inputs (batch x features, or images) to the engine's integer activations."""
        return self.network.quantize_input(x)

    def dequantize(self, outputs) -> np.ndarray:
        """The engine's integer outputs as float logits."""
        return self.network.dequantize_output(outputs)

    def layer_pointers(self, layer: int) -> list[np.ndarray]:
        """Each PE's ``p[0..in]`` of one layer (absolute entry addresses)."""
        base = sum(l.in_features + 1 for l in self.network.layers[:layer])
        width = self.network.layers[layer].in_features + 1
        return [p[base:base + width] for p in self.image.pointers]

    def column_counts(self, layer: int) -> np.ndarray:
        """``pes x in``: entries (padding included) of each PE's column in one layer."""
        return np.stack([np.diff(p) for p in self.layer_pointers(layer)])

    def save(self, directory) -> Path:
        """Write the program to ``directory`` atomically (a complete program or nothing)."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            _write(self, staging)
            if directory.exists():
                previous = directory.with_name(f".{directory.name}.old")
                shutil.rmtree(previous, ignore_errors=True)
                os.replace(directory, previous)
                os.replace(staging, directory)
                shutil.rmtree(previous, ignore_errors=True)
            else:
                os.replace(staging, directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return directory


# ---- compiling --------------------------------------------------------------------------------

def compile(model, pes: int = 8, board: str | None = None, *, scan_lanes: int | None = None,
            fifo_depth: int = 8, config: EngineConfig | None = None) -> Program:
    """Lower a compressed model (or a QuantizedNetwork) to a program for ``pes`` PEs.

    With ``config`` the program must fit that existing engine (to load it at run time); with
    ``board`` the derived engine must fit the board's part.  Errors name what does not fit.
    """
    network = getattr(model, "network", model)
    if not isinstance(network, QuantizedNetwork):
        raise TypeError(f"compile takes a CompressedModel or a QuantizedNetwork, not "
                        f"{type(model).__name__}")
    if not isinstance(pes, int) or not 1 <= pes <= 64:
        raise ValueError(f"pes must be between 1 and 64, not {pes!r}")
    if config is not None and config.pes != pes:
        pes = config.pes
    lanes = config.scan_lanes if config is not None else (
        scan_lanes or configure.default_scan_lanes(pes))
    encoded = [encode_layer(layer.codes, pes, 15) for layer in network.layers]
    entries_per_pe = [sum(len(layer[k].codes) for layer in encoded) for k in range(pes)]
    max_column = max(int(s.column_counts.max(initial=0)) for layer in encoded for s in layer)
    needs = configure.needs_of(network, pes, lanes, entries_per_pe, max_column)
    part = None
    if board is not None:
        from sparseforge.boards.registry import board as find_board
        part = find_board(board).part
    if config is None:
        acc_memory = 16 if part is not None and part.family == "ice40" else 0
        config = configure.derive_config(needs, scan_lanes=lanes, fifo_depth=fifo_depth,
                                         acc_memory_bits=acc_memory)
    else:
        configure.fit(needs, config)
    if part is not None:
        configure.check_board(config, part)
    return Program(config, _pack_image(config, network, encoded), network, board)


def _pack_image(config: EngineConfig, network: QuantizedNetwork, encoded) -> Image:
    pes, lanes = config.pes, config.scan_lanes
    entry = isa.entry_layout(config)
    entries = [[] for _ in range(pes)]
    pointers = [[] for _ in range(pes)]
    biases = [[] for _ in range(pes)]
    occupancy, descriptors = [], []
    codebook = np.zeros((network_layers := len(network.layers), config.codebook_size), np.int64)
    offsets = np.zeros(pes, dtype=np.int64)
    pointer_base = bias_base = occupancy_base = 0
    for index, (layer, slices) in enumerate(zip(network.layers, encoded)):
        rows = -(-layer.out_features // pes)
        groups = -(-layer.in_features // lanes)
        bias = np.zeros(rows * pes, dtype=np.int64)
        bias[:layer.out_features] = layer.bias
        for k, csc in enumerate(slices):
            entries[k].append(isa.pack(entry, zero_run=csc.zero_runs, code=csc.codes))
            pointers[k].append(csc.pointers + offsets[k])
            offsets[k] += len(csc.codes)
            biases[k].append(bias[k::pes])
        occupied = np.zeros((pes, groups * lanes), dtype=bool)
        occupied[:, :layer.in_features] = np.stack([s.column_counts > 0 for s in slices])
        occupancy += _pack_occupancy(occupied, pes, lanes)
        descriptors.append(isa.descriptor_layout(config).const({
            "in_features": layer.in_features, "out_features": layer.out_features,
            "rows": rows, "groups": groups, "pointer_base": pointer_base,
            "bias_base": bias_base, "occupancy_base": occupancy_base,
            "shift": layer.shift, "relu": int(layer.relu)}).as_bits())
        codebook[index, :len(layer.codebook)] = layer.codebook
        pointer_base += layer.in_features + 1
        bias_base += rows
        occupancy_base += groups
    return Image(
        entries=tuple(np.concatenate(e).astype(np.uint64) for e in entries),
        pointers=tuple(np.concatenate(p).astype(np.int64) for p in pointers),
        biases=tuple(np.concatenate(b).astype(np.int64) for b in biases),
        codebook=codebook,
        occupancy=np.array(occupancy, dtype=object),
        descriptors=np.array(descriptors, dtype=object),
        layer_count=network_layers)


def _pack_occupancy(occupied: np.ndarray, pes: int, lanes: int) -> list[int]:
    """One word per group: bit ``lane * pes + k`` set when PE k has entries in that lane's
    column (``isa.occupancy_layout``)."""
    groups = occupied.shape[1] // lanes
    bits = occupied.T.reshape(groups, lanes * pes)          # [group, lane * pes + k]
    packed = np.packbits(bits, axis=1, bitorder="little")
    return [int.from_bytes(row.tobytes(), "little") for row in packed]


# ---- on disk ----------------------------------------------------------------------------------

def _words_to_array(words) -> np.ndarray:
    """Wide words as uint32 chunks (n x chunks): npz without objects, so without pickle."""
    words = [int(w) for w in words]
    chunks = max(1, max((w.bit_length() for w in words), default=1) + 31) // 32
    return np.array([[(w >> (32 * c)) & 0xFFFFFFFF for c in range(chunks)] for w in words],
                    dtype=np.uint32).reshape(len(words), chunks)


def _array_to_words(array: np.ndarray) -> np.ndarray:
    return np.array([sum(int(v) << (32 * c) for c, v in enumerate(row)) for row in array],
                    dtype=object)


def _write(program: Program, directory: Path) -> None:
    image, network = program.image, program.network
    arrays = {"codebook": image.codebook,
              "occupancy": _words_to_array(image.occupancy),
              "descriptors": _words_to_array(image.descriptors)}
    for k in range(program.config.pes):
        arrays[f"entries_{k}"] = image.entries[k]
        arrays[f"pointers_{k}"] = image.pointers[k]
        arrays[f"biases_{k}"] = image.biases[k]
    np.savez(directory / "image.npz", **arrays)
    layer_arrays, layer_table = {}, []
    for index, layer in enumerate(network.layers):
        layer_arrays[f"codes_{index}"] = layer.codes
        layer_arrays[f"codebook_{index}"] = layer.codebook
        layer_arrays[f"bias_{index}"] = layer.bias
        layer_table.append({
            "name": layer.name, "in_features": layer.in_features,
            "out_features": layer.out_features, "code_bits": layer.code_bits,
            "input_format": layer.input_format.to_json(),
            "weight_format": layer.weight_format.to_json(),
            "output_format": layer.output_format.to_json(),
            "bias_bits": layer.bias_bits, "relu": layer.relu, "nnz": layer.nnz})
    np.savez(directory / "network.npz", **layer_arrays)
    (directory / "engine.json").write_text(program.config.dumps())
    (directory / "program.json").write_text(json.dumps({
        "format": "sparseforge-program", "version": FORMAT_VERSION,
        "layer_count": image.layer_count, "board": program.board, "layers": layer_table,
    }, indent=2))


def load_program(directory) -> Program:
    """Read and validate a program directory written by :meth:`Program.save`."""
    directory = Path(directory)
    manifest_path = directory / "program.json"
    if not manifest_path.is_file():
        raise ProgramError(f"{directory} is not a compiled program (no program.json)")
    try:
        manifest = json.loads(manifest_path.read_text())
        config = EngineConfig.from_json(json.loads((directory / "engine.json").read_text()))
    except (OSError, json.JSONDecodeError) as error:
        raise ProgramError(f"{directory}: unreadable manifest: {error}") from error
    except (TypeError, ValueError) as error:
        raise ProgramError(f"{directory}/engine.json: {error}") from error
    if manifest.get("format") != "sparseforge-program":
        raise ProgramError(f"{manifest_path}: 'format' is {manifest.get('format')!r}, "
                           f"not 'sparseforge-program'")
    if manifest.get("version") != FORMAT_VERSION:
        raise ProgramError(f"{manifest_path}: format version {manifest.get('version')!r} is not "
                           f"supported (this sparseforge reads version {FORMAT_VERSION})")
    try:
        with np.load(directory / "image.npz", allow_pickle=False) as saved:
            arrays = {key: saved[key] for key in saved.files}
        with np.load(directory / "network.npz", allow_pickle=False) as saved:
            layer_arrays = {key: saved[key] for key in saved.files}
    except (OSError, ValueError, EOFError) as error:
        raise ProgramError(f"{directory}: the image or network arrays cannot be read "
                           f"(truncated or not .npz): {error}") from error
    network = _network_from(manifest, layer_arrays, directory)
    try:
        image = Image(
            entries=tuple(arrays[f"entries_{k}"] for k in range(config.pes)),
            pointers=tuple(arrays[f"pointers_{k}"] for k in range(config.pes)),
            biases=tuple(arrays[f"biases_{k}"] for k in range(config.pes)),
            codebook=arrays["codebook"],
            occupancy=_array_to_words(arrays["occupancy"]),
            descriptors=_array_to_words(arrays["descriptors"]),
            layer_count=int(manifest["layer_count"]))
    except KeyError as error:
        raise ProgramError(f"{directory}/image.npz lacks the array {error}") from None
    validate_image(config, image, network)
    return Program(config, image, network, manifest.get("board"))


def _network_from(manifest, arrays, directory) -> QuantizedNetwork:
    layers = []
    try:
        for index, entry in enumerate(manifest["layers"]):
            layers.append(QuantizedLinear(
                name=entry["name"], codes=arrays[f"codes_{index}"],
                codebook=arrays[f"codebook_{index}"].astype(np.int64),
                bias=arrays[f"bias_{index}"].astype(np.int64), code_bits=entry["code_bits"],
                input_format=FixedFormat.from_json(entry["input_format"]),
                weight_format=FixedFormat.from_json(entry["weight_format"]),
                output_format=FixedFormat.from_json(entry["output_format"]),
                bias_bits=entry["bias_bits"], relu=bool(entry["relu"])))
        return QuantizedNetwork(tuple(layers))
    except KeyError as error:
        raise ProgramError(f"{directory}: the network lacks {error}") from None
    except (TypeError, ValueError) as error:
        raise ProgramError(f"{directory}/network.npz: {error}") from error


def validate_image(config: EngineConfig, image: Image, network: QuantizedNetwork) -> None:
    """Check an image against its configuration and network; raise ProgramError naming the
    first field that is wrong."""
    if image.layer_count != len(network.layers) or image.layer_count > config.max_layers:
        raise ProgramError(f"layer_count {image.layer_count} does not match the network's "
                           f"{len(network.layers)} layers (engine holds {config.max_layers})")
    depth = sum(layer.in_features + 1 for layer in network.layers)
    entry = isa.entry_layout(config)
    for k in range(config.pes):
        pointers, entries = image.pointers[k], image.entries[k]
        if pointers.shape != (depth,):
            raise ProgramError(f"pointers of PE {k} have shape {pointers.shape}, expected "
                               f"({depth},)")
        if np.any(np.diff(pointers) < 0):
            raise ProgramError(f"pointers of PE {k} decrease at index "
                               f"{int(np.argmax(np.diff(pointers) < 0))}")
        if len(entries) > config.entry_depth or (depth and pointers[-1] != len(entries)):
            raise ProgramError(f"entries of PE {k}: {len(entries)} entries, pointers end at "
                               f"{pointers[-1] if depth else 0}, engine holds "
                               f"{config.entry_depth}")
        if len(entries) and int(np.max(entries)) >= 1 << entry.size:
            raise ProgramError(f"entries of PE {k} hold a word wider than {entry.size} bits")
        codes = isa.unpack(entry, entries)["code"] if len(entries) else np.zeros(0)
        if codes.size and codes.max() >= config.codebook_size:
            raise ProgramError(f"entries of PE {k} use code {int(codes.max())}; the codebook "
                               f"has {config.codebook_size}")
        rows = sum(-(-layer.out_features // config.pes) for layer in network.layers)
        if image.biases[k].shape != (rows,):
            raise ProgramError(f"biases of PE {k} have shape {image.biases[k].shape}, expected "
                               f"({rows},)")
    if image.codebook.shape[0] != image.layer_count:
        raise ProgramError(f"codebook has {image.codebook.shape[0]} layers, expected "
                           f"{image.layer_count}")
    if not np.all(image.codebook[:, 0] == 0):
        raise ProgramError("codebook entry 0 must be 0 (the pruned weight) in every layer")

