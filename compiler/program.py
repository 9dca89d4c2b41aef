"""The program: a compiled model = engine configuration + program image (+ the network).

:func:`compile` is a staged pipeline with a check after each step: encode every layer of a
``QuantizedNetwork`` for N PEs (``encode.py``); derive the smallest engine that runs it, or
check it against a given engine, and against a board (``configure.py``); pack the image; then
(``verify=True``) decode the image back and compare it with the network exactly.  The golden
model's check of the image against ``QuantizedNetwork.forward`` sits above the compiler
(``sim/reference/golden.py``: ``check_program``); ``sf.compile`` runs both.

On disk a program is a directory (docs/compiler.md):

* ``program.json`` -- the manifest: ``format`` ``"sparseforge-program"``, ``version``
  (:data:`FORMAT_VERSION`), ``layer_count``, ``board``, and the layer table (name, shape,
  formats, code and bias widths, ReLU, nnz);
* ``engine.json`` -- the :class:`EngineConfig`;
* ``image.npz`` -- the image: ``entries_<k>``, ``pointers_<k>``, ``biases_<k>`` per PE,
  ``codebook``, and ``occupancy`` / ``descriptors`` as uint32 chunk matrices (word x chunk,
  lowest chunk first), so no object arrays and no pickle (loaded with ``allow_pickle=False``);
* ``network.npz`` -- each layer's ``codes_<l>``, ``codebook_<l>``, ``bias_<l>`` (and its row
  scales; the first layer's ``input_scale_0``, ``input_shift_0``: the inputs' scaling, which
  ``quantize_input`` applies).

Saving writes the whole folder at once (``outputs.write_folder``: a temporary sibling renamed
into place), together with the files a caller adds (``compile`` adds ``engine.v`` and
``report.json``), so a reader sees the old program, none, or the new one -- never a mix of two
runs; the manifest lists every file's SHA-256 (``files``), and loading refuses a folder whose
files are not the ones its manifest names.  Loading validates everything (format version,
field types, array kinds and shapes against the configuration, value ranges, pointer order,
entries and padding, the image against the network) and refuses a bad program with a
:class:`ProgramError` naming the field.
"""

from __future__ import annotations

import functools
import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import bus, configure, isa
from .balance import balance_outputs, balance_rows, output_network
from .config import EngineConfig, check_pes
from .configure import DoesNotFit
from .conv import ConvGeometry
from .dead_units import InputSelection, remove_dead_units, remove_unused_inputs
from .encode import PECSC, Image, decode_layer, encode_layer, layer_bases, pack_image
from .errors import InputError, InputWarning
from .ir import (MAX_LEAK, InputScaling, QuantizedConv2d, QuantizedLinear, QuantizedNetwork,
                 RowRequant, check_inputs)
from .activations import Function
from .lowering import Lowering, has_convolutions, lower
from .numerics import FixedFormat, ceil_div, format_from_json
from .outputs import write_folder

__all__ = [
    "DEFAULT_PES",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "PROGRAM_FILES",
    "Image",
    "Program",
    "ProgramError",
    "compile",
    "load_program",
    "validate_image",
]

# The PE count a program gets when none is asked for (and its board holds it).
DEFAULT_PES = 8

FORMAT_NAME = "sparseforge-program"
FORMAT_VERSION = 1
PROGRAM_FILES = ("image.npz", "network.npz", "engine.json", "program.json")   # manifest last


class ProgramError(InputError):
    """A program directory or image that cannot be right; the message names the field."""


