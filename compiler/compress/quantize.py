"""Fixed-point quantization: from a float network with shared weights to the integer network.

Scales are powers of two chosen by calibration on data (``numerics.choose_frac``): the input and
every layer's output get the largest binary point at which the largest magnitude seen still
fits ``act_bits``; each codebook gets the largest at which its largest value fits ``coef_bits``.
Biases are quantized at the accumulator's scale ``frac_in + frac_w`` and saturated to
``bias_bits``.  Every rounding and saturation is ``numerics.FixedFormat.quantize``; the integer
network's ``forward`` is what the hardware does (docs/numerics.md).

Calibration runs layer by layer on the integer network itself: layer ``l``'s output scale is
chosen from what the quantized layers ``0 .. l-1`` actually feed it, so the scales match the
arithmetic that will run.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..errors import InputError
from ..ir import (Conv2d, Linear, Network, QuantizedConv2d, QuantizedLinear, QuantizedNetwork,
                  RowRequant)
from ..numerics import (FRAC_LIMIT, FixedFormat, accumulator_bits, accumulator_bound,
                        choose_frac, round_half_up)

__all__ = ["activation_requant", "input_format_for", "inputs_lost", "network_codebooks",
           "quantize_network"]

MAX_SHIFT = 63
# The widest bias the quantizer gives a layer (CompressionConfig.bias_bits: 2 to 32).
MAX_BIAS_BITS = 32


def network_codebooks(network: Network, code_bits: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(codes, codebook) per layer from a network whose weights take few distinct values (after
    weight sharing): codebook entry 0 is 0, the others the distinct nonzero values, sorted."""
    books = []
    for layer in network.layers:
        values = np.unique(layer.weight[layer.weight != 0])
        if len(values) >= 1 << code_bits:
            raise ValueError(f"layer {layer.name} has {len(values)} distinct nonzero weights; "
                             f"{code_bits}-bit codes hold {(1 << code_bits) - 1}: share its "
                             f"weights first")
        codebook = np.zeros(1 << code_bits)
        codebook[1:len(values) + 1] = values
        codes = np.zeros(layer.weight.shape, dtype=np.uint8)
        nonzero = layer.weight != 0
        codes[nonzero] = np.searchsorted(values, layer.weight[nonzero]) + 1
        books.append((codes, codebook))
    return books


def input_format_for(calibration: np.ndarray, act_bits: int) -> FixedFormat:
    """The inputs' fixed-point format: ``act_bits`` wide, its fraction the most that holds the
    largest input of ``calibration`` (samples x inputs) -- one format for every input."""
    return FixedFormat(act_bits, choose_frac(float(np.abs(calibration).max()), act_bits))


def inputs_lost(calibration: np.ndarray, act_bits: int) -> tuple[np.ndarray, FixedFormat]:
    """The inputs (column numbers) that are nonzero in ``calibration`` but round to 0 in every
    sample at the inputs' one format: features far smaller than the largest, which the
    network never sees (unscaled data: a column of areas beside one of ratios)."""
    calibration = np.asarray(calibration, dtype=np.float64)
    calibration = calibration.reshape(len(calibration), -1)
    input_format = input_format_for(calibration, act_bits)
    zero = np.all(input_format.quantize(calibration) == 0, axis=0)
    return np.flatnonzero(zero & np.any(calibration != 0, axis=0)), input_format


