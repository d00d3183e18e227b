"""Figures for notebooks and reports. Each function takes arrays or a loaded run and returns a
matplotlib Figure:

>>> run = cnnlab.load_run("runs/...")
>>> cnnlab.viz.curves(run)                       # or curves(history_list, best_epoch=3)
>>> cnnlab.viz.confusion(run)                    # or confusion(cm, class_names)
>>> cnnlab.viz.feature_maps(run, image)          # or feature_maps([(name, (C, H, W)), ...])
"""

from __future__ import annotations

import numpy as np

from . import figures as _f
from .fonts import setup_fonts
from .inspect import feature_maps as layer_feature_maps
from .inspect import grad_cam, weight_stats, weights


def _is_run(obj) -> bool:
    from ..runs import Run

    return isinstance(obj, Run)


def curves(history, best_epoch=None, stop_reason=None):
    if _is_run(history):
        run = history
        return _f.curves(run.history, run.metrics.get("best_epoch"), run.metrics.get("stop_reason"))
    return _f.curves(history, best_epoch, stop_reason)


def confusion(cm, class_names=None, normalize=False, split="test"):
    if _is_run(cm):
        ev = evaluation(cm, split)
        return _f.confusion(ev["confusion_matrix"], cm.class_names, normalize)
    return _f.confusion(cm, class_names, normalize)


def samples(x, y=None, class_names=None, n=25, seed=0):
    if _is_run(x):
        split = run_split(x, "train")
        return _f.samples(split.x, split.y, x.class_names, n, seed)
    return _f.samples(x, y, class_names, n, seed)


def misclassified(x, y=None, probs=None, class_names=None, n=8, split="test"):
    if _is_run(x):
        run, split = x, run_split(x, split)
        return _f.misclassified(split.x, split.y, run.predict_proba(split.x), run.class_names, n, split.ids)
    return _f.misclassified(x, y, probs, class_names, n)


def _needs_conv(run, what: str) -> None:
    from ..errors import SpecError
    from .inspect import conv_indices

    if not conv_indices(run.model):
        raise SpecError(f"the model has no Conv2D layer, so it has no {what}", str(run.path),
                        "kernels, feature maps and Grad-CAM are for convolutional models; try curves, "
                        "confusion or misclassified")


def kernels(weight, max_kernels=64):
    if _is_run(weight):
        _needs_conv(weight, "kernels to draw")
        first = next(w for w in weights(weight.model).values() if w.ndim == 4)
        return _f.kernels(first, max_kernels)
    return _f.kernels(weight, max_kernels)


def feature_maps(maps, image=None, max_channels=64, split="test"):
    if _is_run(maps):
        _needs_conv(maps, "feature maps")
        if image is None:
            image = run_split(maps, split).x[0]
        return _f.feature_maps(layer_feature_maps(maps, image), image, max_channels)
    return _f.feature_maps(maps, image, max_channels)


def histograms(trained, initial=None):
    if _is_run(trained):
        from ..runs import RunDir

        run = trained
        return _f.histograms(weights(run.model), RunDir(run.path).read_optional(RunDir.WEIGHTS_INIT))
    return _f.histograms(trained, initial)


def diagram(spec):
    return _f.diagram(spec.spec if _is_run(spec) else spec)


def probabilities(probs, class_names=None, image=None, true=None, title=None):
    if _is_run(probs):
        run = probs
        p = run.predict_proba(np.asarray(image)[None])[0]
        return _f.probabilities(p, run.class_names, image, true, title)
    return _f.probabilities(probs, class_names, image, true, title)


def gradcam(run, images, titles=None):
    _needs_conv(run, "Grad-CAM (it looks at the last Conv2D layer)")
    images = np.asarray(images)
    cams, classes = grad_cam(run, images)
    titles = titles or [run.class_names[int(c)] for c in classes]
    return _f.gradcam_overlay(list(images), list(cams), titles)


def class_counts(counts, class_names=None):
    if _is_run(counts):
        return _f.class_counts(counts.data.get("class_counts", {}), counts.class_names)
    return _f.class_counts(counts, class_names)


# ------------------------------------------------------------------ run data

def default_split(run) -> str:
    """The split a run's figures and report show: test, or validation for a run trained without a
    test split (--test-split 0)."""
    splits = run.data.get("splits") or {}
    return "test" if "test" in splits or not splits else "validation" if "validation" in splits else "train"


def run_split(run, split: str = "test"):
    """One split of the run's data, reloaded from its source and split as in training
    (loaded once per run object)."""
    if run.dataset is None:
        from ..api import run_dataset

        run.dataset = run_dataset(run)
    ds = run.dataset
    if split not in ds.splits:
        from ..errors import DataError

        raise DataError(f"the run's data has no {split} split", str(run.path),
                        f"use --split {' or '.join(ds.splits)}")
    return ds[split]


def test_split(run):
    return run_split(run, "test")


def evaluation(run, split: str = "test") -> dict:
    """The run's saved evaluation of its own ``split``, or a fresh one (then saved)."""
    from ..api import evaluate
    from ..runs import RunDir

    ev = RunDir(run.path).read_optional(RunDir.evaluation_name(None, split))
    if ev is not None and "confusion_matrix" in ev:
        return ev
    return evaluate(run, split=split)  # none saved, or damaged: evaluate again


__all__ = ["class_counts", "confusion", "curves", "diagram", "feature_maps", "gradcam", "histograms",
           "kernels", "misclassified", "probabilities", "samples", "setup_fonts", "weight_stats"]
