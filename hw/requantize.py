"""Write-back arithmetic of a PE: bias, rounding shift, saturation, ReLU.

Implements ``requantize`` of docs/numerics.md (``compiler/numerics.py`` is the definition this
is checked against): ``clamp((acc + bias + 2**(shift-1)) >> shift)``, then ReLU.  EIE applies
ReLU when writing the destination activation registers (Han et al. 2016, section III-C); we add
the bias and rescale at the same point, since a power-of-two scale makes that a shift.

Four pipeline stages so that none of the adders, the barrel shifter and the saturation compare
sits in one cycle with another, nor with the multiplexer in front that picks the PE being served
(its accumulator comes straight out of a block RAM): the write-back is off the
multiply-accumulate path and its latency only adds a fixed few cycles per layer.
"""

from amaranth import Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.compiler.config import EngineConfig

__all__ = ["Requantizer", "LATENCY", "latency"]

LATENCY = 4     # cycles from an input transfer to its output transfer (without readout_register)


def latency(config: EngineConfig) -> int:
    """Cycles from an input transfer to its output transfer for ``config``: a cycle more with
    ``readout_register``, three more with ``link_registers`` (shift and saturation in two
    stages each, and an output register)."""
    return LATENCY + config.readout_register + 3 * config.link_registers


class Requantizer(wiring.Component):
    """One output activation per cycle from an accumulator and a bias.

    Members
    -------
    i : In(stream of {acc, bias}), always ready.
    shift, relu : In; the layer's requantize parameters, stable from the cycle before a
        write-back's first input to its end.
    o : Out(stream of signed(act_bits)), always ready: the output ``latency(config)`` cycles
        later (with ``config.readout_register`` the operands first go into a register as they
        are, so the memories' outputs in front reach a flip-flop through wiring alone).
    """

    def __init__(self, config: EngineConfig):
        self._config = config
        operands = data.StructLayout({"acc": signed(config.acc_bits),
                                      "bias": signed(config.bias_bits)})
        super().__init__({
            "i": In(stream.Signature(operands, always_ready=True)),
            "shift": In(config.shift_bits),
            "relu": In(1),
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

        # Stage 2: arithmetic shift right (floor), which with the constant rounds half up.
        shifted = Signal(signed(wide), reset_less=True)
        shifted_valid = Signal()
        if split:
            fine_bits = 3
            coarse = Signal(signed(wide), reset_less=True)
            coarse_valid = Signal()
            m.d.sync += [
                coarse.eq(total >> (self.shift[fine_bits:] << fine_bits)),
                coarse_valid.eq(total_valid),
                shifted.eq(coarse >> self.shift[:fine_bits]),
                shifted_valid.eq(coarse_valid),
            ]
        else:
            m.d.sync += [
                shifted.eq(total >> self.shift),
                shifted_valid.eq(total_valid),
            ]

        # Stage 3: saturate to the activation width, then ReLU.
        low = -(1 << (config.act_bits - 1))
        high = (1 << (config.act_bits - 1)) - 1
        value = Signal(signed(config.act_bits), reset_less=True)
        if split:
            clamped = Signal(signed(config.act_bits), reset_less=True)
            clamped_valid = Signal()
            _clamp_into(m, clamped, shifted, low, high)
            # And a last register with nothing in front of it: the results travel from the
            # requantizers, next to their PEs, to the activation buffer.
            relu_value = Signal(signed(config.act_bits), reset_less=True)
            relu_valid = Signal()
            m.d.sync += [
                clamped_valid.eq(shifted_valid),
                relu_value.eq(Mux(self.relu & (clamped < 0), 0, clamped)),
                relu_valid.eq(clamped_valid),
                value.eq(relu_value),
                self.o.valid.eq(relu_valid),
            ]
        else:
            _clamp_into(m, value, shifted, Mux(self.relu, 0, low), high)
            m.d.sync += self.o.valid.eq(shifted_valid)
        m.d.comb += self.o.payload.eq(value)
        return m


def _clamp_into(m: Module, target: Signal, value, low, high) -> None:
    """``target`` takes ``value`` clamped to ``low .. high`` at the next clock edge."""
    with m.If(value > high):
        m.d.sync += target.eq(high)
    with m.Elif(value < low):
        m.d.sync += target.eq(low)
    with m.Else():
        m.d.sync += target.eq(value)
