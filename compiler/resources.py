"""What an engine configuration costs on an FPGA part, and whether it fits.

* :func:`engine_memories` lists every block-RAM candidate of the engine an
  :class:`EngineConfig` describes, and :func:`brams_for` maps one onto a family's block RAMs;
* :class:`LutModel` is a linear model of the engine's logic, calibrated against builds;
* :func:`estimate_resources` puts them together for a part, and :func:`check_board` refuses an
  engine that does not fit it (:class:`DoesNotFit`, naming each resource needed vs available).

The model reads the configuration only (it sits with :class:`EngineConfig`, below the engine's
gateware, so that the compiler can choose an engine for a part before any is generated); where
the engine makes a part-dependent choice of its own, the rule lives here and the engine calls it
(:func:`activations_in_spram`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from . import bus, isa
from .config import EngineConfig
from .errors import InputError
from .parts import Part

__all__ = [
    "FIT_ERROR",
    "LINK_FRAME_BYTES",
    "LUT_MODELS",
    "SPRAM_DEPTH",
    "SPRAM_WIDTH",
    "DoesNotFit",
    "LutModel",
    "Memory",
    "Resources",
    "activations_in_spram",
    "entries_in_spram",
    "board_shortages",
    "brams_for",
    "check_board",
    "engine_dsps",
    "engine_memories",
    "engine_queues",
    "estimate_resources",
    "fit_advice",
    "fit_margin",
    "fit_ways",
    "lutram_cells",
    "most_pes_that_fit",
    "multiplier_pieces",
]


class DoesNotFit(InputError):
    """A model needs more than an engine or a part has; the message lists each shortfall.
    For a board's refusal, ``most_pes_that_fit`` is the largest PE count below the engine's
    that the part holds (None when there is none, or it was not worked out), and
    ``other_ways`` the advice's ways out besides fewer PEs."""

    most_pes_that_fit: int | None = None
    other_ways: tuple[str, ...] = ()


@dataclass(frozen=True)
class Memory:
    """One memory of the engine: ``copies`` instances of ``depth`` x ``width`` bits.
    ``pinned``: the gateware asks for block RAM (``ram_style``), however small."""
    name: str
    depth: int
    width: int
    copies: int = 1
    pinned: bool = False

    @property
    def bits(self) -> int:
        return self.depth * self.width * self.copies


# The board top's link (boards/gateware/frame_receiver.py): a frame buffer of
# protocol.MAX_PAYLOAD (about 256) bytes plus the sequence, code and CRC bytes; a block RAM on
# either family.  (Stated here, below the boards; tests/test_build_fit.py checks that it takes
# the blocks the board's takes.)
LINK_FRAME_BYTES = 260


def engine_memories(config: EngineConfig, family: str | None = None) -> tuple[Memory, ...]:
    """Every block-RAM candidate of the engine in its board top (hw/pe.py, hw/engine.py,
    hw/broadcast.py, boards/gateware): per PE the entry memory, the parameter memory (column
    words and biases) and the accumulator file's RAM part; shared the activation buffer (N
    activations wide), the occupancy words, the codebooks (none with ``decoded_weights``:
    nothing reads them, Yosys removes them), the descriptors, the cycle counters and the
    link's frame buffer; with ``multiplier_bits``, each requantizer's scale words; with
    ``table_slots``, each requantizer's activation tables; in conv mode
    the geometry words (32-bit chunks) and each requantizer's pooling registers.  The
    activation buffer holds the feature maps in conv mode (``max_features`` covers them).

    The descriptors are as wide as the fields the board's engine reads: without its
    activation streams (the host bus is the way in) nothing reads ``in_features`` or
    ``out_features``, and Yosys drops those bits; on iCE40 they are pinned to block RAM (the
    engine asks for it), as the codebook is everywhere."""
    pes = config.pes
    descriptor_bits = isa.descriptor_layout(config).size - 2 * config.feature_bits
    return (
        Memory("entries", config.entry_depth, config.entry_memory_bits, pes),
        Memory("parameters", config.parameter_depth, isa.parameter_bits(config), pes),
        Memory("accumulators", config.max_rows, config.acc_memory_bits or config.acc_bits,
               pes, pinned=family == "ice40"),
        Memory("activations", config.act_words, pes * config.act_bits),
        Memory("occupancy", config.occupancy_depth, isa.occupancy_layout(config).size),
        Memory("codebook", 0 if config.decoded_weights else
               config.max_layers * config.codebook_size, config.coef_bits, pinned=True),
        Memory("descriptors", config.max_layers, descriptor_bits, pinned=family == "ice40"),
        Memory("cycles", config.max_layers, 32),
        Memory("link", LINK_FRAME_BYTES, 8),
    ) + ((Memory("nonzero map", config.act_words, pes),) if config.skip_zeros else ()) + (
        (Memory("scales", config.scale_depth, isa.scale_layout(config).size,
                config.writeback_lanes or pes),) if config.row_scales else ()) + (
        (Memory("tables", config.table_slots << config.act_bits, config.act_bits,
                config.writeback_lanes or pes),) if config.table_slots else ()) + ((
        Memory("geometry", config.max_layers << bus.chunk_bits(
            isa.geometry_layout(config).size), bus.BUS_DATA_BITS),
        Memory("pooling", config.pooling_depth, config.act_bits,
               config.writeback_lanes or pes)) if config.conv else ())