def quantize_network(network: Network, calibration: np.ndarray, *, act_bits: int = 8,
                     coef_bits: int = 8, bias_bits: int | None = 16, code_bits: int = 4,
                     codebooks=None, max_acc_bits: int | None = None) -> QuantizedNetwork:
    """The integer network for ``network`` (float, weights already shared).

    ``calibration`` (samples x inputs, floats) sets the activation scales.  ``codebooks``:
    per layer ``(codes, float codebook)`` with ``codebook[0] == 0`` and at most
    ``2**code_bits`` entries (padded with zeros to that length), or None to read them off the
    weights (:func:`network_codebooks`: each layer may hold at most ``2**code_bits - 1``
    distinct nonzero values).  ``bias_bits``: the bias width (biases saturate to it); None
    sizes each layer's to its largest bias (at least 8 bits).  ``max_acc_bits`` caps the
    accumulator width the engine will need: a layer whose worst case would not fit gets a
    coarser codebook scale, one bit at a time (iCE40 block RAMs are 16 bits wide, and one RAM
    per PE instead of two is what lets eight PEs fit an iCE40UP5K).
    """
    if not isinstance(network, Network):
        raise TypeError(f"quantize_network takes a float Network, not "
                        f"{type(network).__name__}")
    if act_bits not in (8, 16):
        raise ValueError(f"act_bits must be 8 or 16, not {act_bits!r}")
    if coef_bits not in (8, 16):
        raise ValueError(f"coef_bits must be 8 or 16, not {coef_bits!r}")
    if not isinstance(code_bits, int) or not 1 <= code_bits <= 8:
        raise ValueError(f"code_bits must be from 1 to 8, not {code_bits!r}")
    if bias_bits is not None and not 2 <= bias_bits <= 48:
        raise ValueError(f"bias_bits must be None or from 2 to 48, not {bias_bits!r}")
    calibration = np.asarray(calibration, dtype=np.float64)
    if calibration.ndim == 0 or len(calibration) == 0:
        raise ValueError("calibration data must hold at least one sample")
    calibration = calibration.reshape(len(calibration), -1)
    if calibration.shape[1] != network.input_size:
        raise ValueError(f"calibration data has {calibration.shape[1]} features; the network "
                         f"takes {network.input_size}")
    if not np.all(np.isfinite(calibration)):
        raise ValueError("calibration data holds NaN or infinite values")
    books = (network_codebooks(network, code_bits) if codebooks is None
             else [_check_book(layer, codes, codebook, code_bits)
                   for layer, (codes, codebook) in _pairs(network, codebooks)])
    if network.input_scaling is not None:
        # The first layer sees the inputs as the host scales them.
        calibration = network.input_scaling.apply(calibration)
    input_format = input_format_for(calibration, act_bits)
    x_int = input_format.quantize(calibration)
    layers = []
    for layer, (codes, codebook) in zip(network.layers, books):
        frac = min(choose_frac(float(np.abs(codebook).max()), coef_bits),
                   _widest_weight_frac(layer, input_format))
        while True:
            quantized = _quantize_layer(layer, codes, codebook, x_int, input_format,
                                        FixedFormat(coef_bits, frac), act_bits, code_bits,
                                        bias_bits)
            nonnegative = bool(layers) and layers[-1].relu
            used = np.asarray(quantized.codebook)[np.asarray(quantized.codes)]
            if max_acc_bits is not None and np.any(codes) and not np.any(used):
                # A coarser scale rounds every weight to zero: the accumulator would "fit"
                # holding the bias alone, and the layer would compute nothing.
                raise ValueError(
                    f"layer {layer.name}: no codebook scale keeps its accumulator within "
                    f"{max_acc_bits} bits without rounding all of its weights to zero; allow "
                    f"a wider accumulator (--max-acc-bits) or use narrower activations "
                    f"(--act-bits 8)")
            if max_acc_bits is None or _accumulator_bits(quantized, nonnegative) <= max_acc_bits:
                break
            if frac <= -40:
                raise ValueError(f"layer {layer.name}: no codebook scale keeps its accumulator "
                                 f"within {max_acc_bits} bits")
            frac -= 1
        layers.append(quantized)
        x_int = quantized.forward(x_int)
        input_format = quantized.output_format
    return QuantizedNetwork(tuple(layers))


def _pairs(network: Network, codebooks):
    codebooks = list(codebooks)
    if len(codebooks) != len(network.layers):
        raise ValueError(f"{len(codebooks)} codebooks for {len(network.layers)} layers")
    return zip(network.layers, codebooks)


