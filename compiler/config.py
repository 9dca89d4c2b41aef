"""The engine's configuration: one frozen, validated record that hw/, compiler/ and sim/ share.

The compiler derives it from a quantized network and a target board; the engine is generated
from it; the golden and cycle models read it.  Widths that follow from other fields are
properties, so nobody re-derives them.  Round-trips through JSON (``engine.json`` beside the
program image).
"""

from __future__ import annotations

import json
import numbers
from dataclasses import asdict, dataclass, fields

from .bus import INDEX_BITS
from .numerics import ceil_div

__all__ = ["EngineConfig", "MAX_PES", "check_pes"]

MAX_PES = 64


def check_pes(pes, name: str = "pes") -> int:
    """The one check of a PE count, wherever one comes in (API, CLI, configuration): an
    integer (NumPy's too; not a bool) from 1 to :data:`MAX_PES`.  Returns it as an ``int``."""
    integral = isinstance(pes, numbers.Integral) and not isinstance(pes, bool)
    if not integral or not 1 <= pes <= MAX_PES:
        raise ValueError(f"{name} must be between 1 and {MAX_PES}, not {pes!r}")
    return int(pes)


def _bits_for(count: int) -> int:
    """Unsigned width that can hold the values 0 .. count (inclusive)."""
    return max(1, int(count).bit_length())


# An iCE40 UltraPlus SPRAM (SB_SPRAM256KA), for spram_entries: words and their width.
SPRAM_ENTRY_DEPTH = 16384
SPRAM_ENTRY_BITS = 16

_LATER_DEFAULTS = {"multiplier_bits": 0, "rounding_bits": 0, "lut_products": False,
                   "conv": False, "skip_zeros": False, "layer_activation": False,
                   "table_slots": 0, "spram_entries": False, "pool_rows": 0}


