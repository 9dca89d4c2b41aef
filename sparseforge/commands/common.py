"""What every verb shares: the ``--json`` convention and clear failures.

With ``--json`` a verb prints exactly one JSON object on stdout and everything meant for a person
(tables, progress) goes to stderr; without it, tables go to stdout.
"""

from __future__ import annotations

import json

from rich.console import Console

__all__ = ["add_json_flag", "console_for", "emit_json", "fail"]


def add_json_flag(parser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object with the figures on stdout")


def console_for(args) -> Console:
    return Console(stderr=bool(getattr(args, "json", False)))


def emit_json(args, payload: dict) -> None:
    if getattr(args, "json", False):
        print(json.dumps(payload, default=_plain))


def fail(message: str, status: int = 2) -> int:
    Console(stderr=True).print(f"[bold red]error:[/bold red] {message}")
    return status


def _plain(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