def _check_book(layer: Linear, codes, codebook, code_bits: int):
    codes = np.asarray(codes)
    codebook = np.asarray(codebook, dtype=np.float64).ravel()
    where = f"layer {layer.name}"
    if codes.shape != layer.weight.shape:
        raise ValueError(f"{where}: codes have shape {codes.shape}, the weights "
                         f"{layer.weight.shape}")
    if not len(codebook) or len(codebook) > 1 << code_bits:
        raise ValueError(f"{where}: a codebook for {code_bits}-bit codes holds 1 to "
                         f"{1 << code_bits} values, not {len(codebook)}")
    if codebook[0] != 0:
        raise ValueError(f"{where}: codebook[0] must be 0 (the pruned weight), not "
                         f"{codebook[0]}")
    if not np.all(np.isfinite(codebook)):
        raise ValueError(f"{where}: the codebook holds NaN or infinite values")
    if codes.size and (codes.min() < 0 or codes.max() >= len(codebook)):
        raise ValueError(f"{where}: code {int(codes.max())} is out of range for a codebook "
                         f"of {len(codebook)} values")
    padded = np.zeros(1 << code_bits)
    padded[:len(codebook)] = codebook
    return codes.astype(np.uint8), padded


def _widest_weight_frac(layer: Linear, input_format: FixedFormat) -> int:
    """The finest weight scale at which the layer's biases, on the accumulator's scale, fit
    ``MAX_BIAS_BITS``.  Only weights negligible beside the biases meet it: a layer pruned to
    one weight that training took to 1e-14 put the binary point 46 bits in, and its biases
    needed 53 bits."""
    largest = float(np.abs(layer.bias).max(initial=0.0))
    if largest == 0.0:
        return FRAC_LIMIT
    return math.floor(math.log2(((1 << (MAX_BIAS_BITS - 1)) - 1) / largest)) - input_format.frac


def _quantize_layer(layer: Linear, codes, codebook, x_int, input_format: FixedFormat,
                    weight_format: FixedFormat, act_bits: int, code_bits: int,
                    bias_bits: int | None) -> QuantizedLinear:
    codes = np.asarray(codes, dtype=np.uint8).copy()
    codebook_int = weight_format.quantize(codebook)
    codebook_int[0] = 0
    # A shared value that rounds to zero is a pruned weight: code 0 means zero.
    codes[codebook_int[codes] == 0] = 0
    accumulator_frac = input_format.frac + weight_format.frac
    float_out = _float_layer(layer, input_format.dequantize(x_int), codebook, codes)
    if layer.function is not None:
        return _table_layer(layer, codes, codebook_int, input_format, weight_format, act_bits,
                            code_bits, bias_bits, float_out,
                            _float_layer(dataclasses.replace(layer, function=None, clamp=None),
                                         input_format.dequantize(x_int), codebook, codes))
    output_frac = min(choose_frac(float(np.abs(float_out).max()), act_bits), accumulator_frac)
    output_frac = max(output_frac, accumulator_frac - MAX_SHIFT)
    bias_int = round_half_up(np.ldexp(layer.bias, accumulator_frac))
    bits = bias_bits or max(8, int(np.abs(bias_int).max(initial=0)).bit_length() + 1)
    conv = {"geometry": layer.geometry} if isinstance(layer, Conv2d) else {}
    output_format = FixedFormat(act_bits, output_frac)
    relu, requant = layer.relu, None
    if layer.clamp is not None or layer.leak:
        requant = activation_requant(layer, output_format, accumulator_frac - output_frac)
        relu = requant.low >= 0
    return (QuantizedConv2d if conv else QuantizedLinear)(
        name=layer.name, codes=codes, codebook=codebook_int,
        bias=FixedFormat(bits, accumulator_frac).quantize(layer.bias), code_bits=code_bits,
        input_format=input_format, weight_format=weight_format,
        output_format=output_format, bias_bits=bits, relu=relu, requant=requant,
        input_scaling=layer.input_scaling, **conv)