def engine_queues(config: EngineConfig) -> tuple[Memory, ...]:
    """The engine's queues: memories read without a clock, so never block RAM (LUT RAM on
    ECP5, flip-flops on iCE40).  Each PE's activation queue (``hw/pe_front_end.py``:
    ``fifo_depth`` groups of ``isa.group_layout``, with several lanes also the first lane's
    pointer index and value and its second lane) and the broadcast unit's buffer of offers
    (``hw/broadcast.buffer_depth`` groups of ``hw/broadcast_offer.offer_layout``: each with,
    per PE, whether and in which lanes it has work).  tests/test_program_config.py checks them
    against the gateware's."""
    pes, lanes = config.pes, config.scan_lanes
    group_bits = isa.group_layout(config).size
    offer_bits = (max(1, (config.pointer_depth - 1).bit_length()) + lanes * config.act_bits
                  + pes)
    if lanes > 1:
        group_bits += ((config.pointer_depth - 1).bit_length() + 1 + config.act_bits
                       + (lanes - 1).bit_length())
        offer_bits += pes * ((lanes - 1).bit_length() + lanes)
    return (Memory("activation queues", config.fifo_depth, group_bits, pes),
            Memory("offers", 7 + config.link_registers, offer_bits))


# Block RAM aspect ratios (depth, width): iCE40 SB_RAM40_4K, ECP5 DP16KD.
_BRAM_SHAPES = {
    "ice40": ((256, 16), (512, 8), (1024, 4), (2048, 2)),
    "ecp5": ((512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1)),
}
# Yosys's memory_libmap weighs a block RAM (iCE40 SB_RAM40_4K: cost 64 in its brams.txt)
# against one per bit in flip-flops: an iCE40 memory of at most 64 bits per block it would
# take stays in logic.  On ECP5 it weighs a DP16KD (cost 128 in lattice/brams_16kd.txt)
# against LUT RAM, TRELLIS_DPR16X4 cells of 16 words x 4 bits (cost 4 each in
# lutrams_trellis.txt) plus half a point per bit of the read multiplexer and per write enable
# of the demultiplexer over the cells' depth (memory_libmap.cc's FACTOR_MUX, FACTOR_DEMUX),
# and takes the cheaper: what every memory of the ECP5 calibration sweep did
# (benchmarks/fit_calibration.py --board ulx3s-85f).
_LOGIC_BITS_PER_BLOCK = {"ice40": 64}
_LUTRAM_CELL = {"ecp5": (16, 4, 4)}         # depth, width, cost; against a block's cost
_BLOCK_COST = {"ecp5": 128}
SPRAM_WIDTH = 16            # iCE40UP SB_SPRAM256KA: 16k x 16
SPRAM_PORT_CELLS = 18       # an SPRAM entry memory's address multiplexer and enables, per PE
SPRAM_DEPTH = 16384


def brams_for(memory: Memory, family: str) -> int:
    """Block RAMs for one memory: the best aspect ratio's ``ceil(width / w) * ceil(depth / d)``
    per copy.  Unless pinned to block RAM, a small memory goes to flip-flops (iCE40: at most
    64 bits per block it would take, Yosys's cost rule) or LUT RAM (ECP5: where Yosys's cost
    for it is lower)."""
    if family not in _BRAM_SHAPES:
        raise ValueError(f"unknown FPGA family {family!r}; known: {', '.join(_BRAM_SHAPES)}")
    bits = memory.depth * memory.width
    if bits == 0:
        return 0
    blocks = min(math.ceil(memory.width / w) * math.ceil(memory.depth / d)
                 for d, w in _BRAM_SHAPES[family])
    if not memory.pinned:
        if family in _LOGIC_BITS_PER_BLOCK and bits <= _LOGIC_BITS_PER_BLOCK[family] * blocks:
            return 0
        if family in _LUTRAM_CELL and _lutram_cost(memory, family) < _BLOCK_COST[family] * blocks:
            return 0
    return memory.copies * blocks


