"""Engine configuration from a model, fit checks against an engine and a board, parts data."""

import dataclasses

import numpy as np
import pytest
from amaranth.hdl import Fragment

from sparseforge.boards.registry import boards
from sparseforge.compiler import parts, resources
from sparseforge.compiler.config import EngineConfig
from sparseforge.compiler.errors import InputWarning
from sparseforge.compiler.configure import (
    DoesNotFit,
    default_scan_lanes,
    derive_config,
    fit,
    model_needs,
)
from sparseforge.compiler.ir import QuantizedLinear, QuantizedNetwork
from sparseforge.compiler.numerics import FixedFormat, accumulator_bits, ceil_div
from sparseforge.compiler.resources import Memory, brams_for, estimate_resources


def layer(name, codes, codebook, bias, *, act=8, coef=8, frac=(4, 6, 5), code_bits=2,
          relu=False, bias_bits=16):
    f_in, f_w, f_out = frac
    return QuantizedLinear(name, np.asarray(codes, np.uint8), np.asarray(codebook, np.int64),
                           np.asarray(bias, np.int64), code_bits, FixedFormat(act, f_in),
                           FixedFormat(coef, f_w), FixedFormat(act, f_out), bias_bits, relu)


def small_network():
    # fc1: 5 x 3, fc2: 2 x 5.  On 2 PEs fc1's PE 0 owns rows 0, 2, 4 and PE 1 rows 1, 3.
    codes1 = [[1, 0, 0], [0, 2, 0], [3, 0, 1], [0, 0, 0], [1, 1, 1]]
    codes2 = [[1, 1, 1, 1, 1], [0, 0, 0, 0, 2]]
    return QuantizedNetwork((
        layer("fc1", codes1, [0, 10, -20, 30], [100, -3, 0, 7, 5], frac=(4, 6, 5), relu=True),
        layer("fc2", codes2, [0, -128, 127, 1], [-40, 1000], frac=(5, 6, 3)),
    ))


def test_derive_config_on_a_hand_checked_network():
    config = derive_config(small_network(), 2)
    # entries: PE 0 has rows 0, 2, 4 of fc1 (1 + 1 + 2 + ... ) -- count them per column.
    # fc1 PE 0 (rows 0, 2, 4): col 0 {0, 2, 4}, col 1 {4}, col 2 {2, 4} -> 6; PE 1 (rows 1, 3):
    # col 1 {1} -> 1.  fc2 PE 0 (row 0): 5; PE 1 (row 1): col 4 -> 1.  Max: 6 + 5 = 11.
    assert config.entry_depth == 11
    assert config.pointer_depth == (3 + 1) + (5 + 1)
    assert config.bias_depth == 3 + 1                 # ceil(5/2) + ceil(2/2)
    assert config.scan_lanes == 2
    assert config.occupancy_depth == 2 + 3            # ceil(3/2) + ceil(5/2)
    assert config.max_features == 6                   # 5 rounded up to a multiple of 2
    assert config.max_rows == 3 and config.max_layers == 2
    assert (config.act_bits, config.code_bits, config.coef_bits) == (8, 2, 8)
    assert config.max_column_entries == 3
    assert config.shift_bits == 6 and config.idx_bits == 4
    # fc2: sum |w| of row 0 = 5 * 128 = 640; * 128 + |bias| 40 + rounding 2**(8-1).
    bound = max(640 * 128 + 40 + 128, 254 * 128 + 1000 + 128, 60 * 128 + 100 + 16)
    assert config.acc_bits == accumulator_bits(bound) == 18    # 18 signed bits hold ±131071
    assert config.bias_bits == 11                     # 1000 needs 11 signed bits, not 16


@pytest.mark.parametrize("pes,lanes", [(1, 1), (2, 2), (3, 1), (4, 4), (6, 2), (8, 8),
                                       (12, 4), (24, 8), (64, 8), (63, 1)])
def test_default_scan_lanes(pes, lanes):
    assert default_scan_lanes(pes) == lanes


def test_headroom_enlarges_every_capacity():
    plain, roomy = derive_config(small_network(), 2), derive_config(small_network(), 2,
                                                                    headroom=0.5)
    for name in ("entry_depth", "pointer_depth", "bias_depth", "occupancy_depth", "max_rows",
                 "max_layers", "max_column_entries"):
        assert getattr(roomy, name) == ceil_div(getattr(plain, name) * 3, 2), name
    assert roomy.max_features == 8                     # ceil(5 * 1.5) = 8, a multiple of 2
    assert roomy.acc_bits == plain.acc_bits


