"""PLLs for the board tops: parameter search (as icestorm's ``icepll`` and prjtrellis's
``ecppll`` do) and the primitive instances.

iCE40 ``SB_PLL40``: ``f_out = f_ref * (DIVF+1) / ((DIVR+1) * 2**DIVQ)`` with the phase detector
at 10..133 MHz and the VCO at 533..1066 MHz.  ECP5 ``EHXPLLL``: ``f_out = f_in / CLKI_DIV *
CLKFB_DIV`` with feedback from CLKOP and the VCO (``f_out * CLKOP_DIV``) at 400..800 MHz.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import ClockSignal, Instance, Signal

__all__ = ["PLLParameters", "ice40_pll_parameters", "ecp5_pll_parameters", "ice40_pll",
           "ecp5_pll"]


@dataclass(frozen=True)
class PLLParameters:
    input_hz: float
    output_hz: float
    divr: int = 0           # iCE40: DIVR; ECP5: CLKI_DIV
    divf: int = 0           # iCE40: DIVF; ECP5: CLKFB_DIV
    divq: int = 0           # iCE40: DIVQ; ECP5: CLKOP_DIV
    filter_range: int = 0   # iCE40 only


def ice40_pll_parameters(input_hz: float, target_hz: float) -> PLLParameters:
    """The closest output to ``target_hz`` the iCE40 PLL can make (not above it)."""
    best = None
    for divr in range(16):
        pfd = input_hz / (divr + 1)
        if not 10e6 <= pfd <= 133e6:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533e6 <= vco <= 1066e6:
                continue
            for divq in range(1, 7):
                output = vco / (1 << divq)
                if output <= target_hz * 1.0001 and (best is None or output > best.output_hz):
                    best = PLLParameters(input_hz, output, divr, divf, divq,
                                         _ice40_filter(pfd))
    if best is None or best.output_hz < 16e6:
        raise ValueError(f"the iCE40 PLL cannot make {target_hz / 1e6:.1f} MHz from "
                         f"{input_hz / 1e6:.1f} MHz (it reaches 16 to 275 MHz)")
    return best


def _ice40_filter(pfd: float) -> int:
    for limit, value in ((17e6, 1), (26e6, 2), (44e6, 3), (66e6, 4), (101e6, 5)):
        if pfd < limit:
            return value
    return 6


def ecp5_pll_parameters(input_hz: float, target_hz: float) -> PLLParameters:
    """The closest output to ``target_hz`` the ECP5 PLL can make (not above it)."""
    best = None
    for clki in range(1, 129):
        pfd = input_hz / clki
        if not 3.125e6 <= pfd <= 400e6:
            continue
        for clkfb in range(1, 81):
            output = pfd * clkfb
            if output > target_hz * 1.0001 or not 3.125e6 <= output <= 400e6:
                continue
            for clkop in range(1, 129):
                if 400e6 <= output * clkop <= 800e6:
                    if best is None or output > best.output_hz:
                        best = PLLParameters(input_hz, output, clki, clkfb, clkop)
                    break
    if best is None:
        raise ValueError(f"the ECP5 PLL cannot make {target_hz / 1e6:.1f} MHz from "
                         f"{input_hz / 1e6:.1f} MHz")
    return best


def ice40_pll(m, platform, pad, parameters: PLLParameters) -> Signal:
    """``SB_PLL40_PAD`` on the oscillator's pin, driving the ``sync`` clock; returns LOCK.
    The output is constrained at its frequency, so nextpnr times the design at it."""
    locked, output = Signal(), Signal()
    m.submodules.pll = Instance(
        "SB_PLL40_PAD",
        p_FEEDBACK_PATH="SIMPLE", p_DIVR=parameters.divr, p_DIVF=parameters.divf,
        p_DIVQ=parameters.divq, p_FILTER_RANGE=parameters.filter_range,
        i_PACKAGEPIN=pad.io, i_RESETB=1, i_BYPASS=0,
        o_PLLOUTGLOBAL=output, o_LOCK=locked)
    m.d.comb += ClockSignal("sync").eq(output)
    platform.add_clock_constraint(output, parameters.output_hz)
    return locked


def ecp5_pll(m, platform, pad, parameters: PLLParameters) -> Signal:
    """``EHXPLLL`` fed from the oscillator, driving the ``sync`` clock; returns LOCK.
    The output is constrained at its frequency, so nextpnr times the design at it."""
    from amaranth.lib import io

    m.submodules.oscillator = oscillator = io.Buffer("i", pad)
    locked, output = Signal(), Signal()
    m.d.comb += ClockSignal("sync").eq(output)
    platform.add_clock_constraint(output, parameters.output_hz)
    m.submodules.pll = Instance(
        "EHXPLLL",
        a_FREQUENCY_PIN_CLKI=f"{parameters.input_hz / 1e6:g}",
        a_FREQUENCY_PIN_CLKOP=f"{parameters.output_hz / 1e6:g}",
        a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
        a_MFG_GMCREF_SEL="2",
        p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
        p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKI_DIV=parameters.divr,
        p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=parameters.divq,
        p_CLKOP_CPHASE=parameters.divq - 1, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
        p_CLKFB_DIV=parameters.divf,
        i_RST=0, i_STDBY=0, i_CLKI=oscillator.i, o_CLKOP=output, i_CLKFB=output,
        i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
        i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=locked)
    return locked