def _lutram_cost(memory: Memory, family: str) -> float:
    """memory_libmap's cost of one copy of ``memory`` in LUT RAM: the cells, and the read
    multiplexer and write demultiplexer over their depth."""
    depth = _LUTRAM_CELL[family][0]
    chunks = math.ceil(memory.depth / depth)
    return (lutram_cells(memory, family) * _LUTRAM_CELL[family][2]
            + 0.5 * (chunks - 1) * memory.width + (0.5 * chunks if chunks > 1 else 0))


def lutram_cells(memory: Memory, family: str) -> int:
    """LUT RAM cells one copy of ``memory`` takes where the family has them (ECP5
    TRELLIS_DPR16X4: 16 words x 4 bits), else 0."""
    if family not in _LUTRAM_CELL or memory.depth * memory.width == 0:
        return 0
    depth, width, _ = _LUTRAM_CELL[family]
    return math.ceil(memory.depth / depth) * math.ceil(memory.width / width)


def entries_in_spram(config: EngineConfig, device: str) -> bool:
    """Whether the PEs' entry memories are the part's single-port RAMs
    (``config.spram_entries`` on an iCE40 UltraPlus): the one rule, read by the engine
    (``hw/pe_memories.py``) and by the estimate below."""
    return config.spram_entries and device.startswith("iCE40UP")


def activations_in_spram(config: EngineConfig, device: str) -> bool:
    """Whether the engine's activation buffer is made of the part's single-port RAMs: on an
    iCE40 UltraPlus (``device`` a part name such as ``"iCE40UP5K"``), when the word of ``pes``
    activations fits four SPRAMs' nibble write masks and their depth.  The one rule, read by
    the engine (``hw/activation_buffer.py``) and by the estimate below."""
    return (device.startswith("iCE40UP") and config.pes * config.act_bits <= 64
            and config.act_bits % 4 == 0 and config.act_words <= SPRAM_DEPTH)