@dataclass(frozen=True)
class EngineConfig:
    """Parameters of one generated engine.

    Parameters
    ----------
    pes : number of processing elements N; row ``i`` of every layer belongs to PE ``i mod N``.
    act_bits : activation width (signed).
    code_bits : codebook index width; a codebook holds ``2**code_bits`` values, code 0 is zero.
    idx_bits : relative row index (zero run) width of a sparse-matrix entry; EIE uses 4.
    coef_bits : width of a codebook value (signed fixed point).
    acc_bits : accumulator width; the compiler checks that no layer can overflow it.
    bias_bits : width of a stored bias (at the accumulator's scale).
    scan_lanes : activations the broadcast unit examines per cycle (G): a power of two that
        divides ``pes``.
    max_layers : layer descriptors the sequencer holds.
    max_features : the widest layer input or output the activation buffer holds.
    max_rows : accumulator rows per PE (``ceil(max out_features / pes)``).
    entry_depth : sparse-matrix entries per PE, all layers together.
    pointer_depth : column pointers per PE, all layers together (``sum(in_features + 1)``).
    bias_depth : biases per PE, all layers together (``sum(ceil(out_features / pes))``).
    occupancy_depth : occupancy words (one per group of ``scan_lanes`` columns), all layers.
    fifo_depth : depth of each PE's activation queue.
    shift_bits : width of the requantize shift in a layer descriptor.
    max_column_entries : the most entries (padding included) one PE holds in one column.
    writeback_lanes : requantizers, each shared by ``pes / writeback_lanes`` PEs in turn; a
        layer's write-back then takes ``rows * pes / writeback_lanes`` cycles.  Fewer save
        logic on small FPGAs (the requantizer is a quarter of a PE).  0 means one per PE.
    acc_memory_bits : accumulator bits kept in block RAM; the rest (``acc_bits -
        acc_memory_bits``) in registers.  iCE40 block RAMs are 16 bits wide, so a 24-bit
        accumulator file costs two of them; 16 keeps it to one.  0 means all in block RAM.
    decoded_weights : the PEs' entry memories hold each entry's codebook value instead of its
        code, looked up when the image is loaded (``isa.entry_words``): no codebook multiplexer
        in the PEs (a ``2**code_bits``-to-1 choice of ``coef_bits``, about 100 logic cells per
        PE on an iCE40) for entries ``coef_bits - code_bits`` wider.  The program image and
        the golden model keep codes and codebooks either way.
    column_queue : a two-entry queue between each PE's parameter memory and its entry walker,
        whose "has room" and "has a column" come from its level register: no block-RAM output
        drives the entry memory's address in the same cycle (on ECP5 the block RAMs'
        clock-to-out is most of a 100 MHz period), and neither the walker's progress nor the
        front end's issue waits on the other through it.  Columns still start one per cycle,
        the first a cycle later.  Costs each PE two column words of flip-flops.
    readout_register : a register in front of each requantizer, so the accumulator and bias
        memories' outputs reach a flip-flop through wiring alone (on an ECP5 a block RAM's
        clock-to-out is most of a 100 MHz period); a layer's write-back takes a cycle longer.
    link_registers : registers for a die too large for the broadcast unit to sit near all its
        PEs: one each way between them (the groups it pushes into their queues; the queues'
        dequeues and the PEs' busy flags coming back), one in each PE for the host's writes
        into its memories, one in front of the broadcast unit's buffer (as wide as a mask per
        PE, spread over many LUT RAM slices), one on each PE's readout (beside its memories,
        whose outputs arrive late) and three more stages in each requantizer (the layer's
        shift and ReLU flag come from one register across the die).  The registers out to the
        PEs are two deep (one by the broadcast unit, one by the PE).  A layer takes eight
        cycles more (four in the compute phase, four in the write-back), and a freed queue
        entry is counted two cycles later (a register in the PE and one by the broadcast
        unit).
    multiplier_bits : 0 (the power-of-two write-back: one shift per layer, the activation
        width's range, from 0 with ReLU), or the width of a signed per-row multiplier: each
        output row then has its own scale word (``isa.scale_layout``: multiplier, rounding
        term, shift, half-to-even flag), kept beside the requantizers, and each layer its
        own output range (descriptor ``low`` .. ``high``), so ``out = clamp(((acc + bias) *
        M + R) >> s, low, high)`` (``numerics.requantize_rows``).  The compiler sets it only
        for a model that needs it (one imported with its own quantization); each requantizer
        then has a multiplier.
    rounding_bits : width of the per-row rounding term (unsigned), with ``multiplier_bits``.
    lut_products : the PEs' products from partial products in logic, not DSP blocks (the
        compiler's choice on a part whose DSPs the requantizers' multipliers need; a product
        of a narrow codebook value is a few adders).
    conv : the conv mode (``compiler/lowering.py``), which the compiler sets only for a
        network with a convolution: every layer walks output positions, each a sparse
        matrix-vector product of its kernel with the patch an address generator reads from
        the activation buffer (padding skipped), the results written to the layer's output
        map (max pooling in the write-back); a layer's walk is its geometry word
        (``isa.geometry_layout``).  Needs a power-of-two ``pes`` and the power-of-two
        requantization.  False: the engine is the Linear-only one, gate for gate.
    skip_zeros : with one scan lane, the broadcast unit keeps a bit per activation (is it
        nonzero?) beside the activation buffer (``hw/nonzero_map.py``, a block RAM), reads a
        word of them a cycle and asks only for the nonzero activations: a layer's scan takes
        about one cycle per nonzero input (and one per all-zero word) instead of one per
        input.  Needs ``scan_lanes`` 1, a power-of-two ``pes`` and no ``conv``.
    layer_activation : the power-of-two write-back applies each layer's activation from its
        descriptor: an output range ``low`` .. ``high`` (ReLU6, Hardtanh, clamps) and a
        ``leak`` (a leaky ReLU of slope ``2**-leak``: a negative result is shifted by
        ``shift + leak``), ``numerics.requantize_rows``.  The compiler sets it only for a
        model that needs it; it costs each requantizer two comparisons with registers and a
        choice of shift.  Not with ``multiplier_bits`` (whose layers have their ranges
        already, and no leak).
    table_slots : layers that may run an activation function as a table (Tanh, GELU, ...):
        each requantizer keeps ``table_slots * 2**act_bits`` table words (a block RAM on an
        iCE40 per two slots of 8-bit activations), written by the host (``bus.Region.TABLES``)
        and read with the requantized value, a cycle more in the write-back; a layer's
        descriptor names its slot (``table``, ``table_slot``).  0 (the default): no tables.
        Needs ``act_bits`` of at most 8 and no ``multiplier_bits``.
    spram_entries : on an iCE40 UltraPlus, each PE's entry memory is one of the part's
        single-port RAMs (SB_SPRAM256KA, 16K words of 16 bits) instead of block RAMs: a model
        whose entries the 30 block RAMs cannot hold (an MNIST MLP, LeNet-5) runs on 1 or 2
        PEs.  The compiler's choice there when the block RAM estimate is short and the SPRAMs
        left beside the activation buffer's hold them; on other parts and in simulation the
        entry memory is an ordinary memory (same timing).  Needs entries of at most 16 bits
        and ``entry_depth`` of at most 16384.
    pool_rows : conv mode: the rows whose results the pooling registers keep (the most a
        max-pooling layer has); 0 (the default) means ``max_rows``.  Layers that do not pool
        start every window with their own results and never read the registers, so a wide
        Linear layer does not size them (on an iCE40 they are flip-flops).
    """
    pes: int
    act_bits: int = 8
    code_bits: int = 4
    idx_bits: int = 4
    coef_bits: int = 8
    acc_bits: int = 24
    bias_bits: int = 16
    scan_lanes: int = 1
    max_layers: int = 4
    max_features: int = 256
    max_rows: int = 32
    entry_depth: int = 1024
    pointer_depth: int = 512
    bias_depth: int = 64
    occupancy_depth: int = 256
    fifo_depth: int = 8
    shift_bits: int = 6
    max_column_entries: int = 64
    writeback_lanes: int = 0
    acc_memory_bits: int = 0
    decoded_weights: bool = False
    column_queue: bool = False
    readout_register: bool = False
    link_registers: bool = False
    multiplier_bits: int = 0
    rounding_bits: int = 0
    lut_products: bool = False
    conv: bool = False
    skip_zeros: bool = False
    layer_activation: bool = False
    table_slots: int = 0
    spram_entries: bool = False
    pool_rows: int = 0

    def __post_init__(self):
        def check(name, low, high):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"{name} must be an integer from {low} to {high}, not {value!r}")

        check_pes(self.pes)
        check("act_bits", 2, 16)
        check("code_bits", 1, 8)
        check("idx_bits", 1, 8)
        check("coef_bits", 2, 18)
        check("acc_bits", 8, 48)
        check("bias_bits", 2, 48)
        check("scan_lanes", 1, 64)
        check("max_layers", 1, 256)
        check("max_features", 1, 1 << 16)
        check("max_rows", 1, 1 << 16)
        # Every memory is written over the host bus: its depth is what a bus index reaches.
        depth_limit = 1 << INDEX_BITS
        check("entry_depth", 1, depth_limit)
        check("pointer_depth", 2, depth_limit)
        check("bias_depth", 1, depth_limit)
        check("occupancy_depth", 1, depth_limit)
        check("fifo_depth", 2, 1024)
        check("shift_bits", 1, 7)
        check("max_column_entries", 1, depth_limit)
        check("acc_memory_bits", 0, 48)
        check("pool_rows", 0, self.max_rows)
        check("writeback_lanes", 0, 64)
        check("multiplier_bits", 0, 25)
        check("rounding_bits", 0, 62)
        if not self.multiplier_bits and self.rounding_bits:
            raise ValueError(f"rounding_bits ({self.rounding_bits}) needs multiplier_bits; "
                             f"the power-of-two write-back has no rounding term")
        for name in ("decoded_weights", "column_queue", "readout_register",
                     "link_registers", "lut_products", "conv", "skip_zeros",
                     "layer_activation", "spram_entries"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, not {getattr(self, name)!r}")
        lanes = self.writeback_lanes or self.pes
        period = self.pes // lanes
        if self.pes % lanes or period & (period - 1):
            raise ValueError(f"writeback_lanes must divide pes ({self.pes}) by a power of two, "
                             f"not {self.writeback_lanes}")
        if self.spram_entries and (self.entry_memory_bits > SPRAM_ENTRY_BITS
                                   or self.entry_depth > SPRAM_ENTRY_DEPTH):
            raise ValueError(f"spram_entries needs entries of at most {SPRAM_ENTRY_BITS} bits "
                             f"and at most {SPRAM_ENTRY_DEPTH} of them per PE (an SPRAM), not "
                             f"{self.entry_memory_bits} bits and {self.entry_depth}")
        if self.acc_memory_bits > self.acc_bits:
            raise ValueError(f"acc_memory_bits ({self.acc_memory_bits}) must not exceed "
                             f"acc_bits ({self.acc_bits})")
        if self.scan_lanes & (self.scan_lanes - 1) or self.pes % self.scan_lanes:
            raise ValueError(f"scan_lanes must be a power of two that divides pes ({self.pes}), "
                             f"not {self.scan_lanes}")
        if self.bias_bits > self.acc_bits:
            raise ValueError(f"bias_bits ({self.bias_bits}) must not exceed acc_bits "
                             f"({self.acc_bits})")
        if self.conv and self.pes & (self.pes - 1):
            raise ValueError(f"conv needs a power-of-two pes, not {self.pes}")
        if self.skip_zeros and (self.scan_lanes != 1 or self.pes & (self.pes - 1)
                                or self.conv):
            raise ValueError(f"skip_zeros needs scan_lanes 1 (not {self.scan_lanes}), a "
                             f"power-of-two pes (not {self.pes}) and no conv")
        check("table_slots", 0, 64)
        if self.table_slots and (self.act_bits > 8 or self.multiplier_bits):
            raise ValueError(f"table_slots needs act_bits of at most 8 (not {self.act_bits}) "
                             f"and no multiplier_bits (not {self.multiplier_bits})")
        if self.layer_activation and self.multiplier_bits:
            raise ValueError(f"layer_activation is the power-of-two write-back's; with "
                             f"multiplier_bits {self.multiplier_bits} each layer has its "
                             f"output range already")
        if self.conv and self.multiplier_bits:
            raise ValueError(f"conv runs the power-of-two requantization, not multiplier_bits "
                             f"{self.multiplier_bits}")

    # ---- derived widths -------------------------------------------------------------------
    @property
    def codebook_size(self) -> int:
        return 1 << self.code_bits

    @property
    def entry_bits(self) -> int:
        """An entry of the program image: zero run and code."""
        return self.idx_bits + self.code_bits

    @property
    def pooling_depth(self) -> int:
        """Values each requantizer's pooling registers keep: ``pool_rows`` (or ``max_rows``)
        results of ``writeback_period`` PEs each."""
        return max(2, (self.pool_rows or self.max_rows) * self.writeback_period)

    @property
    def entry_memory_bits(self) -> int:
        """An entry in a PE's memory: zero run and code, or zero run and codebook value."""
        return self.idx_bits + (self.coef_bits if self.decoded_weights else self.code_bits)

    @property
    def entry_addr_bits(self) -> int:
        return _bits_for(self.entry_depth - 1)

    @property
    def pointer_bits(self) -> int:
        """A pointer is an entry address or one past the last entry."""
        return _bits_for(self.entry_depth)

    @property
    def feature_bits(self) -> int:
        """Holds a feature count 0 .. max_features."""
        return _bits_for(self.max_features)

    @property
    def row_bits(self) -> int:
        return _bits_for(self.max_rows)

    @property
    def act_words(self) -> int:
        """Depth of the activation buffer, whose words are ``pes`` activations wide."""
        return ceil_div(self.max_features, self.pes)

    @property
    def groups_per_word(self) -> int:
        return self.pes // self.scan_lanes

    @property
    def writeback_period(self) -> int:
        """Cycles per accumulator row at write-back: the PEs sharing one requantizer."""
        return self.pes // (self.writeback_lanes or self.pes)

    @property
    def count_bits(self) -> int:
        """Holds an entry count of one PE's column, 0 .. max_column_entries."""
        return _bits_for(self.max_column_entries)

    @property
    def parameter_depth(self) -> int:
        """Depth of a PE's parameter memory: a column word per pointer index, then biases."""
        return self.pointer_depth + self.bias_depth

    @property
    def row_scales(self) -> bool:
        """Whether each output row has its own requantization (``multiplier_bits``)."""
        return self.multiplier_bits > 0

    @property
    def scale_depth(self) -> int:
        """Depth of a requantizer's scale memory: a word per row of each of its PEs."""
        return self.bias_depth * self.writeback_period

    @property
    def group_address_bits(self) -> int:
        """A group address in conv mode: ``act_words * groups_per_word`` groups (word bits
        above lane-group bits; ``pes`` is a power of two there)."""
        return max(1, (self.act_words * self.groups_per_word - 1).bit_length())

    @property
    def max_zero_run(self) -> int:
        return (1 << self.idx_bits) - 1

    # ---- JSON ----------------------------------------------------------------------------
    def to_json(self) -> dict:
        # The per-row requantization's fields only when used: the engine.json of a
        # power-of-two engine is what sparseforge wrote before they existed (and reads back).
        fields = asdict(self)
        for name, default in _LATER_DEFAULTS.items():
            if fields[name] == default:
                del fields[name]
        return fields

    @classmethod
    def from_json(cls, obj: dict) -> EngineConfig:
        obj = dict(obj)
        # engine.json files that name the column queue `column_register`, or carry the
        # `registered_ready` flag that the broadcast unit's credits make unnecessary, still load.
        if "column_register" in obj:
            obj["column_queue"] = obj.pop("column_register")
        obj.pop("registered_ready", None)
        known = {f.name for f in fields(cls)}
        unknown = set(obj) - known
        if unknown:
            raise ValueError(f"unknown engine configuration fields: {', '.join(sorted(unknown))}")
        if "pes" not in obj:
            raise ValueError("engine configuration lacks 'pes'")
        return cls(**obj)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True)
