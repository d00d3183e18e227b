"""`cnnlab datasets`."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    ds = sub.add_parser("datasets", help="list data sources and where they are", formatter_class=fmt)
    ds.add_argument("--json", action="store_true", help="print JSON")
    ds.set_defaults(func=handle)


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
