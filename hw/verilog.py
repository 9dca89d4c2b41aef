"""The engine as Verilog: the artifact the simulators and, through Yosys, the boards consume.

Amaranth's ``verilog.convert`` output is used as it is (never edited); the top module is named
:data:`TOPLEVEL` and its ports follow the engine's signature (``bus__addr``, ``input__valid``,
...).  The file is written beside a temporary and renamed into place, so a reader never sees a
half-written one.
"""

from __future__ import annotations

from pathlib import Path

from amaranth.back import verilog

from sparseforge.compiler.config import EngineConfig

from .engine import Engine

__all__ = ["TOPLEVEL", "write_engine_verilog"]

TOPLEVEL = "engine"


def write_engine_verilog(config: EngineConfig, path: Path, image=None, platform=None) -> Path:
    """Generate the engine (memories initialised from ``image`` when given) as Verilog; with a
    ``platform``, the way it is built for that platform (e.g. with iCE40 SPRAM primitives)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = verilog.convert(Engine(config, image), name=TOPLEVEL, emit_src=False,
                           platform=platform)
    if path.is_file() and path.read_text() == text:
        # Left as it is: a simulator built from it is rebuilt when its sources are newer.
        return path
    temporary = path.with_suffix(".v.tmp")
    temporary.write_text(text)
    temporary.replace(path)
    return path
