"""PLLs for the board tops: parameter search (as icestorm's ``icepll`` and prjtrellis's
``ecppll`` do) and the primitive instances.

iCE40 ``SB_PLL40``: ``f_out = f_ref * (DIVF+1) / ((DIVR+1) * 2**DIVQ)`` with the phase detector
at 10..133 MHz and the VCO at 533..1066 MHz.  ECP5 ``EHXPLLL``: ``f_out = f_in / CLKI_DIV *
CLKFB_DIV`` with feedback from CLKOP and the VCO (``f_out * CLKOP_DIV``) at 400..800 MHz.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import ClockSignal, Instance, Signal

__all__ = ["PLL_RANGE_MHZ", "PLLParameters", "ice40_pll_parameters", "ecp5_pll_parameters",
           "ice40_pll", "ecp5_pll", "LinkPLLParameters", "ecp5_link_pll_parameters",
           "ecp5_link_pll"]


# The outputs each family's PLL makes (the search below reaches these ends).
PLL_RANGE_MHZ = {"ice40": (16.0, 275.0), "ecp5": (3.125, 400.0)}


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


def ice40_pll(m, platform, pad, parameters: PLLParameters) -> tuple[Signal, Signal]:
    """``SB_PLL40_2_PAD`` on the oscillator's pin, driving the ``sync`` clock; returns LOCK and
    the oscillator's own clock (port A passes the pad's clock through: the pin cannot also
    feed the fabric once the PLL takes it), which the UART link runs on.  The output is
    constrained at its frequency, so nextpnr times the design at it."""
    locked, output, reference = Signal(), Signal(), Signal()
    m.submodules.pll = Instance(
        "SB_PLL40_2_PAD",
        p_FEEDBACK_PATH="SIMPLE", p_PLLOUT_SELECT_PORTB="GENCLK", p_DIVR=parameters.divr,
        p_DIVF=parameters.divf, p_DIVQ=parameters.divq, p_FILTER_RANGE=parameters.filter_range,
        i_PACKAGEPIN=pad.io, i_RESETB=1, i_BYPASS=0,
        o_PLLOUTGLOBALA=reference, o_PLLOUTGLOBALB=output, o_LOCK=locked)
    m.d.comb += ClockSignal("sync").eq(output)
    platform.add_clock_constraint(output, parameters.output_hz)
    platform.add_clock_constraint(reference, parameters.input_hz)
    return locked, reference


def ecp5_pll(m, platform, oscillator, parameters: PLLParameters) -> Signal:
    """``EHXPLLL`` fed from ``oscillator`` (the oscillator's clock in the fabric), driving the
    ``sync`` clock; returns LOCK.  The output is constrained at its frequency, so nextpnr
    times the design at it."""
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
        i_RST=0, i_STDBY=0, i_CLKI=oscillator, o_CLKOP=output, i_CLKFB=output,
        i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
        i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=locked)
    return locked


@dataclass(frozen=True)
class LinkPLLParameters:
    """An ECP5 PLL whose secondary output (CLKOS) is the UART link's clock: CLKOP (the
    feedback) at ``input_hz / clki_div * clkfb_div``, the VCO at CLKOP times ``clkop_div``,
    CLKOS at the VCO over ``clkos_div``."""
    input_hz: float
    output_hz: float
    clki_div: int
    clkfb_div: int
    clkop_div: int
    clkos_div: int


def ecp5_link_pll_parameters(input_hz: float, link_hz: float) -> LinkPLLParameters:
    """A PLL that makes ``link_hz`` exactly from ``input_hz`` (the ULX3S's 25 MHz has no whole
    number of cycles in a 3 Mbaud bit; 24 MHz has 8)."""
    for clki in range(1, 129):
        pfd = input_hz / clki
        if not 3.125e6 <= pfd <= 400e6:
            continue
        for clkfb in range(1, 81):
            clkop = pfd * clkfb
            if not 3.125e6 <= clkop <= 400e6:
                continue
            for clkop_div in range(1, 129):
                vco = clkop * clkop_div
                if not 400e6 <= vco <= 800e6:
                    continue
                clkos_div = round(vco / link_hz)
                if 1 <= clkos_div <= 128 and abs(vco / clkos_div - link_hz) < 1:
                    return LinkPLLParameters(input_hz, link_hz, clki, clkfb, clkop_div,
                                             clkos_div)
    raise ValueError(f"the ECP5 PLL cannot make exactly {link_hz / 1e6:g} MHz from "
                     f"{input_hz / 1e6:g} MHz")


def ecp5_link_pll(m, platform, oscillator, parameters: LinkPLLParameters) -> tuple[Signal,
                                                                                    Signal]:
    """A second ``EHXPLLL`` (every ECP5 has two or more) making the link's clock from
    ``oscillator``; returns (LOCK, the clock), the clock constrained at its frequency."""
    locked, feedback, output = Signal(), Signal(), Signal()
    platform.add_clock_constraint(output, parameters.output_hz)
    clkop_hz = parameters.input_hz / parameters.clki_div * parameters.clkfb_div
    m.submodules.link_pll = Instance(
        "EHXPLLL",
        a_FREQUENCY_PIN_CLKI=f"{parameters.input_hz / 1e6:g}",
        a_FREQUENCY_PIN_CLKOP=f"{clkop_hz / 1e6:g}",
        a_FREQUENCY_PIN_CLKOS=f"{parameters.output_hz / 1e6:g}",
        a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
        a_MFG_GMCREF_SEL="2",
        p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
        p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
        p_CLKI_DIV=parameters.clki_div,
        p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=parameters.clkop_div,
        p_CLKOP_CPHASE=parameters.clkop_div - 1, p_CLKOP_FPHASE=0,
        p_CLKOS_ENABLE="ENABLED", p_CLKOS_DIV=parameters.clkos_div,
        p_CLKOS_CPHASE=parameters.clkos_div - 1, p_CLKOS_FPHASE=0,
        p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=parameters.clkfb_div,
        i_RST=0, i_STDBY=0, i_CLKI=oscillator, o_CLKOP=feedback, i_CLKFB=feedback,
        o_CLKOS=output,
        i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
        i_PLLWAKESYNC=0, i_ENCLKOP=0, i_ENCLKOS=0, o_LOCK=locked)
    return locked, output
