"""1BitSquared iCEBreaker: iCE40UP5K, 12 MHz oscillator, FTDI FT2232H (UART on channel B)."""

from .registry import Board

BOARDS = (
    Board(
        name="icebreaker", title="iCEBreaker (iCE40UP5K)",
        platform="amaranth_boards.icebreaker:ICEBreakerPlatform", part_name="iCE40UP5K",
        clock_hz=12e6, target_mhz=33.0, baud=115200,
        programmer=(("openFPGALoader", "--board", "ice40_generic", "{bitstream}"),
                    ("iceprog", "{bitstream}")),
        usb_ids=((0x0403, 0x6010),),
        synth_opts="-dsp",
    ),
)
