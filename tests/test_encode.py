"""EIE encoding: worked examples, decode(encode(W)) == W over random layers, and agreement with
the slow loop-based oracle (tests/oracle.py) for whole images."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparseforge.compiler import bus, isa
from sparseforge.compiler.config import EngineConfig
from sparseforge.compiler.encode import (
    PECSC,
    decode_csc,
    decode_layer,
    deinterleave_rows,
    encode_csc,
    encode_layer,
    interleave_rows,
    occupancy_words,
    pack_image,
)
from sparseforge.compiler.ir import QuantizedLinear, QuantizedNetwork
from sparseforge.compiler.numerics import FixedFormat, ceil_div
from tests.oracle import OracleLayer, build_image

PROPERTY = settings(max_examples=120, derandomize=True, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


# ---- worked examples (docs/compiler.md) ------------------------------------------------------

def test_interleave_rows_gives_pe_k_rows_k_k_plus_n():
    w = np.arange(7)[:, None] * np.ones((1, 2), dtype=int)
    parts = interleave_rows(w, 3)
    assert [p[:, 0].tolist() for p in parts] == [[0, 3, 6], [1, 4], [2, 5]]
    np.testing.assert_array_equal(deinterleave_rows(parts, 7), w)


def test_worked_example_two_pes():
    # 6 x 3 layer on 2 PEs: PE 0 owns rows 0, 2, 4 (local 0, 1, 2), PE 1 rows 1, 3, 5.
    codes = np.array([[0, 5, 0],
                      [1, 0, 0],
                      [0, 0, 0],
                      [0, 2, 0],
                      [3, 0, 0],
                      [0, 4, 7]], dtype=np.uint8)
    pe0, pe1 = encode_layer(codes, 2, max_run=15)
    # PE 0, column 0: row 4 = local 2 -> zero run 2; column 1: row 0 = local 0 -> run 0.
    assert list(zip(pe0.zero_runs, pe0.codes)) == [(2, 3), (0, 5)]
    assert pe0.pointers.tolist() == [0, 1, 2, 2]
    # PE 1, column 0: local 0; column 1: local 1 (row 3) then local 2 (row 5); column 2: local 2.
    assert list(zip(pe1.zero_runs, pe1.codes)) == [(0, 1), (1, 2), (0, 4), (2, 7)]
    assert pe1.pointers.tolist() == [0, 1, 3, 4]
    np.testing.assert_array_equal(decode_layer([pe0, pe1], 6), codes)


def test_padding_bridges_gaps_wider_than_max_run():
    # One PE, idx_bits = 2 (max_run 3): nonzeros at local rows 0 and 9 and 13 of one column.
    codes = np.zeros((14, 1), dtype=np.uint8)
    codes[[0, 9, 13], 0] = [1, 2, 3]
    csc = encode_csc(codes, max_run=3)
    # gap 8 before row 9: two paddings (each advances 4 rows), then zero run 0; gap 3: run 3.
    assert list(zip(csc.zero_runs, csc.codes)) == [(0, 1), (3, 0), (3, 0), (0, 2), (3, 3)]
    assert csc.padding == 2 and csc.pointers.tolist() == [0, 5]
    np.testing.assert_array_equal(decode_csc(csc, 14), codes)


def test_gap_of_exactly_max_run_needs_no_padding_and_one_more_needs_one():
    codes = np.zeros((40, 2), dtype=np.uint8)
    codes[15, 0] = 1                    # 15 zero rows before it: zero run 15
    codes[16, 1] = 1                    # 16 zero rows: padding (15, 0) then zero run 0
    csc = encode_csc(codes, max_run=15)
    assert list(zip(csc.zero_runs, csc.codes)) == [(15, 1), (15, 0), (0, 1)]


def test_empty_layer_and_empty_columns():
    csc = encode_csc(np.zeros((5, 4), dtype=np.uint8))
    assert csc.entries == 0 and csc.pointers.tolist() == [0, 0, 0, 0, 0]
    np.testing.assert_array_equal(decode_csc(csc, 5), np.zeros((5, 4)))


def test_more_pes_than_rows_leaves_pes_empty():
    codes = np.array([[1, 2], [3, 0]], dtype=np.uint8)
    slices = encode_layer(codes, 64)
    assert [s.entries for s in slices[:3]] == [2, 1, 0]
    np.testing.assert_array_equal(decode_layer(slices, 2), codes)


def test_occupancy_words_bit_lane_times_n_plus_k():
    codes = np.zeros((4, 5), dtype=np.uint8)
    codes[1, 0] = 1            # PE 1, column 0 -> group 0, lane 0: bit 0 * 2 + 1
    codes[2, 3] = 1            # PE 0, column 3 -> group 1, lane 1: bit 1 * 2 + 0
    codes[3, 4] = 1            # PE 1, column 4 -> group 2, lane 0: bit 1
    words = occupancy_words(encode_layer(codes, 2), scan_lanes=2)
    assert [int(w) for w in words] == [0b0010, 0b0100, 0b0010]


@pytest.mark.parametrize("pes", [0, 65, -1])
def test_pes_out_of_range(pes):
    with pytest.raises(ValueError, match=f"pes must be between 1 and 64, not {pes}"):
        encode_layer(np.ones((2, 2), dtype=np.uint8), pes)


def test_bad_codes_and_max_run():
    with pytest.raises(ValueError, match=r"2-D \(out x in\) array, not \(3,\)"):
        encode_layer(np.ones(3, dtype=np.uint8), 1)
    with pytest.raises(TypeError, match="codes must be integers, not float64"):
        encode_layer(np.ones((2, 2)), 1)
    with pytest.raises(ValueError, match="max_run must be 2\\*\\*idx_bits - 1 .* not 14"):
        encode_layer(np.ones((2, 2), dtype=np.uint8), 1, max_run=14)


def test_decode_refuses_bad_pointers_and_rows():
    with pytest.raises(ValueError, match="pointers must not decrease"):
        decode_csc(PECSC(np.zeros(2, int), np.ones(2, int), np.array([0, 2, 1, 2])), 4)
    with pytest.raises(ValueError, match="lands on local row 5, beyond the PE's 4 rows"):
        decode_csc(PECSC(np.array([5]), np.array([1]), np.array([0, 1])), 4)


# ---- properties ------------------------------------------------------------------------------

@st.composite
def sparse_codes(draw, max_out=120, max_in=24):
    """Code matrices with every density from 0 to 1, empty rows and columns, and long zero
    runs (a few nonzeros far apart in tall columns)."""
    out_features = draw(st.integers(1, max_out))
    in_features = draw(st.integers(1, max_in))
    seed = draw(st.integers(0, 2**32 - 1))
    density = draw(st.sampled_from([0.0, 0.01, 0.05, 0.3, 0.7, 1.0]))
    code_bits = draw(st.integers(1, 8))
    rng = np.random.default_rng(seed)
    codes = rng.integers(1, 1 << code_bits, (out_features, in_features))
    codes[rng.random(codes.shape) >= density] = 0
    if draw(st.booleans()):
        codes[rng.integers(0, out_features, out_features // 3)] = 0        # empty rows
        codes[:, rng.integers(0, in_features, in_features // 3)] = 0       # empty columns
    return codes.astype(np.uint8)


@PROPERTY
@given(codes=sparse_codes(), pes=st.integers(1, 64), idx_bits=st.integers(1, 4))
def test_decode_encode_is_identity(codes, pes, idx_bits):
    max_run = (1 << idx_bits) - 1
    slices = encode_layer(codes, pes, max_run)
    np.testing.assert_array_equal(decode_layer(slices, codes.shape[0]), codes)
    for k, csc in enumerate(slices):
        part = codes[k::pes]
        assert csc.entries - csc.padding == np.count_nonzero(part)
        assert np.all((csc.zero_runs >= 0) & (csc.zero_runs <= max_run))
        assert np.all(csc.zero_runs[csc.codes == 0] == max_run)      # padding is (max_run, 0)
        assert csc.pointers[0] == 0 and csc.pointers[-1] == csc.entries
        np.testing.assert_array_equal(decode_csc(csc, len(part)), part)
        np.testing.assert_array_equal(csc.zero_runs, encode_csc(part, max_run).zero_runs)


def oracle_network(rng, shapes, density, code_bits):
    layers = []
    for index, (out_features, in_features) in enumerate(shapes):
        codes = rng.integers(1, 1 << code_bits, (out_features, in_features))
        codes[rng.random(codes.shape) >= density] = 0
        codebook = rng.integers(-128, 128, 1 << code_bits)
        codebook[0] = 0
        layers.append(QuantizedLinear(
            f"fc{index}", codes.astype(np.uint8), codebook, rng.integers(-500, 500, out_features),
            code_bits, FixedFormat(8, 4), FixedFormat(8, 6), FixedFormat(8, 4), 16,
            relu=index < len(shapes) - 1))
    return QuantizedNetwork(tuple(layers))


def config_for(network, pes, lanes):
    return EngineConfig(pes=pes, scan_lanes=lanes, max_layers=len(network.layers),
                        code_bits=max(l.code_bits for l in network.layers),
                        max_features=ceil_div(max(max(layer.codes.shape)
                                                  for layer in network.layers), pes) * pes,
                        max_rows=64, entry_depth=1 << 16, pointer_depth=1 << 12,
                        bias_depth=1 << 10, occupancy_depth=1 << 10, acc_bits=32,
                        max_column_entries=1 << 12)


@settings(max_examples=25, derandomize=True, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), pes=st.sampled_from([1, 2, 3, 4, 8, 16]),
       density=st.sampled_from([0.0, 0.05, 0.4, 1.0]), layers=st.integers(1, 3))
def test_pack_image_equals_the_loop_oracle(seed, pes, density, layers):
    rng = np.random.default_rng(seed)
    widths = rng.integers(1, 40, layers + 1)
    network = oracle_network(rng, list(zip(widths[1:], widths[:-1])), density,
                             code_bits=int(rng.integers(1, 5)))
    lanes = [lane for lane in (1, 2, 4) if pes % lane == 0][-1]
    config = config_for(network, pes, lanes)
    image = pack_image(config, network)
    oracle = build_image(config, [OracleLayer(l.codes, np.pad(l.codebook, (0, config.codebook_size
                                                                            - len(l.codebook))),
                                              l.bias, l.shift, l.relu) for l in network.layers])
    for k in range(pes):
        np.testing.assert_array_equal(image.entries[k], np.array(oracle.entries[k], np.uint64))
        np.testing.assert_array_equal(image.pointers[k], oracle.pointers[k])
        np.testing.assert_array_equal(image.biases[k], oracle.biases[k])
    assert [int(w) for w in image.occupancy] == [int(w) for w in oracle.occupancy]
    assert [int(d) for d in image.descriptors] == [int(d) for d in oracle.descriptors]
    np.testing.assert_array_equal(image.codebook, oracle.codebook[:layers])
    assert image.layer_count == layers


def test_image_bus_writes_cover_every_word():
    rng = np.random.default_rng(4)
    network = oracle_network(rng, [(20, 30), (5, 20)], 0.3, 4)
    config = config_for(network, 4, 4)
    image = pack_image(config, network)
    writes = image.bus_writes()
    assert writes.dtype == np.uint64 and writes.shape[1] == 2
    assert writes[0].tolist() == [bus.bus_address(bus.Region.REGISTERS,
                                                  bus.Register.LAYER_COUNT), 2]
    regions = writes[:, 0] >> np.uint64(28)
    pe = (writes[:, 0] >> np.uint64(21)) & np.uint64(0x7F)
    index = writes[:, 0] & np.uint64((1 << 21) - 1)
    for k in range(4):
        mine = (regions == bus.Region.ENTRIES) & (pe == k)
        np.testing.assert_array_equal(index[mine], np.arange(len(image.entries[k])))
        np.testing.assert_array_equal(writes[mine, 1], image.entries[k])
    chunks = bus.chunks_of(isa.descriptor_layout(config).size)
    descriptor_writes = writes[regions == bus.Region.DESCRIPTORS]
    assert len(descriptor_writes) == 2 * chunks
    rebuilt = [sum(int(descriptor_writes[w * chunks + c, 1]) << (32 * c) for c in range(chunks))
               for w in range(2)]
    assert rebuilt == [int(d) for d in image.descriptors]
    assert np.count_nonzero(regions == bus.Region.CODEBOOK) == 2 * config.codebook_size
