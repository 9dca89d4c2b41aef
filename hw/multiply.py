"""The PE's multiplier: a product two clock edges after its operands, registered on both sides.

On an ECP5 it is one MULT18X18D with its input and output registers in use.  Yosys maps a
multiplication to the DSP block but packs no registers into it, so the flip-flops on either
side sit in the fabric and the paths into and out of the block carry its whole delay plus the
routing to the DSP row: most of a 100 MHz period on an ECP5-85F.  With the block's own
registers, each side of the block is a path of wiring alone.  Elsewhere (iCE40, simulation,
Verilog export) the same two stages are written out and the synthesiser picks the multiplier
(Yosys packs an iCE40 SB_MAC16's registers itself).

With ``in_logic`` the product is written as a sum of shifted partial products, one per bit of
the narrower operand, which no synthesiser maps to a DSP block: the iCE40UP5K has 8 DSPs, one
per PE of an 8-PE engine, and a per-row requantizer (``requantize.ChannelRequantizer``) needs
one; a PE's product of a narrow codebook value is cheaper in logic than the requantizer's.
"""

from amaranth import ClockSignal, Const, Instance, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["RegisteredMultiplier", "LATENCY"]

LATENCY = 2         # clock edges from the operands to their product
ECP5_OPERAND_BITS = 18


class RegisteredMultiplier(wiring.Component):
    """``product`` is ``a * b`` of two clock edges earlier (signed).

    Parameters
    ----------
    a_bits, b_bits : operand widths (signed).
    in_logic : the product from partial products in logic, never a DSP block.

    Members
    -------
    a, b : In; the operands, taken at every clock edge.
    product : Out; ``a_bits + b_bits`` bits, signed.
    """

    def __init__(self, a_bits: int, b_bits: int, *, in_logic: bool = False):
        self._a_bits, self._b_bits = a_bits, b_bits
        self._in_logic = in_logic
        super().__init__({
            "a": In(signed(a_bits)),
            "b": In(signed(b_bits)),
            "product": Out(signed(a_bits + b_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        if (not self._in_logic and getattr(platform, "family", None) == "ecp5"
                and max(self._a_bits, self._b_bits) <= ECP5_OPERAND_BITS):
            self._ecp5_dsp(m)
            return m
        a = Signal.like(self.a, reset_less=True)
        b = Signal.like(self.b, reset_less=True)
        product = Signal.like(self.product, reset_less=True)
        m.d.sync += [a.eq(self.a), b.eq(self.b),
                     product.eq(_partial_products(a, b) if self._in_logic else a * b)]
        m.d.comb += self.product.eq(product)
        return m

    def _ecp5_dsp(self, m):
        # Operands sign-extended to the block's 18 bits, read as signed (SIGNEDA/B).
        a = Signal(signed(ECP5_OPERAND_BITS))
        b = Signal(signed(ECP5_OPERAND_BITS))
        p = Signal(36)
        m.d.comb += [a.eq(self.a), b.eq(self.b), self.product.eq(p[:len(self.product)])]
        ports = {f"i_A{i}": a[i] for i in range(ECP5_OPERAND_BITS)}
        ports.update({f"i_B{i}": b[i] for i in range(ECP5_OPERAND_BITS)})
        ports.update({f"i_C{i}": 0 for i in range(ECP5_OPERAND_BITS)})
        ports.update({f"o_P{i}": p[i] for i in range(36)})
        m.submodules.dsp = Instance(
            "MULT18X18D",
            p_REG_INPUTA_CLK="CLK0", p_REG_INPUTB_CLK="CLK0", p_REG_OUTPUT_CLK="CLK0",
            p_REG_INPUTA_CE="CE0", p_REG_INPUTB_CE="CE0", p_REG_OUTPUT_CE="CE0",
            p_REG_INPUTA_RST="RST0", p_REG_INPUTB_RST="RST0", p_REG_OUTPUT_RST="RST0",
            # The engine's reset does not reach these registers (nor the fabric ones they
            # replace: their contents matter only while `valid` flags say so).
            p_GSR="DISABLED", p_RESETMODE="SYNC",
            i_CLK0=ClockSignal("sync"), i_CE0=1, i_RST0=0,
            i_SIGNEDA=1, i_SIGNEDB=1, i_SOURCEA=0, i_SOURCEB=0,
            **ports)


def _partial_products(a, b):
    """``a * b`` (both signed) as a sum over the bits of the narrower: ``sum_i b_i a 2**i``,
    the sign bit's term subtracted (two's complement)."""
    if len(b) > len(a):
        a, b = b, a
    width = len(a) + len(b)
    terms = [Mux(b[i], a.as_signed(), 0).as_signed() << i for i in range(len(b) - 1)]
    total = sum(terms[1:], terms[0]) if terms else Const(0, signed(width))
    top = len(b) - 1
    return (total - (Mux(b[top], a.as_signed(), 0).as_signed() << top))[:width].as_signed()
