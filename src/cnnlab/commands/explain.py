"""`cnnlab explain`."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from ..textwidth import ljust
from . import image_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    ex = sub.add_parser("explain", help="prediction, feature maps and Grad-CAM for one image", formatter_class=fmt)
    ex.add_argument("run", help="run directory")
    ex.add_argument("image", help="an image file")
    ex.add_argument("--out-dir", default=None, help="where the PNG files go (default: RUN/explain/IMAGE_NAME)")
    ex.set_defaults(func=handle)


def handle(args) -> int:
    from .. import viz
    from ..atomic import write_with
    from ..runs import load_run
    from ..viz.inspect import grad_cam

    run = load_run(args.run)
    image = image_arg(run, args.image)
    probs = run.predict_proba(image[None])[0]
    out_dir = Path(args.out_dir or run.path / "explain" / Path(args.image).stem)
    order = probs.argsort()[::-1]
    figs = {"probabilities": viz.probabilities(probs, run.class_names, image, title=Path(args.image).name)}
    print(f"{args.image}: {run.class_names[order[0]]} ({probs[order[0]]:.4f})")
    for i in order[:5]:
        print(f"  {ljust(run.class_names[i], 16)} {probs[i]:.4f}")
    if viz.inspect.conv_indices(run.model):
        figs["feature_maps"] = viz.feature_maps(run, image)
        cam, classes = grad_cam(run, image[None])  # computed once: for the figure and the summary
        figs["gradcam"] = viz.figures.gradcam_overlay([image], [cam[0]], [run.class_names[int(classes[0])]])
        h, w = cam.shape[1:]
        ys, xs = divmod(int(cam[0].argmax()), w)
        where = ("top" if ys < h / 3 else "bottom" if ys > 2 * h / 3 else "middle") + "-" + \
                ("left" if xs < w / 3 else "right" if xs > 2 * w / 3 else "centre")
        print(f"  Grad-CAM: the evidence for {run.class_names[order[0]]} is strongest at the {where} "
              f"(pixel row {ys}, column {xs})")
    for name, fig in figs.items():
        write_with(out_dir / f"{name}.png", functools.partial(_png, fig))
    print(f"figures written to {out_dir}")
    return 0


def _png(fig, tmp: str) -> None:
    fig.savefig(tmp, format="png", dpi=100)