@dataclass(frozen=True, eq=False)
class Program:
    """A compiled model: run it with ``sf.reference``, ``sf.simulate`` or on a board.

    ``config`` is the engine, ``image`` every memory's contents, ``network`` the integer
    network the image encodes (for its input and output formats), ``board`` the board it was
    checked against (or None), ``inputs`` which of the model's inputs ``network`` takes
    (``dead_units.InputSelection``; None: all), ``output_order`` where the engine keeps the
    last layer's rows (``balance.balance_outputs``: its output ``i`` is the network's output
    ``output_order[i]``; None: in the network's order); ``task`` the model's
    (``CompressionConfig.task``): a regression's outputs are values, not class scores;
    ``class_names`` the classes' names where the training labels were names (class ``i`` is
    ``class_names[i]``, as ``compress`` numbered them), else None."""
    config: EngineConfig
    image: Image
    network: QuantizedNetwork
    board: str | None = None
    inputs: InputSelection | None = None
    output_order: np.ndarray | None = None
    task: str = "classification"
    class_names: tuple[str, ...] | None = None

    @property
    def layer_count(self) -> int:
        return self.image.layer_count

    @functools.cached_property
    def lowering(self) -> Lowering | None:
        """How conv mode lays the network out (``compiler/lowering.py``), or None."""
        if not self.config.conv:
            return None
        return lower(self.network, self.config.pes, self.config.scan_lanes)

    @property
    def engine_layers(self) -> tuple[QuantizedLinear, ...]:
        """The layers as the engine stores them (in conv mode, kernel columns in the walk's
        order), one per descriptor."""
        return self.lowering.engine.layers if self.lowering else self.engine_network.layers

    @functools.cached_property
    def engine_network(self) -> QuantizedNetwork:
        """The network as the image stores it: its last layer's rows in ``output_order``."""
        return output_network(self.network, self.output_order)

    @property
    def in_features(self) -> int:
        """Activations the engine takes (in conv mode the input map, channel padding
        included)."""
        if self.lowering:
            return self.lowering.input_size
        return self.network.layers[0].in_features

    @property
    def out_features(self) -> int:
        """Activations the engine gives (in conv mode the last layer's output region)."""
        if self.lowering:
            return self.lowering.output_size
        return self.network.layers[-1].out_features

    @property
    def model_in_features(self) -> int:
        """Inputs the model takes (a convolutional network's map flattened): the width of
        what :meth:`quantize_input` is given."""
        if self.inputs is not None:
            return self.inputs.features
        return self.network.layers[0].in_features

    def __repr__(self) -> str:
        # The image's arrays would make a repr of many kilobytes: what it is instead.
        widths = "-".join(str(n) for n in [self.model_in_features]
                          + [layer.out_features for layer in self.network.layers])
        where = f" for {self.board}" if self.board else ""
        lanes = self.config.writeback_lanes or self.config.pes          # 0: one per PE
        return (f"<Program {widths} on {self.config.pes} PEs{where}: "
                f"{self.config.act_bits}-bit activations, {self.config.scan_lanes} scan "
                f"lanes, {lanes} write-back lanes>")

    def quantize_input(self, x) -> np.ndarray:
        """Float inputs of the model (batch x features, or batch x any shape: flattened;
        images in PyTorch's channel, row, column order) to the engine's integer activations
        (round half up, saturate; docs/numerics.md): only the inputs the network reads
        (``inputs``), in conv mode laid out as its input map."""
        return self.engine_input(self.network.quantize_input(self.taken_inputs(x)))

    def taken_inputs(self, x) -> np.ndarray:
        """The model's inputs (batch x ``model_in_features``, real or integer) narrowed to
        the ones the network takes (``inputs``); unchanged when it takes them all."""
        if self.inputs is None:
            return x
        array = np.asarray(x)
        features = self.inputs.features
        if array.dtype.kind in "iu" and array.ndim >= 2 and array[0].size == features:
            return self.inputs.select(array.reshape(len(array), -1))      # keeps the integers
        return self.inputs.select(check_inputs(array, features))

    def engine_input(self, x_int) -> np.ndarray:
        """The network's integer inputs (batch x features) as the engine takes them."""
        return self.lowering.engine_input(x_int) if self.lowering else np.asarray(x_int)

    def network_output(self, outputs) -> np.ndarray:
        """The engine's integer outputs (batch x ``out_features``) in the network's order
        (the same but for a network that ends in a convolution, or whose last layer's rows
        the engine keeps in another order, ``output_order``)."""
        if self.lowering:
            return self.lowering.network_output(outputs)
        outputs = np.asarray(outputs)
        if self.output_order is None:
            return outputs
        return outputs[..., np.argsort(self.output_order)]

    def dequantize(self, outputs) -> np.ndarray:
        """Integer outputs in the network's order (what ``sf.reference``, ``sf.simulate`` and
        a board's run give) as float logits (``out * 2**-frac_out``)."""
        return self.network.dequantize_output(np.asarray(outputs))

    def bus_writes(self) -> np.ndarray:
        """The host-bus writes that load this program's image (see :meth:`Image.bus_writes`)."""
        return self.image.bus_writes()

    def digest(self) -> str:
        """What the figures of a run of this program name it by (``sim.json``'s
        ``program``): 16 hex digits of SHA-256 over the engine configuration and the image's
        bus writes, so another program, or this one for another engine, differs."""
        hashed = hashlib.sha256(self.config.dumps().encode())
        hashed.update(np.ascontiguousarray(self.bus_writes(), dtype="<u8").tobytes())
        return hashed.hexdigest()[:16]

    def layer_pointers(self, layer: int) -> list[np.ndarray]:
        """Each PE's ``p[0..in]`` of one layer (absolute entry addresses)."""
        layers = self.engine_layers
        base = sum(lay.in_features + 1 for lay in layers[:layer])
        width = layers[layer].in_features + 1
        return [p[base:base + width] for p in self.image.pointers]

    def column_counts(self, layer: int) -> np.ndarray:
        """``pes x in``: entries (padding included) of each PE's column in one layer."""
        return np.stack([np.diff(p) for p in self.layer_pointers(layer)])

    def save(self, directory, *, extra: Callable[[Path], None] | None = None) -> Path:
        """Write the program to ``directory``, whole (see the module docstring): an earlier
        program there is replaced with everything beside it (its simulation, bitstream and
        report were of that program); a folder that holds no program is refused.  ``extra``
        writes more files into the folder before its manifest is sealed."""
        return write_folder(Path(directory), lambda folder: _write(self, folder, extra),
                            what="program", replaceable=_is_program)


# ---- compiling --------------------------------------------------------------------------------

