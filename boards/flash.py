"""Flashing a bitstream: the programmer command line for a board, and running it.

The board file lists its programmers in order of preference (openFPGALoader first, the family's
own tool after); the first one found on PATH is used.  A missing programmer is an error that
says how to get one.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from sparseforge.hw.toolchain import ToolNotFoundError

from .registry import board as find_board

__all__ = ["programmer_command", "flash"]

HOW_TO_GET = {
    "openFPGALoader": "apt-get install openfpgaloader (or build it from "
                      "https://github.com/trabucayre/openFPGALoader)",
    "iceprog": "apt-get install fpga-icestorm",
    "dfu-util": "apt-get install dfu-util",
}


def programmer_command(board_name: str, bitstream: Path) -> list[str]:
    """The command that flashes ``bitstream`` on the board, with the first programmer found."""
    board = find_board(board_name)
    bitstream = Path(bitstream)
    for candidate in board.programmer:
        tool = shutil.which(candidate[0])
        if tool:
            return [tool] + [argument.replace("{bitstream}", str(bitstream))
                             for argument in candidate[1:]]
    names = [candidate[0] for candidate in board.programmer]
    hints = "; ".join(f"{name}: {HOW_TO_GET.get(name, 'see its project page')}"
                      for name in names)
    raise ToolNotFoundError(f"no programmer for the {board.title} on PATH (looked for "
                            f"{', '.join(names)}); get one: {hints}")


def flash(board_name: str, bitstream: Path, *, timeout: float = 300) -> str:
    """Flash ``bitstream``; returns the programmer's output (raises on failure)."""
    bitstream = Path(bitstream)
    if not bitstream.is_file():
        raise FileNotFoundError(f"{bitstream}: no bitstream; run `sparseforge build` first")
    command = programmer_command(board_name, bitstream)
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed (exit {result.returncode}):\n"
                           + (result.stdout + result.stderr)[-2000:])
    return result.stdout + result.stderr
