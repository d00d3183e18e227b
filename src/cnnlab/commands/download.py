"""`cnnlab download`: a dataset, or a backbone's ImageNet weights, into the cache."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    dl = sub.add_parser(
        "download", help="download fashion-mnist or mnist, or a backbone's ImageNet weights, into the cache",
        description="cnnlab download fashion-mnist | mnist; cnnlab download weights NAME[:WIDTH] "
        "[--include-top] [--size N]: the file Keras Applications downloads for that backbone, checked against "
        "its published hash (copy the cache to an offline machine to use it there); cnnlab download --list: what "
        "the weights cache holds.")
    dl.add_argument("name", nargs="?", help="fashion-mnist, mnist, or weights")
    dl.add_argument("backbone", nargs="?", metavar="NAME[:WIDTH]",
                    help="with weights: vgg16, resnet50, efficientnet_b0, convnext_tiny or mobilenet_v2[:ALPHA]")
    dl.add_argument("--include-top", action="store_true", help="with weights: the file with the 1000-class head "
                    "(default: the file without it, as --backbone uses)")
    dl.add_argument("--size", type=int, default=None, metavar="N",
                    help="with weights: the image size (mobilenet_v2 has one file per size: 96, 128, 160, 192, 224; "
                    "default 224)")
    dl.add_argument("--dir", default=None, help="with a dataset: the target folder (default: the user cache)")
    dl.add_argument("--list", action="store_true", help="list the weights cache with sizes")
    dl.set_defaults(func=handle)


def handle(args) -> int:
    from ..data.builtin import IDX_SETS, download
    from ..errors import DataError

    if args.list:
        return list_cache()
    if args.name == "weights":
        return weights(args)
    if args.name not in IDX_SETS:
        raise DataError(f"'{args.name}' cannot be downloaded" if args.name else "nothing to download", "NAME",
                        f"use one of {', '.join(IDX_SETS)} (digits ships with scikit-learn), or weights NAME, "
                        "or --list")
    dest = download(args.name, None if args.dir is None else Path(args.dir))
    print(f"{args.name} is in {dest}")
    return 0


def weights(args) -> int:
    from ..errors import DataError
    from ..models.pretrained import PUBLISHED, get_file, keras_file

    if not args.backbone:
        raise DataError("which backbone's weights?", "cnnlab download weights",
                        f"give one of {', '.join(PUBLISHED)} (mobilenet_v2:0.5 picks a width)")
    name, _, width = args.backbone.partition(":")
    try:
        alpha = float(width) if width else None
    except ValueError:
        raise DataError(f"width {width!r} is not a number", "NAME[:WIDTH]", "write e.g. mobilenet_v2:0.5") from None
    f = keras_file(name, alpha, args.size, args.include_top)
    path = get_file(f)
    print(f"{f.name} is in {path} ({path.stat().st_size:,} bytes"
          + (f", {f.digest.algorithm} checked" if f.digest else ", Keras publishes no hash for it; HDF5 checked") + ")")
    return 0


def list_cache() -> int:
    from ..models.pretrained import cached_files, weights_home

    files = cached_files()
    print(f"weights cache: {weights_home()}")
    for path, size in files:
        print(f"  {path.name}  {size / 1e6:,.1f} MB")
    print(f"{len(files)} file(s), {sum(s for _, s in files) / 1e6:,.1f} MB" if files else "  (empty)")
    return 0
