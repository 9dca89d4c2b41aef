"""An 8N1 UART: a transmitter and a receiver with streams of bytes.

The receiver waits half a bit after the start edge, checks the start bit is still low, then
samples each bit in its middle; a missing stop bit drops the byte (a framing error), which the
link layer above sees as a bad CRC and recovers from.  The middle allows for the receiver's own
delay (the synchroniser's two flip-flops and the cycle that sees the edge), so the sample
lands within half a clock of it even at 4 clocks per bit (the iCEBreaker's 12 MHz at 3 Mbaud).
"""

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UARTTransmitter", "UARTReceiver"]


class UARTTransmitter(wiring.Component):
    """Sends each byte of ``data`` on ``tx`` at ``clocks_per_bit`` clock cycles per bit.

    Ports: ``data`` In(stream of 8 bits); ``tx`` Out (idle high).
    """

    def __init__(self, clocks_per_bit: int):
        if clocks_per_bit < 2:
            raise ValueError(f"clocks_per_bit must be at least 2, not {clocks_per_bit}")
        self._clocks_per_bit = clocks_per_bit
        super().__init__({"data": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self._clocks_per_bit))
        shifter = Signal(10)        # start bit, 8 data bits (LSB first), stop bit; LSB goes first
        bits_left = Signal(range(11))
        # A one-byte holding register takes the byte, so that `ready` is a flip-flop: the link
        # bridge's reply logic waits on it, and the bit timer's compare stays out of that path.
        held = Signal(8)
        full = Signal()
        m.d.comb += self.data.ready.eq(~full)
        with m.If(self.data.valid & ~full):
            m.d.sync += [held.eq(self.data.payload), full.eq(1)]
        # The next byte starts once the stop bit has been on the line for a whole bit time.
        with m.If(full & (bits_left == 0) & (timer == 0)):
            m.d.sync += [shifter.eq((1 << 9) | (held << 1)), bits_left.eq(10), full.eq(0)]
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Elif(bits_left != 0):
            m.d.sync += [self.tx.eq(shifter[0]), shifter.eq(shifter >> 1),
                         bits_left.eq(bits_left - 1), timer.eq(self._clocks_per_bit - 1)]
        return m


class UARTReceiver(wiring.Component):
    """Receives bytes from ``rx``; each good byte is offered once on ``data`` (no backpressure:
    the consumer must take one byte per character time, which any FIFO or the link does).

    Ports: ``rx`` In (asynchronous; synchronised here); ``data`` Out(stream of 8 bits).
    """

    def __init__(self, clocks_per_bit: int):
        if clocks_per_bit < 4:
            raise ValueError(f"clocks_per_bit must be at least 4, not {clocks_per_bit}")
        self._clocks_per_bit = clocks_per_bit
        super().__init__({"rx": In(1, init=1), "data": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1)
        timer = Signal(range(self._clocks_per_bit))
        shifter = Signal(8)
        bit = Signal(range(9))
        # The line is seen 2 cycles late (synchroniser) and IDLE takes a cycle, so each bit is
        # sampled between `first + 1` and `first + 2` cycles after its start: (cpb - 3) // 2
        # centres that on the middle within half a cycle.  Half a bit (cpb // 2), as before,
        # sampled 75-100% into the bit at 4 clocks per bit.
        first = max(0, (self._clocks_per_bit - 3) // 2)
        m.d.sync += self.data.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += timer.eq(first)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(self._clocks_per_bit - 1), bit.eq(0)]
                    # Still low in the middle of the start bit, or it was a glitch.
                    m.next = "DATA"
                    with m.If(rx):
                        m.next = "IDLE"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [shifter.eq((rx << 7) | (shifter >> 1)), bit.eq(bit + 1),
                                 timer.eq(self._clocks_per_bit - 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("STOP"):
                with m.If(timer == 0):
                    with m.If(rx):
                        m.d.sync += [self.data.payload.eq(shifter), self.data.valid.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
        return m