def test_bad_arguments():
    with pytest.raises(ValueError, match="pes must be between 1 and 64, not 0"):
        derive_config(small_network(), 0)
    with pytest.raises(ValueError, match="scan_lanes must be a power of two that divides pes "
                                         r"\(6\), not 4"):
        derive_config(small_network(), 6, scan_lanes=4)
    with pytest.raises(ValueError, match="headroom must be a fraction >= 0, not -1"):
        derive_config(small_network(), 2, headroom=-1)
    with pytest.raises(TypeError, match="not str"):
        derive_config("model.sfm", 2)
    with pytest.raises(ValueError, match="unknown board 'nope'"):
        derive_config(small_network(), 2, board="nope")


def test_accumulator_wider_than_48_bits_is_refused():
    wide = QuantizedNetwork((layer("huge", np.ones((1, 140_000)), [0, -32768], [0],
                                   act=16, coef=16, code_bits=1, frac=(0, 0, 0)),))
    with pytest.raises(DoesNotFit, match=r"acc_bits: the model's accumulators need 49 bits "
                                         r"\(bound \d+\), the engine supports at most 48"):
        derive_config(wide, 1)


def test_shift_of_64_or_more_is_refused():
    network = QuantizedNetwork((layer("fine", [[1]], [0, 1, 0, 0], [0], frac=(40, 40, 10)),))
    with pytest.raises(DoesNotFit, match="shift: a layer shifts by 70, the 6-bit shift field "
                                         "reaches 63"):
        derive_config(network, 1)


def test_fit_lists_every_short_field():
    network = small_network()
    needs = model_needs(network, 2, scan_lanes=2)
    small = EngineConfig(pes=2, scan_lanes=2, act_bits=8, code_bits=2, acc_bits=16,
                         bias_bits=8, max_layers=2, max_features=4, max_rows=3, entry_depth=10,
                         pointer_depth=10, bias_depth=4, occupancy_depth=5,
                         max_column_entries=3, shift_bits=2)
    with pytest.raises(DoesNotFit) as caught:
        fit(network, small)
    message = str(caught.value)
    assert message.startswith("the model does not fit this engine:")
    for line in ("acc_bits: the model needs 18, the engine has 16",
                 "bias_bits: the model needs 11, the engine has 8",
                 "max_features: the model needs 5, the engine has 4",
                 f"entry_depth: the model needs {needs.entry_depth}, the engine has 10",
                 "shift_bits: a layer shifts by 8, the engine's 2-bit shift reaches 3"):
        assert line in message
    assert "pointer_depth" not in message and "max_rows" not in message
    other = EngineConfig(pes=4, act_bits=16)
    with pytest.raises(DoesNotFit, match="act_bits: the model needs 8, the engine has 16"):
        fit(network, other)


def test_fit_accepts_a_larger_engine():
    network = small_network()
    big = derive_config(network, 2, headroom=1.0)
    assert fit(network, big).entry_depth == 11


# ---- resources and parts ---------------------------------------------------------------------

@pytest.mark.parametrize("depth,width,family,count", [
    (1024, 8, "ice40", 2),           # 512 x 8 twice
    (256, 16, "ice40", 1),
    (100, 2, "ice40", 1),            # 200 bits: a block (cost 64) is cheaper than 200 FFs
    (32, 2, "ice40", 0),             # 64 bits: flip-flops (Yosys's tie goes to logic)
    (1024, 8, "ecp5", 1),            # one DP16KD as 1024 x 18
    (512, 72, "ecp5", 2),
    (16, 32, "ecp5", 0),             # LUT RAM
])
def test_brams_for(depth, width, family, count):
    assert brams_for(Memory("m", depth, width), family) == count
    assert brams_for(Memory("m", depth, width, copies=3), family) == 3 * count


