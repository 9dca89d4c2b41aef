"""The compressed model and its file (``.sfm``).

A ``.sfm`` file is a zip archive of two members, never a pickle:

* ``manifest.json``: format name and version, the layer list (name, shape, code width, ReLU,
  fixed-point formats, bias width, the integer codebook, the nonzero count, the names of the
  layer's arrays; a convolution's ``conv``: its geometry, ``compiler/conv.py``, its arrays then
  being its kernel matrix's, out_channels x in_channels * kh * kw), the report figures and the
  provenance (configuration, data sizes, per-layer sparsities);
* ``arrays.npz``: per layer ``codes_<i>`` (uint8, out x in, 0 = pruned), ``bias_<i>`` (int64, at
  the accumulator's scale), ``mask_<i>`` (bool, the pruning mask), ``float_weight_<i>`` and
  ``float_bias_<i>`` (float64, the pruned and shared float layer); optionally
  ``pruned_weight_<i>`` (float64, the pruned weights before sharing, for the report's
  before/after histograms; all layers or none); read with ``allow_pickle=False``.

Writing goes to a temporary file in the target's folder renamed into place, so a failure leaves
nothing half-written.  Loading checks every field (shapes, dtypes, NaN/Inf, code ranges,
formats, the codebook, the nonzero counts, masks against codes, and the report's storage figures
against the arrays) and refuses a bad file with a :class:`CompressedModelError` naming the
field and the value.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from ..conv import ConvGeometry
from ..errors import InputError, no_such_file
from ..activations import Function
from ..ir import (
    Conv2d,
    InputScaling,
    Linear,
    Network,
    QuantizedConv2d,
    QuantizedLinear,
    QuantizedNetwork,
    RowRequant,
)
from ..numerics import FixedFormat, format_from_json
from ..outputs import umask_mode
from .accounting import CompressionReport, account

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CompressedModel",
    "CompressedModelError",
    "load_compressed",
]

FORMAT_VERSION = 1
FORMAT_NAME = "sparseforge-compressed"
# What a .sfm may unpack to: arrays of codes, masks and floats compress a few times at most,
# so this many times the file plus a floor for small files is far above any real model.
MAX_EXPANSION = 64
MAX_UNPACKED_FLOOR = 16 << 20
ARRAY_KINDS = ("codes", "bias", "mask", "float_weight", "float_bias")
# Arrays a file may hold for every layer or for none (older files lack them).
OPTIONAL_KINDS = ("pruned_weight",)
# Arrays of a layer with its own per-row requantization (an imported model's; the manifest's
# layer then has "requant": {"low", "high"}).
REQUANT_KINDS = ("multiplier", "shift", "rounding", "half_even")
# The inputs' scaling (ir.InputScaling), the first layer's: the host applies it.
SCALING_KINDS = ("input_scale", "input_shift")
# The storage figures a loaded report must reproduce from the arrays.
CHECKED_FIGURES = ("weights", "nnz", "padding", "code_bits", "bias_bits", "dense_bits",
                   "compressed_bits", "huffman_bits", "pointer_bits")


class CompressedModelError(InputError):
    """A compressed model file that cannot be right; the message names the field."""


@dataclass(frozen=True, eq=False)
class CompressedModel:
    """The compression stage's output.

    ``network``: the integer network the compiler lowers.  ``float_network``: the same pruned
    and shared weights in float, before activation quantization (for comparisons).
    ``report``: the accounting and accuracies.  ``provenance``: how it was made (JSON-able).
    ``masks``: the pruning masks (True = kept), by default where either network has a nonzero
    weight.  ``pruned_weights``: the float weights after pruning and before sharing (zero where
    pruned), or None; only the report reads them.
    """
    network: QuantizedNetwork
    float_network: Network
    report: CompressionReport
    provenance: dict = field(default_factory=dict)
    masks: tuple[np.ndarray, ...] | None = None
    pruned_weights: tuple[np.ndarray, ...] | None = None

    def __post_init__(self):
        if len(self.network.layers) != len(self.float_network.layers):
            raise ValueError(f"the integer network has {len(self.network.layers)} layers, the "
                             f"float network {len(self.float_network.layers)}")
        for q, f in zip(self.network.layers, self.float_network.layers):
            if q.codes.shape != f.weight.shape or q.name != f.name:
                raise ValueError(f"integer layer {q.name} {q.codes.shape} does not match float "
                                 f"layer {f.name} {f.weight.shape}")
        if self.masks is None:
            object.__setattr__(self, "masks", tuple(
                (q.codes != 0) | (f.weight != 0)
                for q, f in zip(self.network.layers, self.float_network.layers)))
        for layer, mask in zip(self.network.layers, self.masks):
            if mask.shape != layer.codes.shape:
                raise ValueError(f"layer {layer.name}: mask shape {mask.shape} is not "
                                 f"{layer.codes.shape}")
        if self.pruned_weights is not None:
            if len(self.pruned_weights) != len(self.network.layers):
                raise ValueError(f"pruned_weights has {len(self.pruned_weights)} arrays for "
                                 f"{len(self.network.layers)} layers")
            for layer, weight in zip(self.network.layers, self.pruned_weights):
                if np.shape(weight) != layer.codes.shape:
                    raise ValueError(f"layer {layer.name}: pruned weight shape "
                                     f"{np.shape(weight)} is not {layer.codes.shape}")

    def __repr__(self) -> str:
        # The arrays would make a repr of many kilobytes: the shape and the figures instead.
        layers = self.network.layers
        widths = "-".join(str(n) for n in [layers[0].in_features]
                          + [layer.out_features for layer in layers])
        report = self.report
        return (f"<CompressedModel {widths}: {100 * report.sparsity:.1f}% pruned, "
                f"{layers[0].code_bits}-bit codes, {layers[0].input_format.bits}-bit "
                f"activations, {report.compression_ratio:.1f}x smaller"
                + ("" if report.accuracy_quantized is None else
                   f", R² {report.accuracy_quantized:.4f} fixed point" if report.metric == "r2"
                   else f", {100 * report.accuracy_quantized:.2f}% fixed point") + ">")

    def quantize_input(self, x) -> np.ndarray:
        """Float inputs (samples x features) as the integers the engine takes."""
        return self.network.quantize_input(x)

    def predict(self, x) -> np.ndarray:
        """Integer outputs for float inputs, with the hardware's arithmetic."""
        return self.network.forward(self.network.quantize_input(x))

    def dequantize(self, outputs) -> np.ndarray:
        """Integer outputs of the network (or the engine) as float logits."""
        return self.network.dequantize_output(outputs)

    def accuracy(self, x, y) -> float:
        """Top-1 accuracy of the integer network on float inputs ``x`` and labels ``y``."""
        return float(np.mean(self.predict(x).argmax(axis=1) == np.asarray(y)))

    @property
    def sparsity(self) -> float:
        return self.report.sparsity

    # ---- the file ------------------------------------------------------------------------------

    def manifest(self) -> dict:
        """The JSON manifest of this model's ``.sfm`` file."""
        layers = []
        for index, (layer, shared) in enumerate(zip(self.network.layers,
                                                    self.float_network.layers)):
            layers.append({
                "name": layer.name, "in_features": layer.in_features,
                "out_features": layer.out_features, "code_bits": layer.code_bits,
                "relu": layer.relu, "bias_bits": layer.bias_bits,
                "input_format": layer.input_format.to_json(),
                "weight_format": layer.weight_format.to_json(),
                "output_format": layer.output_format.to_json(),
                "codebook": [int(v) for v in layer.codebook], "nnz": layer.nnz,
                "arrays": {kind: f"{kind}_{index}" for kind in self._array_kinds()
                           + (REQUANT_KINDS if layer.requant is not None else ())},
                **({"requant": {"low": layer.requant.low, "high": layer.requant.high,
                                **({"leak": layer.requant.leak} if layer.requant.leak
                                   else {}),
                                **({"table": True} if layer.requant.table is not None
                                   else {})}}
                   if layer.requant is not None else {}),
                **({"function": shared.function.to_json()}
                   if shared.function is not None else {}),
                **({"clamp": list(shared.clamp)} if shared.clamp is not None else {}),
                **({"input_scaling": True} if layer.input_scaling is not None else {}),
                **({"leak": shared.leak} if shared.leak else {}),
                **({"conv": layer.geometry.to_json()}
                   if isinstance(layer, QuantizedConv2d) else {})})
        return {"format": FORMAT_NAME, "version": FORMAT_VERSION,
                "written_by": f"sparseforge {metadata.version('sparseforge')}", "layers": layers,
                "report": self.report.to_json(), "provenance": self.provenance}

    def _array_kinds(self) -> tuple[str, ...]:
        return ARRAY_KINDS + (OPTIONAL_KINDS if self.pruned_weights is not None else ())

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays of this model's ``.sfm`` file, by name."""
        arrays = {}
        for index, (layer, shared, mask) in enumerate(zip(
                self.network.layers, self.float_network.layers, self.masks)):
            arrays[f"codes_{index}"] = np.asarray(layer.codes, dtype=np.uint8)
            arrays[f"bias_{index}"] = np.asarray(layer.bias, dtype=np.int64)
            arrays[f"mask_{index}"] = np.asarray(mask, dtype=bool)
            arrays[f"float_weight_{index}"] = np.asarray(shared.weight, dtype=np.float64)
            arrays[f"float_bias_{index}"] = np.asarray(shared.bias, dtype=np.float64)
            if layer.input_scaling is not None:
                arrays[f"input_scale_{index}"] = layer.input_scaling.scale
                arrays[f"input_shift_{index}"] = layer.input_scaling.shift
            if self.pruned_weights is not None:
                arrays[f"pruned_weight_{index}"] = np.asarray(self.pruned_weights[index],
                                                              dtype=np.float64)
            if layer.requant is not None:
                for kind in REQUANT_KINDS:
                    arrays[f"{kind}_{index}"] = np.asarray(getattr(layer.requant, kind),
                                                           dtype=np.int64)
                if layer.requant.table is not None:
                    arrays[f"table_{index}"] = layer.requant.table
        return arrays

    def save(self, path) -> Path:
        """Write the ``.sfm`` file atomically (temporary file, then rename); returns its path."""
        text = os.fspath(path)
        path = Path(path)
        if path.is_dir() or text.endswith(tuple(sep for sep in (os.sep, os.altsep) if sep)):
            raise ValueError(f"{text} is a folder; give a file name such as "
                             f"{path / 'model.sfm'}")
        buffer = io.BytesIO()
        np.savez(buffer, **self.arrays())
        content = self.manifest()
        # Of the manifest as it will be read back (JSON turns tuples to lists, keys to text).
        content["content_sha256"] = _content_digest(
            json.loads(json.dumps(content, allow_nan=False)), buffer.getvalue())
        manifest = json.dumps(content, indent=2, allow_nan=False)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise ValueError(f"cannot write {path}: a file stands where a folder of its path "
                             f"should be") from None
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                                 dir=path.parent)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
                    archive.writestr("manifest.json", manifest)
                    archive.writestr("arrays.npz", buffer.getvalue())
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, umask_mode(0o666))
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path


