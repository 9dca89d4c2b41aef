"""1BitSquared iCEBreaker: iCE40UP5K, 12 MHz oscillator, FTDI FT2232H (UART on channel B).

The link runs at 3 Mbaud: the FT2232H makes it exactly (12 MHz / 4) and the UART runs on the
12 MHz oscillator, 4 cycles per bit (the UP5K's one PLL makes the engine's clock).
"""

from .registry import Board

BOARDS = (
    Board(
        name="icebreaker", title="iCEBreaker (iCE40UP5K)",
        platform="amaranth_boards.icebreaker:ICEBreakerPlatform", part_name="iCE40UP5K",
        clock_hz=12e6, target_mhz=33.0, baud=3_000_000,
        programmer=(("openFPGALoader", "--board", "ice40_generic", "{bitstream}"),
                    ("iceprog", "{bitstream}")),
        usb_ids=((0x0403, 0x6010),), usb_interface=1,
        synth_opts="-dsp",
    ),
)
