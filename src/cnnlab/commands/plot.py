"""`cnnlab plot`."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import image_arg

PLOTS = ("curves", "confusion", "samples", "kernels", "feature-maps", "histograms", "misclassified",
         "diagram", "gradcam", "class-counts")


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
    elif kind in ("confusion", "misclassified"):
        fig = getattr(viz, kind)(run, split=split)
    else:
        fig = getattr(viz, kind.replace("-", "_"))(run)
    out = Path(args.out or run.path / f"{kind}.{args.format}")
    write_with(out, lambda tmp: fig.savefig(tmp, format=args.format, dpi=args.dpi))
    print(f"wrote {out}")
    return 0
