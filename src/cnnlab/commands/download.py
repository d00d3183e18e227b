"""`cnnlab download`: a dataset, or a backbone's ImageNet weights, into the cache."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ..options import Interval, option
from . import add_command


@dataclass
class Options:
    name: str | None = option(None, "fashion-mnist, mnist, or weights", positional=True, default_text="none")
    backbone: str | None = option(None, "with weights: vgg16, resnet50, efficientnet_b0, convnext_tiny or "
                                  "mobilenet_v2[:ALPHA]", positional=True, metavar="NAME[:WIDTH]")
    include_top: bool = option(False, "with weights: the file with the 1000-class head",
                               default_text="the file without it, as --backbone uses")
    size: int | None = option(None, "with weights: the image size (mobilenet_v2 has one file per size: 96, 128, "
                              "160, 192, 224)", Interval(1), metavar="N", default_text="224")
    dir: str | None = option(None, "with a dataset: the target folder", default_text="the user cache")
    list: bool = option(False, "list the weights cache with sizes")


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "download",
                Options, help="download fashion-mnist or mnist, or a backbone's ImageNet weights, into the cache",
                description="cnnlab download fashion-mnist | mnist; cnnlab download weights NAME[:WIDTH] "
                "[--include-top] [--size N]: the file Keras Applications downloads for that backbone, checked "
                "against its published hash (copy the cache to an offline machine to use it there); cnnlab download "
                "--list: what the weights cache holds.").set_defaults(func=handle)


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
