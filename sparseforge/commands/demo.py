"""``sparseforge demo``: the whole pipeline on the embedded default (digits MLP)."""

from __future__ import annotations

import argparse

from rich.console import Console


def register(verbs) -> None:
    parser = verbs.add_parser("demo", help="run the whole pipeline on the embedded default")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Grows with the pipeline: each stage joins the demo when it exists, never before.
    from . import doctor

    console = Console()
    console.rule("sparseforge demo")
    console.print("Stage 0: toolchain")
    status = doctor.run(argparse.Namespace(json=False))
    console.print("[yellow]The compress, compile, engine and board stages are not built yet; "
                  "this demo stops at the toolchain check.[/yellow]")
    return status
