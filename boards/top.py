"""The board top level: the linked engine on a board's pins, with clocking and status LEDs.

The engine runs in the ``sync`` domain, made from the board oscillator by a PLL when the build
asks for another frequency (iCE40: ``SB_PLL40_PAD``/``SB_PLL40_CORE``; ECP5: ``EHXPLLL``), or
straight from the oscillator otherwise.  The UART link runs on a clock of its own (``link``
domain, see ``gateware/core.py``), a whole number of cycles per bit at the board's baud rate:
the oscillator, or on the ULX3S a second PLL's 24 MHz (``Board.link_clock_hz``).  LEDs:
0 blinks while the design is alive, 1 is the engine running, 2 the link executing a command.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import ClockDomain, ClockSignal, Elaboratable, Module, ResetSignal, Signal
from amaranth.lib import io

from .gateware.core import LinkedEngine
from .pll import PLLParameters, ecp5_link_pll, ecp5_link_pll_parameters, ecp5_pll, ice40_pll

__all__ = ["BoardTop"]


@dataclass(frozen=True)
class Clocking:
    frequency_hz: float            # what the engine runs at
    pll: PLLParameters | None      # None: the oscillator directly


class BoardTop(Elaboratable):
    """Parameters
    ----------
    board : a ``registry.Board``.
    config, image : the engine and the model it starts with.
    frequency_mhz : the engine clock to make with the PLL (None: the board's oscillator).
    """

    def __init__(self, board, config, image, *, frequency_mhz: float | None = None):
        self.board, self.config, self.image = board, config, image
        self.clocking = clocking_for(board, frequency_mhz)

    def elaborate(self, platform):
        m = Module()
        board, clocking = self.board, self.clocking
        m.domains.sync = ClockDomain("sync")
        oscillator = platform.request(platform.default_clk, dir="-")
        if board.family == "ice40" and clocking.pll is not None:
            # The PLL takes the pin; its port A passes the oscillator's clock on.
            locked, reference = ice40_pll(m, platform, oscillator, clocking.pll)
        else:
            m.submodules.clock = clock = io.Buffer("i", oscillator)
            reference = clock.i
            if clocking.pll is None:
                m.d.comb += ClockSignal("sync").eq(reference)
                locked = Signal(init=1)
            else:
                locked = ecp5_pll(m, platform, reference, clocking.pll)
        link_clock = reference
        if board.link_clock_hz != board.clock_hz:
            link_locked, link_clock = ecp5_link_pll(
                m, platform, reference,
                ecp5_link_pll_parameters(board.clock_hz, board.link_clock_hz))
            locked = locked & link_locked
        # Hold the design in reset until the PLL locks and a few cycles after.  The counter must
        # not be reset by the reset it drives.
        settle = Signal(4, reset_less=True)
        with m.If(~locked):
            m.d.sync += settle.eq(0)
        with m.Elif(settle != 15):
            m.d.sync += settle.eq(settle + 1)
        m.d.comb += ResetSignal("sync").eq(settle != 15)

        # The UART counts cycles of the link's clock, never the engine's (see Board.baud).
        m.submodules.link = link = LinkedEngine(self.config, self.image,
                                                clocks_per_bit=board.clocks_per_bit)
        m.d.comb += link.link_clk.eq(link_clock)
        # Every subsignal raw (some boards add rts/dtr); only rx and tx are used.
        uart = platform.request("uart", 0, dir={subsignal.name: "-" for subsignal in
                                                platform.lookup("uart", 0).ios})
        m.submodules.rx = rx = io.Buffer("i", uart.rx)
        m.submodules.tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [link.rx.eq(rx.i), tx.o.eq(link.tx)]

        # The heartbeat: the top bit of a free-running counter, toggling about every half
        # second.  A plain incrementer maps to one unbroken carry chain; a reload-on-zero down
        # counter does not, and at 99% utilisation its scattered chain becomes the critical
        # path.
        alive = Signal(max(1, round(clocking.frequency_hz / 2).bit_length()), reset_less=True)
        m.d.sync += alive.eq(alive + 1)
        blink = alive[-1]
        for index, value in enumerate((blink, link.busy, link.activity)):
            try:
                led = platform.request("led", index, dir="-")
            except Exception:       # a board with fewer LEDs: show what fits
                break
            buffer = io.Buffer("o", led)
            m.submodules[f"led{index}"] = buffer
            # Registered: `busy` and `activity` are decisions in the engine and the link, and
            # the pin sits at the die's edge.
            shown = Signal(reset_less=True, name=f"led{index}_shown")
            m.d.sync += shown.eq(value)
            m.d.comb += buffer.o.eq(shown)
        return m


def clocking_for(board, frequency_mhz: float | None) -> Clocking:
    """The engine clock a board top would make for ``frequency_mhz`` (None: the oscillator)."""
    if frequency_mhz is None or abs(frequency_mhz * 1e6 - board.clock_hz) < 1:
        return Clocking(board.clock_hz, None)
    if board.family == "ice40":
        from .pll import ice40_pll_parameters
        parameters = ice40_pll_parameters(board.clock_hz, frequency_mhz * 1e6)
    else:
        from .pll import ecp5_pll_parameters
        parameters = ecp5_pll_parameters(board.clock_hz, frequency_mhz * 1e6)
    return Clocking(parameters.output_hz, parameters)
