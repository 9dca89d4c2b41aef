"""The board registry: each supported board is one small declarative file in this package.

A :class:`Board` names its amaranth-boards platform, its FPGA part (capacities in
``parts.py``), the link's baud rate, the clock the engine aims for, how to flash it and how to
recognise it on USB.  Adding a board is adding a file like ``icebreaker.py`` and listing it in
``BOARD_MODULES``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from sparseforge.compiler.errors import InputError
from sparseforge.compiler.parts import Part, part

__all__ = ["Board", "board", "boards", "BOARD_MODULES", "clocks_per_bit"]

BOARD_MODULES = ("icebreaker", "ulx3s", "orangecrab")


@dataclass(frozen=True)
class Board:
    """Parameters
    ----------
    name : the CLI name (``--board``).
    title : what a person calls it.
    platform : ``module:Class`` of the amaranth-boards platform.
    part_name : the FPGA part (see ``parts.PARTS``).
    clock_hz : the board's oscillator.
    target_mhz : the engine clock the build aims for (a PLL makes it from the oscillator).
    baud : the UART link's rate: the highest the board's USB-UART bridge carries reliably that
        the link's clock divides into a whole number of cycles per bit (``clocks_per_bit``).
    programmer : argument lists to flash a bitstream, first available wins; ``{bitstream}`` is
        replaced by the file.
    usb_ids : (vendor, product) of the board's USB serial bridge, for port autodetection.
    usb_interface : which of the bridge's interfaces carries the link, when it has several
        (the iCEBreaker's FT2232H: 1, channel B; channel A programs the flash).
    extra_resources : a callable returning resources to add to the platform (e.g. a UART on
        header pins), or None.
    synth_opts, nextpnr_opts : extra options for Yosys and nextpnr.
    link_hz : the UART link's clock, when it is not the oscillator (a second PLL makes it).
    """
    name: str
    title: str
    platform: str
    part_name: str
    clock_hz: float
    target_mhz: float
    baud: int
    programmer: tuple[tuple[str, ...], ...]
    usb_ids: tuple[tuple[int, int], ...] = ()
    usb_interface: int | None = None
    extra_resources: object = None
    synth_opts: str = ""
    nextpnr_opts: str = ""
    link_hz: float | None = None
    notes: str = field(default="", compare=False)

    @property
    def part(self) -> Part:
        return part(self.part_name)

    def synthesis_options(self, config) -> str | None:
        """Yosys options for an engine of ``config`` (an EngineConfig) on this board:
        ``synth_opts``, and on ECP5 for an engine with per-row requantization ``-dff``: without
        it Yosys 0.70's abc9 fails an assertion (ABC_OPS_REINTEGRATE, ``GetSize(conn.first) ==
        GetSize(conn.second)``) on such a board top, also with ``-nodsp`` or ``-nolutram``;
        with it abc9 maps the flip-flops with the logic, and the design synthesises."""
        options = self.synth_opts
        if self.part.family == "ecp5" and config.row_scales:
            options = f"{options} -dff".strip()
        return options or None

    @property
    def family(self) -> str:
        return self.part.family

    @property
    def link_clock_hz(self) -> float:
        """The clock the UART link runs on: never the engine's, whose PLL setting follows
        what the build reaches, while a bit time must be a whole number of cycles."""
        return self.link_hz or self.clock_hz

    @property
    def clocks_per_bit(self) -> int:
        return clocks_per_bit(self.link_clock_hz, self.baud)

    def make_platform(self):
        module, name = self.platform.split(":")
        platform = getattr(importlib.import_module(module), name)()
        if self.extra_resources is not None:
            platform.add_resources(self.extra_resources())
        return platform


def boards() -> dict[str, Board]:
    found: dict[str, Board] = {}
    for module in BOARD_MODULES:
        for entry in importlib.import_module(f"sparseforge.boards.{module}").BOARDS:
            found[entry.name] = entry
    return found


def board(name: str) -> Board:
    known = boards()
    try:
        return known[name]
    except KeyError:
        raise InputError(f"unknown board {name!r}; supported boards: "
                         f"{', '.join(sorted(known))}") from None


def clocks_per_bit(link_hz: float, baud: int) -> int:
    """The UART's bit time in cycles of its clock; refuses a rate that clock cannot make within
    2% (the error adds up over a character: 2% is a fifth of a bit at the stop bit) or with
    fewer than the receiver's 4 cycles per bit."""
    cycles = round(link_hz / baud)
    if cycles < 4 or abs(link_hz / cycles / baud - 1) > 0.02:
        raise ValueError(f"a {link_hz / 1e6:g} MHz clock cannot make {baud} baud: "
                         f"{link_hz / baud:.2f} cycles per bit")
    return cycles
