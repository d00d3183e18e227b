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
    from ..data.builtin import availability

    rows = availability()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        mark = "yes" if r["available"] else "no "
        print(f"{r['name']:<15}{mark}  {r['where']}\n{'':<20}{r['title']}")
    print("\nYour own images:\n"
          "  folder:PATH   one sub-folder per class, optionally under train/ validation/ test/\n"
          "  csv:PATH      a table with an image column (path or id) and a label column\n"
          "  npz:PATH      arrays x_train, y_train (x_val, y_val, x_test, y_test optional)")
    return 0
