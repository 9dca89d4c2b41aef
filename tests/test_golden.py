"""The golden model executes the image exactly: equal to QuantizedNetwork.forward (the plain
integer matmul with the documented rounding) over random shapes, densities, N and formats;
within a derived tolerance of the float model; and it refuses what the engine could not do."""

import dataclasses
import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sparseforge as sf
from sparseforge.compiler.errors import InputWarning
from sparseforge.compiler.ir import QuantizedLinear, QuantizedNetwork
from sparseforge.compiler.numerics import FixedFormat
from sparseforge.sim.reference.golden import AccumulatorOverflow, decode_image, reference, run_image

PROPERTY = settings(max_examples=60, derandomize=True, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def random_network(rng, widths, *, density, act_bits=8, coef_bits=8, code_bits=4,
                   shifts=(0, 12), relu_last=False) -> QuantizedNetwork:
    """A random integer network through ``widths``; shifts drawn from ``shifts`` (small ones
    saturate often), biases at the accumulator's scale."""
    layers, frac_in = [], int(rng.integers(0, 7))
    for index, (in_features, out_features) in enumerate(itertools.pairwise(widths)):
        codes = rng.integers(1, 1 << code_bits, (out_features, in_features))
        codes[rng.random(codes.shape) >= density] = 0
        codebook = rng.integers(-(1 << (coef_bits - 1)), 1 << (coef_bits - 1), 1 << code_bits)
        codebook[0] = 0
        frac_w = int(rng.integers(0, coef_bits))
        shift = int(rng.integers(*shifts, endpoint=True))
        frac_out = frac_in + frac_w - shift
        last = index == len(widths) - 2
        layers.append(QuantizedLinear(
            f"fc{index}", codes.astype(np.uint8), codebook,
            rng.integers(-(1 << (shift + act_bits - 1)), 1 << (shift + act_bits - 1),
                         out_features),
            code_bits, FixedFormat(act_bits, frac_in), FixedFormat(coef_bits, frac_w),
            FixedFormat(act_bits, frac_out), 40, relu=relu_last or not last))
        frac_in = frac_out
    return QuantizedNetwork(tuple(layers))


def random_inputs(rng, network, batch, *, zeros=0.3):
    fmt = network.input_format
    x = rng.integers(fmt.min, fmt.max + 1, (batch, network.layers[0].in_features))
    x[rng.random(x.shape) < zeros] = 0
    x[0] = fmt.min                                # extremes: the accumulator bound is reached
    if batch > 1:
        x[1] = fmt.max
    return x


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), pes=st.integers(1, 64), depth=st.integers(1, 3),
       density=st.sampled_from([0.0, 0.02, 0.1, 0.5, 1.0]), act_bits=st.sampled_from([8, 16]),
       code_bits=st.integers(1, 6))
def test_golden_model_equals_the_integer_network(seed, pes, depth, density, act_bits,
                                                 code_bits):
    rng = np.random.default_rng(seed)
    widths = [int(w) for w in rng.integers(1, 90, depth + 1)]
    if rng.random() < 0.3:
        widths[1] = 200                             # tall columns: long zero runs, padding
    network = random_network(rng, widths, density=density, act_bits=act_bits,
                             coef_bits=act_bits, code_bits=code_bits)
    program = sf.compile(network, pes=pes, verify=False)
    x = random_inputs(rng, network, 12)
    taken = program.taken_inputs(x)             # the inputs no weight reads are not sent
    layers = run_image(program.config, program.image, taken, return_layers=True)
    expected = taken
    # Layer by layer against the network the engine stores: the model's, its hidden rows
    # permuted and its last layer's placed (compiler/balance.py); the outputs, in the
    # network's order, against the model's own.
    for index, layer in enumerate(program.engine_network.layers):
        expected = layer.forward(expected)
        np.testing.assert_array_equal(layers[index + 1], expected)
    np.testing.assert_array_equal(reference(program, taken, integer=True), network.forward(x))


def test_golden_decodes_the_image_to_the_network_weights():
    rng = np.random.default_rng(3)
    network = random_network(rng, [40, 300, 10], density=0.05)
    program = sf.compile(network, pes=7, remove_dead=False)
    assert sum(program.column_counts(0).sum(axis=1)) > network.layers[0].nnz     # padding
    for decoded, layer in zip(decode_image(program.config, program.image),
                              program.network.layers):
        np.testing.assert_array_equal(decoded.weights, layer.weights)
        np.testing.assert_array_equal(decoded.bias, layer.bias)
        assert (decoded.shift, decoded.relu) == (layer.shift, layer.relu)


