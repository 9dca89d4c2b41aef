"""``sparseforge doctor``: every external tool, its version, native or PyPI, what it is for."""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from .common import console_for

REQUIRED = ("verilator", "yosys", "nextpnr-ice40", "icepack")


def register(verbs) -> None:
    parser = verbs.add_parser("doctor", help="list the external tools, their versions and sources")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from sparseforge.hw import toolchain

    console = console_for(args)
    with console.status("asking each tool for its version (the first YoWASP run compiles "
                        "WebAssembly and takes a while)..."):
        rows = [(tool, tool.version) for tool in toolchain.find_all()]
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
    return 0 if all(t.found for t, _ in rows if t.name in REQUIRED) else 1
