"""`cnnlab datasets`."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from ..options import option
from . import add_command


@dataclass
class Options:
    json: bool = option(False, "print JSON")


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "datasets", Options, help="list data sources and where they are").set_defaults(func=handle)


def handle(args) -> int:
    from ..data.registry import SOURCES
    from ..data.sources import load_source  # noqa: F401  (imports the modules that register sources)

    rows = []
    for kind in SOURCES.values():
        if kind.available is not None:
            found, where = kind.available()
            rows.append({"name": kind.name, "available": found, "where": where, "title": kind.title})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        mark = "yes" if r["available"] else "no "
        print(f"{r['name']:<15}{mark}  {r['where']}\n{'':<20}{r['title']}")
    print("\nYour own images:")
    for kind in SOURCES.values():
        if kind.takes_path:
            print(f"  {kind.usage:<14}{kind.title}")
    return 0
