"""A read model (``graph.Chain``) as the integer network the engine runs.

Per layer: the integer weights become a codebook (code 0 the zero weight, then the distinct
nonzero integers the layer uses) and codes; each row's real function from accumulator to
output integer is fitted exactly by a per-row requantization (``fit.py``); the layer's output
range is the integers its rows can produce.  The activation width of the network (the engine's
``act_bits``) is the widest signed width any activation tensor needs, the input included.  A
row whose output is the same for every accumulator it can reach gets zero weights (they cannot
matter) and its constant as bias.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..compress.accounting import account
from ..compress.model import CompressedModel
from ..errors import InputError
from ..ir import (Linear, Network, QuantizedConv2d, QuantizedLinear, QuantizedNetwork, RowRequant,
                  check_finite)
from ..numerics import FixedFormat, Rounding, ScaledFormat, signed_bits
from . import ops
from .fit import MAX_MULTIPLIER_BITS, RowFit, approximate_row, exact_function, fit_row
from .graph import Chain, LayerDraft, UnsupportedModel, read_chain

__all__ = ["ApproximatedRow", "ImportedLayer", "load_quantized", "network_from_chain"]

APPROXIMATE_MULTIPLIER_BITS = 16


@dataclass(frozen=True)
class ApproximatedRow:
    """A row no exact requantization reproduces, approximated: ``error`` output steps at
    worst, at accumulator ``at``."""
    layer: str
    row: int
    error: int
    at: int | None


@dataclass(frozen=True)
class ImportedLayer:
    """What the import report shows of a layer (JSON-able through ``to_json``)."""
    name: str
    nodes: tuple[str, ...]
    shape: tuple[int, int]
    weight_bits: int
    weight_values: int
    weight_scale: tuple[float, float]       # smallest and largest row scale
    input_scale: float
    input_range: tuple[int, int]
    output_scale: float
    output_range: tuple[int, int]
    output_bits: int
    output_signed: bool
    sparsity: float
    multiplier_bits: int
    shifts: tuple[int, int]
    power_of_two: bool
    approximated_rows: int

    def to_json(self) -> dict:
        return {"name": self.name, "nodes": list(self.nodes), "shape": list(self.shape),
                "weight_bits": self.weight_bits, "weight_values": self.weight_values,
                "weight_scale": list(self.weight_scale), "input_scale": self.input_scale,
                "input_range": list(self.input_range), "output_scale": self.output_scale,
                "output_range": list(self.output_range), "output_bits": self.output_bits,
                "output_signed": self.output_signed, "sparsity": self.sparsity,
                "multiplier_bits": self.multiplier_bits, "shifts": list(self.shifts),
                "power_of_two": self.power_of_two,
                "approximated_rows": self.approximated_rows}


# The most output steps an approximated row may be off: one or two are the multiplier's
# rounding; tens mean a function no requantization follows.
APPROXIMATION_LIMIT = 2


def load_quantized(path, calibration=None, *, approximate: bool = False,
                   task: str = "classification") -> CompressedModel:
    """A QONNX or ONNX QDQ model (Brevitas exports either) as a ``CompressedModel``, the model's
    own quantization kept: ``sf.compile``, ``sf.simulate`` and ``sf.build`` take it as they take
    ``sf.compress``'s.

    ``calibration``: input samples (or ``(X, y)``), used only where the model leaves a tensor
    unquantized (its input or its output: an 8-bit quantizer covering the samples' range is
    chosen, which the model does not have) and, with labels, for the report's accuracies.
    ``approximate``: a row whose quantizer no multiplier of the engine's width reproduces
    exactly gets the nearest one (its worst-case error is in ``provenance["import"]
    ["approximated"]`` and printed by ``sparseforge import``) instead of a refusal.
    ``task``: ``"classification"`` (a model of one output is a binary classifier's logit and
    runs as two outputs, ``(0, logit)``, as ``sf.compress`` runs one: the argmax is 1 where
    the logit is above 0) or ``"regression"`` (the outputs are values, kept as they are).
    """
    if task not in ("classification", "regression"):
        raise InputError(f"task must be \"classification\" or \"regression\", not {task!r}")
    if not isinstance(path, (str, os.PathLike)):
        if any(base.__module__.startswith("torch.nn") for base in type(path).__mro__):
            how = ("export it first: brevitas.export.export_qonnx(model, torch.randn(1, "
                   "inputs), 'm.onnx') for a Brevitas model; a float module goes to "
                   "sf.compress, which quantizes it")
        else:
            how = "save it first (onnx.save(model, 'm.onnx'))"
        raise InputError(f"load_quantized takes the path of an ONNX file, not a "
                         f"{type(path).__name__}: {how}")
    x, y = _calibration(calibration)
    chain = read_chain(path, x)
    if x is not None and x.shape[1] != chain.in_features:
        raise InputError(f"the samples have {x.shape[1]} features, the model takes "
                         f"{chain.in_features}")
    network, float_network, layers, approximated = network_from_chain(
        chain, calibration=x, approximate=approximate)
    binary = (task == "classification" and network.layers[-1].out_features == 1
              and not isinstance(network.layers[-1], QuantizedConv2d))
    if binary:
        network, float_network = logit_as_two_classes(network, float_network)
    report = account(network)
    accuracy_float = accuracy_quantized = None
    if y is not None and task == "classification":
        accuracy_quantized = float(np.mean(
            network.forward(network.quantize_input(x)).argmax(axis=1) == y))
        accuracy_float = float(np.mean(float_network.forward(x).argmax(axis=1) == y))
    report = type(report)(report.layers, accuracy_float, accuracy_quantized,
                          "calibration" if y is not None else "", None)
    provenance = {
        "source": str(path),
        "config": {"task": task},
        "import": {
            "format": chain.kind,
            "binary_logit_as_two_classes": binary,
            "input": network.input_format.to_json(),
            "layers": [layer.to_json() for layer in layers],
            "approximated": [{"layer": a.layer, "row": a.row, "error": a.error, "at": a.at}
                             for a in approximated],
            "calibrated": [what for what, done in
                           (("input", chain.input is not None
                             and "calibrated" in chain.input.quantizer.node),
                            ("output", chain.layers[-1].final is None
                             or "calibrated" in getattr(chain.layers[-1].final, "node", "")))
                           if done],
        },
    }
    return CompressedModel(network, float_network, report, provenance)


def logit_as_two_classes(network: QuantizedNetwork, float_network: Network):
    """A binary classifier's one output (its logit) as two, ``(0, logit)``: a row of no
    weights, no bias and a multiplier of 1 in front of the last layer's, whose output is the
    integer 0, which every output format here reads as 0.0 (``ScaledFormat`` takes the zero
    point off).  The argmax is then 1 exactly where the logit is above 0 (compress's
    ``passes.binary_logit_as_two_classes`` on the float model)."""
    last, float_last = network.layers[-1], float_network.layers[-1]
    rows = last.row_requant()
    requant = dataclasses.replace(
        rows, multiplier=np.concatenate([[1], rows.multiplier]),
        shift=np.concatenate([[0], rows.shift]), rounding=np.concatenate([[0], rows.rounding]),
        half_even=np.concatenate([[False], rows.half_even]))
    widened = dataclasses.replace(
        last, codes=np.vstack([np.zeros_like(last.codes[:1]), last.codes]),
        bias=np.concatenate([[0], last.bias]).astype(np.int64), requant=requant)
    float_widened = dataclasses.replace(
        float_last, weight=np.vstack([np.zeros_like(float_last.weight[:1]), float_last.weight]),
        bias=np.concatenate([[0.0], float_last.bias]))
    return (QuantizedNetwork(network.layers[:-1] + (widened,)),
            Network(float_network.layers[:-1] + (float_widened,), float_network.source))


def _calibration(calibration):
    if calibration is None:
        return None, None
    if isinstance(calibration, tuple):
        if len(calibration) != 2:
            raise InputError(f"calibration must be X or (X, y), not a {len(calibration)}-tuple")
        x, y = calibration
        y = None if y is None else np.asarray(y).reshape(-1)
    else:
        x, y = calibration, None
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise InputError(f"calibration data must hold real numbers, not {x.dtype} values")
    x = x.astype(np.float64)
    x = x.reshape(len(x), -1) if x.ndim else x
    if x.ndim < 2 or not len(x):
        raise InputError(f"calibration data must hold at least one sample of features, not "
                         f"shape {x.shape}")
    check_finite(x, "calibration data hold")
    if y is not None and len(y) != len(x):
        raise InputError(f"calibration has {len(x)} samples but {len(y)} labels")
    return x, y


def _scaled(activation_scale: Fraction, quantizer, low: int, high: int, bits: int):
    zero_point = getattr(quantizer, "zero_point", 0)
    first = getattr(quantizer, "zero_point_first", True)
    return ScaledFormat(bits, float(activation_scale), low, high, int(zero_point),
                        Rounding.HALF_EVEN, bool(first))


def network_from_chain(chain: Chain, *, calibration=None, approximate: bool = False):
    """The chain as ``(QuantizedNetwork, float Network, [ImportedLayer], [ApproximatedRow])``."""
    if chain.input is None:
        raise UnsupportedModel(f"{chain.source}: the model's input is not quantized")
    if chain.in_features != chain.layers[0].weights.shape[1]:
        raise UnsupportedModel(f"{chain.source}: the input has {chain.in_features} features, "
                               f"the first layer takes {chain.layers[0].weights.shape[1]}")
    ranges = [(chain.input.low, chain.input.high)]
    drafts = []                 # per layer: (draft, weights, fits, final, output range)
    approximated: list[ApproximatedRow] = []
    # Layers at a provisional width, to run calibration data through to a later layer.
    wide = max(16, signed_bits(*ranges[0]))
    formats = [_scaled(chain.input.scale, chain.input.quantizer, *ranges[0], wide)]
    provisional: list[QuantizedLinear] = []
    for layer in chain.layers:
        low_in, high_in = ranges[-1]
        final = layer.final
        if final is None:
            final = layer.final = _calibrated_output(layer, formats[0], provisional, calibration)
        weights = np.array(layer.weights, dtype=np.int64)
        functions = [exact_function(layer.a[i], layer.b[i], layer.row_ops(i), final,
                                    clamp_low=0 if layer.relu_after else None)
                     for i in range(layer.out_features)]
        vmin, vmax = _accumulator_ranges(weights, low_in, high_in)
        ends = [(f.exact(int(lo)), f.exact(int(hi))) for f, lo, hi in zip(functions, vmin, vmax)]
        # The layer's output range: what its rows produce, and 0 (a real zero, which the
        # activation format holds); the fits clamp to it.
        low = min(0, min(min(e) for e in ends))
        high = max(0, max(max(e) for e in ends))
        fits: list[RowFit] = []
        for i, (function, (first, last)) in enumerate(zip(functions, ends)):
            lo, hi = int(vmin[i]), int(vmax[i])
            if first == last:               # the weights cannot matter: drop them
                weights[i] = 0
                lo = hi = 0
            fit = fit_row(function, lo, hi, low, high)
            if fit is None:
                if not approximate and getattr(final, "rounding", "ROUND") in ("UP", "DOWN"):
                    # Rounding away from or towards zero makes the step at zero twice as
                    # wide as the others: no requantization has that, at any width.
                    raise UnsupportedModel(
                        f"{chain.source}: layer {layer.name!r} row {i}: its quantizer "
                        f"{_final_name(final)!r} rounds {final.rounding} (across zero), whose "
                        f"step at zero no requantization reproduces; export it with rounding "
                        f"ROUND (or HALF_UP, HALF_EVEN, FLOOR, CEIL), or pass "
                        f"approximate=True (sparseforge import --approximate) to use the "
                        f"nearest one and print its error")
                if not approximate:
                    raise UnsupportedModel(
                        f"{chain.source}: layer {layer.name!r} row {i}: no multiplier of at "
                        f"most {MAX_MULTIPLIER_BITS} bits (with a shift of at most 63) "
                        f"reproduces its quantizer {_final_name(final)!r} exactly over its "
                        f"accumulators {lo} .. {hi}; pass approximate=True (sparseforge import "
                        f"--approximate) to use the nearest one and print its error")
                fit = approximate_row(function, lo, hi, low, high,
                                      multiplier_bits=APPROXIMATE_MULTIPLIER_BITS)
                if fit.error > APPROXIMATION_LIMIT:
                    # Not a rounding difference: the row's function is not one ramp between
                    # the layer's clamps, which no requantization follows.
                    raise UnsupportedModel(
                        f"{chain.source}: layer {layer.name!r} row {i}: the nearest "
                        f"requantization to its quantizer {_final_name(final)!r} is off by "
                        f"{fit.error} output steps (at accumulator {fit.at}), too far to "
                        f"approximate: the row's function is not a single ramp between the "
                        f"layer's output range (a BatchNorm or scaling after the ReLU makes "
                        f"rows flat at values inside it; put the BatchNorm before the ReLU), "
                        f"or its rounding mode is one no requantization follows "
                        f"(docs/compiler.md lists them)")
                approximated.append(ApproximatedRow(layer.name, i, fit.error, fit.at))
            fits.append(fit)
        ranges.append((low, high))
        drafts.append((layer, weights, fits, final, (low, high)))
        wide = max(wide, signed_bits(low, high))
        output = _scaled(_final_scale(final), final, low, high, wide)
        provisional.append(_quantized_layer(layer, weights, fits,
                                            _rewidth(formats[-1], wide), output, low, high))
        formats.append(output)
    act_bits = max(signed_bits(lo, hi) for lo, hi in ranges)
    # The network's activation width is known only now: the layers again, at that width.
    quantized, floats, reports = [], [], []
    previous = _rewidth(formats[0], act_bits)
    for layer, weights, fits, final, (low, high) in drafts:
        output = _scaled(_final_scale(final), final, low, high, act_bits)
        q = _quantized_layer(layer, weights, fits, previous, output, low, high)
        quantized.append(q)
        floats.append(_float_layer(layer, weights, previous, q))
        reports.append(_report(layer, q, previous, output, final,
                               sum(a.layer == layer.name for a in approximated)))
        previous = output
    network = QuantizedNetwork(tuple(quantized))
    float_network = Network(tuple(floats), chain.source)
    return network, float_network, reports, approximated


def _rewidth(fmt: ScaledFormat, bits: int) -> ScaledFormat:
    return ScaledFormat(bits, fmt.scale, fmt.low, fmt.high, fmt.zero_point, fmt.rounding,
                        fmt.zero_point_first)


def _quantized_layer(layer: LayerDraft, weights, fits, input_format, output_format, low, high):
    values = np.unique(weights[weights != 0])
    code_bits = max(1, int(len(values)).bit_length())
    codebook = np.zeros(1 << code_bits, dtype=np.int64)
    codebook[1:len(values) + 1] = values
    codes = np.zeros(weights.shape, dtype=np.uint8)
    nonzero = weights != 0
    codes[nonzero] = (np.searchsorted(values, weights[nonzero]) + 1).astype(np.uint8)
    bias = np.array([f.bias for f in fits], dtype=np.int64)
    requant = RowRequant(np.array([f.multiplier for f in fits], np.int64),
                         np.array([f.shift for f in fits], np.int64),
                         np.array([f.rounding for f in fits], np.int64),
                         np.array([f.half_even for f in fits], bool), int(low), int(high))
    coef_bits = signed_bits(int(codebook.min()), int(codebook.max()))
    return QuantizedLinear(
        name=layer.name, codes=codes, codebook=codebook, bias=bias, code_bits=code_bits,
        input_format=input_format, weight_format=FixedFormat(coef_bits, 0),
        output_format=output_format,
        bias_bits=signed_bits(int(bias.min(initial=0)), int(bias.max(initial=0))),
        relu=bool(low >= 0 and layer.has_relu()), requant=requant)


def _float_layer(layer: LayerDraft, weights, input_format, q: QuantizedLinear) -> Linear:
    """The layer with dequantized weights and real biases, activations left real (for the
    report's float accuracy): ``y = a_i / s_in * w_ij x_j + b_i``."""
    scale_in = Fraction(input_format.scale)
    gain = np.array([float(a / scale_in) for a in layer.a])
    return Linear(layer.name, weights.astype(np.float64) * gain[:, None],
                  np.array([float(b) for b in layer.b]), layer.has_relu())


def _report(layer, q, input_format, output_format, final, approximated) -> ImportedLayer:
    requant = q.requant
    low, high = requant.low, requant.high
    scales = np.abs(layer.weight_scale.astype(np.float64))
    return ImportedLayer(
        name=layer.name, nodes=tuple(layer.nodes), shape=q.codes.shape,
        weight_bits=layer.weight_bits, weight_values=int(np.count_nonzero(q.codebook)),
        weight_scale=(float(scales.min()), float(scales.max())),
        input_scale=input_format.scale, input_range=(input_format.low, input_format.high),
        output_scale=output_format.scale, output_range=(low, high),
        output_bits=_quantizer_bits(final), output_signed=low < 0,
        sparsity=float(1 - q.nnz / q.codes.size),
        multiplier_bits=requant.multiplier_bits,
        shifts=(int(requant.shift.min()), int(requant.shift.max())),
        power_of_two=q.power_of_two_form() is not None,
        approximated_rows=approximated)


def _quantizer_bits(final) -> int:
    """The output quantizer's width (0 for a version-1 Trunc, which does not clamp)."""
    if getattr(final, "bipolar", False):
        return 1
    if final.qmin is None:
        return 0
    return max(1, (final.qmax - final.qmin).bit_length())


def _final_scale(final) -> Fraction:
    return final.out_scale if isinstance(final, ops.Trunc) else final.scale


def _final_name(final) -> str:
    return getattr(final, "node", "?")


def _accumulator_ranges(weights: np.ndarray, low: int, high: int):
    """Per row, the smallest and largest accumulator over inputs in ``low .. high``."""
    ends = np.stack([weights * low, weights * high])
    return ends.min(axis=0).sum(axis=1), ends.max(axis=0).sum(axis=1)


def _calibrated_output(layer: LayerDraft, input_format: ScaledFormat, before, calibration):
    """An 8-bit signed quantizer for a last layer the model leaves real, covering its outputs
    on the calibration data (the layers ``before`` it already built)."""
    x = input_format.quantize(np.asarray(calibration, dtype=np.float64))
    for q in before:
        x = q.forward(x)
    acc = x @ np.asarray(layer.weights, dtype=np.int64).T
    y = acc * np.array([float(a) for a in layer.a]) + np.array([float(b) for b in layer.b])
    for position in range(len(layer.ops)):
        y = np.stack([layer.row_ops(i)[position].approx(y[:, i])
                      for i in range(layer.out_features)], axis=1)
    top = float(np.abs(y).max()) or 1.0
    return ops.Quantizer(f"{layer.name} (output, calibrated)",
                         Fraction(float(np.float32(top / 127))), 0, -127, 127)
