"""`cnnlab export-images`."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ..options import Interval, option
from . import add_command


@dataclass
class Options:
    source: str = option(None, "a data source", positional=True, required=True)
    out: str = option(None, "output folder", positional=True, required=True)
    limit: int | None = option(None, "at most this many images per split", Interval(1), example="1000",
                               default_text="all")


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..data.sources import DataOptions
    from ..options import add_arguments

    x = add_command(sub, "export-images", Options, help="write a dataset as PNG files plus CSV labels")
    add_arguments(x, DataOptions, ["data"], only=("data_dir", "labels"))
    x.set_defaults(func=handle)


def handle(args) -> int:
    from ..data.export import export_images
    from ..data.sources import DataOptions, load_source
    from ..options import Places, check_values, given

    flags = given(args, DataOptions)
    opts = DataOptions(**flags)
    check_values(opts, Places(flags))
    ds = load_source(args.source, opts)
    counts = export_images(ds, args.out, limit=args.limit)
    print(f"wrote {', '.join(f'{n:,} {k}' for k, n in counts.items())} images to {args.out}")
    return 0