def compile(model, pes: int | None = None, board: str | None = None, *,
            scan_lanes: int | None = None, fifo_depth: int | None = None,
            headroom: float | None = None, writeback_lanes: int | None = None,
            skip_zeros: bool = False, config: EngineConfig | None = None, verify: bool = True,
            fit_check: bool = True, balance: bool = True,
            remove_dead: bool = True) -> Program:
    """Lower a compressed model (anything with a ``.network`` QuantizedNetwork) or a
    QuantizedNetwork to a program for ``pes`` PEs (default: :data:`DEFAULT_PES`, or, with a
    ``board`` whose part does not hold that many by the fit check, the most that fit it).

    Without ``config`` the smallest engine is derived (``configure.derive_config``: options
    ``scan_lanes``, ``fifo_depth``, ``headroom``); with ``config`` the model must fit that
    existing engine (to load it at run time without new Verilog), and ``pes`` must be
    omitted or equal ``config.pes``; ``writeback_lanes`` and ``skip_zeros`` are
    ``derive_config``'s too.  With ``board`` the engine must fit the board's part.
    Refusals are ``configure.DoesNotFit`` errors listing needed vs available;
    ``fit_check=False`` skips the board's (the estimate's) check, not the engine's.
    ``balance`` (the default) permutes each hidden Linear layer's rows over the PEs where that
    evens their entries (``balance.balance_rows``): the program's network is then that
    permutation of the model's, whose outputs are the same for every input.  ``remove_dead``
    (the default) first drops the hidden units no output depends on (``dead_units.py``: no
    outgoing weight, or no incoming one and a constant output folded into the next biases),
    then the inputs no weight reads (the program's ``inputs`` selects the others).
    """
    network = getattr(model, "network", model)
    if not isinstance(network, QuantizedNetwork):
        raise TypeError(f"compile takes a CompressedModel or a QuantizedNetwork, not "
                        f"{type(model).__name__}")
    options = dict(scan_lanes=scan_lanes, fifo_depth=fifo_depth, headroom=headroom,
                   writeback_lanes=writeback_lanes, skip_zeros=skip_zeros, verify=verify,
                   balance=balance, remove_dead=remove_dead)
    if pes is None and config is None and board is not None and fit_check:
        # No PE count asked for: the default where the board holds it, else the most that
        # fit, which the refusal's advice has just worked out (a small part and a large
        # model, a CNN on the iCEBreaker say, should compile without a second try).
        try:
            return compile(model, DEFAULT_PES, board, **options)
        except DoesNotFit as refusal:
            fitting = refusal.most_pes_that_fit
            if fitting is None:
                raise
            # Said, with the other ways out (narrower accumulators may let the default fit).
            others = refusal.other_ways
        program = compile(model, fitting, board, **options)
        warnings.warn(f"{DEFAULT_PES} PEs do not fit the {configure.resolve_part(board).name} "
                      f"by the estimate: "
                      f"compiled for {fitting}, the most that fit (pes=N, --pes N, to choose)"
                      + (f"; other ways out: {'; '.join(others)}" if others else ""),
                      InputWarning, stacklevel=2)
        return program
    if config is not None:
        if pes is not None and pes != config.pes:
            raise ValueError(f"pes={pes} contradicts the given engine's {config.pes} PEs")
        # The engine exists: options that would shape a new one do not apply to it.
        given = {name: value for name, value in (
            ("scan_lanes", scan_lanes), ("fifo_depth", fifo_depth), ("headroom", headroom),
            ("writeback_lanes", writeback_lanes)) if value is not None}
        if skip_zeros:
            given["skip_zeros"] = skip_zeros
        clashing = {name: value for name, value in given.items()
                    if name == "headroom" or getattr(config, name) != value}
        if clashing:
            raise ValueError(f"{', '.join(f'{k}={v!r}' for k, v in clashing.items())} "
                             f"cannot change the given engine (config=...): they shape a new "
                             f"engine; leave them out, or leave out config")
        pes = config.pes
    pes = DEFAULT_PES if pes is None else pes
    pes = check_pes(pes)
    idx_bits = config.idx_bits if config is not None else configure.IDX_BITS
    # Conv mode stores each layer as it lowers it, for the engine's lanes: encoded there.
    conv = has_convolutions(network) or (config is not None and config.conv)
    selection = output_order = None
    if not conv:
        network, selection, output_order = _placed(network, int(pes), idx_bits, config,
                                                   remove_dead=remove_dead, balance=balance)
    # The engine stores the last layer's rows in output_order; the program keeps `network`
    # in the network's order, so everything the user sees stays in it.
    stored = output_network(network, output_order)
    encoded = None if conv else [encode_layer(layer.codes, int(pes), (1 << idx_bits) - 1)
                                 for layer in stored.layers]
    def engine_for(count: int) -> EngineConfig | None:
        # The engine of this compile for another PE count (the fit advice's fewer PEs): the
        # model placed anew, the fit check left to the advice; for a given engine, the one
        # the compiler would make.
        return configure.other_engine(lambda: compile(
            model, count, board, scan_lanes=scan_lanes, fifo_depth=fifo_depth,
            headroom=headroom, writeback_lanes=writeback_lanes, skip_zeros=skip_zeros,
            verify=False, fit_check=False, balance=balance, remove_dead=remove_dead).config)

    if config is None:
        config = configure.derive_config(stored, int(pes), board=board, scan_lanes=scan_lanes,
                                         fifo_depth=fifo_depth, headroom=headroom,
                                         writeback_lanes=writeback_lanes,
                                         skip_zeros=skip_zeros, encoded=encoded,
                                         fit_check=fit_check, engine_for=engine_for,
                                         imported=configure.is_imported(model))
    else:
        configure.fit(stored, config, encoded=encoded)
        if board is not None and fit_check:
            configure.check_board(config, configure.resolve_part(board),
                                  engine_for=engine_for, imported=configure.is_imported(model))
    program = Program(config, pack_image(config, stored, encoded), network, board,
                      selection, output_order, _task_of(model), _class_names_of(model, network))
    if verify:
        _verify(program)
    return program


def _placed(network: QuantizedNetwork, pes: int, idx_bits: int, config: EngineConfig | None,
            *, remove_dead: bool, balance: bool
            ) -> tuple[QuantizedNetwork, InputSelection | None, np.ndarray | None]:
    """``network`` without its dead units and the inputs no weight reads, and with its rows
    balanced, as asked, with the selection of the model's inputs it takes and the order the
    engine keeps its last layer's rows in; for an existing engine the first of (both, dead
    units removed, balanced, as it is) that fits it (rows that move between PEs can deepen
    one PE's memories)."""
    max_run = (1 << idx_bits) - 1
    bases = [(network, None)]
    if remove_dead:
        # The inputs after the hidden units: a unit removed can leave an input unread.
        pruned, selection = remove_unused_inputs(remove_dead_units(network)[0])
        if pruned is not network:
            bases.insert(0, (pruned, selection))
    candidates = []
    for base, selection in bases:
        if balance:
            balanced = balance_rows(base, pes, max_run)[0]
            order = balance_outputs(balanced, pes, max_run)
            if order is not None:
                candidates.append((balanced, selection, order))
            if balanced is not base:
                candidates.append((balanced, selection, None))
        candidates.append((base, selection, None))
    if config is None:
        return candidates[0]
    for candidate, selection, order in candidates:
        try:
            configure.fit(output_network(candidate, order), config)
        except configure.DoesNotFit:
            continue
        return candidate, selection, order
    return network, None, None


