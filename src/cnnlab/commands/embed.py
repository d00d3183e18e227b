"""`cnnlab embed`: the pooled features of images, from a run or a pretrained backbone."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ..options import Interval, option
from . import add_command


@dataclass
class Options:
    source: str = option(None, "a run directory, or a backbone NAME[:WIDTH] (cnnlab backbones)", positional=True,
                         required=True)
    inputs: list = option(None, "image files, folders or glob patterns", positional=True, required=True, nargs="+",
                          item=str)
    out: str = option(None, "features.npy (an N x D float32 array, inputs in the order printed) or features.csv "
                      "(a row per input)", short="-o", required=True, metavar="OUT")
    weights: str | None = option(None, "with a backbone: its weights", metavar="imagenet|URL|FILE.h5",
                                 default_text="none: random")
    image_size: tuple | list = option((224, 224), "with a backbone: the size images are resized to",
                                      nargs=2, item=int, metavar=("H", "W"))
    batch_size: int = option(64, "images per forward pass", Interval(1))


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "embed", Options, help="write the features of images (a run's last hidden layer, or a "
                "backbone's pooled output) for similarity search and clustering").set_defaults(func=handle)


def handle(args) -> int:
    from ..data.images import load_images, printable
    from ..errors import ConfigError
    from ..prediction import backbone_embedder, collect_inputs, embed_array, feature_layer, write_features

    if args.batch_size < 1 or min(args.image_size) < 1:
        raise ConfigError("--batch-size and --image-size take whole numbers >= 1", "cnnlab embed",
                          "e.g. --batch-size 64 --image-size 224 224")
    if not args.out.lower().endswith((".npy", ".csv")):
        raise ConfigError(f"--out {args.out!r} is neither .npy nor .csv", "--out", "write features.npy or features.csv")
    if Path(args.source).is_dir():
        from ..runs import load_run

        if args.weights is not None:
            raise ConfigError("--weights is for a backbone; a run has its own", "--weights", "leave it out")
        run = load_run(args.source)
        model, spec, prep, size, mode = run.model, run.spec, run.preprocessing, run.image_size, run.color_mode
    else:
        model, spec, prep = backbone_embedder(args.source, args.weights, tuple(args.image_size))
        size, mode = tuple(args.image_size), "rgb"
    paths = collect_inputs(args.inputs)
    x, _, _ = load_images(paths, size, mode)
    features = embed_array(model, spec, prep, x, args.batch_size)
    write_features(args.out, [printable(p) for p in paths], features)
    print(f"wrote {features.shape[0]:,} x {features.shape[1]:,} features ({spec.layers[feature_layer(spec)].name}) "
          f"to {args.out}")
    return 0
