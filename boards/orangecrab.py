"""Good Stuff Department OrangeCrab r0.2: ECP5 (25F/85F), 48 MHz oscillator.

The OrangeCrab's USB goes straight to the FPGA, so the link uses a 3.3 V USB-UART adapter on the
Feather header's RX/TX pins (0 and 1); flashing uses its DFU bootloader.  The link runs at
1 Mbaud on the 48 MHz oscillator (48 cycles per bit): what both adapters autodetection knows
carry, the FT232R (up to 3 Mbaud) and the CP2102 (up to 1 Mbaud).
"""

from amaranth.build import Attrs
from amaranth_boards.resources import UARTResource

from .registry import Board


def _header_uart():
    return [UARTResource(0, rx="0", tx="1", conn=("io", 0), attrs=Attrs(IO_TYPE="LVCMOS33"))]


BOARDS = tuple(
    Board(
        name=f"orangecrab-{size}", title=f"OrangeCrab r0.2 (LFE5U-{size.upper()})",
        platform=f"amaranth_boards.orangecrab_r0_2:OrangeCrabR0_2_{size.upper()}Platform",
        part_name=f"LFE5U-{size.upper()}", clock_hz=48e6, target_mhz=48.0, baud=1_000_000,
        programmer=(("openFPGALoader", "--board", "orangecrab", "{bitstream}"),
                    ("dfu-util", "-D", "{bitstream}")),
        usb_ids=((0x0403, 0x6001), (0x10C4, 0xEA60)),
        extra_resources=_header_uart,
    )
    for size in ("25f", "85f")
)