def test_estimate_counts_memories_dsps_and_spram():
    config = EngineConfig(pes=4, scan_lanes=4, act_bits=8, acc_bits=24, acc_memory_bits=16,
                          max_features=128, max_rows=32, entry_depth=1024, pointer_depth=194,
                          bias_depth=64, occupancy_depth=64, max_layers=2)
    ice40 = estimate_resources(config, parts.PARTS["iCE40UP5K"])
    by_memory = dict(ice40.brams_by_memory)
    assert by_memory["entries"] == 4 * 2               # 1024 x 8 per PE
    assert by_memory["activations"] == 0 and ice40.spram == 2   # 32 bits wide: 2 SPRAMs
    assert ice40.dsp == 4 and ice40.bram == sum(by_memory.values())
    generic = estimate_resources(config, "ice40")       # no SPRAM known: block RAM
    assert generic.spram == 0 and dict(generic.brams_by_memory)["activations"] > 0
    # Calibration points (docs/compiler.md, benchmarks/fit_calibration.py): the digits board
    # top with 8 PEs (16-bit accumulators, codebook values in the entries, 2 requantizers)
    # packed into 4935 logic cells and 29 block RAMs; with 4 PEs and 19-bit accumulators (3
    # bits of 32 rows in registers, a requantizer per PE) into 5987 and 18.
    up5k = parts.PARTS["iCE40UP5K"]
    digits8 = EngineConfig(pes=8, scan_lanes=1, writeback_lanes=2, act_bits=8, acc_bits=16,
                           coef_bits=5, bias_bits=10, max_features=128, max_rows=16,
                           entry_depth=178, pointer_depth=194, bias_depth=18,
                           occupancy_depth=192, max_layers=2, fifo_depth=2,
                           max_column_entries=9, decoded_weights=True, readout_register=True)
    assert abs(estimate_resources(digits8, up5k).lut - 4935) / 4935 < 0.03
    assert estimate_resources(digits8, up5k).bram == 29
    digits4 = EngineConfig(pes=4, scan_lanes=1, act_bits=8, acc_bits=19, acc_memory_bits=16,
                           bias_bits=13, max_features=128, max_rows=32, entry_depth=266,
                           pointer_depth=194, bias_depth=35, occupancy_depth=192, max_layers=2,
                           fifo_depth=2, max_column_entries=13, readout_register=True)
    assert abs(estimate_resources(digits4, up5k).lut - 5987) / 5987 < 0.03
    assert estimate_resources(digits4, up5k).bram == 18
    with pytest.raises(ValueError, match="unknown FPGA family 'xilinx'"):
        estimate_resources(config, "xilinx")


def test_board_that_is_too_small_gets_needed_vs_available():
    codes = np.random.default_rng(0).integers(0, 4, (512, 512))
    network = QuantizedNetwork((layer("big", codes, [0, 1, 2, 3], np.zeros(512)),))
    with pytest.raises(DoesNotFit) as caught:
        derive_config(network, 16, board="icebreaker")
    message = str(caught.value)
    assert "does not fit the iCE40UP5K (estimate)" in message
    assert "LUT: needs about" in message and "the iCE40UP5K has 5280" in message
    assert "BRAM: needs about" in message and "the iCE40UP5K has 30" in message
    assert "DSP: needs about 16, the iCE40UP5K has 8" in message
    config = derive_config(network, 16, board="ulx3s-85f")
    assert config.pes == 16


def test_icebreaker_keeps_16_accumulator_bits_in_block_ram():
    assert derive_config(small_network(), 2, board="icebreaker").acc_memory_bits == 16
    assert derive_config(small_network(), 2, board="ulx3s-25f").acc_memory_bits == 0


def test_parts_data():
    up5k = parts.part("iCE40UP5K")
    assert (up5k.luts, up5k.brams, up5k.bram_kbits, up5k.dsps, up5k.sprams) == (5280, 30, 4,
                                                                              8, 4)
    ecp5 = {name: (p.luts, p.brams, p.dsps) for name, p in parts.PARTS.items()
            if p.family == "ecp5"}
    assert ecp5 == {"LFE5U-12F": (12288, 32, 28), "LFE5U-25F": (24288, 56, 28),
                    "LFE5U-45F": (43848, 108, 72), "LFE5U-85F": (83640, 208, 156)}
    assert parts.PARTS["LFE5U-25F"].bram_bits == 56 * 18 * 1024
    with pytest.raises(ValueError, match="unknown FPGA part 'XC7A35T'"):
        parts.part("XC7A35T")


def test_board_parts_agree_with_the_registry():
    assert parts.BOARD_PARTS == {name: b.part_name for name, b in boards().items()}


