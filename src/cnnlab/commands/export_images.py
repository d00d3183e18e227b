"""`cnnlab export-images`."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..data.sources import DataOptions
    from ..options import add_arguments

    x = sub.add_parser("export-images", help="write a dataset as PNG files plus CSV labels",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    x.add_argument("source", help="a data source")
    x.add_argument("out", help="output folder")
    add_arguments(x, DataOptions, ["data"], only=("data_dir", "labels"))
    x.add_argument("--limit", type=int, default=None, help="at most this many images per split")
    x.set_defaults(func=handle)


def handle(args) -> int:
    from ..data.export import export_images
    from ..data.sources import DataOptions, load_source
    from ..options import Places, check_values, given

    if args.limit is not None and args.limit < 1:
        from ..errors import ConfigError

        raise ConfigError(f"limit must be >= 1, got {args.limit}", "--limit", "use e.g. --limit 1000, or leave it out")
    flags = given(args, DataOptions)
    opts = DataOptions(**flags)
    check_values(opts, Places(flags))
    ds = load_source(args.source, opts)
    counts = export_images(ds, args.out, limit=args.limit)
    print(f"wrote {', '.join(f'{n:,} {k}' for k, n in counts.items())} images to {args.out}")
    return 0