def test_saturation_and_relu_happen_and_match():
    rng = np.random.default_rng(5)
    network = random_network(rng, [30, 20, 6], density=0.8, shifts=(0, 1))
    x = random_inputs(rng, network, 64, zeros=0.0)
    program = sf.compile(network, pes=4)
    out = reference(program, x, integer=True)
    hidden = run_image(program.config, program.image, x, return_layers=True)[1]
    assert np.any(hidden == 127) and np.any(hidden == 0)         # saturated, and ReLU'd
    assert np.any(out == -128) or np.any(out == 127)
    np.testing.assert_array_equal(out, network.forward(x))


def test_reference_quantizes_real_inputs():
    rng = np.random.default_rng(6)
    network = random_network(rng, [16, 8, 3], density=0.5)
    program = sf.compile(network, pes=2)
    fmt = network.input_format
    x = rng.normal(scale=fmt.max * fmt.scale / 2, size=(10, 4, 4))     # flattened
    np.testing.assert_array_equal(reference(program, x),
                                  network.forward(program.quantize_input(x)))


def test_inputs_far_beyond_the_training_range_are_warned_of():
    # They saturate: the outputs no longer follow the model (inputs scaled unlike the
    # training data); within twice the range (some saturation is normal) nothing is said.
    rng = np.random.default_rng(6)
    network = random_network(rng, [16, 8, 3], density=0.5)
    program = sf.compile(network, pes=2)
    limit = network.input_format.max * network.input_format.scale
    x = np.clip(rng.normal(scale=limit, size=(10, 16)), -1.9 * limit, 1.9 * limit)
    reference(program, x)
    x[3, 5] = 10 * limit
    with pytest.warns(InputWarning, match=rf"1 of the 160 input values lie beyond twice the "
                                          rf"range the training data set for the inputs "
                                          rf"\(\|x\| up to {limit:.4g}; these reach "
                                          rf"{10 * limit:.4g}\) and saturate"):
        np.testing.assert_array_equal(reference(program, x),
                                      network.forward(program.quantize_input(x)))


def test_integer_inputs_are_checked():
    rng = np.random.default_rng(7)
    network = random_network(rng, [4, 3], density=1.0)
    program = sf.compile(network, pes=1)
    with pytest.raises(ValueError, match=r"inputs must be 8-bit integers \(-128 .. 127\), got "
                                         r"0 .. 128"):
        reference(program, [[0, 0, 0, 128]], integer=True)
    with pytest.raises(ValueError, match="non-integral, NaN or infinite values"):
        reference(program, [[0.5, 0, 0, 1]], integer=True)
    with pytest.raises(ValueError, match="layer 0 takes 4 inputs, got 5"):
        reference(program, [[0, 0, 0, 1, 2]], integer=True)


def test_accumulator_overflow_is_detected():
    rng = np.random.default_rng(8)
    network = random_network(rng, [64, 4], density=1.0)
    program = sf.compile(network, pes=2)
    narrow = dataclasses.replace(program.config, acc_bits=12, bias_bits=12)
    x = np.full((1, 64), -128)
    with pytest.raises(AccumulatorOverflow, match=r"layer 0, input 0, row \d+: a partial sum "
                                                  r"can reach \d+, beyond the 12-bit"):
        run_image(narrow, program.image, x)


# ---- against the float model -----------------------------------------------------------------

def float_twin(rng, widths, density, act_bits=8, coef_bits=8):
    """A quantized network and the float network with exactly its (dequantized) weights and
    biases, whose output formats are chosen so that the tolerance below never saturates."""
    code_bits = 4
    frac_in = 4
    x = rng.uniform(-7.9, 7.9, (64, widths[0]))          # inside the 8-bit, frac 4 format
    tol = np.full(widths[0], 0.5 * 2.0 ** -frac_in)       # input quantization error
    y, layers, weights = x, [], []
    for index, (in_features, out_features) in enumerate(itertools.pairwise(widths)):
        codes = rng.integers(1, 1 << code_bits, (out_features, in_features))
        codes[rng.random(codes.shape) >= density] = 0
        codebook = rng.integers(-(1 << (coef_bits - 1)), 1 << (coef_bits - 1), 1 << code_bits)
        codebook[0] = 0
        frac_w = 9
        acc_frac = frac_in + frac_w
        bias = rng.integers(-(1 << (acc_frac + 2)), 1 << (acc_frac + 2), out_features)
        w = codebook[codes] * 2.0 ** -frac_w
        b = bias * 2.0 ** -acc_frac
        relu = index < len(widths) - 2
        y_pre = y @ w.T + b
        propagated = np.abs(w) @ tol
        top = (1 << (act_bits - 1)) - 1
        frac_out = acc_frac                                  # finest, then coarser until safe
        while np.max(np.abs(y_pre).max(axis=0) + propagated + 2.0 ** -frac_out / 2) \
                > top * 2.0 ** -frac_out:
            frac_out -= 1
        layers.append(QuantizedLinear(
            f"fc{index}", codes.astype(np.uint8), codebook, bias, code_bits,
            FixedFormat(act_bits, frac_in), FixedFormat(coef_bits, frac_w),
            FixedFormat(act_bits, frac_out), 24, relu))
        weights.append((w, b, relu))
        tol = propagated + 0.5 * 2.0 ** -frac_out              # plus this layer's rounding
        y = np.maximum(y_pre, 0) if relu else y_pre
        frac_in = frac_out
    return QuantizedNetwork(tuple(layers)), weights, x, y, tol