def test_a_board_too_small_for_one_requantizer_per_pe_gets_shared_ones(monkeypatch):
    network = small_network()
    plain = derive_config(network, 2, board="icebreaker")
    assert plain.writeback_lanes == 0                      # fits with one requantizer per PE
    # A part model where each requantizer costs so much that only sharing fits.
    expensive = resources.LutModel(shared=0, per_pe=0, per_codebook_bit=0, per_requantizer=3000,
                                   per_lane_bit=0, per_register_bit=0)
    monkeypatch.setitem(resources.LUT_MODELS, "ice40", expensive)
    shared = derive_config(network, 2, board="icebreaker")
    assert shared.writeback_lanes == 1 and shared.writeback_period == 2
    with pytest.raises(DoesNotFit, match="LUT: needs about 6000, the iCE40UP5K has 5280"):
        derive_config(network, 2, board="icebreaker", writeback_lanes=2)


def test_ice40_one_lane_engines_skip_zeros_where_the_map_fits(monkeypatch):
    network = small_network()
    assert not derive_config(network, 2, board="icebreaker").skip_zeros  # off by default
    assert derive_config(network, 2, board="icebreaker", skip_zeros=True).skip_zeros
    # Not taken, and said so.
    with pytest.warns(InputWarning, match="not taken: it is for an iCE40 board's one-lane"):
        assert not derive_config(network, 2, skip_zeros=True).skip_zeros     # no board
    with pytest.warns(InputWarning, match="not taken: it is for an iCE40's one-lane scan"):
        assert not derive_config(network, 2, board="ulx3s-85f", skip_zeros=True).skip_zeros
    # Its cells would not fit: the engine scans every activation.
    costly = resources.LutModel(shared=4900, per_pe=0, per_codebook_bit=0, per_requantizer=0,
                                per_lane_bit=0, per_register_bit=0, skip_zeros_cells=300)
    monkeypatch.setitem(resources.LUT_MODELS, "ice40", costly)
    with pytest.warns(InputWarning, match="would need about 5200 logic cells"):
        assert not derive_config(network, 2, board="icebreaker", skip_zeros=True).skip_zeros
    with pytest.raises(ValueError, match="skip_zeros needs scan_lanes 1"):
        EngineConfig(pes=8, scan_lanes=2, skip_zeros=True)
    with pytest.raises(ValueError, match="a power-of-two pes"):
        EngineConfig(pes=6, skip_zeros=True)


def test_configurations_saved_by_earlier_engines_still_load():
    # column_register became column_queue; registered_ready gave way to the broadcast unit's
    # credits.  An unknown field is still an error that names it.
    saved = {"pes": 4, "column_register": True, "registered_ready": True, "fifo_depth": 8}
    config = EngineConfig.from_json(saved)
    assert config.column_queue and config.fifo_depth == 8
    assert saved["column_register"]                       # the caller's dict is untouched
    with pytest.raises(ValueError, match="unknown engine configuration fields: queue_size"):
        EngineConfig.from_json({"pes": 4, "queue_size": 3})


# The digits CNN's 4- and 2-PE engines as `compile --board icebreaker` shapes them (docs/
# compiler.md: 4-PE engines packed to 4867-5525 cells and did not place; the 2-PE one placed).
DIGITS_CNN_ENGINE = dict(
    act_bits=8, code_bits=4, idx_bits=4, coef_bits=7, acc_bits=16, bias_bits=12, scan_lanes=1,
    max_layers=3, max_features=192, max_rows=4, entry_depth=165, pointer_depth=148, bias_depth=9,
    occupancy_depth=145, fifo_depth=2, shift_bits=6, max_column_entries=3, decoded_weights=True,
    readout_register=True, conv=True)


def test_conv_engines_keep_the_ice40s_placement_margin():
    part = parts.PARTS["iCE40UP5K"]
    four = EngineConfig(pes=4, writeback_lanes=1, **DIGITS_CNN_ENGINE)
    assert resources.fit_margin(part, four) == resources.CONV_PLACEMENT_MARGIN["ice40"]
    assert resources.fit_margin(part) == resources.FIT_ERROR["ice40"]
    with pytest.raises(resources.DoesNotFit,
                       match=r"a conv-mode engine needs 10% free: at most 4752 is accepted\)\n"
                             r"ways out: fewer PEs \(--pes 2 or so\)"):
        resources.check_board(four, part)
    two = EngineConfig(pes=2, **DIGITS_CNN_ENGINE)
    assert resources.check_board(two, part).lut <= 4752


