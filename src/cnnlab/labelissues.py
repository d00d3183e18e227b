"""``cnnlab check SOURCE --label-issues``: images that are probably labelled wrong.

Each image of the checked split (default: the source's own training images, all of them: the
split a user can still fix) gets predicted probabilities from a model that never trained on it:
K stratified folds (compare's folds, the same seed), a model trained on the other K-1 folds scores
the held-out one. cleanlab's confident learning then picks the suspects:
``cleanlab.filter.find_label_issues(..., filter_by="low_self_confidence",
return_indices_ranked_by="self_confidence")``: cleanlab estimates how many labels are wrong from
the confident joint, and flags that many images with the lowest self-confidence (the out-of-fold
probability of the given label, ``cleanlab.rank.get_label_quality_scores``), worst first. That
filter, not the library's default ``prune_by_noise_rate``, because it measured best on
Fashion-MNIST with labels flipped on purpose (benchmarks/label_noise.py, docs/check.md): precision
0.82 against 0.61 at 5% uniform noise, recall 0.93 against 0.91; ``--filter-by`` picks another.
``find_label_issues`` rather than ``Datalab``: it is the one step we need, without Datalab's other
issue types (outliers, near duplicates: ``cnnlab check`` finds those itself).

The out-of-fold probabilities are kept (``oof.npy`` beside the results, and a cache in
``$CNNLAB_HOME/oof`` keyed by the images, labels and training settings), so another look with other
settings costs no training. Positions in ``label-issues.csv`` are the images' positions in the
source's own split as loaded (training carves its validation split from these later), so
``cnnlab train --exclude label-issues.csv`` and ``--relabel`` find them whatever the split settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .data.dataset import SPLITS
from .errors import CnnlabWarning, ConfigError, DataError
from .options import Choice, Interval, Rule, option

FORMAT = 1  # the oof cache's layout
# cleanlab.filter.find_label_issues' filter_by values; ours first (measured: benchmarks/label_noise.py)
FILTERS = ("low_self_confidence", "prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
           "predicted_neq_given", "low_normalized_margin")


def _at_least_two(v) -> bool:
    return v >= 2


@dataclass
class LabelIssueOptions:
    """``cnnlab check --label-issues``'s options and ``cnnlab.label_issues``' keywords, declared once."""

    label_issues: bool = option(False, "find images that are probably labelled wrong: out-of-fold probabilities "
                                "of K models, ranked by cleanlab's confident learning (needs cnnlab[labels])",
                                group="label issues")
    folds: int = option(5, "K stratified folds: each image is scored by a model that did not train on it",
                        Rule(_at_least_two, "a whole number of at least 2"), group="label issues", metavar="K",
                        example="5")
    issues_model: str = option("fast", "the model the folds train: a preset (cnnlab models) or a spec file; "
                               "or give --backbone", group="label issues", flag="--model", metavar="PRESET|SPEC",
                               aliases=("model",))
    split: str = option("train", "the split whose labels are checked", Choice((*SPLITS, "all")), group="label issues")
    oof: str | None = option(None, "out-of-fold probabilities an earlier check saved (oof.npy): no training",
                             group="label issues", metavar="FILE.npy")
    issues_dir: str | Path | None = option(None, "where label-issues.csv, oof.npy and label-issues.html go",
                                           group="label issues", metavar="DIR",
                                           default_text="RUNS_DIR/<timestamp>-label-issues-<source>")
    top: int = option(20, "how many suspects are printed", Interval(1), group="label issues", metavar="N")
    filter_by: str = option("low_self_confidence", "cleanlab's filter_by: how many and which images are flagged "
                            "(low_self_confidence: the number of issues cleanlab estimates from the confident joint, "
                            "taken from the lowest self-confidence)", Choice(FILTERS), group="label issues")


@dataclass
class LabelIssues:
    """What was found: ``rows`` (ranked: rank, split, index, path, given, suggested, score,
    p_given), the count per (given, suggested) pair, where the files are, and the cost."""

    rows: list[dict]
    pairs: list[tuple[str, str, int]]
    checked: int  # images checked
    split: str
    oof: np.ndarray = field(repr=False)
    out: Path | None = None
    seconds: float = 0.0
    trained: bool = True  # False: the probabilities came from a file or the cache
    images: Any = field(default=None, repr=False)  # the checked images, for the grid

    def to_json(self) -> list[dict]:
        return [{k: r[k] for k in ("index", "path", "given", "suggested", "score")} | {"split": r["split"]}
                for r in self.rows]


def oof_home() -> Path:
    home = os.environ.get("CNNLAB_HOME")
    if home:
        return Path(home) / "oof"
    from .data.builtin import cache_dir

    return cache_dir() / "oof"


def need_cleanlab():
    try:
        import cleanlab  # noqa: F401
    except ImportError:
        raise ConfigError("--label-issues needs cleanlab, which is not installed", "--label-issues",
                          "pip install 'cnnlab[labels]'") from None


# ---------------------------------------------------------------------------- the images checked
@dataclass
class Checked:
    """The images of the checked split with their labels and, for each, where it is in the
    source: its split there, its position, and its file path or id when it has one."""

    x: Any
    y: np.ndarray
    origin_split: list[str]
    origin_index: np.ndarray
    paths: list[str | None]
    class_names: list[str]
    source: str
    fingerprint: str


def checked_images(cfg, split: str) -> Checked:
    """The source's own split as loaded (all its images: a validation split training would carve
    from it is checked too), with --exclude / --relabel applied, and each image's place in it."""
    from .data.edits import edited
    from .data.sources import load_configured

    src = load_configured(cfg)
    ds, kept = edited(src, cfg.exclude, cfg.relabel)
    names = [split] if split != "all" else [k for k, s in ds.splits.items() if s.y is not None]
    for k in names:
        if k not in ds.splits:
            raise DataError(f"{ds.source} has no {k} split of its own", cfg.source,
                            f"use --split {' or '.join(ds.splits)}")
        if ds.splits[k].y is None:
            raise DataError(f"the {k} split has no labels to check", cfg.source, "check a labeled split")
    parts = [ds[k] for k in names]
    x = parts[0].x if len(parts) == 1 else np.concatenate([np.asarray(p.x) for p in parts])
    y = np.concatenate([p.labels for p in parts])
    origin = [k for k in names for _ in range(len(ds[k]))]
    index = np.concatenate([kept[k] for k in names]).astype(np.int64)
    paths: list[str | None] = []
    for k in names:
        ids = ds[k].ids  # the kept images' own, in order
        paths += list(ids) if ids is not None else [None] * len(ds[k])
    digest = hashlib.sha256(("|".join(ds[k].fingerprint() for k in names) + "|" + ",".join(ds.class_names))
                            .encode()).hexdigest()
    return Checked(x, y, origin, index, paths, ds.class_names, ds.source, digest)


