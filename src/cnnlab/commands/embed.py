"""`cnnlab embed`: the pooled features of images, from a run or a pretrained backbone."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    e = sub.add_parser("embed", formatter_class=fmt,
                       help="write the features of images (a run's last hidden layer, or a backbone's pooled "
                       "output) for similarity search and clustering")
    e.add_argument("source", help="a run directory, or a backbone NAME[:WIDTH] (cnnlab backbones)")
    e.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    e.add_argument("--out", "-o", required=True, help="features.npy (an N x D float32 array, inputs in the order "
                   "printed) or features.csv (a row per input)")
    e.add_argument("--weights", default=None, metavar="imagenet|URL|FILE.h5",
                   help="with a backbone: its weights (none: random)")
    e.add_argument("--image-size", type=int, nargs=2, default=[224, 224], metavar=("H", "W"),
                   help="with a backbone: the size images are resized to")
    e.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    e.set_defaults(func=handle)


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