@dataclass(frozen=True)
class LutModel:
    """A linear model of an engine's logic -- an ESTIMATE, to be recalibrated against
    nextpnr as the engine changes.  What it counts is the family's unit of logic as nextpnr
    reports it: iCE40 logic cells (``ICESTORM_LC``: a LUT4 with its flip-flop, so flip-flops
    without a LUT count too), ECP5 LUT4s.

    ``shared`` (sequencer, broadcast unit, host bus, small memories in logic) +
    ``per_pe * N`` (pointer and entry walker, decode, MAC control, accumulator bypass,
    queues) + ``per_codebook_bit`` per bit of every PE's codebook multiplexer (``N * coef_bits
    * (2**code_bits - 1)``; none with ``decoded_weights``) + ``per_requantizer`` per
    requantizer (``writeback_lanes``, or one per PE) +
    ``per_lane_bit`` per bit of every PE's activation queue word beyond one scan lane
    (``N * (scan_lanes - 1) * act_bits``: the queues hold ``scan_lanes`` activations) +
    ``per_register_bit`` per accumulator bit kept in registers (``acc_bits -
    acc_memory_bits`` per row and PE) + ``per_address_bit`` per bit of every PE's entry
    address (``N * ceil(log2(entry_depth))``, at least ``MIN_ADDRESS_BITS``: the pointers,
    counters and comparators of the walker are that wide) + ``per_requantizer_bit`` per accumulator bit of every requantizer
    (``writeback_lanes or N`` times ``acc_bits``: its adders, shifter and saturation) +
    ``per_lutram_cell`` per LUT RAM cell (ECP5: ``lutram_cells`` of the queues,
    ``engine_queues``, and of the memories left out of block RAM) + ``per_queue_cell`` more
    per cell of the queues.

    With ``multiplier_bits`` (per-row requantization) each requantizer costs ``per_sum_bit``
    more per bit of its sum (``acc_bits + multiplier_bits + 1``: the rounding adder, the
    wider shifter, the tie mask), ``per_piece_bit`` per sum bit for each DSP piece its product
    takes beyond one (Yosys adds the pieces), and ``per_product_bit`` per bit product of the
    pieces too small for a DSP; with ``lut_products`` each PE's product costs
    ``per_product_bit`` per bit product (``act_bits * coef_bits``).  From Yosys builds of the
    bare engine (8 PEs, 2 requantizers, 16-bit accumulators; multipliers of 16 and 20 bits,
    products of 8 x 4 bits): 263 and 433 logic cells more per requantizer, 76 per PE.

    iCE40: fitted (least squares on the relative error) to nextpnr's packed logic cells of the
    whole board top on the calibration sweep, ``benchmarks/fit_calibration.py`` (15 designs:
    5 models, 1 to 8 PEs; docs/compiler.md has the table): within 1.9% on every one of them,
    3.4% when each is left out of the fit in turn; the fit check allows for that error
    (``FIT_ERROR``).  ECP5: fitted the same way to the ECP5 sweep (``fit_calibration.py
    --board ulx3s-85f``, 12 designs: 4 models, 8 to 32 PEs): within 1.4%, 1.8% left out.
    """
    shared: float
    per_pe: float
    per_codebook_bit: float
    per_requantizer: float
    per_lane_bit: float
    per_register_bit: float
    per_sum_bit: float = 8.0
    per_piece_bit: float = 3.7
    per_product_bit: float = 2.4
    per_address_bit: float = 0.0
    per_requantizer_bit: float = 0.0
    # Conv mode: the address generators, the geometry registers and the position walker,
    # and each requantizer's pooling comparator (ECP5: a first estimate from the design, about
    # 14 adders of 8 to 13 bits and 200 flip-flops; iCE40: calibrated, see LUT_MODELS), and
    # per PE its share of the patch's group addresses and the wider activation-buffer ports.
    per_lutram_cell: float = 0.0
    per_queue_cell: float = 0.0
    conv_shared: float = 450.0
    conv_per_requantizer_bit: float = 3.0
    conv_per_pe: float = 0.0
    # skip_zeros: the nonzero map's zero tests and the fetch stage's word walk (flags, slot,
    # lowest-lane detector, its registered "empty" and "one lane left"), less the group
    # counter it replaces: 172 logic cells on the iCEBreaker's 8-PE digits engine (5225
    # packed against 5053 without it, at 262fa5d).
    skip_zeros_cells: float = 172.0
    # layer_activation: each requantizer's comparisons with the layer's range and the choice
    # of its shift (a negative sum's), and the shared registers of the range and that shift
    # (from the design, not calibrated: two comparators and a multiplexer per activation bit).
    activation_per_requantizer_bit: float = 4.0
    activation_shared: float = 24.0
    # table_slots: each requantizer's table read (its address from the value and the slot,
    # the choice of the table's word or the value, a register) and the host's table writes,
    # and the descriptor's two fields: fitted to two iCEBreaker builds of a 64-64-32-10 MLP
    # with GELU and Tanh against the same engine without tables (at this commit's parent:
    # 8 PEs, one requantizer, 5566 against 5493 cells; 6 PEs, three, 5517 against 5379).
    table_shared: float = 40.0
    table_per_requantizer: float = 33.0
    # iCE40: a PE's activation queue is flip-flops (no LUT RAM), and every engine of the
    # calibration sweep had queues of ``QUEUE_DEPTH_CALIBRATED`` groups, absorbed in the terms
    # above; each group more costs a flip-flop per bit and its share of the read multiplexer
    # (from the design, not calibrated: a cell and a half per bit).
    per_queue_entry_bit: float = 0.0

    def luts(self, config: EngineConfig, family: str = "ice40") -> int:
        high_bits = config.acc_bits - config.acc_memory_bits if config.acc_memory_bits else 0
        codebook_bits = (0 if config.decoded_weights
                         else config.coef_bits * (config.codebook_size - 1))
        scaled = 0.0
        if config.row_scales:
            width = config.acc_bits + config.multiplier_bits + 1
            dsps, logic_bits = multiplier_pieces(config.acc_bits, config.multiplier_bits,
                                                 family)
            scaled = (config.writeback_lanes or config.pes) * (
                self.per_sum_bit * width + self.per_piece_bit * max(0, dsps - 1) * width
                + self.per_product_bit * logic_bits)
        if config.lut_products:
            scaled += self.per_product_bit * config.pes * config.act_bits * config.coef_bits
        if config.conv:
            scaled += (self.conv_shared + self.conv_per_pe * config.pes
                       + self.conv_per_requantizer_bit * config.act_bits
                       * (config.writeback_lanes or config.pes))
        if self.per_lutram_cell or self.per_queue_cell:
            queue_cells = sum(q.copies * lutram_cells(q, family) for q in engine_queues(config))
            memory_cells = sum(m.copies * lutram_cells(m, family)
                               for m in engine_memories(config, family)
                               if brams_for(m, family) == 0)
            scaled += (self.per_lutram_cell * (memory_cells + queue_cells)
                       + self.per_queue_cell * queue_cells)
        if config.skip_zeros:
            scaled += self.skip_zeros_cells
        if config.spram_entries:
            # An SPRAM has one port: the host's write address and the walker's read address
            # share it through a multiplexer (from the design, not calibrated).
            scaled += SPRAM_PORT_CELLS * config.pes
        if config.table_slots:
            scaled += (self.table_shared + self.table_per_requantizer
                       * (config.writeback_lanes or config.pes))
        if config.layer_activation:
            scaled += (self.activation_shared + self.activation_per_requantizer_bit
                       * config.act_bits * (config.writeback_lanes or config.pes))
        if self.per_queue_entry_bit:
            group_bits = engine_queues(config)[0].width
            scaled += (self.per_queue_entry_bit * config.pes * group_bits
                       * (config.fifo_depth - QUEUE_DEPTH_CALIBRATED))
        address_bits = max(MIN_ADDRESS_BITS, (config.entry_depth - 1).bit_length())
        requantizers = config.writeback_lanes or config.pes
        return math.ceil(scaled + self.shared + self.per_pe * config.pes
                         + self.per_address_bit * config.pes * address_bits
                         + self.per_requantizer_bit * requantizers * config.acc_bits
                         + self.per_codebook_bit * config.pes * codebook_bits
                         + self.per_requantizer * (config.writeback_lanes or config.pes)
                         + self.per_lane_bit * config.pes * (config.scan_lanes - 1)
                         * config.act_bits
                         + self.per_register_bit * config.pes * config.max_rows * high_bits)