def fold_config(config, opts: LabelIssueOptions, overrides: dict, flags: tuple | list = ()):
    """The data's and the folds' TrainConfig: ``--model``'s own recipe (or the backbone's) under
    the keys given (``overrides``; ``flags``: those that came from the command line)."""
    from .config import make_config

    model: dict = {} if overrides.get("backbone") else {"model": opts.issues_model}
    return make_config(config, flags=list(flags), explicit_none=[k for k, v in overrides.items() if v is None],
                       **model, **overrides)


# ---------------------------------------------------------------------------- out-of-fold probabilities
def _settings(cfg, opts: LabelIssueOptions) -> dict:
    """What the out-of-fold probabilities depend on besides the images and labels."""
    d = cfg.to_dict()
    keep = ("model", "backbone", "weights", "epochs", "batch_size", "optimizer", "lr", "schedule", "scale", "seed",
            "precision", "image_size", "color_mode", "recipe", "label_smoothing", "weight_decay", "momentum", "tta")
    return {"folds": opts.folds, "format": FORMAT, **{k: d.get(k) for k in keep}}


def out_of_fold(cfg, part: Checked, opts: LabelIssueOptions, out: Path, say) -> tuple[np.ndarray, bool]:
    """(N, K) probabilities, each row from the fold model that did not train on that image; read
    from ``--oof`` or the cache when they exist (then False: no training)."""
    if opts.oof is not None:
        return _read_oof(opts.oof, part), False
    key = hashlib.sha256((part.fingerprint + json.dumps(_settings(cfg, opts), sort_keys=True, default=str))
                         .encode()).hexdigest()[:32]
    cached = oof_home() / f"{key}.npy"
    if cached.is_file():
        probs = np.load(cached)
        if probs.shape == (len(part.y), len(part.class_names)):
            say(f"out-of-fold probabilities from the cache ({cached}): no training")
            return probs, False
    probs = _train_folds(cfg, part, opts, out, say)
    from .atomic import write_npy

    try:
        write_npy(cached, probs)
    except OSError:  # a read-only cache is no reason to fail: oof.npy is saved with the results
        pass
    return probs, True


