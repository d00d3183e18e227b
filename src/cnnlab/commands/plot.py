"""`cnnlab plot`."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import image_arg

PLOTS = ("curves", "confusion", "samples", "kernels", "feature-maps", "histograms", "misclassified",
         "diagram", "gradcam", "class-counts", "random", "augmentation")


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..data.dataset import SPLITS

    fmt = argparse.ArgumentDefaultsHelpFormatter
    pl = sub.add_parser("plot", help="write one figure of a run as PNG or SVG", formatter_class=fmt)
    pl.add_argument("run", help="run directory")
    pl.add_argument("kind", choices=PLOTS, help="which figure")
    pl.add_argument("--format", default="png", choices=["png", "svg"], help="file format")
    pl.add_argument("--out", default=None, help="output file (default: RUN/KIND.FORMAT)")
    pl.add_argument("--image", default=None, help="image for feature-maps / gradcam (default: test images)")
    pl.add_argument("--dpi", type=int, default=100, help="resolution of PNG files")
    pl.add_argument("--split", default=None, choices=SPLITS,
                    help="the split for confusion, misclassified, feature-maps and gradcam (default: test, or "
                    "validation when the run has no test split)")
    pl.add_argument("--twin", action="store_true",
                    help="curves: loss and accuracy on one plot with two y axes (seed 003's figure)")
    pl.add_argument("--untrained", action="store_true",
                    help="kernels: the kernels at initialisation, on the same colour scale as the trained ones")
    pl.add_argument("--seed", type=int, default=0,
                    help="random, augmentation and misclassified --order random: which images are drawn")
    pl.add_argument("--order", default="confident", choices=["confident", "random"],
                    help="misclassified: the most confident mistakes first, or a random sample of them")
    pl.set_defaults(func=handle)


def handle(args) -> int:
    from .. import viz
    from ..atomic import write_with
    from ..runs import load_run

    run = load_run(args.run)
    image = image_arg(run, args.image)
    kind = args.kind
    split = args.split or viz.default_split(run)
    if kind == "feature-maps":
        fig = viz.feature_maps(run, image, split=split)
    elif kind == "gradcam":
        import numpy as np

        imgs = image[None] if image is not None else viz.run_split(run, split).x[:8]
        fig = viz.gradcam(run, np.asarray(imgs))
    elif kind == "confusion":
        fig = viz.confusion(run, split=split)
    elif kind == "misclassified":
        fig = viz.misclassified(run, split=split, order=args.order, seed=args.seed)
    elif kind == "curves":
        fig = viz.curves(run, twin=args.twin)
    elif kind == "kernels":
        fig = viz.kernels(run, untrained=args.untrained)
    elif kind == "random":
        fig = viz.random_prediction(run, seed=args.seed, split=split)
    elif kind == "augmentation":
        fig = viz.augmentation(run, image, seed=args.seed)
    else:
        fig = getattr(viz, kind.replace("-", "_"))(run)
    stem = kind + ("-twin" if kind == "curves" and args.twin else "-untrained" if kind == "kernels" and
                   args.untrained else "")
    out = Path(args.out or run.path / f"{stem}.{args.format}")
    write_with(out, lambda tmp: fig.savefig(tmp, format=args.format, dpi=args.dpi))
    print(f"wrote {out}")
    return 0