@settings(max_examples=30, derandomize=True, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), pes=st.integers(1, 64),
       density=st.sampled_from([0.05, 0.3, 1.0]), depth=st.integers(1, 3))
def test_dequantized_output_is_within_the_derived_tolerance_of_the_float_model(seed, pes,
                                                                              density, depth):
    """The float model uses the dequantized codebook values and biases, so only activation
    quantization errs: input rounding (half a step, ``2**-frac_in / 2``) and each layer's
    output rounding (``2**-frac_out / 2``), propagated row by row through ``|W|`` (ReLU does
    not enlarge an error):  ``tol_0 = 2**-frac_in / 2``,  ``tol_l = |W_l| tol_(l-1) +
    2**-frac_out_l / 2``.  The output formats are chosen so nothing saturates.  Over 40 seeded
    cases the largest error reaches 0.96 of this bound (mean 0.41): it is nearly tight."""
    rng = np.random.default_rng(seed)
    widths = [int(w) for w in rng.integers(2, 60, depth + 1)]
    network, _, x, y, tol = float_twin(rng, widths, density)
    program = sf.compile(network, pes=pes)
    error = np.abs(program.dequantize(reference(program, x)) - y)
    assert np.all(error <= tol + 1e-12), float(np.max(error - tol))


def test_accumulator_bound_after_relu_holds_for_every_nonnegative_input():
    # The tighter bound used for layers fed by a ReLU layer: no input in [0, 127] exceeds it,
    # and the extreme inputs (127 where a weight is positive, or where negative) reach it.
    from sparseforge.compiler.numerics import accumulator_bound

    rng = np.random.default_rng(3)
    weights = rng.integers(-100, 100, (6, 20))
    bias = rng.integers(-50, 50, 6)
    bound = accumulator_bound(weights, bias, 8, nonnegative_inputs=True)
    inputs = rng.integers(0, 128, (2000, 20))
    assert np.abs(inputs @ weights.T).max() + np.abs(bias).max() <= bound
    extremes = np.concatenate([127 * (weights > 0), 127 * (weights < 0)])
    reached = np.abs(extremes @ weights.T).max(axis=0) + np.abs(bias)
    assert reached.max() == bound
    assert bound < accumulator_bound(weights, bias, 8)


def test_inputs_beyond_the_range_are_told_in_the_users_units_under_input_scaling():
    import dataclasses

    from sparseforge.compiler.ir import InputScaling

    rng = np.random.default_rng(6)
    network = random_network(rng, [4, 8, 3], density=0.5)
    # The model normalises feature 2 as (x - 100) / 50: the format's range is about
    # 100 +- 50 * limit in the user's units.
    scaling = InputScaling(np.array([1.0, 1.0, 1 / 50, 1.0]), np.array([0.0, 0.0, -2.0, 0.0]))
    first = dataclasses.replace(network.layers[0], input_scaling=scaling)
    network = dataclasses.replace(network, layers=(first, *network.layers[1:]))
    program = sf.compile(network, pes=2)
    limit = network.input_format.max * network.input_format.scale
    x = np.full((2, 4), 0.5 * limit)
    x[:, 2] = 100.0
    reference(program, x)
    x[1, 2] = 100 + 50 * 10 * limit
    # It quoted the scaled units ("|x| up to 3.969"), not the ones the user passed.
    with pytest.warns(InputWarning, match=rf"\(input 2 is {100 + 500 * limit:.4g} where the "
                                          rf"training data's reach about "
                                          rf"{100 - 50 * limit:.4g} to {100 + 50 * limit:.4g}\)"):
        reference(program, x)
