"""The compressed model and its file (``.sfm``).

A ``.sfm`` file is a zip holding ``manifest.json`` (format version, layer list with formats,
the report, provenance) and ``arrays.npz`` (codes, codebooks, biases, and the float shared
weights), never a pickle: arrays load with ``allow_pickle=False``.  Writing goes to a temporary
file renamed into place, so a failure leaves nothing half-written.  Loading checks every field
(shapes, NaN/Inf, code ranges, formats) and refuses a bad file with a message naming it.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..ir import Linear, Network, QuantizedLinear, QuantizedNetwork
from ..numerics import FixedFormat
from .report import CompressionReport

__all__ = ["CompressedModel", "load_compressed", "CompressedModelError", "FORMAT_VERSION"]

FORMAT_VERSION = 1
FORMAT_NAME = "sparseforge-compressed"


class CompressedModelError(ValueError):
    """A compressed model file that cannot be right; the message names the field."""


@dataclass(frozen=True, eq=False)
class CompressedModel:
    """The compression stage's output: the integer network the compiler lowers, the float
    network with the same pruned and shared weights, the report, and how it was made."""
    network: QuantizedNetwork
    float_network: Network
    report: CompressionReport
    provenance: dict = field(default_factory=dict)

    def quantize_input(self, x) -> np.ndarray:
        return self.network.quantize_input(x)

    def predict(self, x) -> np.ndarray:
        """Integer outputs for float inputs, with the hardware's arithmetic."""
        return self.network.forward(self.network.quantize_input(x))

    def dequantize(self, outputs) -> np.ndarray:
        return self.network.dequantize_output(outputs)

    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {}
        layers = []
        for index, (layer, shared) in enumerate(zip(self.network.layers,
                                                    self.float_network.layers)):
            arrays[f"codes_{index}"] = layer.codes
            arrays[f"codebook_{index}"] = layer.codebook
            arrays[f"bias_{index}"] = layer.bias
            arrays[f"float_weight_{index}"] = shared.weight
            arrays[f"float_bias_{index}"] = shared.bias
            layers.append({
                "name": layer.name, "in_features": layer.in_features,
                "out_features": layer.out_features, "code_bits": layer.code_bits,
                "input_format": layer.input_format.to_json(),
                "weight_format": layer.weight_format.to_json(),
                "output_format": layer.output_format.to_json(),
                "bias_bits": layer.bias_bits, "relu": layer.relu, "nnz": layer.nnz})
        manifest = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "layers": layers,
                    "report": self.report.to_json(), "provenance": self.provenance}
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(descriptor, "wb") as handle, \
                    zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
                archive.writestr("manifest.json", json.dumps(manifest, indent=2))
                archive.writestr("arrays.npz", buffer.getvalue())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path


def load_compressed(path) -> CompressedModel:
    """Read and validate a ``.sfm`` file."""
    path = Path(path)
    if not path.is_file():
        raise CompressedModelError(f"{path}: no such compressed model file")
    try:
        with zipfile.ZipFile(path) as archive:
            manifest = json.loads(archive.read("manifest.json"))
            with np.load(io.BytesIO(archive.read("arrays.npz")), allow_pickle=False) as saved:
                arrays = {key: saved[key] for key in saved.files}
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise CompressedModelError(f"{path}: not a readable .sfm file (truncated or not a "
                                   f"zip): {error}") from error
    except KeyError as error:
        raise CompressedModelError(f"{path}: the file lacks {error}") from None
    except json.JSONDecodeError as error:
        raise CompressedModelError(f"{path}: manifest.json is not JSON: {error}") from error
    except ValueError as error:
        raise CompressedModelError(f"{path}: arrays.npz cannot be read without pickle or is "
                                   f"damaged: {error}") from error
    return _from_parts(manifest, arrays, path)


def _from_parts(manifest: dict, arrays: dict, path: Path) -> CompressedModel:
    where = f"{path}: manifest.json"
    if manifest.get("format") != FORMAT_NAME:
        raise CompressedModelError(f"{where}: 'format' is {manifest.get('format')!r}, not "
                                   f"{FORMAT_NAME!r}")
    if manifest.get("version") != FORMAT_VERSION:
        raise CompressedModelError(f"{where}: version {manifest.get('version')!r} is not "
                                   f"supported (this sparseforge reads {FORMAT_VERSION})")
    quantized, shared = [], []
    for index, entry in enumerate(manifest.get("layers") or []):
        name = f"layer {index} ({entry.get('name', '?')})"
        try:
            codes = arrays[f"codes_{index}"]
            expected = (entry["out_features"], entry["in_features"])
            for key in (f"codes_{index}", f"float_weight_{index}"):
                if arrays[key].shape != expected:
                    raise CompressedModelError(f"{path}: {key} has shape {arrays[key].shape}, "
                                               f"the manifest says {expected}")
            for key in (f"codebook_{index}", f"bias_{index}", f"float_weight_{index}",
                        f"float_bias_{index}"):
                if arrays[key].dtype.kind == "f" and not np.all(np.isfinite(arrays[key])):
                    raise CompressedModelError(f"{path}: {key} holds NaN or infinite values")
            quantized.append(QuantizedLinear(
                name=entry["name"], codes=codes,
                codebook=arrays[f"codebook_{index}"].astype(np.int64),
                bias=arrays[f"bias_{index}"].astype(np.int64), code_bits=entry["code_bits"],
                input_format=FixedFormat.from_json(entry["input_format"]),
                weight_format=FixedFormat.from_json(entry["weight_format"]),
                output_format=FixedFormat.from_json(entry["output_format"]),
                bias_bits=entry["bias_bits"], relu=bool(entry["relu"])))
            shared.append(Linear(entry["name"], arrays[f"float_weight_{index}"],
                                 arrays[f"float_bias_{index}"], bool(entry["relu"])))
        except KeyError as error:
            raise CompressedModelError(f"{path}: {name}: missing {error}") from None
        except (TypeError, ValueError) as error:
            if isinstance(error, CompressedModelError):
                raise
            raise CompressedModelError(f"{path}: {name}: {error}") from error
    if not quantized:
        raise CompressedModelError(f"{where}: 'layers' is empty")
    try:
        network = QuantizedNetwork(tuple(quantized))
        float_network = Network(tuple(shared))
        report = CompressionReport.from_json(manifest["report"])
    except (KeyError, TypeError, ValueError) as error:
        raise CompressedModelError(f"{path}: {error}") from error
    return CompressedModel(network, float_network, report, manifest.get("provenance", {}))
