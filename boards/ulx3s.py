"""Radiona ULX3S: ECP5 (12F/25F/45F/85F), 25 MHz oscillator, FT231X USB UART.

The link runs at 3 Mbaud, the FT231X's top rate (its 3 MHz baud clock undivided).  25 MHz has
no whole number of cycles in that bit (8.33), so a second PLL makes the UART a 24 MHz clock:
8 cycles per bit.
"""

from .registry import Board

BOARDS = tuple(
    Board(
        name=f"ulx3s-{size}", title=f"ULX3S (LFE5U-{size.upper()})",
        platform=f"amaranth_boards.ulx3s:ULX3S_{size.upper()}_Platform",
        part_name=f"LFE5U-{size.upper()}", clock_hz=25e6, target_mhz=50.0, baud=3_000_000,
        link_hz=24e6,
        programmer=(("openFPGALoader", "--board", "ulx3s", "{bitstream}"),),
        usb_ids=((0x0403, 0x6015),),
    )
    for size in ("12f", "25f", "45f", "85f")
)