def _read_oof(path: str, part: Checked) -> np.ndarray:
    where = f"--oof {path}"
    if not Path(path).is_file():
        raise DataError("file not found", where, "give the oof.npy an earlier cnnlab check --label-issues saved")
    try:
        probs = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(f"not a .npy array ({e})", where, "give the oof.npy an earlier check saved") from None
    want = (len(part.y), len(part.class_names))
    if probs.shape != want or not np.isfinite(probs).all():
        raise DataError(f"probabilities of shape {probs.shape} for {want[0]:,} images of {want[1]} classes", where,
                        "give the oof.npy saved for this source, split and --exclude/--relabel")
    return probs.astype(np.float32)


def _train_folds(cfg, part: Checked, opts: LabelIssueOptions, out: Path, say) -> np.ndarray:
    from .comparison import stratified_folds
    from .data.dataset import Dataset, Split
    from .training import train_here

    folds = stratified_folds(part.y, opts.folds, cfg.seed, part.source, len(part.class_names))
    probs = np.zeros((len(part.y), len(part.class_names)), np.float32)
    whole = Split(part.x, part.y)
    for k, (tr, ev) in enumerate(folds):
        t0 = time.perf_counter()
        # a fixed number of epochs: the held-out fold must not choose the model that scores it
        fold_cfg = replace(cfg, val_split=0.0, test_split=0.0, runs_dir=str(out / "folds"), name=f"fold{k + 1}",
                           quiet=True, check=False, exclude=None, relabel=None, patience=None, restore_best=False)
        with warnings.catch_warnings():
            if k:  # a warning about the settings (e.g. mirrored digits) is said by the first fold only
                warnings.simplefilter("ignore", CnnlabWarning)
            run = train_here(fold_cfg, dataset=Dataset(part.source, part.class_names, {"train": whole.take(tr)}))
        probs[ev] = run.predict_proba(whole.take(ev).x)
        acc = float((probs[ev].argmax(1) == part.y[ev]).mean())
        say(f"fold {k + 1}/{len(folds)}: {opts.issues_model if cfg.backbone is None else cfg.backbone} trained on "
            f"{len(tr):,} images in {time.perf_counter() - t0:.0f} s; accuracy {acc:.4f} on its {len(ev):,} "
            "held-out images (given labels)")
    return probs


