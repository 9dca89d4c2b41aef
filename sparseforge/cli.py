"""The ``sparseforge`` command: one verb per pipeline stage, plus ``doctor``.

Every verb takes ``--json`` and then prints exactly one JSON object with its figures on stdout
(progress and tables go to stderr in that mode), so scripts and CI can read the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

__all__ = ["main"]


def _doctor(args: argparse.Namespace) -> int:
    from sparseforge import toolchain

    console = Console(stderr=args.json)
    tools = toolchain.find_all()
    rows = []
    with console.status("asking each tool for its version (the first YoWASP run compiles "
                        "WebAssembly and takes a while)..."):
        for tool in tools:
            rows.append((tool, tool.version))
    if args.json:
        print(json.dumps({"tools": [
            {"name": t.name, "found": t.found, "source": t.source, "path": t.path,
             "version": v, "purpose": t.spec.purpose,
             "how_to_get": None if t.found else t.spec.how_to_get} for t, v in rows]}))
    else:
        table = Table(title="sparseforge toolchain (native on PATH first, PyPI builds as fallback)")
        table.add_column("tool", no_wrap=True)
        table.add_column("source", no_wrap=True)
        table.add_column("version")
        table.add_column("used for")
        table.add_column("path / how to get it", overflow="fold")
        for tool, version in rows:
            if tool.found:
                table.add_row(tool.name, tool.source, version or "?", tool.spec.purpose, tool.path)
            else:
                table.add_row(tool.name, "[red]missing[/red]", "-", tool.spec.purpose,
                              tool.spec.how_to_get)
        console.print(table)
    required = ("verilator", "yosys", "nextpnr-ice40", "icepack")
    return 0 if all(t.found for t in tools if t.name in required) else 1


def _demo(args: argparse.Namespace) -> int:
    # Grows with the pipeline: each stage joins the demo when it exists, never before.
    console = Console()
    console.rule("sparseforge demo")
    console.print("Stage 0: toolchain")
    status = _doctor(argparse.Namespace(json=False))
    console.print("[yellow]The compress, compile, engine and board stages are not built yet; "
                  "this demo stops at the toolchain check.[/yellow]")
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparseforge",
        description="Compress a PyTorch network and run it on a verified sparse engine on an "
                    "open FPGA.")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    doctor = verbs.add_parser("doctor", help="list the external tools, their versions and sources")
    doctor.add_argument("--json", action="store_true", help="print one JSON object")
    doctor.set_defaults(run=_doctor)

    demo = verbs.add_parser("demo", help="run the whole pipeline on the embedded default")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