# The fewest entry address bits the logic estimate counts per PE.  Every design of the iCE40
# calibration sweep had 8 to 11, and there the PE's logic follows them (``per_address_bit``
# stands in for the PE as a whole, ``per_pe`` being 0); below 8 it does not shrink as fast:
# a 64-64-32-10 MLP at 8 and 6 PEs (7 bits) packed 5493 and 5379 cells against 5194 and
# 5079 counting 7 (the check accepted the second, which nextpnr cannot place), 5476 and 5290
# counting 8 (-0.3%, -1.7%).  A 13-32-3 MLP (5-6 bits) is over-estimated counting 8 (4138,
# 4476 and 4619 cells at 4, 6 and 8 PEs against 4379, 4817 and 5011: the safe side).
MIN_ADDRESS_BITS = 8

# The activation queues' depth in every engine of the iCE40 calibration sweep (the iCE40
# default, ``configure.derive_config``).
QUEUE_DEPTH_CALIBRATED = 2

LUT_MODELS = {
    # iCE40 in logic cells, fitted to the calibration sweep (the engine of commit 361f8bb in
    # the board top with PLL and UART link): a PE costs about 35 cells per bit of its entry
    # addresses (282 for the 8-PE digits engine), a requantizer 10.9 per accumulator bit (174
    # at 16 bits), an accumulator bit kept in registers 2.9 (a flip-flop, its write enable
    # and the read multiplexer), the per-row requantization 0.8 times its earlier Yosys
    # figures.  The codebook multiplexer was measured alone (Yosys, a 16-to-1 choice of 8
    # bits: 104 LUT4s; about half that on ECP5, PFU multiplexers) and kept as measured in the
    # fit.  Not calibrated (nothing in the sweep has them on an iCE40): scan lanes beyond one.
    # The link's rework (commit 72fb7ac: two frames, INFER, sessions) added 135 and 117 cells
    # to the 1- and 8-PE digits designs re-packed after it: ``shared`` follows, +126.
    # Conv mode, fitted (least squares) to the digits CNN's engine at 1, 2, 4 and 8 PEs packed
    # at commit bba0096 (4162, 4664, 5525 and 5920 cells; the first estimate was 548 to 846
    # low): 533 cells more shared and 39 per PE; within 1.3% on the four.
    "ice40": LutModel(shared=2327 + 126, per_pe=0, per_codebook_bit=104 / 120, per_requantizer=0,
                      per_lane_bit=8.5, per_register_bit=2.92, per_address_bit=35.23,
                      per_requantizer_bit=10.88, per_sum_bit=8.0 * 0.8,
                      per_piece_bit=3.7 * 0.8, per_product_bit=2.4 * 0.8,
                      conv_shared=450 + 533, conv_per_pe=39, per_queue_entry_bit=1.5),
    # ECP5 in LUT4s (TRELLIS_COMB), fitted (least squares on the relative error) to the ECP5
    # sweep (12 designs, 8 to 32 PEs): its logic follows its LUT RAM, which the queues and the
    # memories Yosys leaves out of block RAM take (a TRELLIS_DPR16X4 cell packs into about 7
    # LUT4s, its read multiplexer and write decoder add to it), and the queues' cells stand in
    # for the per-PE logic that grows with the lanes as they do.  Within 1.4% on every design,
    # 1.8% left out of the fit; block RAMs exact.  Not calibrated on ECP5 (nothing in the sweep
    # has them): codebook multiplexers, accumulator bits in registers, conv mode.
    "ecp5": LutModel(shared=2111.8, per_pe=0, per_codebook_bit=0.5, per_requantizer=0,
                     per_lane_bit=0, per_register_bit=0.2, per_sum_bit=9.36, per_piece_bit=0,
                     per_requantizer_bit=18.22, per_lutram_cell=9.18, per_queue_cell=5.09),
}