def _content_digest(manifest: dict, arrays_bytes: bytes) -> str:
    """SHA-256 of a ``.sfm``'s manifest (its other keys) and its arrays member, as written."""
    content = {key: value for key, value in manifest.items() if key != "content_sha256"}
    hashed = hashlib.sha256(json.dumps(content, sort_keys=True, allow_nan=False).encode())
    hashed.update(arrays_bytes)
    return hashed.hexdigest()


def load_compressed(path) -> CompressedModel:
    """Read and validate a ``.sfm`` file; a bad one raises :class:`CompressedModelError`."""
    path = Path(path)
    if not path.is_file():
        raise CompressedModelError(no_such_file(path, "compressed model"))
    # A few kilobytes can declare gigabytes (a "decompression bomb"): what the archive says
    # it unpacks to is checked before anything is unpacked.
    limit = MAX_EXPANSION * path.stat().st_size + MAX_UNPACKED_FLOOR
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            for member in ("manifest.json", "arrays.npz"):
                if member not in names:
                    raise CompressedModelError(f"{path}: the archive lacks {member} (it holds "
                                               f"{sorted(names)})")
            _check_unpacked(archive, limit, str(path))
            manifest_bytes = archive.read("manifest.json")
            arrays_bytes = archive.read("arrays.npz")
        with zipfile.ZipFile(io.BytesIO(arrays_bytes)) as inner:
            _check_unpacked(inner, limit, f"{path}: arrays.npz")
    except CompressedModelError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as error:
        kind = Path(path).suffix.lower()
        hint = (f"; a {kind} model is compressed first (sparseforge compress, or sparseforge "
                f"import for a quantized ONNX), which writes the .sfm"
                if kind in (".onnx", ".pt", ".pth") else "")
        raise CompressedModelError(f"{path}: not a readable .sfm file (truncated or not a "
                                   f"zip archive): {error}{hint}") from error
    try:
        manifest = json.loads(manifest_bytes)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CompressedModelError(f"{path}: manifest.json is not JSON: {error}") from error
    # Of a file of this format (another's is refused by its format or version, below).
    saved_digest = (manifest.get("content_sha256") if isinstance(manifest, dict)
                    and manifest.get("format") == FORMAT_NAME
                    and manifest.get("version") == FORMAT_VERSION else None)
    if saved_digest is not None and saved_digest != _content_digest(manifest, arrays_bytes):
        # A layer's ReLU or codebook edited in the manifest compiled without a word.
        raise CompressedModelError(f"{path} was changed after it was saved (the digest of its "
                                   f"manifest and arrays differs): compress the model again")
    try:
        with np.load(io.BytesIO(arrays_bytes), allow_pickle=False) as saved:
            arrays = {key: saved[key] for key in saved.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise CompressedModelError(f"{path}: arrays.npz is damaged or holds arrays that need "
                                   f"pickle (refused): {error}") from error
    return from_parts(manifest, arrays, str(path))


def _check_unpacked(archive: zipfile.ZipFile, limit: int, where: str) -> None:
    declared = sum(info.file_size for info in archive.infolist())
    if declared > limit:
        raise CompressedModelError(f"{where} unpacks to {declared:,} bytes, more than the "
                                   f"{limit:,} a compressed model of this size can hold: "
                                   f"refused (a damaged or hostile file)")


def from_parts(manifest, arrays: dict[str, np.ndarray], where: str = "model"
               ) -> CompressedModel:
    """A CompressedModel from a manifest and its arrays, every field checked."""
    def bad(message: str):
        return CompressedModelError(f"{where}: {message}")

    if not isinstance(manifest, dict):
        raise bad(f"the manifest must be a JSON object, not {type(manifest).__name__}")
    if manifest.get("format") != FORMAT_NAME:
        raise bad(f"manifest 'format' is {manifest.get('format')!r}, not {FORMAT_NAME!r}")
    if manifest.get("version") != FORMAT_VERSION:
        raise bad(f"manifest 'version' is {manifest.get('version')!r}; this sparseforge reads "
                  f"version {FORMAT_VERSION}")
    entries = manifest.get("layers")
    if not isinstance(entries, list) or not entries:
        raise bad(f"manifest 'layers' must be a non-empty list, not {entries!r}")
    expected = {f"{kind}_{i}" for i in range(len(entries)) for kind in ARRAY_KINDS}
    optional = {f"{kind}_{i}" for i in range(len(entries)) for kind in OPTIONAL_KINDS}
    if set(arrays) & optional:      # all layers or none
        expected |= optional
    expected |= {f"{kind}_{i}" for i, entry in enumerate(entries)
                 if isinstance(entry, dict) and "requant" in entry for kind in REQUANT_KINDS}
    expected |= {f"table_{i}" for i, entry in enumerate(entries)
                 if isinstance(entry, dict) and isinstance(entry.get("requant"), dict)
                 and entry["requant"].get("table")}
    if isinstance(entries[0], dict) and entries[0].get("input_scaling"):
        expected |= {f"{kind}_0" for kind in SCALING_KINDS}
    if set(arrays) != expected:
        extra, missing = sorted(set(arrays) - expected), sorted(expected - set(arrays))
        raise bad(f"arrays.npz does not match the manifest's {len(entries)} layers: "
                  f"{'missing ' + ', '.join(missing) if missing else ''}"
                  f"{'; ' if missing and extra else ''}"
                  f"{'unexpected ' + ', '.join(extra) if extra else ''}")
    provenance = manifest.get("provenance", {})
    if not isinstance(provenance, dict):
        raise bad(f"manifest 'provenance' must be an object, not {type(provenance).__name__}")
    quantized, shared, masks = [], [], []
    for index, entry in enumerate(entries):
        q, f, m = _layer(index, entry, arrays, bad)
        quantized.append(q)
        shared.append(f)
        masks.append(m)
    try:
        network = QuantizedNetwork(tuple(quantized))
        float_network = Network(tuple(shared), str(provenance.get("source", "")))
    except ValueError as error:
        raise bad(str(error)) from error
    report = _report(manifest.get("report"), network, bad)
    pruned = None
    if set(arrays) & optional:
        pruned = tuple(_pruned_weight(index, arrays, mask, layer.codes.shape, bad)
                       for index, (mask, layer) in enumerate(zip(masks, quantized)))
    return CompressedModel(network, float_network, report, provenance, tuple(masks), pruned)


def _pruned_weight(index: int, arrays, mask: np.ndarray, shape, bad) -> np.ndarray:
    key = f"pruned_weight_{index}"
    weight = arrays[key]
    if weight.dtype.kind != "f":
        raise bad(f"{key} has dtype {weight.dtype}, expected floats")
    if weight.shape != shape:
        raise bad(f"{key} has shape {weight.shape}, the manifest says {shape}")
    if not np.all(np.isfinite(weight)):
        raise bad(f"{key} holds NaN or infinite values")
    if np.any(weight[~mask] != 0):
        raise bad(f"{key} has nonzero weights where mask_{index} says pruned "
                  f"({int(np.sum(weight[~mask] != 0))} of them)")
    return weight


def _layer(index: int, entry, arrays, bad):
    if not isinstance(entry, dict):
        raise bad(f"layers[{index}] must be an object, not {type(entry).__name__}")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise bad(f"layers[{index}].name must be a non-empty string, not {name!r}")
    where = f"layers[{index}] ({name})"
    for key in ("in_features", "out_features", "code_bits", "bias_bits", "nnz"):
        value = entry.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise bad(f"{where}.{key} must be a non-negative integer, not {value!r}")
    if not isinstance(entry.get("relu"), bool):
        raise bad(f"{where}.relu must be true or false, not {entry.get('relu')!r}")
    formats = {}
    for key in ("input_format", "weight_format", "output_format"):
        try:
            formats[key] = (FixedFormat.from_json(entry[key]) if key == "weight_format"
                            else format_from_json(entry[key]))
        except (KeyError, TypeError, ValueError) as error:
            raise bad(f"{where}.{key} is not a fixed-point format ({entry.get(key)!r}): "
                      f"{error}") from None
    shape = (entry["out_features"], entry["in_features"])
    geometry = None
    if "conv" in entry:
        try:
            geometry = ConvGeometry.from_json(entry["conv"])
        except (TypeError, ValueError) as error:
            raise bad(f"{where}.conv is not a convolution's geometry ({entry['conv']!r}): "
                      f"{error}") from None
        if (geometry.in_size, geometry.out_size) != shape[::-1]:
            raise bad(f"{where}: in_features {shape[1]} and out_features {shape[0]} are not "
                      f"the convolution's maps, {geometry.in_size} and {geometry.out_size}")
        shape = (geometry.out_channels, geometry.patch_size)      # the kernel matrix
    codes, bias, mask = (arrays[f"{k}_{index}"] for k in ("codes", "bias", "mask"))
    weight, float_bias = arrays[f"float_weight_{index}"], arrays[f"float_bias_{index}"]
    for key, array, kind, want in ((f"codes_{index}", codes, "u", shape),
                                   (f"bias_{index}", bias, "iu", shape[:1]),
                                   (f"mask_{index}", mask, "b", shape),
                                   (f"float_weight_{index}", weight, "f", shape),
                                   (f"float_bias_{index}", float_bias, "f", shape[:1])):
        if array.dtype.kind not in kind:
            raise bad(f"{key} has dtype {array.dtype}, expected {_kind_name(kind)}")
        if array.shape != want:
            raise bad(f"{key} has shape {array.shape}, the manifest says {want} for {where}")
        if kind == "f" and not np.all(np.isfinite(array)):
            raise bad(f"{key} holds NaN or infinite values (first at index "
                      f"{np.argwhere(~np.isfinite(array))[0].tolist()})")
    if codes.dtype != np.uint8:
        raise bad(f"codes_{index} has dtype {codes.dtype}, expected uint8")
    limit = 1 << entry["code_bits"]
    if codes.size and int(codes.max()) >= limit:
        raise bad(f"codes_{index} holds code {int(codes.max())}, out of range for "
                  f"{entry['code_bits']}-bit codes (at most {limit - 1})")
    codebook = entry.get("codebook")
    if (not isinstance(codebook, list)
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in codebook)):
        raise bad(f"{where}.codebook must be a list of integers, not {codebook!r}")
    coef_bits = formats["weight_format"].bits
    outside = [v for v in codebook if not -(1 << (coef_bits - 1)) <= v < 1 << (coef_bits - 1)]
    if outside:
        raise bad(f"{where}.codebook value {outside[0]} does not fit its {coef_bits}-bit "
                  f"weight format")
    if int(np.count_nonzero(codes)) != entry["nnz"]:
        raise bad(f"{where}.nnz is {entry['nnz']} but codes_{index} holds "
                  f"{int(np.count_nonzero(codes))} nonzeros")
    if np.any((codes != 0) & ~mask):
        raise bad(f"codes_{index} has nonzero codes where mask_{index} says pruned "
                  f"({int(np.sum((codes != 0) & ~mask))} of them)")
    if np.any(weight[~mask] != 0):
        raise bad(f"float_weight_{index} has nonzero weights where mask_{index} says pruned "
                  f"({int(np.sum(weight[~mask] != 0))} of them)")
    conv = {} if geometry is None else {"geometry": geometry}
    try:
        function = (None if entry.get("function") is None
                    else Function.from_json(entry["function"]))
    except ValueError as error:
        raise bad(f"{where}.function: {error}") from None
    scaling = None
    if entry.get("input_scaling"):
        scale, shift = (arrays[f"{kind}_{index}"] for kind in SCALING_KINDS)
        if scale.dtype.kind != "f" or shift.dtype.kind != "f" or scale.shape != shift.shape:
            raise bad(f"input_scale_{index} and input_shift_{index} must be floats of one "
                      f"shape, not {scale.dtype} {scale.shape} and {shift.dtype} {shift.shape}")
        try:
            scaling = InputScaling(scale, shift)
        except ValueError as error:
            raise bad(f"{where}: {error}") from None
    try:
        layer = (QuantizedConv2d if conv else QuantizedLinear)(
            name=name, codes=codes, codebook=np.asarray(codebook, dtype=np.int64),
            bias=bias.astype(np.int64), code_bits=entry["code_bits"],
            input_format=formats["input_format"], weight_format=formats["weight_format"],
            output_format=formats["output_format"], bias_bits=entry["bias_bits"],
            relu=entry["relu"], requant=_requant(index, entry, arrays, len(codes), bad),
            input_scaling=scaling, function=function, **conv)
        leak = entry.get("leak", 0)
        if not isinstance(leak, int) or isinstance(leak, bool):
            raise bad(f"{where}.leak must be an integer, not {leak!r}")
        # A table's outputs may all be >= 0 (a sigmoid's): the float layer has no ReLU then.
        shared = (Conv2d if conv else Linear)(name, weight, float_bias,
                                              entry["relu"] and function is None,
                                              clamp=_clamp(entry, bad), leak=leak,
                                              function=function, input_scaling=scaling, **conv)
    except ValueError as error:
        raise bad(f"{where}: {error}") from None
    return layer, shared, mask


