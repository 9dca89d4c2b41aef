"""The digits model the benchmarks share: the MLP compressed as the iCEBreaker takes it
(``sparseforge compress --max-acc-bits 16``), made once and kept in ``build/benchmarks``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "build" / "benchmarks" / "digits-acc16.sfm"


def ensure_model(path: Path | None) -> Path:
    """``path``, or the default digits model (compressed here the first time)."""
    if path is not None:
        return path
    if not DEFAULT_MODEL.exists():
        DEFAULT_MODEL.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "sparseforge", "compress", "-o",
                        str(DEFAULT_MODEL), "--max-acc-bits", "16", "--json"],
                       check=True, capture_output=True)
    return DEFAULT_MODEL