# Yosys's mul2dsp: a product is cut into pieces of at most this many bits per operand; a
# piece becomes a DSP when both its operands have at least 2 bits (and, on iCE40, its product
# at least 11), else it is logic.
_DSP_PIECES = {"ice40": (16, 11), "ecp5": (18, 0)}


def multiplier_pieces(a_bits: int, b_bits: int, family: str) -> tuple[int, int]:
    """``(DSP blocks, bit products in logic)`` of an ``a_bits x b_bits`` product, as Yosys
    cuts it for ``family``."""
    widest, least_product = _DSP_PIECES[family]

    def cuts(bits):
        return [widest] * (bits // widest) + ([bits % widest] if bits % widest else [])

    dsps = logic = 0
    for a in cuts(a_bits):
        for b in cuts(b_bits):
            if a >= 2 and b >= 2 and a + b >= least_product:
                dsps += 1
            else:
                logic += a * b
    return dsps, logic


def engine_dsps(config: EngineConfig, family: str) -> int:
    """The engine's DSP blocks: a PE's product each (none with ``lut_products``), and with
    ``multiplier_bits`` each requantizer's product."""
    dsps = 0 if config.lut_products else config.pes
    if config.row_scales:
        dsps += (config.writeback_lanes or config.pes) * multiplier_pieces(
            config.acc_bits, config.multiplier_bits, family)[0]
    return dsps


@dataclass(frozen=True)
class Resources:
    """An estimate of an engine's use of a part: LUT4s, block RAMs, DSPs (multipliers) and
    iCE40UP SPRAMs, with the block RAMs per memory so a report can say where they go."""
    family: str
    lut: int
    bram: int
    dsp: int
    spram: int
    bram_bits: int
    brams_by_memory: tuple[tuple[str, int], ...]

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "brams_by_memory": dict(self.brams_by_memory),
                "estimate": True}


def estimate_resources(config: EngineConfig, part: Part | str,
                       lut_model: LutModel | None = None) -> Resources:
    """The engine's estimated use of ``part`` (a Part, or a family name ``"ice40"`` /
    ``"ecp5"`` for a generic part without SPRAM): block RAMs from the memories' shapes
    (:func:`engine_memories`, :func:`brams_for`; the activation buffer in SPRAM where the
    engine puts it there), DSP multipliers (:func:`engine_dsps`), LUTs from the family's
    :class:`LutModel`.  An estimate, not a synthesis result."""
    family = part if isinstance(part, str) else part.family
    spram_part = None if isinstance(part, str) else part
    if family not in LUT_MODELS:
        raise ValueError(f"unknown FPGA family {family!r}; known: {', '.join(LUT_MODELS)}")
    memories = engine_memories(config, family)
    in_spram = spram_part is not None and activations_in_spram(config, spram_part.name)
    entries_spram = spram_part is not None and entries_in_spram(config, spram_part.name)
    by_memory = tuple((m.name, 0 if (in_spram and m.name == "activations"
                                     or entries_spram and m.name == "entries")
                       else brams_for(m, family)) for m in memories)
    spram = (math.ceil(config.pes * config.act_bits / SPRAM_WIDTH) if in_spram else 0) + (
        config.pes if entries_spram else 0)
    lut_model = lut_model or LUT_MODELS[family]
    return Resources(family=family, lut=lut_model.luts(config, family),
                     bram=sum(count for _, count in by_memory),
                     dsp=engine_dsps(config, family), spram=spram,
                     bram_bits=sum(m.bits for m in memories), brams_by_memory=by_memory)


# How far the logic estimate may be below what nextpnr packs, per family, from the calibration
# sweeps (benchmarks/fit_calibration.py, docs/compiler.md): iCE40 at most 1.9% off on its
# sweep, 3.4% below for a design left out of the fit; ECP5 1.4% and 1.8%.  The fit check
# refuses an engine whose estimate lies within this fraction of the part's capacity.
FIT_ERROR = {"ice40": 0.035, "ecp5": 0.02}

# A conv-mode engine on an iCE40 places worse than its cell count says: the digits CNN's
# 4-PE engine packed to 4867 of 5280 cells (92%) and nextpnr found no legal placement, where
# its 2-PE engine (4542, 86%) placed and Linear engines place at 98%.  Its many narrow
# counters and registers with their own enables fill logic blocks unevenly.
CONV_PLACEMENT_MARGIN = {"ice40": 0.10}


