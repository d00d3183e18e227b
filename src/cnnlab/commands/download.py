"""`cnnlab download`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    dl = sub.add_parser("download", help="download fashion-mnist or mnist into the cache", formatter_class=fmt)
    dl.add_argument("name", help="fashion-mnist or mnist")
    dl.add_argument("--dir", default=None, help="target folder (default: the user cache)")
    dl.set_defaults(func=handle)


def handle(args) -> int:
    from ..data.builtin import IDX_SETS, download
    from ..errors import DataError

    if args.name not in IDX_SETS:
        raise DataError(f"'{args.name}' cannot be downloaded", "NAME",
                        f"use one of {', '.join(IDX_SETS)} (digits ships with scikit-learn)")
    dest = download(args.name, None if args.dir is None else Path(args.dir))
    print(f"{args.name} is in {dest}")
    return 0
