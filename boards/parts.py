"""FPGA parts the boards carry: their capacities, as in the vendors' data sheets.

Pure data, read by the compiler's fit check and by the build report.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Part", "PARTS", "part"]


@dataclass(frozen=True)
class Part:
    name: str
    family: str          # "ice40" or "ecp5"
    luts: int            # 4-input LUTs
    brams: int           # block RAMs (iCE40 EBR 4 kbit; ECP5 DP16KD 18 kbit)
    bram_kbits: int
    dsps: int            # iCE40 SB_MAC16; ECP5 MULT18X18D
    sprams: int = 0      # iCE40UP SPRAM blocks of 256 kbit


PARTS = {p.name: p for p in (
    # iCE40 UltraPlus family data sheet (FPGA-DS-02008): UP5K.
    Part("iCE40UP5K", "ice40", luts=5280, brams=30, bram_kbits=4, dsps=8, sprams=4),
    # ECP5 family data sheet (FPGA-DS-02012): LFE5U-12/25/45/85.
    Part("LFE5U-12F", "ecp5", luts=12288, brams=32, bram_kbits=18, dsps=28),
    Part("LFE5U-25F", "ecp5", luts=24288, brams=56, bram_kbits=18, dsps=28),
    Part("LFE5U-45F", "ecp5", luts=43848, brams=108, bram_kbits=18, dsps=72),
    Part("LFE5U-85F", "ecp5", luts=83640, brams=208, bram_kbits=18, dsps=156),
)}


def part(name: str) -> Part:
    try:
        return PARTS[name]
    except KeyError:
        raise ValueError(f"unknown FPGA part {name!r}; known: {', '.join(PARTS)}") from None
