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
from .inspect import grad_cam, one_image, weight_stats, weights


def _is_run(obj) -> bool:
    from ..runs import Run

    return isinstance(obj, Run)


def curves(history, best_epoch=None, stop_reason=None, twin=False):
    """Loss and accuracy per epoch (train and validation), the best epoch marked. ``history``: a run
    or its history rows; ``twin=True`` draws seed 003's one plot with two y axes.

    >>> viz.curves(run), viz.curves(run, twin=True)
    """
    if _is_run(history):
        run = history
        history, best_epoch, stop_reason = run.history, run.metrics.get("best_epoch"), run.metrics.get("stop_reason")
    if twin:
        return _f.curves_twin(history, best_epoch)
    return _f.curves(history, best_epoch, stop_reason)


def confusion(cm, class_names=None, normalize=False, split="test"):
    """The confusion matrix (rows true, columns predicted) of a run's ``split``, or of a matrix
    ``cm`` with ``class_names``; ``normalize=True`` shows each row's fractions.

    >>> viz.confusion(run), viz.confusion(cm, ["cat", "dog"], normalize=True)
    """
    if _is_run(cm):
        ev = evaluation(cm, split)
        return _f.confusion(ev["confusion_matrix"], cm.class_names, normalize)
    return _f.confusion(cm, class_names, normalize)


def samples(x, y=None, class_names=None, n=25, seed=0):
    """A grid of ``n`` random images (seeded) with their labels: a run's training images, or arrays
    ``x`` (N, H, W[, C]) with labels ``y`` and ``class_names``.

    >>> viz.samples(run), viz.samples(x_train, y_train, names, n=16)
    """
    if _is_run(x):
        split = run_split(x, "train")
        return _f.samples(split.x, split.y, x.class_names, n, seed)
    return _f.samples(x, y, class_names, n, seed)


def misclassified(x, y=None, probs=None, class_names=None, n=8, split="test", order="confident", seed=0):
    """Misclassified images with their probability bars: the most confident mistakes first, or
    ``order="random"`` (seeded). ``x``: a run (its ``split``), or images with labels and probabilities.

    >>> viz.misclassified(run, order="random", seed=3)
    """
    if order not in ("confident", "random"):
        from ..errors import ConfigError

        raise ConfigError(f"unknown order {order!r}", "order", "use confident or random")
    if _is_run(x):
        run, split = x, run_split(x, split)
        return _f.misclassified(split.x, split.y, run.predict_proba(split.x), run.class_names, n, split.ids,
                                order, seed)
    return _f.misclassified(x, y, probs, class_names, n, order=order, seed=seed)


def top_losses(x, y=None, probs=None, class_names=None, n=16, split="test", ids=None):
    """The images with the highest loss (the negative log probability of their actual class), each
    titled prediction / actual / loss / probability of the actual class (fastai's
    ``plot_top_losses``). ``x``: a run (its ``split``), or images with labels and probabilities.

    >>> viz.top_losses(run, n=16)
    """
    if _is_run(x):
        run, part = x, run_split(x, split)
        x, y, probs, class_names, ids = part.x, part.y, run.predict_proba(part.x), run.class_names, part.ids
    y = np.asarray(y)
    probs = np.asarray(probs)
    p_true = probs[np.arange(len(y)), y]
    loss = -np.log(np.clip(p_true, 1e-12, 1.0))
    order = np.argsort(-loss, kind="stable")[:n]
    pred = probs.argmax(1)
    titles = [(f"{ids[i]}\n" if ids is not None else "") + f"{class_names[pred[i]]} / {class_names[y[i]]}\n"
              f"{loss[i]:.2f} / {p_true[i]:.2f}" for i in order]
    fig = _f.titled_grid([np.asarray(x[i]) for i in order], titles, empty="no images")
    fig.suptitle("prediction / actual / loss / probability of the actual class", fontsize=9)
    return fig


def calibration(run, split="test"):
    """Reliability diagrams of the run's probabilities on ``split``: raw (T = 1) and with its
    calibration temperature, each with its expected calibration error (15 bins).

    >>> viz.calibration(run)
    """
    part = run_split(run, split)
    return reliability_of(run, run.predict_proba(part.x), np.asarray(part.y), f"raw ({split})")