def _clamp(entry: dict, bad) -> tuple | None:
    """A layer's float clamp (``[low, high]``, null an open side), or None."""
    if "clamp" not in entry:
        return None
    clamp = entry["clamp"]
    if not (isinstance(clamp, list) and len(clamp) == 2 and all(
            bound is None or (isinstance(bound, (int, float)) and not isinstance(bound, bool))
            for bound in clamp)):
        raise bad(f"layer {entry.get('name')!r}: clamp must be [low, high] (numbers or "
                  f"null), not {clamp!r}")
    return tuple(None if bound is None else float(bound) for bound in clamp)


def _requant(index: int, entry: dict, arrays, rows: int, bad) -> RowRequant | None:
    """A layer's per-row requantization from its arrays, or None (the power-of-two case):
    one value per row of its weight matrix (``rows``: a convolution's output channels)."""
    if "requant" not in entry:
        return None
    ranges = entry["requant"]
    if not (isinstance(ranges, dict) and all(isinstance(ranges.get(k), int)
                                             and not isinstance(ranges.get(k), bool)
                                             for k in ("low", "high"))
            and isinstance(ranges.get("leak", 0), int)):
        raise bad(f"layers[{index}].requant must be {{'low': int, 'high': int}} (and "
                  f"'leak': int), not {ranges!r}")
    values = {}
    for kind in REQUANT_KINDS:
        array = arrays[f"{kind}_{index}"]
        if array.dtype.kind not in "iub" or array.shape != (rows,):
            raise bad(f"{kind}_{index} must hold {rows} integers (one per row), not "
                      f"{array.dtype} {array.shape}")
        values[kind] = array
    table = None
    if ranges.get("table"):
        table = arrays[f"table_{index}"]
        if table.dtype.kind not in "iu" or table.ndim != 1:
            raise bad(f"table_{index} must hold integers, not {table.dtype} {table.shape}")
    return RowRequant(values["multiplier"].astype(np.int64), values["shift"].astype(np.int64),
                      values["rounding"].astype(np.int64), values["half_even"] != 0,
                      ranges["low"], ranges["high"], leak=ranges.get("leak", 0), table=table)


def _kind_name(kind: str) -> str:
    return {"u": "unsigned integers", "iu": "integers", "b": "booleans",
            "f": "floats"}[kind]


def _report(obj, network: QuantizedNetwork, bad) -> CompressionReport:
    if not isinstance(obj, dict):
        raise bad(f"manifest 'report' must be an object, not {type(obj).__name__}")
    try:
        stored = CompressionReport.from_json(obj)
    except (KeyError, TypeError, ValueError) as error:
        raise bad(f"manifest 'report' is malformed: {error}") from None
    recomputed = account(network, model_counts=[layer.model_counts for layer in stored.layers])
    if len(stored.layers) != len(recomputed.layers):
        raise bad(f"the report lists {len(stored.layers)} layers, the model has "
                  f"{len(recomputed.layers)}")
    for index, (saved, actual) in enumerate(zip(stored.layers, recomputed.layers)):
        for figure in CHECKED_FIGURES:
            if getattr(saved, figure) != getattr(actual, figure):
                raise bad(f"report.layers[{index}].{figure} is {getattr(saved, figure)} but the "
                          f"arrays give {getattr(actual, figure)}")
    return stored