def _verify(program: Program) -> None:
    """The compile pipeline's own check: the image decodes to the network's codes."""
    layers = program.engine_layers
    bases = _pointer_bases(layers, program.config)
    for layer, base in zip(layers, bases):
        codes = decode_layer(_layer_slices(program.image, base, layer.in_features),
                             layer.out_features)
        if not np.array_equal(codes, layer.codes):
            raise AssertionError(f"internal error: the image of layer {layer.name} does not "
                                 f"decode to its codes")


def _layer_slices(image: Image, pointer_base: int, in_features: int) -> list[PECSC]:
    """One layer's per-PE slices, read back from the image's pointers and entries."""
    slices = []
    for k in range(image.config.pes):
        pointers = np.asarray(image.pointers[k][pointer_base:pointer_base + in_features + 1],
                              dtype=np.int64)
        entries = image.entry_fields(k)
        start, end = int(pointers[0]), int(pointers[-1])
        slices.append(PECSC(entries["zero_run"][start:end], entries["code"][start:end],
                            pointers - start))
    return slices


def _pointer_bases(layers, config: EngineConfig) -> list[int]:
    return [b["pointer_base"] for b in layer_bases(
        [(lay.out_features, lay.in_features) for lay in layers], config.pes,
        config.scan_lanes)]


# ---- saving -----------------------------------------------------------------------------------

def _chunked(words, width: int) -> np.ndarray:
    """Wide words as a uint32 matrix (word x chunk, lowest chunk first)."""
    chunks = bus.chunks_of(width)
    return np.array([[(int(w) >> (32 * c)) & 0xFFFFFFFF for c in range(chunks)]
                     for w in words], dtype=np.uint32).reshape(len(words), chunks)


def _unchunked(array: np.ndarray) -> np.ndarray:
    return np.array([sum(int(v) << (32 * c) for c, v in enumerate(row)) for row in array],
                    dtype=object)


