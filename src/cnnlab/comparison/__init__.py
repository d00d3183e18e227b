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
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..data.dataset import Dataset, Split
from ..data.sources import load_source
from ..data.split import stratified_indices
from ..errors import ConfigError, DataError
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
        items = [tuple(p.split("=", 1)) if "=" in p else (None, p) for p in value.split(",") if p.strip()]
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
    pool = Split(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]))
    if cv is None:
        if "validation" in ds.splits:
            n_tr = len(ds["train"])
            return pool, [(np.arange(n_tr), np.arange(n_tr, len(pool)))]
        if not 0 < val_split < 1:
            raise ConfigError("a comparison needs evaluation images", "--val-split",
                              "use e.g. --val-split 0.2, or --cv 5")
        keep, held = stratified_indices(pool.y, val_split, seed, ds.source)
        return pool, [(keep, held)]
    from sklearn.model_selection import StratifiedKFold

    if not isinstance(cv, int) or cv < 2:
        raise ConfigError(f"cv must be a whole number >= 2, got {cv!r}", "--cv", "use e.g. --cv 5")
    if "validation" in ds.splits:
        train_idx = np.arange(len(ds["train"]))
    elif val_split > 0:
        train_idx, _ = stratified_indices(pool.y, val_split, seed, ds.source, ordered=False)
    else:
        train_idx = np.arange(len(pool))
    y = pool.y[train_idx]
    smallest = int(np.bincount(y, minlength=len(ds.class_names)).min())
    if cv > smallest:
        raise DataError(f"{cv} folds need at least {cv} training images of every class; the smallest class has "
                        f"{smallest}", ds.source, f"use --cv {max(2, smallest)} or fewer, add images, or fold every "
                        "labeled image with --val-split 0")
    skf = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
    return pool, [(train_idx[tr], np.sort(train_idx[ev])) for tr, ev in skf.split(np.zeros(len(y)), y)]


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


def _neural(name, cfg, ds, pool, tr, ev, fold, out: Path, limit):
    """Train a preset or spec on one fold (``cfg`` already holds that model's recipe)."""
    from sklearn.metrics import f1_score

    from ..training import train

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
    y = pool.y[ev]
    status = {"time_limit": "time limit", "interrupted": "interrupted"}.get(run.metrics["status"], "ok")
    convs = any(layer.type == "Conv2D" for layer in run.spec.layers)
    return {"accuracy": float((pred == y).mean()),
            "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
            "train_time_s": train_s, "predict_s": predict_s, "size": run.spec.total_params,
            "size_unit": "params", "status": status,
            "kind": "neural network (CNN)" if convs else "neural network (MLP)",
            "run": str(run.path), "epochs": run.metrics["epochs_run"], "best_epoch": run.metrics["best_epoch"],
            "note": run.metrics["stop_reason"] if status != "ok" else ""}