@pytest.mark.parametrize("pes, lanes, link_registers", [(2, 1, False), (8, 8, True),
                                                        (12, 4, False), (32, 8, True)])
def test_the_estimates_queues_are_the_gateware_queues(pes, lanes, link_registers):
    # The ECP5 logic estimate counts the queues' LUT RAM cells (resources.engine_queues): the
    # widths and depths it assumes are the engine's.
    from sparseforge.compiler.resources import engine_queues
    from sparseforge.hw.broadcast import buffer_depth
    from sparseforge.hw.broadcast_offer import offer_layout
    from sparseforge.hw.pe_front_end import FrontEnd
    config = EngineConfig(pes=pes, scan_lanes=lanes, max_features=96, pointer_depth=290,
                          link_registers=link_registers)
    front_end = Fragment.get(FrontEnd(config), None)
    (queue,) = (sub.origins[0] for sub, name, _ in front_end.subfragments if name == "queue")
    activation_queues, offers = engine_queues(config)
    assert (activation_queues.depth, activation_queues.width, activation_queues.copies) == (
        queue.depth, queue.width, pes)
    assert (offers.depth, offers.width, offers.copies) == (
        buffer_depth(config), offer_layout(config).size, 1)


def test_ice40_queues_deeper_than_the_calibrated_two_cost_their_flip_flops():
    # Every iCE40 calibration engine had queues of 2; a deeper queue is flip-flops there.
    network = small_network()
    config = derive_config(network, 2, board="icebreaker")
    group_bits = resources.engine_queues(config)[0].width
    costs = [estimate_resources(dataclasses.replace(config, fifo_depth=depth), "ice40").lut
             for depth in (2, 3, 10)]
    assert costs[1] - costs[0] == pytest.approx(1.5 * 2 * group_bits, abs=1)
    assert costs[2] - costs[0] == pytest.approx(8 * 1.5 * 2 * group_bits, abs=1)
    with pytest.raises(DoesNotFit, match="LUT: needs about"):
        derive_config(network, 8, board="icebreaker", fifo_depth=1024)


def test_the_ways_out_are_ones_that_can_work():
    network = small_network()
    # Headroom that overflows the part is named as a way out; headroom past the engine's
    # limits is refused as such, not as an internal field.
    with pytest.raises(DoesNotFit, match=r"less headroom \(--headroom 60 makes every "
                                         r"capacity 61 times"):
        derive_config(network, 2, board="icebreaker", headroom=60)
    with pytest.raises(DoesNotFit, match="headroom 1000 enlarges the engine past what it "
                                         "can be: max_layers"):
        derive_config(network, 2, board="icebreaker", headroom=1000)
    # An engine whose shared part alone is past the part: fewer PEs is no way out.
    config = derive_config(network, 4, board="icebreaker")
    costly = dataclasses.replace(resources.LUT_MODELS["ice40"], shared=6000)
    part = parts.part("iCE40UP5K")
    assert "fewer PEs" in resources.fit_advice(config, part)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(resources.LUT_MODELS, "ice40", costly)
        assert "fewer PEs" not in resources.fit_advice(config, part)


def test_the_advice_names_write_back_lanes_that_exist_and_a_smaller_model_for_bram():
    part = parts.part("iCE40UP5K")
    odd = derive_config(small_network(), 3)
    assert odd.writeback_lanes in (0, 3)
    assert "write-back lanes" not in resources.fit_advice(odd, part)  # 3 PEs: none to share
    even = derive_config(small_network(), 8)
    assert "--writeback-lanes 1," in resources.fit_advice(even, part)
    # Its PEs' memories take a block RAM each already: a smaller model would not shrink them.
    advice = resources.fit_advice(even, part, {"BRAM"})
    assert "a smaller model will not do" in advice and "higher --sparsity" not in advice
    from tests.test_golden import random_network

    large = derive_config(random_network(np.random.default_rng(1), [256, 256, 10],
                                         density=0.3), 8)
    advice = resources.fit_advice(large, part, {"BRAM"})
    assert "higher --sparsity" in advice and "fewer PEs" not in advice