def _is_program(directory: Path) -> bool:
    return (directory / "program.json").is_file() or not any(directory.iterdir())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write(program: Program, directory: Path, extra=None) -> None:
    image, network, config = program.image, program.network, program.config
    arrays = {"codebook": image.codebook,
              "occupancy": _chunked(image.occupancy, isa.occupancy_layout(config).size),
              "descriptors": _chunked(image.descriptors, isa.descriptor_layout(config).size)}
    for k in range(config.pes):
        arrays[f"entries_{k}"] = image.entries[k]
        arrays[f"pointers_{k}"] = image.pointers[k]
        arrays[f"biases_{k}"] = image.biases[k]
        if config.row_scales:
            arrays[f"scales_{k}"] = _chunked(image.scales[k], isa.scale_layout(config).size)
    if config.conv:
        arrays["geometry"] = _chunked(image.geometry, isa.geometry_layout(config).size)
    if config.table_slots:
        arrays["tables"] = np.asarray(image.tables, dtype=np.int64)
    np.savez(directory / "image.npz", **arrays)
    layer_arrays, layer_table = {}, []
    for index, layer in enumerate(network.layers):
        layer_arrays[f"codes_{index}"] = layer.codes
        layer_arrays[f"codebook_{index}"] = layer.codebook.astype(np.int64)
        layer_arrays[f"bias_{index}"] = layer.bias.astype(np.int64)
        layer_arrays.update(_requant_arrays(layer, index))
        if layer.table is not None:
            layer_arrays[f"table_{index}"] = layer.table
        if layer.input_scaling is not None:
            layer_arrays[f"input_scale_{index}"] = layer.input_scaling.scale
            layer_arrays[f"input_shift_{index}"] = layer.input_scaling.shift
        layer_table.append({
            "name": layer.name, "in_features": layer.in_features,
            "out_features": layer.out_features, "code_bits": layer.code_bits,
            "input_format": layer.input_format.to_json(),
            "weight_format": layer.weight_format.to_json(),
            "output_format": layer.output_format.to_json(),
            "bias_bits": layer.bias_bits, "relu": layer.relu, "nnz": layer.nnz,
            **({"requant": {"low": layer.requant.low, "high": layer.requant.high,
                            **({"leak": layer.requant.leak} if layer.requant.leak else {}),
                            **({"table": True} if layer.requant.table is not None else {})}}
               if layer.requant is not None else {}),
            **({"function": layer.function.to_json()} if layer.function is not None else {}),
            **({"conv": layer.geometry.to_json()} if isinstance(layer, QuantizedConv2d)
               else {}),
            **({"input_scaling": True} if layer.input_scaling is not None else {})})
    np.savez(directory / "network.npz", **layer_arrays)
    (directory / "engine.json").write_text(config.dumps() + "\n")
    if extra is not None:
        extra(directory)
    files = {path.name: _sha256(path) for path in sorted(directory.iterdir())
             if path.is_file() and path.name != "program.json"}
    manifest = {
        "format": FORMAT_NAME, "version": FORMAT_VERSION, "layer_count": image.layer_count,
        "board": program.board, "layers": layer_table, "files": files,
        **({"inputs": program.inputs.to_json()} if program.inputs is not None else {}),
        **({"output_order": [int(row) for row in program.output_order]}
           if program.output_order is not None else {}),
        **({"task": program.task} if program.task != "classification" else {}),
        **({"class_names": list(program.class_names)} if program.class_names else {})}
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    (directory / "program.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _manifest_digest(manifest: dict) -> str:
    """SHA-256 of program.json's own content (its other keys): an edit is told from a
    program an earlier sparseforge laid out otherwise."""
    content = {key: value for key, value in manifest.items() if key != "manifest_sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


REQUANT_ARRAYS = ("multiplier", "shift", "rounding", "half_even")


def _requant_arrays(layer: QuantizedLinear, index: int) -> dict[str, np.ndarray]:
    """A layer's per-row requantization as arrays (none for the power-of-two case)."""
    if layer.requant is None:
        return {}
    return {f"{name}_{index}": np.asarray(getattr(layer.requant, name), dtype=np.int64)
            for name in REQUANT_ARRAYS}


def _check_files(manifest: dict, directory: Path) -> None:
    """The folder's files are the ones its manifest was written with (a program saved by an
    earlier sparseforge lists none: nothing to check)."""
    files = manifest.get("files", {})
    if not isinstance(files, dict):
        raise ProgramError(f"{directory}/program.json: 'files' must be an object, not "
                           f"{type(files).__name__}")
    for name, digest in files.items():
        path = directory / str(name)
        if not path.is_file():
            if name in PROGRAM_FILES:
                raise ProgramError(f"{path} is missing")
            continue
        if _sha256(path) != digest:
            raise ProgramError(f"{path} is not the file this program was saved with (its "
                               f"SHA-256 differs): compile the program again")


# ---- loading and validating -------------------------------------------------------------------

def load_program(directory) -> Program:
    """Read and validate a program directory written by :meth:`Program.save`."""
    directory = Path(directory)
    manifest_path = directory / "program.json"
    if not manifest_path.is_file():
        raise ProgramError(f"{directory} is not a compiled program (no program.json)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProgramError(f"{manifest_path}: unreadable manifest: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        found = manifest.get("format") if isinstance(manifest, dict) else manifest
        raise ProgramError(f"{manifest_path}: 'format' is {found!r}, not {FORMAT_NAME!r}")
    if manifest.get("version") != FORMAT_VERSION:
        raise ProgramError(f"{manifest_path}: format version {manifest.get('version')!r} is "
                           f"not supported (this sparseforge reads version {FORMAT_VERSION})")
    _check_files(manifest, directory)
    try:
        config = EngineConfig.from_json(json.loads((directory / "engine.json").read_text()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProgramError(f"{directory}/engine.json: unreadable: {error}") from error
    except (TypeError, ValueError) as error:
        raise ProgramError(f"{directory}/engine.json: {error}") from error
    arrays = _load_npz(directory / "image.npz")
    network = _network_from(manifest, _load_npz(directory / "network.npz"), directory)
    image = _image_from(config, arrays, manifest, directory)
    output_order = _output_order_from(manifest, network, config, manifest_path)
    try:
        validate_image(image, output_network(network, output_order),
                       where=f"{directory}/image.npz")
    except ProgramError as error:
        if not manifest.get("files"):
            raise
        saved = manifest.get("manifest_sha256")
        if saved is not None and saved != _manifest_digest(manifest):
            raise ProgramError(f"{error}\n{manifest_path} was edited after it was saved (its "
                               f"digest differs): compile the model again (sparseforge "
                               f"compile MODEL.sfm -o {directory})") from None
        # Its files are the ones it was saved with: the compiler that wrote them laid the
        # program out by other rules than this one's (an earlier sparseforge).
        raise ProgramError(f"{error}\n{directory} is as it was saved, so an earlier "
                           f"sparseforge compiled it: compile the model again (sparseforge "
                           f"compile MODEL.sfm -o {directory})") from None
    board = manifest.get("board")
    task = manifest.get("task", "classification")
    if task not in ("classification", "regression"):
        raise ProgramError(f"{manifest_path}: 'task' must be \"classification\" or "
                           f"\"regression\", not {task!r}")
    class_names = manifest.get("class_names")
    if class_names is not None and not _class_names_fit(class_names, network):
        raise ProgramError(f"{manifest_path}: 'class_names' must name each of the model's "
                           f"{network.layers[-1].out_features} classes once, as strings")
    return Program(config, image, network, board if isinstance(board, str) else None,
                   _inputs_from(manifest, network, manifest_path), output_order, task,
                   None if class_names is None else tuple(class_names))


def _task_of(model) -> str:
    """The compressed model's task (its provenance's ``config``); a bare network's or an
    imported model's: classification."""
    provenance = getattr(model, "provenance", None)
    config = provenance.get("config") if isinstance(provenance, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    return task if task in ("classification", "regression") else "classification"


def _class_names_of(model, network: QuantizedNetwork) -> tuple[str, ...] | None:
    """The classes' names the compressed model keeps (its provenance's ``class_names``, from
    a table whose labels were names), or None."""
    provenance = getattr(model, "provenance", None)
    names = provenance.get("class_names") if isinstance(provenance, dict) else None
    return tuple(names) if names is not None and _class_names_fit(names, network) else None


def _class_names_fit(names, network: QuantizedNetwork) -> bool:
    return (isinstance(names, list) and all(isinstance(name, str) for name in names)
            and len(set(names)) == len(names) == network.layers[-1].out_features)


def _output_order_from(manifest: dict, network: QuantizedNetwork, config: EngineConfig,
                       where: Path) -> np.ndarray | None:
    """The manifest's placement of the last layer's rows (absent: the network's order),
    checked to be a permutation of them (and not of a convolution's, which conv mode lays
    out)."""
    if "output_order" not in manifest:
        return None
    order = manifest["output_order"]
    outputs = network.layers[-1].out_features
    if (not isinstance(order, list) or not all(type(row) is int for row in order)
            or sorted(order) != list(range(outputs))):
        raise ProgramError(f"{where}: 'output_order' must list each of the last layer's "
                           f"{outputs} rows once (row numbers 0..{outputs - 1})")
    if config.conv:
        raise ProgramError(f"{where}: 'output_order' is given for a conv-mode program, whose "
                           f"outputs the lowering lays out")
    return np.array(order, dtype=np.int64)


def _inputs_from(manifest: dict, network: QuantizedNetwork, where: Path
                 ) -> InputSelection | None:
    """The manifest's input selection (absent: the network takes every input), checked
    against the network's first layer."""
    if "inputs" not in manifest:
        return None
    try:
        selection = InputSelection.from_json(manifest["inputs"])
    except (TypeError, ValueError) as error:
        raise ProgramError(f"{where}: 'inputs' {error}") from None
    if len(selection.columns) != network.layers[0].in_features:
        raise ProgramError(f"{where}: 'inputs' selects {len(selection.columns)} of the model's "
                           f"{selection.features} inputs, but the network takes "
                           f"{network.layers[0].in_features}")
    return selection


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as saved:
            return {key: saved[key] for key in saved.files}
    except FileNotFoundError:
        raise ProgramError(f"{path} is missing") from None
    except Exception as error:     # zipfile.BadZipFile, ValueError (pickled objects), EOFError
        raise ProgramError(f"{path} cannot be read (truncated, not .npz, or holding pickled "
                           f"objects): {type(error).__name__}: {error}") from error


def _floats(arrays: dict, key: str, where: str) -> np.ndarray:
    """A 1-D float array from a loaded .npz, or a ProgramError naming what is wrong with it."""
    if key not in arrays:
        raise ProgramError(f"{where} lacks the array {key!r}")
    array = arrays[key]
    if array.dtype.kind != "f" or array.ndim != 1 or not np.all(np.isfinite(array)):
        raise ProgramError(f"{where}: {key} must be 1-D finite floats, not {array.dtype} "
                           f"{array.shape}")
    return array


def _array(arrays: dict, key: str, where: str, *, ndim: int) -> np.ndarray:
    """An integer array from a loaded .npz, or a ProgramError naming what is wrong with it."""
    if key not in arrays:
        raise ProgramError(f"{where} lacks the array {key!r}")
    array = arrays[key]
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ProgramError(f"{where}: {key} holds NaN or infinite values")
    if array.dtype.kind not in "ui":
        raise ProgramError(f"{where}: {key} must hold integers, not {array.dtype}")
    if array.ndim != ndim:
        raise ProgramError(f"{where}: {key} must be {ndim}-D, not of shape {array.shape}")
    return array


def _function(entry: dict, index: int, directory: Path) -> Function | None:
    """A layer's activation function (``[name, [parameters]]``), refused naming the field."""
    if entry.get("function") is None:
        return None
    try:
        return Function.from_json(entry["function"])
    except ValueError as error:
        raise ProgramError(f"{directory}/program.json: layers[{index}].function: "
                           f"{error}") from None


def _network_from(manifest: dict, arrays: dict, directory: Path) -> QuantizedNetwork:
    where = f"{directory}/network.npz"
    table = manifest.get("layers")
    if not isinstance(table, list) or not table:
        raise ProgramError(f"{directory}/program.json: 'layers' must be a non-empty list")
    layers = []
    for index, entry in enumerate(table):
        _check_entry(entry, index, directory)
        codes = _array(arrays, f"codes_{index}", where, ndim=2)
        codebook = _array(arrays, f"codebook_{index}", where, ndim=1)
        bias = _array(arrays, f"bias_{index}", where, ndim=1)
        try:
            shape = (entry["out_features"], entry["in_features"])
            conv = {}
            if "conv" in entry:
                geometry = ConvGeometry.from_json(entry["conv"])
                if (geometry.out_size, geometry.in_size) != shape:
                    raise ProgramError(f"{directory}/program.json: layers[{index}]: "
                                       f"in_features and out_features are not its "
                                       f"convolution's maps ({geometry.in_size}, "
                                       f"{geometry.out_size})")
                conv = {"geometry": geometry}
                shape = (geometry.out_channels, geometry.patch_size)
            if codes.shape != shape:
                raise ProgramError(f"{where}: codes_{index} has shape {codes.shape}, the "
                                   f"manifest says {shape}")
            requant = None
            if "requant" in entry:
                rows = {name: _array(arrays, f"{name}_{index}", where, ndim=1)
                        for name in REQUANT_ARRAYS}
                requant = RowRequant(rows["multiplier"], rows["shift"], rows["rounding"],
                                     rows["half_even"] != 0, int(entry["requant"]["low"]),
                                     int(entry["requant"]["high"]),
                                     leak=int(entry["requant"].get("leak", 0)),
                                     table=(_array(arrays, f"table_{index}", where, ndim=1)
                                            if entry["requant"].get("table") is True else None))
            function = _function(entry, index, directory)
            scaling = None
            if entry.get("input_scaling") is True and index == 0:
                scaling = InputScaling(*(_floats(arrays, f"{kind}_0", where)
                                         for kind in ("input_scale", "input_shift")))
            elif "input_scaling" in entry:
                raise ProgramError(f"{directory}/program.json: layers[{index}].input_scaling "
                                   f"must be true, on the first layer only")
            layers.append((QuantizedConv2d if conv else QuantizedLinear)(
                name=str(entry["name"]), codes=codes, codebook=codebook.astype(np.int64),
                bias=bias.astype(np.int64), code_bits=int(entry["code_bits"]),
                input_format=format_from_json(entry["input_format"]),
                weight_format=FixedFormat.from_json(entry["weight_format"]),
                output_format=format_from_json(entry["output_format"]),
                bias_bits=int(entry["bias_bits"]), relu=bool(entry["relu"]), requant=requant,
                input_scaling=scaling, function=function, **conv))
        except (KeyError, TypeError) as error:
            raise ProgramError(f"{directory}/program.json: layer {index} lacks or mangles "
                               f"{error}") from None
        except ProgramError:
            raise
        except ValueError as error:
            raise ProgramError(f"{where}: {error}") from error
    try:
        return QuantizedNetwork(tuple(layers))
    except ValueError as error:
        raise ProgramError(f"{where}: {error}") from error


def _check_entry(entry, index: int, directory: Path) -> None:
    """A layer of the manifest, each field of its JSON type (``"relu": "false"`` is not
    false, and 4.7 is not a width), as the ``.sfm`` loader checks its own."""
    where = f"{directory}/program.json: layers[{index}]"
    if not isinstance(entry, dict):
        raise ProgramError(f"{where} must be an object, not {type(entry).__name__}")
    if not isinstance(entry.get("name"), str):
        raise ProgramError(f"{where}.name must be a string, not {entry.get('name')!r}")
    for key in ("in_features", "out_features", "code_bits", "bias_bits"):
        value = entry.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ProgramError(f"{where}.{key} must be a positive integer, not {value!r}")
    if not isinstance(entry.get("relu"), bool):
        raise ProgramError(f"{where}.relu must be true or false, not {entry.get('relu')!r}")
    requant = entry.get("requant", {})
    if not isinstance(requant, dict) or not all(
            isinstance(requant.get(key, 0), int) and not isinstance(requant.get(key, 0), bool)
            for key in ("low", "high", "leak")) or requant.get("table", True) is not True:
        raise ProgramError(f"{where}.requant must be an object of integers low, high (and "
                           f"leak), not {requant!r}")
    if not 0 <= requant.get("leak", 0) <= MAX_LEAK:
        raise ProgramError(f"{where}.requant.leak must be from 0 to {MAX_LEAK}, not "
                           f"{requant['leak']}")


def _image_from(config: EngineConfig, arrays: dict, manifest: dict, directory: Path) -> Image:
    where = f"{directory}/image.npz"
    words = {}
    for key, layout in (("occupancy", isa.occupancy_layout(config)),
                        ("descriptors", isa.descriptor_layout(config))):
        chunked = _array(arrays, key, where, ndim=2)
        if chunked.shape[1] != bus.chunks_of(layout.size):
            raise ProgramError(f"{where}: {key} has {chunked.shape[1]} chunks per word, a "
                               f"{layout.size}-bit word takes {bus.chunks_of(layout.size)}")
        words[key] = _unchunked(chunked)
    layer_count = manifest.get("layer_count")
    if not isinstance(layer_count, int) or isinstance(layer_count, bool):
        raise ProgramError(f"{directory}/program.json: layer_count must be an integer, not "
                           f"{layer_count!r}")
    if config.conv:
        chunked = _array(arrays, "geometry", where, ndim=2)
        if chunked.shape[1] != bus.chunks_of(isa.geometry_layout(config).size):
            raise ProgramError(f"{where}: geometry has {chunked.shape[1]} chunks per word, a "
                               f"{isa.geometry_layout(config).size}-bit word takes "
                               f"{bus.chunks_of(isa.geometry_layout(config).size)}")
        words["geometry"] = _unchunked(chunked)
    return Image(
        config=config,
        entries=tuple(_array(arrays, f"entries_{k}", where, ndim=1) for k in range(config.pes)),
        pointers=tuple(_array(arrays, f"pointers_{k}", where, ndim=1)
                       for k in range(config.pes)),
        biases=tuple(_array(arrays, f"biases_{k}", where, ndim=1) for k in range(config.pes)),
        codebook=_array(arrays, "codebook", where, ndim=2),
        occupancy=words["occupancy"], descriptors=words["descriptors"],
        layer_count=layer_count, scales=_scales_from(config, arrays, where),
        geometry=words.get("geometry"),
        tables=_array(arrays, "tables", where, ndim=2) if config.table_slots else None)


def _scales_from(config: EngineConfig, arrays: dict, where: str):
    if not config.row_scales:
        return None
    chunks = bus.chunks_of(isa.scale_layout(config).size)
    scales = []
    for k in range(config.pes):
        chunked = _array(arrays, f"scales_{k}", where, ndim=2)
        if chunked.shape[1] != chunks:
            raise ProgramError(f"{where}: scales_{k} has {chunked.shape[1]} chunks per word, "
                               f"a scale word takes {chunks}")
        scales.append(_unchunked(chunked))
    return tuple(scales)


def validate_image(image: Image, network: QuantizedNetwork, *, where: str = "image") -> None:
    """Check ``image`` against its configuration and the network it must encode; raise
    :class:`ProgramError` naming the first field that is wrong (and the value)."""
    config = image.config
    try:
        configure.fit(network, config)
    except configure.DoesNotFit as error:
        raise ProgramError(f"{where}: {error}") from None
    layers = (lower(network, config.pes, config.scan_lanes).engine.layers if config.conv
              else network.layers)
    if image.layer_count != len(layers):
        raise ProgramError(f"{where}: layer_count is {image.layer_count}, the network has "
                           f"{len(layers)} layers")
    pointer_depth = sum(layer.in_features + 1 for layer in layers)
    bias_depth = sum(ceil_div(layer.out_features, config.pes) for layer in layers)
    occupancy_depth = sum(ceil_div(layer.in_features, config.scan_lanes) for layer in layers)
    expected_shapes = {"codebook": (len(layers), config.codebook_size),
                       "occupancy": (occupancy_depth,), "descriptors": (len(layers),)}
    for name, shape in expected_shapes.items():
        if np.shape(getattr(image, name)) != shape:
            raise ProgramError(f"{where}: {name} has shape {np.shape(getattr(image, name))}, "
                               f"expected {shape}")
    for name in ("entries", "pointers", "biases"):
        if len(getattr(image, name)) != config.pes:
            raise ProgramError(f"{where}: {name} has {len(getattr(image, name))} PEs, the "
                               f"engine {config.pes}")
    entry = isa.entry_layout(config)
    for k in range(config.pes):
        pointers, entries = np.asarray(image.pointers[k]), np.asarray(image.entries[k])
        if pointers.shape != (pointer_depth,):
            raise ProgramError(f"{where}: pointers_{k} has shape {pointers.shape}, expected "
                               f"({pointer_depth},)")
        if image.biases[k].shape != (bias_depth,):
            raise ProgramError(f"{where}: biases_{k} has shape {image.biases[k].shape}, "
                               f"expected ({bias_depth},)")
        if len(entries) > config.entry_depth:
            raise ProgramError(f"{where}: entries_{k} holds {len(entries)} entries, the "
                               f"engine's entry memory {config.entry_depth}")
        outside = (entries < 0) | (entries >= (1 << entry.size))
        if np.any(outside):
            bad = int(np.argmax(outside))
            raise ProgramError(f"{where}: entries_{k}[{bad}] = {int(entries[bad])} does not "
                               f"fit a {entry.size}-bit entry (code_bits {config.code_bits})")
        steps = np.diff(pointers)
        if np.any(steps < 0):
            bad = int(np.argmax(steps < 0))
            raise ProgramError(f"{where}: pointers_{k} decrease at index {bad + 1} "
                               f"({int(pointers[bad])} -> {int(pointers[bad + 1])})")
        if pointers.size and (pointers.min() < 0 or pointers.max() > len(entries)):
            raise ProgramError(f"{where}: pointers_{k} reach {int(pointers.max())}, beyond "
                               f"its {len(entries)} entries (entry_depth "
                               f"{config.entry_depth})")
        fields = isa.unpack(entry, entries.astype(np.uint64))
        bad_padding = (fields["code"] == 0) & (fields["zero_run"] != config.max_zero_run)
        if np.any(bad_padding):
            bad = int(np.argmax(bad_padding))
            raise ProgramError(f"{where}: entries_{k}[{bad}] has code 0 and zero_run "
                               f"{int(fields['zero_run'][bad])}; a padding entry's zero_run "
                               f"is {config.max_zero_run}")
    low, high = -(1 << (config.coef_bits - 1)), (1 << (config.coef_bits - 1)) - 1
    codebook = np.asarray(image.codebook)
    if codebook.size and (codebook.min() < low or codebook.max() > high):
        raise ProgramError(f"{where}: codebook values {int(codebook.min())} .. "
                           f"{int(codebook.max())} exceed {config.coef_bits} bits")
    if np.any(codebook[:, 0] != 0):
        raise ProgramError(f"{where}: codebook[l, 0] must be 0 (the pruned weight) in every "
                           f"layer, not {codebook[:, 0].tolist()}")
    for index, (layer, base) in enumerate(zip(layers, _pointer_bases(layers, config))):
        try:
            codes = decode_layer(_layer_slices(image, base, layer.in_features),
                                 layer.out_features)
        except ValueError as error:
            raise ProgramError(f"{where}: layer {index} ({layer.name}): {error}") from None
        if not np.array_equal(codes, layer.codes):
            i, j = np.argwhere(codes != layer.codes)[0]
            raise ProgramError(f"{where}: layer {index} ({layer.name}) decodes to code "
                               f"{codes[i, j]} at ({i}, {j}); the network has "
                               f"{layer.codes[i, j]}")
    _compare(image, pack_image(config, network), where)


def _compare(image: Image, expected: Image, where: str) -> None:
    """Field by field equality with the canonical image of the network."""
    for name in ("codebook", "occupancy", "descriptors") + (
            ("geometry",) if image.config.conv else ()) + (
            ("tables",) if image.config.table_slots else ()):
        got, want = getattr(image, name), getattr(expected, name)
        if np.shape(got) != np.shape(want):
            raise ProgramError(f"{where}: {name} has shape {np.shape(got)}, the network's "
                               f"encoding {np.shape(want)}")
        differ = [i for i, (a, b) in enumerate(zip(np.ravel(got), np.ravel(want)))
                  if int(a) != int(b)]
        if differ:
            raise ProgramError(f"{where}: {name} differs from the network's encoding at flat "
                               f"index {differ[0]} ({int(np.ravel(got)[differ[0]])}, expected "
                               f"{int(np.ravel(want)[differ[0]])})")
    names = ("entries", "pointers", "biases") + (("scales",) if image.config.row_scales else ())
    for name in names:
        for k, (got, want) in enumerate(zip(getattr(image, name), getattr(expected, name))):
            got = np.array([int(v) for v in got], dtype=object)
            want = np.array([int(v) for v in want], dtype=object)
            if got.shape != want.shape or not np.array_equal(got, want):
                bad = (int(np.argmax(got != want)) if got.shape == want.shape
                       else min(len(got), len(want)))
                raise ProgramError(f"{where}: {name}_{k} differs from the network's encoding "
                                   f"at index {bad}")

