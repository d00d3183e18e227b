"""Figures as pure functions: arrays in, a matplotlib Figure out (no pyplot, no global state).

Save one with ``fig.savefig("x.png")``; in a notebook the Figure shows itself.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .fonts import setup_fonts

TRAIN_COLOR, VAL_COLOR, BAD_COLOR, GOOD_COLOR = "#1f77b4", "#ff7f0e", "#d62728", "#2ca02c"


def new_figure(width: float, height: float, layout: Literal["constrained", "tight"] | None = "constrained") -> Figure:
    setup_fonts()
    return Figure(figsize=(width, height), dpi=100, layout=layout)


def _show_image(ax, img: np.ndarray) -> None:
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _grid(n: int, cols: int | None = None) -> tuple[int, int]:
    cols = cols or int(np.ceil(np.sqrt(n)))
    return int(np.ceil(n / cols)), cols


def curves(history: list[dict], best_epoch: int | None = None, stop_reason: str | None = None) -> Figure:
    """Loss and accuracy per epoch for train and validation, the best epoch marked."""
    fig = new_figure(10, 4)
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    lrs = [h.get("lr") for h in history]
    switch = None
    if len(set(lrs)) == 2 and None not in lrs:  # one step in the learning rate: a second phase
        i = next(k for k in range(1, len(lrs)) if lrs[k] != lrs[k - 1])
        if all(v == lrs[i] for v in lrs[i:]):
            switch = (epochs[i], lrs[i])
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
        ax.plot(epochs, [h.get(key) for h in history], "o-", color=TRAIN_COLOR, label=f"train {label}")
        if any(f"val_{key}" in h for h in history):
            ax.plot(epochs, [h.get(f"val_{key}") for h in history], "o-", color=VAL_COLOR, label=f"validation {label}")
        if best_epoch:
            ax.axvline(best_epoch, color="gray", linestyle="--", label=f"best epoch {best_epoch}")
        if switch:  # two phases (fine-tuning): where the learning rate stepped down
            ax.axvline(switch[0] - 0.5, color="tab:green", linestyle=":",
                       label=f"lr {switch[1]:g} from epoch {switch[0]}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs, never 1.5
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if stop_reason:
        fig.suptitle(stop_reason, fontsize=9)
    return fig


def curves_twin(history: list[dict], best_epoch: int | None = None) -> Figure:
    """Seed 003's figure: loss (left axis) and accuracy (right axis) on one plot, train solid and
    validation dashed."""
    fig = new_figure(7, 4)
    ax_loss = fig.subplots()
    ax_acc = ax_loss.twinx()
    epochs = [h["epoch"] for h in history]
    lines = []
    for ax, key, color in ((ax_loss, "loss", TRAIN_COLOR), (ax_acc, "accuracy", VAL_COLOR)):
        lines += ax.plot(epochs, [h.get(key, np.nan) for h in history], "o-", color=color, label=f"train {key}")
        if any(f"val_{key}" in h for h in history):
            lines += ax.plot(epochs, [h.get(f"val_{key}", np.nan) for h in history], "s--", color=color,
                             label=f"validation {key}")
        ax.set_ylabel(key, color=color)
        ax.tick_params(axis="y", colors=color)
    if best_epoch:
        lines.append(ax_loss.axvline(best_epoch, color="gray", linestyle=":", label=f"best epoch {best_epoch}"))
    ax_loss.set_xlabel("epoch")
    ax_loss.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.grid(alpha=0.3)
    ax_loss.legend(lines, [str(ln.get_label()) for ln in lines], loc="center right", fontsize=8)
    return fig


def augmentation(images: np.ndarray, title: str = "") -> Figure:
    """One image (first) and its augmented copies in a grid, as ``datagen.flow`` previews show them."""
    rows, cols = _grid(len(images), 4 if len(images) > 9 else None)
    fig = new_figure(1.7 * cols, 1.8 * rows + 0.3)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for i, (ax, img) in enumerate(zip(axes, images)):
        ax.axis("on")
        _show_image(ax, img)
        ax.set_title("original" if i == 0 else f"augmented {i}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=8)
    return fig


def confusion(cm, class_names: list[str], normalize: bool = False) -> Figure:
    """Confusion matrix: rows true, columns predicted; counts in the cells."""
    cm = np.asarray(cm, dtype=float)
    shown = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
    k = len(class_names)
    size = max(5, 0.6 * k + 2)
    fig = new_figure(size, size * 0.85)
    ax = fig.subplots()
    im = ax.imshow(shown, cmap="Blues")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = shown.max() if shown.size else 1
    for i in range(k):
        for j in range(k):
            text = f"{shown[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if shown[i, j] > top / 2 else "black")
    return fig


def samples(x: np.ndarray, y: np.ndarray | None, class_names: list[str], n: int = 25,
            seed: int = 0, cols: int | None = None) -> Figure:
    """A grid of random images with their labels."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(x), size=min(n, len(x)), replace=False)
    rows, cols = _grid(len(idx), cols)
    fig = new_figure(1.6 * cols, 1.75 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, i in zip(axes, idx):
        ax.axis("on")
        _show_image(ax, x[i])
        if y is not None:
            ax.set_title(f"{int(y[i])}: {class_names[int(y[i])]}", fontsize=9)
    return fig


def reliability(panels: list[tuple[str, dict, float]]) -> Figure:
    """Reliability diagrams side by side: per bin of top probability, the accuracy (bars) against
    the mean confidence (the diagonal is perfect calibration); ``panels``: (title, reliability
    record of engine/calibration.py, ECE)."""
    fig = new_figure(4.2 * len(panels), 4)
    axes = np.atleast_1d(fig.subplots(1, len(panels))).ravel()
    for ax, (title, rel, err) in zip(axes, panels):
        edges = np.asarray(rel["edges"])
        acc = np.nan_to_num(np.asarray(rel["accuracy"], dtype=float))
        conf = np.asarray(rel["confidence"], dtype=float)
        width = edges[1:] - edges[:-1]
        ax.bar(edges[:-1], acc, width=width, align="edge", color=TRAIN_COLOR, edgecolor="white", label="accuracy")
        shown = ~np.isnan(conf)
        ax.bar(edges[:-1][shown], (conf - acc)[shown], bottom=acc[shown], width=width[shown], align="edge",
               facecolor="none", edgecolor="#d62728", hatch="//", linewidth=0.8, label="gap to mean confidence")
        ax.plot([0, 1], [0, 1], "--", color="gray", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top probability)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{title}: ECE {err:.4f}", fontsize=10)
        ax.legend(loc="upper left", fontsize=8)
    return fig


def ood_histogram(hist: dict, result: dict, in_name: str, out_name: str) -> Figure:
    """Per score, the histograms of the in-distribution and the other images, and the threshold
    that keeps 95% of the in-distribution ones."""
    fig = new_figure(5 * len(hist), 3.6)
    axes = np.atleast_1d(fig.subplots(1, len(hist))).ravel()
    for ax, (name, h) in zip(axes, hist.items()):
        both = np.r_[h["in"], h["out"]]
        bins = np.linspace(both.min(), both.max(), 50) if len(both) else 10
        ax.hist(h["in"], bins=bins, alpha=0.6, color=VAL_COLOR, label=in_name, density=True)
        ax.hist(h["out"], bins=bins, alpha=0.6, color=TRAIN_COLOR, label=out_name, density=True)
        r = result[name]
        ax.axvline(r["threshold"], color="black", linestyle="--", linewidth=1, label="keeps 95% of " + in_name)
        ax.set_title(f"{name}: AUROC {r['auroc']:.3f}, FPR@95 {r['fpr_at_95_tpr']:.3f}", fontsize=10)
        ax.set_xlabel(name)
        ax.legend(fontsize=7)
    return fig


def titled_grid(images, titles: list[str], cols: int | None = None, empty: str = "no images") -> Figure:
    """Images in a grid, each with its own (multi-line) title: label-issue suspects (given ->
    suggested, score), top losses (prediction / actual / loss / probability)."""
    if len(titles) == 0:
        fig = new_figure(4, 1.5)
        ax = fig.subplots()
        ax.axis("off")
        ax.text(0.5, 0.5, empty, ha="center", va="center")
        return fig
    rows, cols = _grid(len(titles), cols)
    lines = max(t.count("\n") + 1 for t in titles)
    fig = new_figure(1.7 * cols, (1.45 + 0.16 * lines) * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, img, title in zip(axes, images, titles):
        ax.axis("on")
        _show_image(ax, img)
        ax.set_title(title, fontsize=7.5)
    return fig


def class_counts(counts: dict[str, list[int]], class_names: list[str]) -> Figure:
    """Bars of images per class for each split."""
    fig = new_figure(max(6, 0.7 * len(class_names) + 2), 3.5)
    ax = fig.subplots()
    width = 0.8 / max(len(counts), 1)
    pos = np.arange(len(class_names))
    for i, (split, c) in enumerate(counts.items()):
        ax.bar(pos + i * width - 0.4 + width / 2, c, width, label=split)
    ax.set_xticks(pos, class_names, rotation=45, ha="right")
    ax.set_ylabel("images")
    # above the axes, in one row: inside them it covered the tallest bars
    ax.legend(ncol=max(len(counts), 1), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    return fig


def probabilities(probs: np.ndarray, class_names: list[str], image: np.ndarray | None = None,
                  true: int | None = None, title: str | None = None) -> Figure:
    """One image and its per-class probability bars (predicted class highlighted)."""
    fig = new_figure(8 if image is not None else 5.5, 3)
    axes: Any = fig.subplots(1, 2, width_ratios=[1, 2]) if image is not None else [None, fig.subplots()]
    if image is not None:
        _show_image(axes[0], image)
        if title:
            axes[0].set_title(title, fontsize=9)
    _prob_bars(axes[1], probs, class_names, true)
    return fig


def _prob_bars(ax, probs, class_names, true=None, fontsize=9):
    pred = int(np.argmax(probs))
    colors = ["#999999"] * len(probs)
    if true is not None:
        colors[int(true)] = GOOD_COLOR
    colors[pred] = GOOD_COLOR if true is None or pred == true else BAD_COLOR
    pos = np.arange(len(probs))
    ax.barh(pos, probs, color=colors)
    ax.set_yticks(pos, class_names, fontsize=fontsize)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.tick_params(axis="x", labelsize=fontsize - 1)


def misclassified(x: np.ndarray, y: np.ndarray, probs: np.ndarray, class_names: list[str],
                  n: int = 8, ids: list | None = None, order: str = "confident", seed: int = 0) -> Figure:
    """Mistakes with their probability bars: the most confident first (``order="confident"``), or
    a seeded random sample of them (``order="random"``, as the notebooks draw them)."""
    pred = probs.argmax(1)
    wrong = np.nonzero(pred != y)[0]
    if order == "random":
        wrong = np.sort(np.random.default_rng(seed).permutation(wrong)[:n])
    else:
        wrong = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:n]
    rows = max(len(wrong), 1)
    fig = new_figure(8, 1.9 * rows)
    if len(wrong) == 0:
        ax = fig.subplots()
        ax.axis("off")
        ax.text(0.5, 0.5, "no misclassified images", ha="center", va="center")
        return fig
    axes = np.atleast_2d(fig.subplots(rows, 2, width_ratios=[1, 3]))
    for (ax_img, ax_bar), i in zip(axes, wrong):
        _show_image(ax_img, x[i])
        name = ids[i] if ids is not None else f"#{i}"
        ax_img.set_title(f"{name}\ntrue {class_names[y[i]]}\npredicted {class_names[pred[i]]} "
                         f"({probs[i, pred[i]]:.2f})", fontsize=8)
        _prob_bars(ax_bar, probs[i], class_names, int(y[i]), fontsize=7)
    return fig


def kernels(weight: np.ndarray, max_kernels: int = 64, scale: float | None = None, label: str = "") -> Figure:
    """First-layer kernels (F, C, kh, kw) as small images (channel mean when C > 1) on one
    symmetric colour scale, ``±scale`` (default: the largest absolute weight), shown on a colour bar
    so that two figures (trained, untrained) can be compared."""
    w = np.asarray(weight)[:max_kernels]
    img = w.mean(1) if w.shape[1] != 3 else np.moveaxis(w, 1, -1)
    rows, cols = _grid(len(w), 8 if len(w) > 16 else None)
    fig = new_figure(1.1 * cols + 0.9, 1.1 * rows + 0.5)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    lim = float(scale) if scale else (float(np.abs(w).max()) or 1.0)
    for ax in axes:
        ax.axis("off")
    shown = None
    for i, ax in enumerate(axes[:len(w)]):
        k = img[i]
        if k.ndim == 3:  # RGB kernels: the same fixed scale, -lim -> 0, +lim -> 1 per colour
            ax.imshow(np.clip((k / lim + 1) / 2, 0, 1), interpolation="nearest")
        else:
            shown = ax.imshow(k, cmap="bwr", vmin=-lim, vmax=lim, interpolation="nearest")
        ax.set_title(str(i), fontsize=7)
    if shown is not None:
        bar = fig.colorbar(shown, ax=list(axes), shrink=0.8, ticks=[-lim, 0, lim])
        bar.ax.set_yticklabels([f"-{lim:.3g}", "0", f"+{lim:.3g}"], fontsize=7)
    what = f"{label} " if label else ""
    fig.suptitle(f"{len(w)} {what}kernels {w.shape[2]}x{w.shape[3]}, colour scale ±{lim:.3g} "
                 "(blue negative, red positive)", fontsize=9)
    return fig


def tile_channels(m: np.ndarray, cols: int) -> np.ndarray:
    """(C, H, W) maps -> one (rows*(H+1)-1, cols*(W+1)-1) mosaic, each channel scaled to its own
    range [0, 1]; the 1-pixel gaps and empty cells are NaN (drawn blank)."""
    c, h, w = m.shape
    rows = int(np.ceil(c / cols))
    flat = m.reshape(c, -1).astype(np.float64)
    lo, hi = flat.min(1)[:, None], flat.max(1)[:, None]
    norm = ((flat - lo) / np.maximum(hi - lo, 1e-12)).reshape(c, h, w)
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
    for i in range(c):
        r, q = divmod(i, cols)
        out[r * (h + 1):r * (h + 1) + h, q * (w + 1):q * (w + 1) + w] = norm[i]
    return out


def feature_maps(maps: list[tuple[str, np.ndarray]], image: np.ndarray | None = None,
                 max_channels: int = 64) -> Figure:
    """Feature maps (C, H, W) of several layers: one mosaic per layer with every channel up to
    ``max_channels`` (each scaled to its own range); a layer with more says how many are shown.
    One image per layer, not one axes per channel: fast to draw."""
    import matplotlib

    cols = 16
    blocks = [(name, m[:max_channels], len(m)) for name, m in maps]
    heights = [int(np.ceil(len(m) / cols)) * (m.shape[1] + 1) / ((m.shape[2] + 1) * cols) for _, m, _ in blocks]
    width = 12.0
    fig_h = sum(width * hh + 0.45 for hh in heights) + (1.6 if image is not None else 0)
    fig = new_figure(width, fig_h, layout=None)
    ratios = ([1.3 / width] if image is not None else []) + [hh + 0.45 / width for hh in heights]
    grid = fig.add_gridspec(len(ratios), 1, height_ratios=ratios, hspace=0.25, left=0.02, right=0.98,
                            top=0.97, bottom=0.02)
    k = 0
    if image is not None:
        ax = fig.add_subplot(grid[0])
        _show_image(ax, image)
        ax.set_title("input", fontsize=8, loc="left")
        k = 1
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
    for (name, m, total), slot in zip(blocks, range(k, len(ratios))):
        shown = f"all {total} channels" if len(m) == total else f"channels 1-{len(m)} of {total}"
        ax = fig.add_subplot(grid[slot])
        ax.imshow(tile_channels(m, min(cols, len(m))), cmap=cmap, interpolation="nearest", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{name} ({m.shape[1]}x{m.shape[2]}, {shown})", fontsize=8, loc="left")
    return fig


def histograms(trained: dict[str, np.ndarray], initial: dict[str, dict] | None = None) -> Figure:
    """Weight histograms per layer: trained (filled) against the initial weights' (line)."""
    names = list(trained)
    fig = new_figure(4 * min(len(names), 3), 2.8 * int(np.ceil(len(names) / 3)))
    axes = np.atleast_1d(fig.subplots(int(np.ceil(len(names) / 3)), min(len(names), 3))).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, name in zip(axes, names):
        ax.axis("on")
        w = np.asarray(trained[name]).ravel()
        init = (initial or {}).get(name)
        edges = np.asarray(init["edges"]) if init else np.histogram_bin_edges(w, 50)
        lo, hi = min(edges[0], w.min()), max(edges[-1], w.max())
        # one filled polygon instead of 50 bar patches: the same picture, drawn faster
        ax.hist(w, bins=np.linspace(lo, hi, 51), density=True, alpha=0.6, label="trained", histtype="stepfilled")
        if init:
            centres = (edges[:-1] + edges[1:]) / 2
            widths = np.diff(edges)
            counts = np.asarray(init["counts"], float)
            ax.plot(centres, counts / (counts.sum() * widths), color="black", label="initial")
        ax.set_title(f"{name}: mean {w.mean():.3f}, std {w.std():.3f}", fontsize=8)
        ax.legend(fontsize=7)
    return fig


def diagram(spec) -> Figure:
    """The layer stack as boxes with output shapes, drawn without graphviz."""
    layers = spec.layers
    h = 0.55 * (len(layers) + 1) + 0.4
    fig = new_figure(5.5, h, layout=None)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, len(layers) + 1)
    ax.axis("off")
    colors = {"Conv2D": "#cfe2ff", "MaxPooling2D": "#fde2c8", "AveragePooling2D": "#fde2c8",
              "Dense": "#d1f0d1", "Dropout": "#eeeeee", "BatchNormalization": "#f5e6ff",
              "Flatten": "#fff5bf", "GlobalAveragePooling2D": "#fde2c8", "GlobalMaxPooling2D": "#fde2c8"}
    items = [("input", "Input", tuple(spec.input_shape), None)] + \
        [(l.name, l.type, l.output_shape, l.params) for l in layers]
    for i, (name, typ, shape, params) in enumerate(items):
        y = len(items) - i - 0.5
        ax.add_patch(_box(0.08, y - 0.22, 0.84, 0.44, colors.get(typ, "#ffffff")))
        extra = f", {params:,} params" if params else ""
        ax.text(0.5, y, f"{name} ({typ})  →  (None, {', '.join(map(str, shape))}){extra}",
                ha="center", va="center", fontsize=8)
        if i:
            ax.annotate("", xy=(0.5, y + 0.22), xytext=(0.5, y + 0.78),
                        arrowprops={"arrowstyle": "->", "color": "#555555"})
    return fig


def _box(x, y, w, h, color):
    from matplotlib.patches import FancyBboxPatch

    return FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.01", facecolor=color, edgecolor="#555555")


def gradcam_overlay(images: list[np.ndarray], cams: list[np.ndarray], titles: list[str]) -> Figure:
    """Each image next to its Grad-CAM heat-map laid over it."""
    n = len(images)
    fig = new_figure(2.2 * n, 4.6)
    axes = np.atleast_2d(fig.subplots(2, n)).reshape(2, n)
    for j, (img, cam, title) in enumerate(zip(images, cams, titles)):
        _show_image(axes[0, j], img)
        axes[0, j].set_title(title, fontsize=8)
        _show_image(axes[1, j], img)
        axes[1, j].imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear",
                          extent=(-0.5, img.shape[1] - 0.5, img.shape[0] - 0.5, -0.5))
    axes[1, 0].set_ylabel("Grad-CAM", fontsize=8)
    return fig