# ---------------------------------------------------------------------------- confident learning
def rank_issues(part: Checked, probs: np.ndarray, filter_by: str = FILTERS[0]) -> tuple[list[dict], list]:
    """cleanlab's suspects, ranked (worst first), and how many per (given, suggested) pair."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = part.y
    ranked = find_label_issues(labels, probs, filter_by=filter_by, return_indices_ranked_by="self_confidence",
                               n_jobs=1)
    scores = get_label_quality_scores(labels, probs, method="self_confidence")
    others = probs.copy()
    others[np.arange(len(labels)), labels] = -1.0  # the suggestion is another class
    suggested = others.argmax(1)
    names = part.class_names
    rows = []
    for rank, i in enumerate(ranked, start=1):
        rows.append({"rank": rank, "split": part.origin_split[i], "index": int(part.origin_index[i]),
                     "path": part.paths[i] or "", "given": names[labels[i]], "suggested": names[suggested[i]],
                     "score": round(float(scores[i]), 6), "p_given": round(float(probs[i, labels[i]]), 6),
                     "p_suggested": round(float(probs[i, suggested[i]]), 6), "row": int(i)})
    pairs = Counter((r["given"], r["suggested"]) for r in rows)
    return rows, [(g, s, n) for (g, s), n in pairs.most_common()]


CSV_COLUMNS = ["rank", "split", "index", "path", "given", "suggested", "score", "p_given", "p_suggested"]


def find(cfg, opts: LabelIssueOptions, say=print) -> LabelIssues:
    """Out-of-fold probabilities (trained, or read back), cleanlab's ranked suspects, and the files:
    label-issues.csv, oof.npy and oof.json in the output folder. ``cfg``: the data and the folds'
    training settings (the model's own recipe applied)."""
    from . import atomic
    from .prediction import write_csv
    from .runs import new_run_dir

    need_cleanlab()
    t0 = time.perf_counter()
    part = checked_images(cfg, opts.split)
    out = Path(opts.issues_dir) if opts.issues_dir else new_run_dir(cfg.runs_dir, "label-issues-"
                                                                   + cfg.source.split(":")[0])
    out.mkdir(parents=True, exist_ok=True)
    say(f"checking the labels of {len(part.y):,} {opts.split} images of {part.source} with {opts.folds} folds; "
        f"results in {out}")
    probs, trained = out_of_fold(cfg, part, opts, out, say)
    rows, pairs = rank_issues(part, probs, opts.filter_by)
    write_csv(out / "label-issues.csv", CSV_COLUMNS, rows)
    atomic.write_npy(out / "oof.npy", probs)
    atomic.write_json(out / "oof.json", {"source": part.source, "split": opts.split, "images": len(part.y),
                                         "classes": part.class_names, "fingerprint": part.fingerprint,
                                         "settings": _settings(cfg, opts)})
    return LabelIssues(rows, pairs, len(part.y), opts.split, probs, out, time.perf_counter() - t0, trained, part.x)


def format_issues(found: LabelIssues, top: int = 20) -> str:
    """The top suspects and the count per class pair, as the command prints them."""
    from .textwidth import ljust, width

    lines = [f"label issues: {len(found.rows):,} of {found.checked:,} {found.split} images "
             f"({len(found.rows) / max(1, found.checked):.1%}) are probably labelled wrong"
             + (f" ({found.seconds:.0f} s)" if found.seconds else "")]
    if found.rows:
        shown = found.rows[:top]
        col = max(5, *(width(r["given"]) for r in shown))
        lines.append(f"  {'rank':>4}  {'where':<22}{ljust('given', col)}  suggested   score")
        for r in shown:
            place = r["path"] or f"{r['split']} #{r['index']}"
            lines.append(f"  {r['rank']:>4}  {place[:21]:<22}{ljust(r['given'], col)}  "
                         f"{ljust(r['suggested'], max(9, col))}  {r['score']:.4f}")
        lines.append("  per class pair (given -> suggested): "
                     + ", ".join(f"{g} -> {s} {n:,}" for g, s, n in found.pairs[:12])
                     + (", ..." if len(found.pairs) > 12 else ""))
    if found.out is not None:
        lines.append(f"  written to {found.out / 'label-issues.csv'} (act on it: cnnlab train ... --exclude "
                     f"{found.out / 'label-issues.csv'}, or --relabel)")
    return "\n".join(lines)