def reliability_of(run, probs, y, raw_title: str = "raw"):
    """Reliability diagrams of a run's (calibrated) ``probs`` for labels ``y``: raw, and with the
    run's temperature when it has one."""
    from ..engine.calibration import ece, raw_of, reliability

    t = float(getattr(run.model, "temperature", 1.0))
    raw = raw_of(probs, t)
    panels = [(raw_title, reliability(raw, y), ece(raw, y))]
    if t != 1.0:
        panels.append((f"temperature {t:.2f}", reliability(probs, y), ece(probs, y)))
    return _f.reliability(panels)


def random_prediction(run, seed=0, split="test"):
    """One random image of the run's ``split`` (seeded) with its probability bars and true class:
    the notebooks' ``i = random.randint(...)`` check.

    >>> viz.random_prediction(run, seed=7)
    """
    part = run_split(run, split)
    i = int(np.random.default_rng(seed).integers(len(part)))
    p = run.predict_proba(part.x[i:i + 1])[0]
    true = None if part.y is None else int(part.y[i])
    name = part.ids[i] if part.ids is not None else f"{split} image #{i}"
    title = f"{name}" + (f"\ntrue {run.class_names[true]}" if true is not None else "")
    return _f.probabilities(p, run.class_names, part.x[i], true, title)


def augmentation(run, image=None, n=15, seed=0, split="train"):
    """One image (the first of ``split`` unless given) under the run's training augmentation, ``n``
    augmented copies in a grid (Keras users call ``datagen.flow`` for this preview).

    >>> viz.augmentation(run, n=8)
    """
    import torch

    from ..config import TrainConfig
    from ..data.augment import augment
    from ..errors import ConfigError

    opts = TrainConfig.from_stored(run.config).augment_options()
    if not opts.active:
        raise ConfigError("the run trained without augmentation, so there is nothing to preview", str(run.path),
                          "train with e.g. --rotation-range 10 --zoom-range 0.1 --horizontal-flip")
    img = run_split(run, split).x[0] if image is None else one_image(run, image)
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float().repeat(n, 1, 1, 1)
    g = torch.Generator().manual_seed(int(seed))
    out = augment(x, opts, g).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    settings = ", ".join(f"{k} {v}" for k, v in opts.to_dict().items() if v not in (0, 0.0, False, None, "nearest"))
    return _f.augmentation(np.concatenate([img[None], out]), settings)


def _needs_conv(run, what: str) -> None:
    from ..errors import SpecError
    from .inspect import conv_indices

    if not conv_indices(run.model):
        raise SpecError(f"the model has no Conv2D layer, so it has no {what}", str(run.path),
                        "kernels, feature maps and Grad-CAM are for convolutional models; try curves, "
                        "confusion or misclassified")


def initial_kernels(run):
    """The run's first-layer kernels at initialisation (recorded when training began), or None
    for a run trained before they were recorded."""
    from ..runs import RunDir

    init = RunDir(run.path).read_optional(RunDir.WEIGHTS_INIT) or {}
    for stats in init.values():
        if isinstance(stats, dict) and "kernel" in stats:
            try:
                return np.asarray(stats["kernel"], np.float32)
            except (TypeError, ValueError):
                return None
    return None


def kernels(weight, max_kernels=64, untrained=False, scale=None):
    """First-layer kernels as small images on one symmetric colour scale (printed on its colour bar).

    ``weight``: a run, a model (cnnlab's or any torch module with a Conv2d) or an array
    (filters, channels, kh, kw). For a run, ``untrained=True`` draws the kernels at initialisation;
    trained and untrained share one scale, the largest absolute weight of both (seed 002's
    comparison), unless ``scale`` gives the half-range (e.g. 0.5).

    >>> viz.kernels(run), viz.kernels(run, untrained=True)   # comparable side by side
    """
    from ..errors import ArgumentTypeError, RunError, SpecError

    if _is_run(weight):
        run = weight
        _needs_conv(run, "kernels to draw")
        trained = next(w for w in weights(run.model).values() if w.ndim == 4)[:max_kernels]
        init = initial_kernels(run)
        if init is not None and init.shape[1:] != trained.shape[1:]:
            init = None
        if untrained and init is None:
            raise RunError("the run has no record of its initial kernels (trained before cnnlab recorded them)",
                           str(run.path), "train it again to compare trained and untrained kernels")
        init = None if init is None else init[:max_kernels]
        lim = scale or max(float(np.abs(trained).max()), float(np.abs(init).max()) if init is not None else 0.0)
        return _f.kernels(init if untrained else trained, max_kernels, lim,
                          "untrained (initial)" if untrained else "trained")
    if hasattr(weight, "modules") and callable(weight.modules):  # a torch module
        from torch import nn

        conv = next((m for m in weight.modules() if isinstance(m, nn.Conv2d)), None)
        if conv is None:
            raise SpecError("the model has no Conv2D layer, so it has no kernels to draw", type(weight).__name__,
                            "pass a convolutional model, a run or a weight array (filters, channels, kh, kw)")
        weight = conv.weight.detach().cpu().numpy()
    if hasattr(weight, "detach"):
        weight = weight.detach().cpu().numpy()
    if not isinstance(weight, (np.ndarray, list, tuple)):
        from ..data.dataset import describe_value

        raise ArgumentTypeError(f"expected a run, a model or kernels, got {describe_value(weight)}", "weight",
                                "pass cnnlab.load_run(...), a model or an array (filters, channels, kh, kw)")
    w = np.asarray(weight, np.float32)
    if w.ndim != 4 or not w.size:
        raise SpecError(f"kernels must be an array (filters, channels, kh, kw), got shape {w.shape}", "weight",
                        "pass a Conv2D weight, e.g. model.blocks[0][0].weight")
    return _f.kernels(w, max_kernels, scale)


