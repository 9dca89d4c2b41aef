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

__all__ = ["Board", "board", "boards", "BOARD_MODULES"]

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
    baud : the UART link's rate.
    programmer : argument lists to flash a bitstream, first available wins; ``{bitstream}`` is
        replaced by the file.
    usb_ids : (vendor, product) of the board's USB serial bridge, for port autodetection.
    extra_resources : a callable returning resources to add to the platform (e.g. a UART on
        header pins), or None.
    synth_opts, nextpnr_opts : extra options for Yosys and nextpnr.
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
    extra_resources: object = None
    synth_opts: str = ""
    nextpnr_opts: str = ""
    notes: str = field(default="", compare=False)

    @property
    def part(self) -> Part:
        return part(self.part_name)

    @property
    def family(self) -> str:
        return self.part.family

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
