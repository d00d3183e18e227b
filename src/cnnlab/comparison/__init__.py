"""``cnnlab compare``: one leaderboard from a decision tree to a CNN, on the same split or the
same stratified folds, with the same pixel scaling, and the cost in time beside the accuracy.

Every model sees identical evaluation images: one stratified validation split (``val_split``,
``seed``) or ``cv`` stratified folds of the labeled training data. A source's test split is
never read. Neural models select their best epoch on the evaluation images, as the notebooks'
Keras ``validation_split`` does; the leaderboard says so.
"""

from __future__ import annotations

import difflib
import hashlib
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..data.dataset import Dataset, Split
from ..data.sources import load_source
from ..data.split import stratified_indices
from ..errors import ConfigError, DataError
from ..options import Rule, option
from .baselines import BASELINES, installed, run_baseline, stop_worker

DEFAULT_MODELS = ("tree", "forest", "logreg", "hog-svm", "fashion-cnn")


def resolve_models(models) -> list[str]:
    """Model names from a list or a comma-separated string; unknown names are rejected with the
    valid ones."""
    from ..models.presets import PRESETS

    names = [m.strip() for m in (models.split(",") if isinstance(models, str) else models) if str(m).strip()]
    if not names:
        raise ConfigError("no models to compare", "--models", f"use e.g. {','.join(DEFAULT_MODELS)}")
    out: list[str] = []
    for name in names:
        name = str(name)
        if name in BASELINES:
            need = BASELINES[name].needs
            if need and not installed(need):
                raise ConfigError(f"model '{name}' needs the {need} package, which is not installed",
                                  "--models", "pip install 'cnnlab[boost]' (XGBoost and LightGBM), or drop it")
        elif name not in PRESETS and not (Path(name).suffix.lower() in (".yaml", ".yml", ".json")
                                          and Path(name).is_file()):
            close = difflib.get_close_matches(name, [*BASELINES, *PRESETS], 1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(f"unknown model '{name}'", "--models",
                              f"{hint}use baselines {', '.join(BASELINES)}; presets {', '.join(PRESETS)}; "
                              "or a spec file (.yaml/.json)")
        if name not in out:
            out.append(name)
    return out


def per_model(value, models: list[str], flag: str, cast) -> dict[str, float | None]:
    """A value for every model from ``N``, ``{"knn": N}`` or ``"N,knn=M"`` (a bare number is
    the default for all models)."""
    if value is None:
        return {m: None for m in models}
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, str):
        items = [(p.split("=", 1)[0], p.split("=", 1)[1]) if "=" in p else (None, p)
                 for p in value.split(",") if p.strip()]
    else:
        items = [(None, value)]
    default, named = None, {}
    for name, v in items:
        try:
            v = cast(v)
            if v <= 0:
                raise ValueError
        except (TypeError, ValueError):
            raise ConfigError(f"invalid value {v!r}", flag, "use a positive number, e.g. 10000 or knn=5000") from None
        if name is None:
            default = v
        elif name.strip() not in models:
            raise ConfigError(f"'{name.strip()}' is not among the compared models", flag,
                              f"use one of {', '.join(models)}")
        else:
            named[name.strip()] = v
    return {m: named.get(m, default) for m in models}


def _digest(idx: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(idx, dtype=np.int64).tobytes()).hexdigest()[:12]


def make_folds(ds: Dataset, cv: int | None, val_split: float, seed: int) -> tuple[Split, list]:
    """The labeled pool (train, plus an explicit validation split) and (train_idx, eval_idx)
    per fold.

    Cross-validation folds the training split only, as seed 003 does: the validation split (the
    source's own, or ``val_split`` held out exactly as training holds it out) and the test split
    stay out of every fold. Its training images keep train_test_split's order, on which
    StratifiedKFold and a forest's bootstrap samples depend, so a notebook's figures reproduce."""
    parts = [ds["train"]] + ([ds["validation"]] if "validation" in ds.splits else [])
    pool = Split(np.concatenate([p.x for p in parts]), np.concatenate([p.labels for p in parts]))
    if cv is None:
        if "validation" in ds.splits:
            n_tr = len(ds["train"])
            return pool, [(np.arange(n_tr), np.arange(n_tr, len(pool)))]
        if not 0 < val_split < 1:
            raise ConfigError("a comparison needs evaluation images", "--val-split",
                              "use e.g. --val-split 0.2, or --cv 5")
        keep, held = stratified_indices(pool.labels, val_split, seed, ds.source)
        return pool, [(keep, held)]
    if not isinstance(cv, int) or cv < 2:
        raise ConfigError(f"cv must be a whole number >= 2, got {cv!r}", "--cv", "use e.g. --cv 5")
    if "validation" in ds.splits:
        train_idx = np.arange(len(ds["train"]))
    elif val_split > 0:
        train_idx, _ = stratified_indices(pool.labels, val_split, seed, ds.source, ordered=False)
    else:
        train_idx = np.arange(len(pool))
    folds = stratified_folds(pool.labels[train_idx], cv, seed, ds.source, len(ds.class_names),
                             "--cv", "or fold every labeled image with --val-split 0")
    return pool, [(train_idx[tr], np.sort(train_idx[ev])) for tr, ev in folds]


