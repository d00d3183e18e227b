"""`cnnlab plot`."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ..options import Choice, Interval, option
from . import add_command, image_arg

PLOTS = ("curves", "confusion", "samples", "kernels", "feature-maps", "histograms", "misclassified",
         "diagram", "gradcam", "class-counts", "random", "augmentation", "top-losses", "calibration")


def _splits() -> tuple:
    from ..data.dataset import SPLITS

    return tuple(SPLITS)


@dataclass
class Options:
    run: str = option(None, "run directory", positional=True, required=True)
    kind: str = option(None, "which figure", Choice(PLOTS), positional=True, required=True,
                       metavar="{" + ",".join(PLOTS) + "}")
    format: str = option("png", "file format", Choice(("png", "svg")))
    out: str | None = option(None, "output file", default_text="RUN/KIND.FORMAT")
    image: str | None = option(None, "image for feature-maps / gradcam", default_text="test images")
    dpi: int = option(100, "resolution of PNG files", Interval(1))
    split: str | None = option(None, "the split for confusion, misclassified, top-losses, calibration, feature-maps "
                               "and gradcam",
                               Choice(_splits), default_text="test, or validation when the run has no test split")
    twin: bool = option(False, "curves: loss and accuracy on one plot with two y axes (seed 003's figure)")
    untrained: bool = option(False, "kernels: the kernels at initialisation, on the same colour scale as the "
                             "trained ones")
    seed: int = option(0, "random, augmentation and misclassified --order random: which images are drawn")
    n: int = option(16, "top-losses: how many images", Interval(1), metavar="N")
    order: str = option("confident", "misclassified: the most confident mistakes first, or a random sample of them",
                        Choice(("confident", "random")))


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "plot", Options, help="write one figure of a run as PNG or SVG").set_defaults(func=handle)


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
    elif kind == "top-losses":
        fig = viz.top_losses(run, n=args.n, split=split)
    elif kind == "calibration":
        fig = viz.calibration(run, split=split)
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
