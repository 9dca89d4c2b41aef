"""FPGA parts the boards carry: their capacities, as in the vendors' data sheets.

Pure data, read by the compiler's fit check (``compiler/configure.py``) and the build report.

Sources and confidence:

* iCE40UP5K (Lattice iCE40 UltraPlus family data sheet, FPGA-DS-02008): 5280 LUT4s, 30
  sysMEM EBRs of 4 kbit (SB_RAM40_4K, 256 x 16 at its widest), 4 SPRAMs of 256 kbit
  (SB_SPRAM256KA, 16k x 16), 8 DSPs (SB_MAC16).  The activation buffer is built from SPRAM
  instances (hw/activation_buffer.py), not inferred by Yosys.
* LFE5U-25F / 45F / 85F (Lattice ECP5 family data sheet, FPGA-DS-02012): 24288 / 43848 / 83640
  LUT4s (the ``LUTS_avail`` figures Lattice Diamond reports agree), 56 / 108 / 208 DP16KD
  block RAMs of 18 kbit, 28 / 72 / 156 MULT18X18D.
* LFE5U-12F: the data sheet gives "12K" LUTs, 32 DP16KD and 28 MULT18X18D; the exact LUT4
  count (12288 here) is the figure we are least sure of: the 12F is the 25F die licensed to
  12k LUTs, and nextpnr places it with the 25k chip database.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BOARD_PARTS", "PARTS", "Part", "part"]


@dataclass(frozen=True)
class Part:
    name: str
    family: str          # "ice40" or "ecp5"
    luts: int            # 4-input LUTs
    brams: int           # block RAMs (iCE40 EBR 4 kbit; ECP5 DP16KD 18 kbit)
    bram_kbits: int
    dsps: int            # iCE40 SB_MAC16; ECP5 MULT18X18D
    sprams: int = 0      # iCE40UP SPRAM blocks of 256 kbit

    @property
    def bram_bits(self) -> int:
        return self.brams * self.bram_kbits * 1024


PARTS = {p.name: p for p in (
    Part("iCE40UP5K", "ice40", luts=5280, brams=30, bram_kbits=4, dsps=8, sprams=4),
    Part("LFE5U-12F", "ecp5", luts=12288, brams=32, bram_kbits=18, dsps=28),
    Part("LFE5U-25F", "ecp5", luts=24288, brams=56, bram_kbits=18, dsps=28),
    Part("LFE5U-45F", "ecp5", luts=43848, brams=108, bram_kbits=18, dsps=72),
    Part("LFE5U-85F", "ecp5", luts=83640, brams=208, bram_kbits=18, dsps=156),
)}

# Board name (``--board``) -> part; boards/registry.py holds the full board definitions and a
# test keeps the two in agreement.
BOARD_PARTS = {
    "icebreaker": "iCE40UP5K",
    "ulx3s-12f": "LFE5U-12F", "ulx3s-25f": "LFE5U-25F", "ulx3s-45f": "LFE5U-45F",
    "ulx3s-85f": "LFE5U-85F",
    "orangecrab-25f": "LFE5U-25F", "orangecrab-85f": "LFE5U-85F",
}


def part(name: str) -> Part:
    try:
        return PARTS[name]
    except KeyError:
        raise ValueError(f"unknown FPGA part {name!r}; known: {', '.join(PARTS)}") from None