def stratified_folds(y: np.ndarray, k: int, seed: int, where: str, num_classes: int, flag: str = "--folds",
                     also: str = "") -> list[tuple[np.ndarray, np.ndarray]]:
    """K stratified folds of labels ``y`` as (train, held-out) positions (held-out sorted), by
    scikit-learn's ``StratifiedKFold(shuffle=True, random_state=seed)``: the folds a notebook with
    the same seed makes. Every class needs at least K images."""
    from sklearn.model_selection import StratifiedKFold

    smallest = int(np.bincount(y, minlength=num_classes).min())
    if k > smallest:
        raise DataError(f"{k} folds need at least {k} training images of every class; the smallest class has "
                        f"{smallest}", where, f"use {flag} {max(2, smallest)} or fewer, add images"
                        + (f", {also}" if also else ""))
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(tr, np.sort(ev)) for tr, ev in skf.split(np.zeros(len(y)), y)]


def subsample(idx: np.ndarray, y: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """At most ``n`` of ``idx``, stratified and seeded (the same for every model given n)."""
    if n is None or n >= len(idx):
        return idx
    from sklearn.model_selection import train_test_split

    try:
        keep, _ = train_test_split(idx, train_size=int(n), random_state=seed, stratify=y[idx])
    except ValueError:
        keep = np.random.default_rng(seed).choice(idx, int(n), replace=False)
    return np.sort(keep)


def warn_pool_duplicates(pool: Split, ds: Dataset) -> None:
    """Exact copies inside the labeled pool can land in a model's training images and in its
    evaluation images: say so once, before any model trains."""
    from ..data.check import pixel_hashes
    from ..errors import warn

    copies = len(pool) - len(np.unique(pixel_hashes(pool.x)))
    if copies:
        warn(f"{copies:,} labeled image(s) are exact copies of others; a copy and its original "
             "can fall on both sides of a split, which inflates the scores", ds.source,
             f"remove the copies (cnnlab check {ds.source} lists them)")


def _neural(plan: Plan, name: str, tr: np.ndarray, ev: np.ndarray, fold: int) -> dict:
    """Train a preset or spec on one fold (its config already holds that model's recipe)."""
    from sklearn.metrics import f1_score

    from ..training import train_here as train

    ds, pool, out, cfg, limit = plan.ds, plan.pool, plan.out, plan.model_cfgs[name], plan.limits[name]
    fold_ds = Dataset(ds.source, ds.class_names, {"train": pool.take(tr), "validation": pool.take(ev)}, ds.info)
    stem = Path(name).stem if name not in BASELINES else name
    # the pool is checked once for the whole comparison (compare); a check per fold would also be
    # counted in the model's train time
    fold_cfg = replace(cfg, val_split=0.0, test_split=0.0, runs_dir=str(out / "runs"),
                       name=f"{stem}-fold{fold + 1}", quiet=True, time_limit=limit, check=False)
    t0 = time.perf_counter()
    run = train(fold_cfg, dataset=fold_ds)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = run.predict_proba(pool.x[ev]).argmax(1)
    predict_s = time.perf_counter() - t0
    y = pool.labels[ev]
    status = {"time_limit": "time limit", "interrupted": "interrupted"}.get(run.metrics["status"], "ok")
    convs = any(layer.type == "Conv2D" for layer in run.spec.layers)
    return {"accuracy": float((pred == y).mean()),
            "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
            "train_time_s": train_s, "predict_s": predict_s, "size": run.spec.total_params,
            "size_unit": "params", "status": status,
            "kind": "neural network (CNN)" if convs else "neural network (MLP)",
            "run": str(run.path), "epochs": run.metrics["epochs_run"], "best_epoch": run.metrics["best_epoch"],
            "note": run.metrics["stop_reason"] if status != "ok" else ""}


def _two_or_more(v) -> bool:
    return v >= 2


def _one_or_more(v) -> bool:
    return v >= 1


def _models_help() -> str:
    return "comma-separated: baselines " + ", ".join(BASELINES) + "; any preset (cnnlab models) or spec file"


@dataclass
class CompareOptions:
    """A comparison's own settings, declared once: ``cnnlab compare``'s options and
    ``cnnlab.compare``'s keywords are made and checked from these (cnnlab.options)."""

    models: str | list | tuple = option(",".join(DEFAULT_MODELS), _models_help, group="comparison", metavar="LIST")
    cv: int | None = option(None, "K stratified folds of the labeled training data instead of one validation split",
                            Rule(_two_or_more, "a whole number >= 2"), group="comparison", metavar="K", example="5")
    jobs: int = option(1, "parallel jobs for the baselines", Rule(_one_or_more, "a whole number >= 1"),
                       group="comparison", metavar="N", example="2")
    subsample: str | int | dict | None = option(None, "train each model on at most N images (stratified); per model: "
                                                "20000,knn=5000", group="comparison", metavar="N", default_text="all")
    trial_time_limit: str | float | dict | None = option(
        None, "seconds per model and fold; a baseline over it is reported as timeout, a neural model stops and keeps "
        "its best epoch; per model: 600,forest=120; --time-limit is the old spelling", group="comparison",
        metavar="S", renamed_from=("time_limit",))
    out: str | Path | None = option(None, "where the leaderboard goes", group="comparison", metavar="DIR",
                                    default_text="RUNS_DIR/<timestamp>-compare-<source>")


@dataclass
class Plan:
    """One comparison, set up: the models, their per-model settings, the data and its folds."""

    opts: CompareOptions
    names: list[str]
    subsamples: dict
    limits: dict
    cfg: Any  # the comparison's TrainConfig (split, seed, scaling)
    ds: Dataset
    pool: Split
    folds: list
    model_cfgs: dict  # a neural model's TrainConfig, its recipe applied
    out: Path
    split_text: str = ""
    quiet: bool = False

    def say(self, msg: str) -> None:
        if not self.quiet:
            print(msg, file=sys.stderr, flush=True)


def compare(source: str = "fashion-mnist", models=DEFAULT_MODELS, *, config: str | Path | None = None,
            quiet: bool = False, **options):
    """Train every model on the same split (or the same ``cv`` stratified folds) and return the
    leaderboard as a pandas DataFrame (best first). ``options``: the comparison's own settings
    (``CompareOptions``: cv, jobs, subsample, trial_time_limit (old name time_limit), out) and
    training-config keys (data options such as val_split, seed and scale, and the neural models'
    epochs, batch_size, ...). The leaderboard is written under ``out`` as CSV, Markdown and HTML;
    ``df.attrs`` holds ``out`` and the per-fold table ``folds``."""
    from ..options import checked, keys_of

    own = {a for k in keys_of(CompareOptions).values() for a in (k.name, *k.option.other_names)}
    opts = checked(CompareOptions, "cnnlab.compare", models=models,
                   **{k: options.pop(k) for k in list(options) if k in own})
    plan = _plan(source, opts, config, quiet, options)
    rows: list[dict] = []
    try:
        interrupted = _run_models(plan, rows)
    finally:
        stop_worker()  # the baselines' worker process, if a time limit started one
    return _leaderboard(plan, rows, interrupted)


def _plan(source: str, opts: CompareOptions, config, quiet: bool, options: dict) -> Plan:
    """The models and data of a comparison, checked before the first model trains (and before
    the output folder exists)."""
    from ..runs import new_run_dir

    names = resolve_models(opts.models)
    subsamples = per_model(opts.subsample, names, "--subsample", int)
    limits = per_model(opts.trial_time_limit, names, "--trial-time-limit (--time-limit)", float)
    explicit_none = [k for k, v in options.items() if v is None]
    # The comparison's split comes from the options, never from a recipe (the fast recipe trains
    # on every image); each model's recipe applies to its own config below.
    from ..config import make_config  # torch comes with it; a baseline's worker process needs neither

    cfg = make_config(config, source=source, explicit_none=explicit_none,
                      **{k: v for k, v in options.items() if k != "recipe"})
    cfg.quiet = True
    ds = load_source(cfg.source, cfg.data_options())
    if ds["train"].y is None:
        raise DataError("the data has no labels", cfg.source, "compare needs a labeled source")
    pool, folds = make_folds(ds, opts.cv, cfg.val_split, cfg.seed)
    # per neural model: its preset's own recipe fills what the options leave open; every spec is
    # checked against the data before the first model trains
    model_cfgs = {name: make_config(config, source=source, model=name, explicit_none=explicit_none, **options)
                  for name in names if name not in BASELINES}
    from ..training import resolve_spec

    for name in model_cfgs:
        resolve_spec(name, ds.input_shape, ds.num_classes)
    out = Path(opts.out) if opts.out else new_run_dir(cfg.runs_dir, f"compare-{cfg.source.split(':')[0]}")
    out.mkdir(parents=True, exist_ok=True)
    plan = Plan(opts, names, subsamples, limits, cfg, ds, pool, folds, model_cfgs, out, quiet=quiet)
    n_folded = sum(len(ev) for _, ev in folds) if opts.cv else 0
    plan.split_text = (f"{len(folds)} stratified folds of {n_folded:,} training images (seed {cfg.seed}"
                       + (f"; {len(pool) - n_folded:,} validation images held out, untouched)" if n_folded < len(pool)
                          else ")") if opts.cv else
                       f"a stratified {cfg.val_split:g} validation split (seed {cfg.seed})"
                       if "validation" not in ds.splits else "the source's validation split")
    plan.say(f"comparing {len(names)} models on {ds.source}: {len(pool):,} labeled images, {plan.split_text}; "
             f"results in {out}")
    if cfg.check:
        warn_pool_duplicates(pool, ds)
    return plan


def _run_models(plan: Plan, rows: list[dict]) -> bool:
    """Every model on every fold, a row each in ``rows``; True when Ctrl-C stopped it."""
    for name in plan.names:
        for k, (tr, ev) in enumerate(plan.folds):
            tr_m = subsample(tr, plan.pool.labels, plan.subsamples[name], plan.cfg.seed)
            kind = BASELINES[name].kind if name in BASELINES else "neural network"
            row = {"model": name, "fold": k + 1, "n_train": len(tr_m), "n_eval": len(ev),
                   "eval_digest": _digest(ev), "kind": kind}
            try:
                if name in BASELINES:
                    data = (plan.pool.x[tr_m], plan.pool.labels[tr_m], plan.pool.x[ev], plan.pool.labels[ev])
                    res = run_baseline(name, data, plan.cfg.scale, plan.cfg.seed, plan.opts.jobs, plan.limits[name])
                    res.setdefault("note", res.pop("error", ""))
                else:
                    res = _neural(plan, name, tr_m, ev, k)
            except KeyboardInterrupt:
                res = {"status": "interrupted", "note": "interrupted by the user (Ctrl-C)"}
            except Exception as e:  # one failing model does not lose the whole comparison
                msg = e.line() if hasattr(e, "line") else f"{type(e).__name__}: {e}"
                res = {"status": "error", "note": msg}
            row.update(res)
            rows.append(row)
            acc = f"accuracy {row['accuracy']:.4f}" if "accuracy" in row else row["status"]
            plan.say(f"  {name:<14} fold {k + 1}/{len(plan.folds)}  {acc}  "
                     f"train {row.get('train_time_s', float('nan')):.1f} s  {row.get('note', '')}".rstrip())
            if row["status"] == "interrupted":
                return True
    return False


def _leaderboard(plan: Plan, rows: list[dict], interrupted: bool):
    """The leaderboard of the rows, written under the plan's folder with its settings."""
    import torch

    from ..engine.loop import resolve_device
    from ..runs import environment
    from .leaderboard import aggregate, write_leaderboard

    cfg, pool, folds = plan.cfg, plan.pool, plan.folds
    board, fold_table = aggregate(rows, plan.names)
    settings = {}
    for name in plan.names:
        st = {"train_images": int(np.mean([len(subsample(tr, pool.labels, plan.subsamples[name], cfg.seed))
                                           for tr, _ in folds])),
              "subsample": plan.subsamples[name], "time_limit": plan.limits[name]}
        if name in plan.model_cfgs:
            mc = plan.model_cfgs[name]
            st.update(recipe=mc.recipe, epochs=mc.epochs, batch_size=mc.batch_size, optimizer=mc.optimizer, lr=mc.lr,
                      patience=mc.patience)
        settings[name] = st
    meta = {"source": plan.ds.source, "models": plan.names, "cv": plan.opts.cv,
            "val_split": None if plan.opts.cv else cfg.val_split, "split": plan.split_text, "n_labeled": len(pool),
            "seed": cfg.seed, "scale": cfg.scale, "jobs": plan.opts.jobs, "subsample": plan.subsamples,
            "time_limit": plan.limits, "interrupted": interrupted, "class_names": plan.ds.class_names,
            "settings": settings,
            "environment": environment(str(resolve_device(cfg.device)), torch.get_num_threads(), cfg.seed)}
    write_leaderboard(plan.out, board, fold_table, meta, folds)
    board.attrs.update(out=str(plan.out), folds=fold_table, meta=meta)
    return board
