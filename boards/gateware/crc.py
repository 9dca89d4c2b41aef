"""CRC-16/CCITT-FALSE of the link's frames, as gates (docs/protocol.md, ``protocol.crc16``).

Polynomial 0x1021, initial value 0xFFFF, no reflection, no final XOR, one byte per cycle, most
significant bit first.  A frame carries its CRC high byte first, so the CRC over a whole good
frame, CRC bytes included, is 0: what the link's receiver checks.
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["CRC16", "crc16_next"]


def crc16_next(m: Module, crc, byte) -> Signal:
    """CRC-16/CCITT-FALSE of ``crc`` after one more byte (MSB first), as gates.  Each bit step
    gets its own signal: written as one expression the tree would double eight times."""
    value = Signal(16)
    m.d.comb += value.eq(crc ^ (byte << 8))
    for _ in range(8):
        step = Signal(16)
        m.d.comb += step.eq(Mux(value[15], (value << 1) ^ 0x1021, value << 1))
        value = step
    return value


class CRC16(wiring.Component):
    """The CRC of the bytes taken since the last ``clear``.

    Members
    -------
    clear : In; start again: ``value`` is 0xFFFF from the next cycle (over ``step``).
    step : In; take ``byte`` into ``value`` at this clock edge.
    byte : In(8).
    value : Out(16), a register: the CRC of the bytes taken so far.
    """
    clear: In(1)
    step: In(1)
    byte: In(8)
    value: Out(16, init=0xFFFF)

    def elaborate(self, platform):
        m = Module()
        with m.If(self.clear):
            m.d.sync += self.value.eq(0xFFFF)
        with m.Elif(self.step):
            m.d.sync += self.value.eq(crc16_next(m, self.value, self.byte))
        return m
