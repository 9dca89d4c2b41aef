"""Run Amaranth's build (Yosys + nextpnr + pack) with the tools that `hw.toolchain` found.

Amaranth writes a build script that reads ``YOSYS``, ``NEXTPNR_ICE40``, ``ICEPACK``, ... from the
environment; we hand it the environment with native tools or their YoWASP builds, run it in a
subprocess so its output can be kept in a log, and parse nextpnr's report.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sparseforge.compiler.errors import UserError
from sparseforge.hw import toolchain

from .nextpnr import NextpnrReport, parse_nextpnr_log

__all__ = ["BitstreamBuild", "BuildError", "build_bitstream"]

_FAMILY_TOOLS = {
    "ice40": ("yosys", "nextpnr-ice40", "icepack"),
    "ecp5": ("yosys", "nextpnr-ecp5", "ecppack"),
}


class BuildError(UserError, RuntimeError):
    """Synthesis, place and route or packing failed; the message ends with the log's tail."""


@dataclass(frozen=True)
class BitstreamBuild:
    bitstream: Path
    report: NextpnrReport
    build_dir: Path
    seconds: float

    @property
    def fmax_mhz(self) -> float | None:
        return self.report.worst_fmax_mhz


def _family(platform) -> str:
    device = platform.device.lower()
    if device.startswith("ice40"):
        return "ice40"
    if device.startswith("lfe5"):
        return "ecp5"
    raise ValueError(f"unsupported FPGA family for device {platform.device!r}; "
                     f"supported: iCE40, ECP5")


def build_bitstream(platform, top, build_dir: Path, *, name: str = "top",
                    synth_opts: str | None = None, nextpnr_opts: str | None = None,
                    timeout: float = 3600) -> BitstreamBuild:
    """Elaborate ``top`` for ``platform``, run the toolchain, return the bitstream and report."""
    family = _family(platform)
    for tool in _FAMILY_TOOLS[family]:
        toolchain.require(tool)
    build_dir = Path(build_dir)
    kwargs = {}
    if synth_opts is not None:
        kwargs["synth_opts"] = synth_opts
    # A design that misses its clock still gets a bitstream and a report with the Fmax it
    # reached: the caller decides (sf.build rebuilds at a clock it meets, or reports the miss).
    kwargs["nextpnr_opts"] = " ".join(filter(None, ["--timing-allow-fail", nextpnr_opts]))
    plan = platform.prepare(top, name, **kwargs)
    plan.extract(build_dir)
    env = toolchain.environment()
    if "DFU_SUFFIX" not in env and shutil.which("dfu-suffix") is None:
        # The OrangeCrab's script appends a DFU suffix for its bootloader; without dfu-util
        # the .bit is still complete (and flashable over JTAG), so skip that step.
        env["DFU_SUFFIX"] = "true"
    started = time.monotonic()
    script = build_dir / f"build_{name}.sh"
    result = subprocess.run(["sh", script.name], cwd=build_dir, env=env, capture_output=True,
                            text=True, timeout=timeout)
    seconds = time.monotonic() - started
    log = build_dir / f"{name}.tim"
    log_text = log.read_text() if log.exists() else ""
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr + log_text).splitlines()[-25:])
        raise BuildError(f"the {family} build of {name} failed (exit {result.returncode}) "
                         f"in {build_dir}:\n{tail}")
    suffix = ".bin" if family == "ice40" else ".bit"
    bitstream = build_dir / f"{name}{suffix}"
    if not bitstream.exists():
        raise BuildError(f"the build finished but wrote no bitstream {bitstream}")
    return BitstreamBuild(bitstream, parse_nextpnr_log(log_text), build_dir, seconds)