def fit_margin(part: Part, config: EngineConfig | None = None) -> float:
    """The fraction of ``part``'s logic the fit check keeps free: the estimate's error, or
    for a conv-mode ``config`` what its placement needs (``CONV_PLACEMENT_MARGIN``) when
    that is more."""
    margin = FIT_ERROR.get(part.family, 0.0)
    if config is not None and config.conv:
        margin = max(margin, CONV_PLACEMENT_MARGIN.get(part.family, 0.0))
    return margin


def check_board(config: EngineConfig, part: Part, *, engine_for=None,
                imported: bool = False) -> Resources:
    """Refuse an engine that cannot fit ``part`` (``boards.parts.Part``): a DoesNotFit naming
    each resource, needed vs available, and the ways out (:func:`fit_advice`, which takes
    ``engine_for`` and ``imported``).  Logic counts as short when its estimate lies within the estimate's error
    (:func:`fit_margin`) of the part's capacity: such an engine may not place.  Returns the
    estimate when it fits."""
    use, problems = board_shortages(config, part)
    if problems:
        short = {line.split(":")[0] for line in problems}
        fitting = (most_pes_that_fit(config, part, engine_for)
                   if config.pes > 1 and engine_for is not None else None)
        ways = fit_ways(config, part, short, engine_for=engine_for, imported=imported,
                        fitting=fitting)
        error = DoesNotFit(f"the engine ({config.pes} PE{'s' if config.pes > 1 else ''}, "
                           f"{config.entry_depth} entries per PE) "
                           f"does not fit the {part.name} (estimate):\n  "
                           + "\n  ".join(problems) + "\nways out: " + "; ".join(ways))
        error.most_pes_that_fit = fitting
        error.other_ways = tuple(way for way in ways if _FEWER_PES not in way)
        raise error
    return use


def board_shortages(config: EngineConfig, part: Part) -> tuple[Resources, list[str]]:
    """The engine's estimate on ``part`` and what :func:`check_board` refuses it for, a line
    per resource that is short (none when it fits)."""
    use = estimate_resources(config, part)
    margin = fit_margin(part, config)
    logic_limit = math.floor(part.luts * (1 - margin))
    why_margin = ("a conv-mode engine needs" if margin > FIT_ERROR.get(part.family, 0.0)
                  else "the estimate is good to")
    problems = []
    if use.lut > logic_limit:
        problems.append(f"LUT: needs about {use.lut}, the {part.name} has {part.luts}"
                        + (f" ({why_margin} {100 * margin:g}% free: at most {logic_limit} "
                           f"is accepted)" if margin and use.lut <= part.luts else ""))
    problems += [f"{name}: needs about {need}, the {part.name} has {have}"
                 for name, need, have in (("BRAM", use.bram, part.brams),
                                          ("DSP", use.dsp, part.dsps),
                                          ("SPRAM", use.spram, part.sprams))
                 if need > have]
    return use, problems


# fit_advice's default: work out the most PEs that fit itself.
_WORK_OUT = object()


def most_pes_that_fit(config: EngineConfig, part: Part, engine_for) -> int | None:
    """The largest PE count below ``config.pes`` whose engine (``engine_for(pes)``: the one
    the compiler makes for the model with that many PEs, None where it makes none) the fit
    check accepts on ``part``, or None when not even one PE fits.  Every count is tried: the
    estimate does not fall with each PE taken away (a PE's memories hold more entries, and the
    write-back lanes and DSPs are chosen anew)."""
    for pes in range(config.pes - 1, 0, -1):
        candidate = engine_for(pes)
        if candidate is not None and not board_shortages(candidate, part)[1]:
            return pes
    return None


def fit_advice(config: EngineConfig, part: Part, short=("LUT",), *, engine_for=None,
               imported: bool = False) -> str:
    """The ways out of an engine that does not fit ``part`` as the line printed under a
    refusal, the compiler's and a failed placement's alike: ``ways out: ...``
    (:func:`fit_ways`)."""
    return "ways out: " + "; ".join(fit_ways(config, part, short, engine_for=engine_for,
                                             imported=imported))


# What every way out by fewer PEs says (fit_ways), to tell it from the others.
_FEWER_PES = "fewer PEs"