def _table_layer(layer: Linear, codes, codebook_int, input_format: FixedFormat,
                 weight_format: FixedFormat, act_bits: int, code_bits: int,
                 bias_bits: int | None, float_out, float_sums) -> QuantizedLinear:
    """A layer with an activation function: its sums requantized to a pre-activation format
    (from the calibration's sums), then a table of the function (and the clamp) at every
    pre-activation value, in the output format (from the calibration's outputs):
    docs/numerics.md "Activations as tables"."""
    if act_bits != 8:
        raise InputError(f"layer {layer.name}: its activation function ({layer.function}) runs "
                         f"as a table of 256 values, for 8-bit activations, not {act_bits}-bit; "
                         f"compress with act_bits=8 (--act-bits 8), or with ReLU in its place "
                         f"(swap_activations=True, --swap-activations)")
    accumulator_frac = input_format.frac + weight_format.frac
    pre_frac = min(choose_frac(float(np.abs(float_sums).max()), act_bits), accumulator_frac)
    pre_frac = max(pre_frac, accumulator_frac - MAX_SHIFT)
    pre_format = FixedFormat(act_bits, pre_frac)
    output_format = FixedFormat(act_bits, choose_frac(float(np.abs(float_out).max()), act_bits))
    values = np.arange(pre_format.min, pre_format.max + 1)
    table = output_format.quantize(layer.activation(pre_format.dequantize(values)))
    requant = RowRequant.power_of_two(len(layer.weight), accumulator_frac - pre_frac,
                                      pre_format.min, pre_format.max, table=table)
    bias_int = round_half_up(np.ldexp(layer.bias, accumulator_frac))
    bits = bias_bits or max(8, int(np.abs(bias_int).max(initial=0)).bit_length() + 1)
    conv = {"geometry": layer.geometry} if isinstance(layer, Conv2d) else {}
    return (QuantizedConv2d if conv else QuantizedLinear)(
        name=layer.name, codes=codes, codebook=codebook_int,
        bias=FixedFormat(bits, accumulator_frac).quantize(layer.bias), code_bits=code_bits,
        input_format=input_format, weight_format=weight_format, output_format=output_format,
        bias_bits=bits, relu=bool(table.min() >= 0), requant=requant,
        input_scaling=layer.input_scaling, function=layer.function, **conv)


def activation_requant(layer: Linear, output_format: FixedFormat, shift: int) -> RowRequant:
    """The power-of-two requantization of a layer with a clamp or a leak, as rows whose
    output range is the clamp's bounds in ``output_format`` (each rounded half up and
    saturated, as any value is; an open side is the format's end; with ReLU from 0 up) and
    whose leak is the layer's: docs/numerics.md "Clamps and leaky ReLU"."""
    low, high = (None if bound is None else int(output_format.quantize(bound))
                 for bound in (layer.clamp or (None, None)))
    low = output_format.min if low is None else low
    high = output_format.max if high is None else high
    if layer.relu:
        low, high = max(low, 0), max(high, 0)
    # One row per output channel of a convolution (its kernel matrix's rows).
    return RowRequant.power_of_two(len(layer.weight), shift, low, high, leak=layer.leak)


def _accumulator_bits(layer: QuantizedLinear, nonnegative_inputs: bool) -> int:
    """What the compiler will size the accumulator to (``QuantizedNetwork.accumulator_bounds``)."""
    bound = accumulator_bound(layer.weights, layer.bias, layer.input_format.bits,
                              nonnegative_inputs)
    return accumulator_bits(bound + (1 << max(0, layer.shift - 1)))


def _float_layer(layer: Linear, x: np.ndarray, codebook: np.ndarray, codes: np.ndarray):
    return layer.forward(x, codebook[codes])