def compare(source: str = "fashion-mnist", models=DEFAULT_MODELS, *, cv: int | None = None, jobs: int = 1,
            subsample_n=None, time_limit=None, out: str | Path | None = None, config: str | Path | None = None,
            quiet: bool = False, **options):
    """Train every model on the same split (or the same ``cv`` stratified folds) and return the
    leaderboard as a pandas DataFrame (best first). ``options`` are training-config keys (data
    options such as val_split, seed and scale, and the neural models' epochs, batch_size, ...).
    The leaderboard is written under ``out`` as CSV, Markdown and HTML; ``df.attrs`` holds
    ``out`` and the per-fold table ``folds``."""
    import torch

    from ..engine.loop import resolve_device
    from ..runs import environment, new_run_dir
    from .leaderboard import aggregate, write_leaderboard

    names = resolve_models(models)
    subsamples = per_model(subsample_n, names, "--subsample", int)
    limits = per_model(time_limit, names, "--trial-time-limit (--time-limit)", float)
    if not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"jobs must be a whole number >= 1, got {jobs!r}", "--jobs", "use e.g. --jobs 2")
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
    pool, folds = make_folds(ds, cv, cfg.val_split, cfg.seed)
    # per neural model: its preset's own recipe fills what the options leave open; every spec is
    # checked against the data before the first model trains (and before the output folder exists)
    model_cfgs = {name: make_config(config, source=source, model=name, explicit_none=explicit_none, **options)
                  for name in names if name not in BASELINES}
    from ..training import resolve_spec

    for name in model_cfgs:
        resolve_spec(name, ds.input_shape, ds.num_classes)
    out = Path(out) if out else new_run_dir(cfg.runs_dir, f"compare-{cfg.source.split(':')[0]}")
    out.mkdir(parents=True, exist_ok=True)

    def say(msg):
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    n_folded = sum(len(ev) for _, ev in folds) if cv else 0
    split_text = (f"{len(folds)} stratified folds of {n_folded:,} training images (seed {cfg.seed}"
                  + (f"; {len(pool) - n_folded:,} validation images held out, untouched)" if n_folded < len(pool)
                     else ")") if cv else
                  f"a stratified {cfg.val_split:g} validation split (seed {cfg.seed})"
                  if "validation" not in ds.splits else "the source's validation split")
    say(f"comparing {len(names)} models on {ds.source}: {len(pool):,} labeled images, {split_text}; "
        f"results in {out}")
    if cfg.check:
        warn_pool_duplicates(pool, ds)
    rows: list[dict] = []
    try:
        interrupted = False
        for name in names:
            for k, (tr, ev) in enumerate(folds):
                tr_m = subsample(tr, pool.y, subsamples[name], cfg.seed)
                kind = BASELINES[name].kind if name in BASELINES else "neural network"
                row = {"model": name, "fold": k + 1, "n_train": len(tr_m), "n_eval": len(ev),
                       "eval_digest": _digest(ev), "kind": kind}
                try:
                    if name in BASELINES:
                        res = run_baseline(name, pool.x[tr_m], pool.y[tr_m], pool.x[ev], pool.y[ev], cfg.scale,
                                           cfg.seed, jobs, limits[name])
                        res.setdefault("note", res.pop("error", ""))
                    else:
                        res = _neural(name, model_cfgs[name], ds, pool, tr_m, ev, k, out, limits[name])
                except KeyboardInterrupt:
                    interrupted = True
                    res = {"status": "interrupted", "note": "interrupted by the user (Ctrl-C)"}
                except Exception as e:  # one failing model does not lose the whole comparison
                    msg = e.line() if hasattr(e, "line") else f"{type(e).__name__}: {e}"
                    res = {"status": "error", "note": msg}
                row.update(res)
                rows.append(row)
                acc = f"accuracy {row['accuracy']:.4f}" if "accuracy" in row else row["status"]
                say(f"  {name:<14} fold {k + 1}/{len(folds)}  {acc}  "
                    f"train {row.get('train_time_s', float('nan')):.1f} s  {row.get('note', '')}".rstrip())
                if interrupted or row["status"] == "interrupted":
                    interrupted = True
                    break
            if interrupted:
                break
    finally:
        stop_worker()  # the baselines' worker process, if a time limit started one
    board, fold_table = aggregate(rows, names)
    settings = {}
    for name in names:
        st = {"train_images": int(np.mean([len(subsample(tr, pool.y, subsamples[name], cfg.seed)) for tr, _ in folds])),
              "subsample": subsamples[name], "time_limit": limits[name]}
        if name in model_cfgs:
            mc = model_cfgs[name]
            st.update(recipe=mc.recipe, epochs=mc.epochs, batch_size=mc.batch_size, optimizer=mc.optimizer, lr=mc.lr,
                      patience=mc.patience)
        settings[name] = st
    meta = {"source": ds.source, "models": names, "cv": cv, "val_split": None if cv else cfg.val_split,
            "split": split_text, "n_labeled": len(pool), "seed": cfg.seed, "scale": cfg.scale,
            "jobs": jobs, "subsample": subsamples, "time_limit": limits, "interrupted": interrupted,
            "class_names": ds.class_names, "settings": settings,
            "environment": environment(str(resolve_device(cfg.device)), torch.get_num_threads(), cfg.seed)}
    write_leaderboard(out, board, fold_table, meta, folds)
    board.attrs.update(out=str(out), folds=fold_table, meta=meta)
    return board