def fit_ways(config: EngineConfig, part: Part, short=("LUT",), *, engine_for=None,
             imported: bool = False, fitting: int | None | object = _WORK_OUT) -> list[str]:
    """The ways out of an engine that does not fit ``part`` (``short``: the resources it
    lacks, ``"LUT"``, ``"BRAM"``, ``"DSP"``, ``"SPRAM"``), one phrase each.  With
    ``engine_for`` (PE count -> the engine the compiler makes for the model, or None) fewer
    PEs are advised as the
    largest count the fit check accepts (:func:`most_pes_that_fit`), or said not to help;
    without it, as a guess from this engine alone.  ``imported``: the model came in quantized
    (``sf.load_quantized``), so ``compress``'s options do not apply to it; the advice names
    what does (its own export, narrower or pruned further).  ``fitting``: that largest count
    when the caller has worked it out already."""
    from .parts import BOARD_PARTS, PARTS

    short = set(short)
    ways = []
    # The engine's shared part alone (one PE, nothing per PE shared): when that is past the
    # part, fewer PEs cannot be the way out.
    alone = estimate_resources(dataclasses.replace(config, pes=1, scan_lanes=1,
                                                   writeback_lanes=0), part)
    if config.pes > 1 and engine_for is not None:
        if fitting is _WORK_OUT:
            fitting = most_pes_that_fit(config, part, engine_for)
        if fitting is not None:
            ways.append(f"{_FEWER_PES} (--pes {fitting}, or pes={fitting} in sf.compile: the "
                        f"most that fit)")
        else:
            ways.append(f"({_FEWER_PES} will not do: with 1 PE it does not fit the {part.name} "
                        f"either)")
    elif (config.pes > 1 and alone.lut <= part.luts * (1 - fit_margin(part, config))
            and short & {"LUT", "DSP", "SPRAM"}):
        # Conv mode takes a power of two.
        fewer = config.pes // 2 if config.pes > 4 or config.conv else config.pes - 1
        ways.append(f"{_FEWER_PES} (--pes {max(1, fewer)} or so)")
    high_bits = config.acc_bits - config.acc_memory_bits if config.acc_memory_bits else 0
    if "LUT" in short and (high_bits > 0 or (part.family == "ice40" and config.acc_bits > 16)):
        now = (f"now {config.acc_bits} bits, {high_bits or config.acc_bits} of them in logic "
               f"per row")
        if imported:
            # The imported model's own weight and activation widths set its accumulators.
            ways.append(f"narrower accumulators: export the model with narrower weights or "
                        f"activations ({now})")
        else:
            ways.append(f"narrower accumulators: compress with --max-acc-bits 16 ({now})")
    if "LUT" in short and config.scan_lanes > 1:
        ways.append(f"fewer lanes (--scan-lanes {config.scan_lanes // 2}; now "
                    f"{config.scan_lanes})")
    # Requantizers shared by a power-of-two number of PEs that divides the PE count.
    sharing = [config.pes // period for period in (2 ** k for k in range(1, 7))
               if period <= config.pes and config.pes % period == 0]
    if "LUT" in short and sharing and min(sharing) < (config.writeback_lanes or config.pes):
        ways.append(f"fewer write-back lanes (requantizers shared by more PEs: "
                    f"--writeback-lanes {min(sharing)}, or writeback_lanes={min(sharing)} in "
                    f"sf.compile; now {config.writeback_lanes or config.pes})")
    if "BRAM" in short:
        blocks = estimate_resources(config, part).brams_by_memory
        per_pe = sum(count for name, count in blocks if name in ("entries", "parameters"))
        if per_pe <= 2 * config.pes:
            # A PE's memories cannot take fewer than a block each: say where the rest go.
            spent = ", ".join(f"{name} {count}" for name, count in blocks if count)
            ways.append(f"(a smaller model will not do: each PE's entries and parameters "
                        f"take a block RAM each already; the block RAMs go to {spent}"
                        + ("; the scales are the per-row requantization of a model "
                           "imported with its own quantization" if config.row_scales else "")
                        + ")")
        elif imported:
            ways.append("a smaller model in the PEs' memories (prune the model further, or "
                        "give it narrower weights, where it is trained, and export it again)")
        else:
            ways.append("a smaller model in the PEs' memories (compress with a higher "
                        "--sparsity or fewer --weight-bits)")
    # The smallest board whose part holds this engine by the estimate (the engine as
    # configured; compiled for that board it would be shaped for it, usually smaller).
    for board, name in sorted(BOARD_PARTS.items(), key=lambda item: PARTS[item[1]].luts):
        other = PARTS[name]
        if other.luts <= part.luts:
            continue
        use = estimate_resources(config, other)
        if (use.lut <= other.luts * (1 - fit_margin(other, config)) and use.bram <= other.brams
                and use.dsp <= other.dsps and use.spram <= other.sprams):
            ways.append(f"a bigger board (--board {board}: {other.name})")
            break
    return ways
