"""``sparseforge import MODEL.onnx``: a quantized model (QONNX, ONNX QDQ; Brevitas exports
either) in, with its own quantization kept, as a ``.sfm`` file for ``sparseforge compile``.

Every layer's output quantizer is reproduced exactly by a per-row integer multiplier, rounding
term and shift (the engine's per-row requantization); a quantizer that no multiplier of the
engine's width reproduces is refused, or with ``--approximate`` replaced by the nearest one,
whose worst-case error is printed.  The table lists per layer the weights' grid and scales,
the activations' integer ranges and scales, the sparsity and the requantization.

With ``--data DATA.npz`` (``x_test, y_test``, else ``x_val, y_val``, ``x_train, y_train`` or
``x, y``; the names in either case, ``X_test``), or a CSV table read as ``compress --data``
reads one: the accuracy of the imported integer network next to the reference executor's
(qonnx's for QONNX, onnxruntime for QDQ), and how many outputs differ from the executor's
after dequantization.  Samples (``x_train`` or the evaluation set) also calibrate a tensor the
model leaves unquantized (its input or its output), the only place the importer chooses a
quantizer.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from .common import (add_json_flag, check_writable, console_for, emit_json, fail, load_npz,
                     lowercase_keys, stderr_console)


def register(verbs) -> None:
    parser = verbs.add_parser("import", help="a quantized QONNX / ONNX QDQ model in (.sfm out)",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the quantized model (.onnx: QONNX or QDQ)")
    parser.add_argument("-o", "--output", default="build/model.sfm",
                        help="the .sfm file to write (default: build/model.sfm)")
    parser.add_argument("--data", help=".npz with x_test, y_test (or x_val, y_val; x_train, "
                                       "y_train; x, y), or a .csv table of features and "
                                       "labels, to compare accuracies")
    parser.add_argument("--task", choices=("classification", "regression"),
                        default="classification",
                        help="classification (default; a model of one output is a binary "
                             "classifier's logit, run as two classes) or regression (the "
                             "outputs are values)")
    parser.add_argument("--approximate", action="store_true",
                        help="approximate a quantizer no multiplier reproduces exactly "
                             "(prints the worst-case error) instead of refusing the model")
    add_json_flag(parser)
    parser.set_defaults(run=run)


def load_data(path: Path, regression: bool = False):
    """(calibration samples, evaluation samples, evaluation labels or None) from an .npz, or
    from a CSV table (its samples both; a regression's label column holds target values)."""
    from sparseforge.compiler.errors import InputError

    from .table import is_table, load_table

    if is_table(path):
        table = load_table(path, targets=regression)
        stderr_console().print(table.describe(path), highlight=False)
        x = _samples(table.x, str(path))
        return x, x, table.y
    arrays = lowercase_keys(load_npz(path))
    for name in ("test", "val", "train", ""):
        x_key, y_key = (f"x_{name}", f"y_{name}") if name else ("x", "y")
        if x_key in arrays:
            x = _samples(arrays[x_key], f"{path}: {x_key}")
            y = arrays.get(y_key)
            calibration = (_samples(arrays["x_train"], f"{path}: x_train")
                           if "x_train" in arrays else x)
            return calibration, x, y
    raise InputError(f"{path}: holds none of x_test, x_val, x_train, x (it has "
                     f"{', '.join(sorted(arrays)) or 'nothing'})")


def _samples(array, what: str) -> np.ndarray:
    """``array`` as samples x features of float64, refused unless it holds at least one
    sample of real numbers."""
    from sparseforge.compiler.errors import InputError
    from sparseforge.compiler.ir import check_finite

    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        raise InputError(f"{what} must hold real numbers, not {array.dtype} values")
    if array.ndim < 2 or len(array) == 0:
        raise InputError(f"{what} must hold at least one sample of features, not shape "
                         f"{array.shape}")
    array = array.reshape(len(array), -1).astype(np.float64)
    check_finite(array, f"{what} holds")
    return array


def run(args) -> int:
    import sparseforge as sf
    from sparseforge.compiler.compress.api import renumbering_hint
    from sparseforge.compiler.quantized.reference import compare, reference_outputs
    from sparseforge.sim.simulate import checked_labels

    console = console_for(args)
    start = time.perf_counter()
    try:
        check_writable(args.output)         # before the import's work, not after it
        calibration = x = y = None
        if args.data:
            calibration, x, y = load_data(Path(args.data), args.task == "regression")
        model = sf.load_quantized(args.model, calibration, approximate=args.approximate,
                                  task=args.task)
        # A binary classifier's logit runs as the second of two outputs (the first is 0).
        binary = model.provenance["import"]["binary_logit_as_two_classes"]
        figures = {}
        if x is not None:
            x = x.reshape(len(x), -1)
            if x.shape[1] != model.network.layers[0].in_features:
                return fail(f"{args.data}: samples have {x.shape[1]} features, the model "
                            f"takes {model.network.layers[0].in_features}")
            with console.status("running the model's reference executor..."):
                reference = reference_outputs(args.model, x)
            integers = model.predict(x)
            figures = {"samples": len(x), "outputs_compared": int(reference.size),
                       "mismatches": compare(model.network, reference,
                                             integers[:, 1:] if binary else integers)}
            if binary:
                reference = np.hstack([np.zeros_like(reference), reference])
            if y is not None and args.task == "regression":
                figures["accuracy_skipped"] = ("a regression's outputs are values: no "
                                               "accuracy over classes")
            elif y is not None:
                y = checked_labels(y, len(x), integers.shape[1])
                hint = renumbering_hint(reference.argmax(axis=1), y, reference.shape[1],
                                        "data's")
                if hint is not None:
                    stderr_console().print(f"warning: {hint}", highlight=False)
                figures["accuracy_imported"] = float(np.mean(integers.argmax(axis=1) == y))
                figures["accuracy_reference"] = float(np.mean(reference.argmax(axis=1) == y))
                # Saved with the model, as compress saves its own: the report reads them.
                model = dataclasses.replace(model, report=dataclasses.replace(
                    model.report, accuracy_quantized=figures["accuracy_imported"],
                    accuracy_float=float(np.mean(
                        model.float_network.forward(x).argmax(axis=1) == y)),
                    accuracy_data=Path(args.data).name))
        path = model.save(args.output)
    except (ValueError, TypeError) as error:
        return fail(str(error))
    seconds = time.perf_counter() - start
    payload = summary(model, figures)
    render(console, payload)
    console.print(f"wrote {path} in {seconds:.1f} s")
    emit_json(args, {**payload, "output": str(path), "seconds": round(seconds, 2)})
    return 0


def summary(model, figures: dict) -> dict:
    """The JSON object of ``--json``: the import's per-layer figures and the comparison."""
    details = model.provenance["import"]
    network = model.network
    return {
        "format": details["format"],
        "act_bits": network.act_bits,
        "input": details["input"],
        "layers": details["layers"],
        "sparsity": model.report.sparsity,
        "multiplier_bits": max(layer["multiplier_bits"] for layer in details["layers"]),
        "power_of_two": all(layer["power_of_two"] for layer in details["layers"]),
        "approximated": details["approximated"],
        "calibrated": details["calibrated"],
        **figures,
    }


def _range(pair) -> str:
    return f"{pair[0]}..{pair[1]}"


def render(console, payload: dict) -> None:
    from rich.table import Table

    table = Table(title=f"imported {payload['format'].upper()} model: "
                        f"{payload['act_bits']}-bit activations in the engine")
    for column in ("layer", "shape", "weights", "weight scale", "input", "output", "sparsity",
                   "requantization"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for layer in payload["layers"]:
        low, high = layer["weight_scale"]
        requant = ("power of two" if layer["power_of_two"]
                   else f"{layer['multiplier_bits']}-bit M, s {_range(layer['shifts'])}")
        if layer["approximated_rows"]:
            requant += f", {layer['approximated_rows']} rows approximated"
        table.add_row(
            layer["name"], "x".join(map(str, layer["shape"])),
            f"{layer['weight_bits']}-bit, {layer['weight_values']} values",
            f"{low:.3g}" if low == high else f"{low:.3g}..{high:.3g}",
            f"{_range(layer['input_range'])} x {layer['input_scale']:.4g}",
            f"{_range(layer['output_range'])} x {layer['output_scale']:.4g}",
            f"{100 * layer['sparsity']:.1f}%", requant)
    console.print(table)
    for row in payload["approximated"]:
        console.print(f"approximated: layer {row['layer']} row {row['row']}: worst-case error "
                      f"{row['error']} output step(s), at accumulator {row['at']}")
    for what in payload["calibrated"]:
        console.print(f"the model's {what} is not quantized: an 8-bit quantizer was chosen "
                      f"from the data")
    if "mismatches" in payload:
        why = ""
        if payload["mismatches"] and payload["calibrated"]:
            # The executor runs those tensors in float; the engine rounds them to the chosen
            # quantizer's grid, so outputs differ by design, not by a fault of the import.
            why = (f" (expected: the executor keeps the model's "
                   f"{' and '.join(payload['calibrated'])} in float, the engine rounds "
                   f"{'it' if len(payload['calibrated']) == 1 else 'them'} to the quantizer "
                   f"chosen above; compare the accuracies)")
        console.print(f"{payload['mismatches']} of {payload['outputs_compared']} outputs differ "
                      f"from the reference executor's on {payload['samples']} samples{why}")
    if "accuracy_skipped" in payload:
        console.print(f"accuracy: not computed ({payload['accuracy_skipped']})")
    if "accuracy_imported" in payload:
        console.print(f"accuracy: imported integer network "
                      f"{100 * payload['accuracy_imported']:.2f}%, reference executor "
                      f"{100 * payload['accuracy_reference']:.2f}%")
