"""`cnnlab explain`."""

from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass
from pathlib import Path

from ..options import option
from ..textwidth import ljust
from . import add_command, image_arg


@dataclass
class Options:
    run: str = option(None, "run directory", positional=True, required=True)
    image: str = option(None, "an image file", positional=True, required=True)
    out_dir: str | None = option(None, "where the PNG files go", default_text="RUN/explain/IMAGE_NAME")


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "explain", Options, help="prediction, feature maps and Grad-CAM for one image"
                ).set_defaults(func=handle)


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
