"""Write-back arithmetic of a PE: bias, rounding shift, saturation, ReLU (or the layer's range
and leak).

Implements ``requantize`` of docs/numerics.md (``compiler/numerics.py`` is the definition this
is checked against): ``clamp((acc + bias + 2**(shift-1)) >> shift)``, then ReLU.  EIE applies
ReLU when writing the destination activation registers (Han et al. 2016, section III-C); we add
the bias and rescale at the same point, since a power-of-two scale makes that a shift.

Four pipeline stages so that none of the adders, the barrel shifter and the saturation compare
sits in one cycle with another, nor with the multiplexer in front that picks the PE being served
(its accumulator comes straight out of a block RAM): the write-back is off the
multiply-accumulate path and its latency only adds a fixed few cycles per layer.

:class:`ChannelRequantizer` is the write-back of an engine with ``multiplier_bits``: each
output row has its own scale word (multiplier, rounding term, shift, half-to-even flag) in a
memory beside the requantizer, as TFLite's and gemmlowp's per-channel requantization has a
fixed-point multiplier and a shift per output channel (Jacob et al., "Quantization and Training
of Neural Networks for Efficient Integer-Arithmetic-Only Inference", CVPR 2018, section 2.2),
and each layer an output range.  It implements ``numerics.requantize_rows``.
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig

from . import ram
from .multiply import LATENCY as MULTIPLY_LATENCY
from .multiply import RegisteredMultiplier

__all__ = ["ChannelRequantizer", "Requantizer", "CHANNEL_LATENCY", "LATENCY", "latency",
           "scale_write_signature", "table_write_signature"]

LATENCY = 4     # cycles from an input transfer to its output transfer (without readout_register)
# The per-row requantizer: the sum, the product (two), the rounding term, the shift, the
# saturation, the layer's range.
CHANNEL_LATENCY = 5 + MULTIPLY_LATENCY


def latency(config: EngineConfig) -> int:
    """Cycles from an input transfer to its output transfer for ``config``: a cycle more with
    ``readout_register``, three more with ``link_registers`` (shift and saturation in two
    stages each, and an output register), one more with ``table_slots`` (the table's read);
    with ``multiplier_bits`` the per-row requantizer's (its multiplier's two more)."""
    base = CHANNEL_LATENCY if config.row_scales else LATENCY
    return (base + config.readout_register + 3 * config.link_registers
            + (config.table_slots > 0))


def table_write_signature(config: EngineConfig) -> wiring.Signature:
    """A host write of one word of the activation tables (``bus.Region.TABLES``)."""
    return wiring.Signature({
        "en": Out(1),
        "addr": Out(range(max(2, config.table_slots << config.act_bits))),
        "data": Out(config.act_bits),
    })


def scale_write_signature(config: EngineConfig) -> wiring.Signature:
    """A host write of one scale word into a requantizer's scale memory."""
    return wiring.Signature({
        "en": Out(1),
        "addr": Out(range(max(2, config.scale_depth))),
        "data": Out(isa.scale_layout(config).size),
    })


