"""Radiona ULX3S: ECP5 (12F/25F/45F/85F), 25 MHz oscillator, FT231X USB UART."""

from .registry import Board

BOARDS = tuple(
    Board(
        name=f"ulx3s-{size}", title=f"ULX3S (LFE5U-{size.upper()})",
        platform=f"amaranth_boards.ulx3s:ULX3S_{size.upper()}_Platform",
        part_name=f"LFE5U-{size.upper()}", clock_hz=25e6, target_mhz=50.0, baud=115200,
        programmer=(("openFPGALoader", "--board", "ulx3s", "{bitstream}"),),
        usb_ids=((0x0403, 0x6015),),
    )
    for size in ("12f", "25f", "45f", "85f")
)
