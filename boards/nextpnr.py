"""Read nextpnr's log: achieved Fmax per clock and the device utilisation table.

nextpnr prints its estimate several times (after placement, after routing); the last figure of
each clock is the one that holds for the bitstream.  Cell names differ per family, so they are
mapped to the resources a person asks about: LUT, FF, BRAM, DSP, SPRAM, IO.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Resource", "NextpnrReport", "parse_nextpnr_log", "RESOURCE_CELLS"]

# Family cell name -> the resource it counts.
RESOURCE_CELLS = {
    "ICESTORM_LC": "LUT",
    "ICESTORM_RAM": "BRAM",
    "ICESTORM_DSP": "DSP",
    "ICESTORM_SPRAM": "SPRAM",
    "SB_IO": "IO",
    "TRELLIS_COMB": "LUT",
    "TRELLIS_FF": "FF",
    "TRELLIS_RAMW": "LUTRAM",
    "DP16KD": "BRAM",
    "MULT18X18D": "DSP",
    "TRELLIS_IO": "IO",
}

_UTIL_RE = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", re.MULTILINE)
_FMAX_RE = re.compile(
    r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz \((PASS|FAIL) at ([\d.]+) MHz\)")


@dataclass(frozen=True)
class Resource:
    used: int
    available: int

    @property
    def percent(self) -> float:
        return 100.0 * self.used / self.available if self.available else 0.0

    def to_json(self) -> dict:
        return {"used": self.used, "available": self.available,
                "percent": round(self.percent, 1)}


@dataclass(frozen=True)
class NextpnrReport:
    fmax_mhz: dict[str, float]                 # clock name -> achieved MHz (last report)
    target_mhz: dict[str, float]               # clock name -> constraint MHz
    cells: dict[str, Resource]                 # raw family cell name -> use
    resources: dict[str, Resource] = field(default_factory=dict)  # LUT / BRAM / DSP / ...

    @property
    def worst_fmax_mhz(self) -> float | None:
        """The fastest the design's main clock (the engine's: the highest constraint) can run.
        The other clock, the UART link's, is the oscillator or a PLL output of its own at a
        fixed frequency (a whole number of cycles per bit): it does not move with the
        engine's, and only has to meet its constraint (``timing_met``)."""
        if not self.fmax_mhz:
            return None
        main = max(self.target_mhz, key=self.target_mhz.get)
        return self.fmax_mhz[main]

    @property
    def timing_met(self) -> bool:
        return all(self.fmax_mhz[c] >= self.target_mhz[c] for c in self.fmax_mhz)


def parse_nextpnr_log(text: str) -> NextpnrReport:
    """Parse a nextpnr log (``--log``); raises ValueError when it holds no utilisation table."""
    cells: dict[str, Resource] = {}
    for name, used, available in _UTIL_RE.findall(text):
        cells[name] = Resource(int(used), int(available))
    if not cells:
        raise ValueError("the nextpnr log has no 'Device utilisation' table; "
                         "did place and route run to the end?")
    fmax: dict[str, float] = {}
    target: dict[str, float] = {}
    for clock, achieved, _verdict, constraint in _FMAX_RE.findall(text):
        fmax[clock] = float(achieved)
        target[clock] = float(constraint)
    resources: dict[str, Resource] = {}
    for name, resource in cells.items():
        kind = RESOURCE_CELLS.get(name)
        if kind is None:
            continue
        if kind in resources:
            previous = resources[kind]
            resource = Resource(previous.used + resource.used,
                                previous.available + resource.available)
        resources[kind] = resource
    return NextpnrReport(fmax, target, cells, resources)