def feature_maps(maps, image=None, max_channels=64, split="test"):
    """Every Conv2D layer's output for one image (the first of the run's ``split`` unless given;
    (H, W), (H, W, C) or a batch of one), at most ``max_channels`` channels a layer.

    >>> viz.feature_maps(run, x_test[0])
    """
    if _is_run(maps):
        _needs_conv(maps, "feature maps")
        image = run_split(maps, split).x[0] if image is None else one_image(maps, image)
        return _f.feature_maps(layer_feature_maps(maps, image), image, max_channels)
    return _f.feature_maps(maps, image, max_channels)


def histograms(trained, initial=None):
    """Each layer's weight histogram, trained (filled) against the weights at initialisation (a
    line; a run recorded them when training began). ``trained``: a run, or {layer: weights}.

    >>> viz.histograms(run)
    """
    if _is_run(trained):
        from ..runs import RunDir

        run = trained
        return _f.histograms(weights(run.model), RunDir(run.path).read_optional(RunDir.WEIGHTS_INIT))
    return _f.histograms(trained, initial)


def diagram(spec):
    """The model's layers as a stack of boxes with their output shapes (no graphviz needed).

    >>> viz.diagram(run), viz.diagram(cnnlab.build_model("fashion-cnn").spec)
    """
    return _f.diagram(spec.spec if _is_run(spec) else spec)


def probabilities(probs, class_names=None, image=None, true=None, title=None):
    """One image with its per-class probability bars. ``probs``: a run (then ``image`` is
    predicted: (H, W), (H, W, C) or a batch of one), or the probabilities with ``class_names``;
    ``true`` marks the true class.

    >>> viz.probabilities(run, image=x_test[0], true=int(y_test[0]))
    """
    if _is_run(probs):
        run = probs
        image = one_image(run, image)
        p = run.predict_proba(image[None])[0]
        return _f.probabilities(p, run.class_names, image, true, title)
    return _f.probabilities(probs, class_names, image, true, title)


def gradcam(run, images, titles=None):
    """Grad-CAM heat-maps of the last Conv2D layer over ``images`` (a batch, or one image), for the
    predicted classes.

    >>> viz.gradcam(run, x_test[:8])
    """
    _needs_conv(run, "Grad-CAM (it looks at the last Conv2D layer)")
    from ..data.dataset import model_batch
    from ..data.sources import conform

    images = conform(model_batch(images, run.image_shape), run.image_size, run.color_mode)
    cams, classes = grad_cam(run, images)
    titles = titles or [run.class_names[int(c)] for c in classes]
    return _f.gradcam_overlay(list(images), list(cams), titles)


def class_counts(counts, class_names=None):
    """Images per class in each split, as bars: a run's, or {split: counts} with ``class_names``.

    >>> viz.class_counts(run)
    """
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
    from ..api import run_dataset

    ds = run.dataset_or(run_dataset)
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


__all__ = ["augmentation", "class_counts", "confusion", "curves", "diagram", "feature_maps", "gradcam", "histograms",
           "kernels", "misclassified", "probabilities", "random_prediction", "samples", "setup_fonts", "top_losses",
           "calibration",
           "weight_stats"]