class Requantizer(wiring.Component):
    """One output activation per cycle from an accumulator and a bias.

    Members
    -------
    i : In(stream of {acc, bias}), always ready.
    shift, relu : In; the layer's requantize parameters, stable from the cycle before a
        write-back's first input to its end.
    low, high, negative_shift : In, with ``config.layer_activation``; the layer's output range
        (which then replaces ``relu``) and the shift of a negative sum (``shift`` plus the
        layer's leak), as stable.
    table, table_slot : In, with ``config.table_slots``; the layer's output is its table's
        (slot ``table_slot``) at the requantized value, as stable.  table_write : In
        (``table_write_signature``); the host's writes of the table memory.

    Parameters
    ----------
    config : EngineConfig
    tables : with ``config.table_slots``, the table memory's initial words (slot-major), or
        None (zeros).
    o : Out(stream of signed(act_bits)), always ready: the output ``latency(config)`` cycles
        later (with ``config.readout_register`` the operands first go into a register as they
        are, so the memories' outputs in front reach a flip-flop through wiring alone).
    """

    def __init__(self, config: EngineConfig, *, tables=None):
        self._config = config
        self._tables = tables
        operands = data.StructLayout({"acc": signed(config.acc_bits),
                                      "bias": signed(config.bias_bits)})
        super().__init__({
            "i": In(stream.Signature(operands, always_ready=True)),
            "shift": In(config.shift_bits),
            "relu": In(1),
            **({"low": In(signed(config.act_bits)), "high": In(signed(config.act_bits)),
                "negative_shift": In(config.shift_bits)} if config.layer_activation else {}),
            **({"table": In(1), "table_slot": In(range(max(2, config.table_slots))),
                "table_write": In(table_write_signature(config))}
               if config.table_slots else {}),
            "o": Out(stream.Signature(signed(config.act_bits), always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        wide = config.acc_bits + 2          # acc + bias + rounding constant cannot overflow this
        # With config.link_registers the shift and the saturation take two stages each: the
        # layer's shift and relu come from one register in the engine, across the die from
        # most requantizers, and only a couple of logic levels may follow them in a cycle.
        split = config.link_registers

        operands, operands_in_valid = self.i.payload, self.i.valid
        if config.readout_register:
            operands = Signal.like(self.i.payload, reset_less=True)
            operands_in_valid = Signal()
            m.d.sync += [operands.eq(self.i.payload), operands_in_valid.eq(self.i.valid)]

        # Stage 0: take the operands, the bias with the rounding constant 2**(shift-1) (0 when
        # shift is 0) added.  The constant is worked out into a register from `shift`, which
        # is the layer's and comes from afar: the adder starts from flip-flops.
        rounding = Signal(wide, reset_less=True)
        m.d.sync += rounding.eq((Const(1, wide + 1) << self.shift)[1:])
        acc = Signal(signed(config.acc_bits), reset_less=True)
        offset = Signal(signed(wide), reset_less=True)
        operands_valid = Signal()
        m.d.sync += [
            acc.eq(operands.acc),
            offset.eq(operands.bias + rounding),
            operands_valid.eq(operands_in_valid),
        ]

        # Stage 1: the sum.
        total = Signal(signed(wide), reset_less=True)
        total_valid = Signal()
        m.d.sync += [
            total.eq(acc + offset),
            total_valid.eq(operands_valid),
        ]

        # Stage 2: arithmetic shift right (floor), which with the constant rounds half up.  A
        # leaky layer shifts a negative sum `leak` bits further (numerics.requantize_rows).
        amount = self.shift
        if config.layer_activation:
            amount = Mux(total < 0, self.negative_shift, self.shift)
        shifted = Signal(signed(wide), reset_less=True)
        shifted_valid = Signal()
        if split:
            fine_bits = 3
            coarse = Signal(signed(wide), reset_less=True)
            coarse_valid = Signal()
            fine = self.shift[:fine_bits]
            if config.layer_activation:
                # The sum's sign chose the shift: its fine part follows the coarse result.
                fine = Signal(fine_bits, reset_less=True)
                m.d.sync += fine.eq(amount[:fine_bits])
            m.d.sync += [
                coarse.eq(total >> (amount[fine_bits:] << fine_bits)),
                coarse_valid.eq(total_valid),
                shifted.eq(coarse >> fine),
                shifted_valid.eq(coarse_valid),
            ]
        else:
            m.d.sync += [
                shifted.eq(total >> amount),
                shifted_valid.eq(total_valid),
            ]

        # Stage 3: saturate to the activation width, then ReLU.
        low = -(1 << (config.act_bits - 1))
        high = (1 << (config.act_bits - 1)) - 1
        value = Signal(signed(config.act_bits), reset_less=True)
        # With tables a stage follows: the valid of stage 3 is its input.
        value_valid = Signal() if config.table_slots else self.o.valid
        if split:
            clamped = Signal(signed(config.act_bits), reset_less=True)
            clamped_valid = Signal()
            _clamp_into(m, clamped, shifted, low, high)
            # And a last register with nothing in front of it: the results travel from the
            # requantizers, next to their PEs, to the activation buffer.
            relu_value = Signal(signed(config.act_bits), reset_less=True)
            relu_valid = Signal()
            if config.layer_activation:
                _clamp_into(m, relu_value, clamped, self.low, self.high)
            else:
                m.d.sync += relu_value.eq(Mux(self.relu & (clamped < 0), 0, clamped))
            m.d.sync += [
                clamped_valid.eq(shifted_valid),
                relu_valid.eq(clamped_valid),
                value.eq(relu_value),
                value_valid.eq(relu_valid),
            ]
        elif config.layer_activation:
            # The layer's range lies within the activations': one clamp saturates too.
            _clamp_into(m, value, shifted, self.low, self.high)
            m.d.sync += value_valid.eq(shifted_valid)
        else:
            _clamp_into(m, value, shifted, Mux(self.relu, 0, low), high)
            m.d.sync += value_valid.eq(shifted_valid)
        if not config.table_slots:
            m.d.comb += self.o.payload.eq(value)
            return m

        # Stage 4 (tables): the layer's table read at the value (its sign bit flipped: value
        # + 2**(bits-1)), or the value itself, a cycle later either way.
        depth = config.table_slots << config.act_bits
        m.submodules.tables = tables = memory.Memory(
            shape=config.act_bits, depth=depth,
            init=[] if self._tables is None else [int(w) & ((1 << config.act_bits) - 1)
                                                  for w in self._tables])
        write = tables.write_port()
        read = tables.read_port()
        m.d.comb += [
            write.en.eq(self.table_write.en), write.addr.eq(self.table_write.addr),
            write.data.eq(self.table_write.data),
            read.addr.eq(Cat(value[:-1], ~value[-1], self.table_slot)
                         if config.table_slots > 1 else Cat(value[:-1], ~value[-1])),
        ]
        untabled = Signal.like(value, reset_less=True)
        use_table = Signal()
        m.d.sync += [untabled.eq(value), use_table.eq(self.table),
                     self.o.valid.eq(value_valid)]
        m.d.comb += self.o.payload.eq(Mux(use_table, read.data.as_signed(), untabled))
        return m


def _clamp_into(m: Module, target: Signal, value, low, high) -> None:
    """``target`` takes ``value`` clamped to ``low .. high`` at the next clock edge."""
    with m.If(value > high):
        m.d.sync += target.eq(high)
    with m.Elif(value < low):
        m.d.sync += target.eq(low)
    with m.Else():
        m.d.sync += target.eq(value)


class ChannelRequantizer(wiring.Component):
    """One output activation per cycle from an accumulator, a bias and the row's scale word:
    ``clamp(((acc + bias) * M + R) >> s, low, high)``, a tie (the low ``s`` bits of the sum
    zero) that went to an odd result going to the even one below where the row asks
    (``numerics.requantize_rows``).

    Parameters
    ----------
    config : EngineConfig (with ``multiplier_bits``).
    scales : the initial scale words, one per ``slot``, or None.

    Members
    -------
    i : In(stream of {acc, bias}), always ready.
    slot : In; the scale memory's word for the input transferred in the same cycle (the row's
        bias index times the requantizer's PEs, plus the PE's place among them).
    low, high : In; the layer's output range, stable while a write-back runs.
    write : In(``scale_write_signature``); the host's writes of scale words.
    o : Out(stream of signed(act_bits)), always ready: ``latency(config)`` cycles after the
        input (with ``readout_register`` the operands and slot first go into a register, with
        ``link_registers`` the shift and the clamp take two stages and an output register
        follows).
    """

    def __init__(self, config: EngineConfig, *, scales=None):
        if not config.row_scales:
            raise ValueError("a ChannelRequantizer needs an engine with multiplier_bits")
        self._config = config
        self._scales = scales
        operands = data.StructLayout({"acc": signed(config.acc_bits),
                                      "bias": signed(config.bias_bits)})
        super().__init__({
            "i": In(stream.Signature(operands, always_ready=True)),
            "slot": In(range(max(2, config.scale_depth))),
            "low": In(signed(config.act_bits)),
            "high": In(signed(config.act_bits)),
            "write": In(scale_write_signature(config)),
            "o": Out(stream.Signature(signed(config.act_bits), always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        layout = isa.scale_layout(config)
        # Only the host writes the scale words, never during a run (hw/ram.py).
        m.submodules.scales = scales = memory.Memory(
            shape=layout.size, depth=max(2, config.scale_depth),
            init=[] if self._scales is None else [int(w) for w in self._scales],
            attrs=ram.ATTRIBUTES)
        write = scales.write_port()
        m.d.comb += [write.en.eq(self.write.en), write.addr.eq(self.write.addr),
                     write.data.eq(self.write.data)]
        read = ram.registered_read_port(m, scales, "scales_read")

        operands, slot, valid = self.i.payload, self.slot, self.i.valid
        if config.readout_register:
            operands = Signal.like(self.i.payload, reset_less=True)
            slot = Signal.like(self.slot, reset_less=True)
            valid = Signal()
            m.d.sync += [operands.eq(self.i.payload), slot.eq(self.slot),
                         valid.eq(self.i.valid)]

        # Stage 0: the sum (the compiler sizes acc_bits to hold acc + bias), and the row's
        # scale word read beside it.
        m.d.comb += read.addr.eq(slot)
        total = Signal(signed(config.acc_bits), reset_less=True)
        total_valid = Signal()
        m.d.sync += [total.eq(operands.acc + operands.bias), total_valid.eq(valid)]
        word = data.View(layout, read.data)

        # Stages 1-2: the product; the rest of the scale word keeps pace.
        m.submodules.multiplier = multiplier = RegisteredMultiplier(config.acc_bits,
                                                                    config.multiplier_bits)
        m.d.comb += [multiplier.a.eq(total), multiplier.b.eq(word.multiplier)]
        carried = Signal(data.StructLayout({"rounding": len(word.rounding),
                                            "shift": config.shift_bits, "half_even": 1}),
                         reset_less=True)
        m.d.comb += [carried.rounding.eq(word.rounding), carried.shift.eq(word.shift),
                     carried.half_even.eq(word.half_even)]
        product_valid = Signal()
        for stage in range(MULTIPLY_LATENCY):
            delayed = Signal.like(carried, name=f"carried{stage}", reset_less=True)
            delayed_valid = Signal(name=f"product_valid{stage}")
            m.d.sync += [delayed.eq(carried), delayed_valid.eq(total_valid)
                         if stage == 0 else delayed_valid.eq(product_valid)]
            carried, product_valid = delayed, delayed_valid

        # Stage 3: the rounding term; the mask of the bits the shift drops, for the tie.
        wide = config.acc_bits + config.multiplier_bits + 1
        sum_ = Signal(signed(wide), reset_less=True)
        mask = Signal(wide, reset_less=True)
        shift = Signal(config.shift_bits, reset_less=True)
        half_even = Signal(reset_less=True)
        sum_valid = Signal()
        m.d.sync += [
            sum_.eq(multiplier.product + carried.rounding),
            mask.eq((Const(1, wide + 1) << carried.shift) - 1),
            shift.eq(carried.shift),
            half_even.eq(carried.half_even & (carried.shift != 0)),
            sum_valid.eq(product_valid),
        ]

        # Stage 4: the arithmetic shift (floor), and whether the dropped bits made a tie.
        shifted = Signal(signed(wide), reset_less=True)
        tie = Signal(reset_less=True)
        shifted_valid = Signal()
        if config.link_registers:
            fine_bits = 3
            coarse = Signal(signed(wide), reset_less=True)
            coarse_tie = Signal(reset_less=True)
            fine = Signal(fine_bits, reset_less=True)
            coarse_valid = Signal()
            m.d.sync += [
                coarse.eq(sum_ >> (shift[fine_bits:] << fine_bits)),
                coarse_tie.eq(half_even & ((sum_ & mask) == 0)),
                fine.eq(shift[:fine_bits]),
                coarse_valid.eq(sum_valid),
                shifted.eq(coarse >> fine),
                tie.eq(coarse_tie),
                shifted_valid.eq(coarse_valid),
            ]
        else:
            m.d.sync += [
                shifted.eq(sum_ >> shift),
                tie.eq(half_even & ((sum_ & mask) == 0)),
                shifted_valid.eq(sum_valid),
            ]

        # Stage 5: a tie that rounded up to an odd value goes to the even one below (clear
        # bit 0: no adder), saturated to one bit more than the activations against constant
        # bounds (the upper bits' reduction): the layer's range is then compared on a narrow
        # value, not on the whole sum (on the UP5K those two comparators' carry chains were the
        # critical path).  A saturated value lies beyond any range, so clearing its bit 0 is
        # harmless.
        even = Signal(signed(wide))
        m.d.comb += even.eq(Cat(shifted[0] & ~tie, shifted[1:]))
        narrow = Signal(signed(config.act_bits + 1), reset_less=True)
        narrow_valid = Signal()
        _clamp_into(m, narrow, even, -(1 << config.act_bits), (1 << config.act_bits) - 1)
        m.d.sync += narrow_valid.eq(shifted_valid)

        # Stage 6: the layer's range.
        value = Signal(signed(config.act_bits), reset_less=True)
        if config.link_registers:
            clamped = Signal(signed(config.act_bits), reset_less=True)
            clamped_valid = Signal()
            held = Signal(signed(config.act_bits), reset_less=True)
            held_valid = Signal()
            _clamp_into(m, clamped, narrow, self.low, self.high)
            m.d.sync += [clamped_valid.eq(narrow_valid), held.eq(clamped),
                         held_valid.eq(clamped_valid), value.eq(held),
                         self.o.valid.eq(held_valid)]
        else:
            _clamp_into(m, value, narrow, self.low, self.high)
            m.d.sync += self.o.valid.eq(narrow_valid)
        m.d.comb += self.o.payload.eq(value)
        return m
