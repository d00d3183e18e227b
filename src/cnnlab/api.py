"""The small Python API for notebooks.

>>> import cnnlab
>>> ds = cnnlab.load_dataset("fashion-mnist")          # train / validation / test splits
>>> run = cnnlab.train("fashion-mnist", model="fashion-cnn", epochs=5)
>>> cnnlab.evaluate(run)["accuracy"]
>>> cnnlab.predict(run, ds["test"].x[:8])              # (8, 10) probabilities
>>> run = cnnlab.load_run("runs/20261123-101500-fashion-cnn-fashion-mnist")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import atomic
from .config import TrainConfig, make_config
from .data.dataset import Dataset, Split
from .data.sources import DataOptions, load_source
from .data.split import prepare_splits
from .errors import DataError
from .evaluate import evaluate_probs
from .models import SpecModel, build_module, spec_from
from .runs import Run, load_run
from .train.session import load_data
from .train.session import train as _train


def load_dataset(source: str = "fashion-mnist", *, val_split: float = 0.2, test_split: float = 0.2,
                 seed: int = 42, **options) -> Dataset:
    """Load a source and split it (stratified, seeded). ``options`` are DataOptions fields
    (data_dir, image_size, color_mode, labels, class_names, label_column, ...)."""
    ds = load_source(source, DataOptions(**options))
    return prepare_splits(ds, val_split, test_split, seed)


def build_model(model: str | dict = "fashion-cnn", input_shape: tuple | None = None,
                num_classes: int | None = None) -> SpecModel:
    """A torch module from a preset name, a spec file or a spec mapping; ``model.spec``
    holds the shapes and parameter counts (``print(model.spec.summary())``)."""
    return build_module(spec_from(model, input_shape, num_classes))


def summary(model: str | dict = "fashion-cnn", input_shape: tuple | None = None,
            num_classes: int | None = None) -> str:
    return build_model(model, input_shape, num_classes).spec.summary()


def train(source: str | Dataset = "fashion-mnist", model: str | dict = "fashion-cnn", *,
          config: str | Path | None = None, **options) -> Run:
    """Train and return the run (its directory is ``run.path``). ``options`` are the config
    keys (epochs, batch_size, optimizer, lr, patience, rotation_range, ...)."""
    dataset = source if isinstance(source, Dataset) else None
    src = dataset.source if dataset is not None else source
    spec = model if isinstance(model, dict) else None
    explicit_none = [k for k, v in options.items() if v is None]  # e.g. patience=None: no early stopping
    cfg = make_config(config, source=src, model=spec.get("name", "spec") if spec else model,
                      explicit_none=explicit_none, **options)
    return _train(cfg, spec_override=spec, dataset=dataset)


def compare(source: str = "fashion-mnist", models=None, *,
            cv: int | None = None, jobs: int = 1, subsample=None, time_limit=None, out=None,
            config: str | Path | None = None, quiet: bool = True, **options):
    """A leaderboard (pandas DataFrame, best first) of ``models`` (default: tree, forest,
    logreg, hog-svm, fashion-cnn) trained on the same stratified
    split, or the same ``cv`` folds: baselines (tree, forest, extra-trees, logreg, knn,
    linear-svm, hgb, hog-svm, xgboost, lightgbm), presets or spec files. ``subsample`` and
    ``time_limit`` take a number or a per-model dict. Files go to ``out`` (``df.attrs["out"]``);
    ``df.attrs["folds"]`` has one row per model and fold."""
    from .comparison import DEFAULT_MODELS
    from .comparison import compare as _compare

    return _compare(source, models or DEFAULT_MODELS, cv=cv, jobs=jobs, subsample_n=subsample, time_limit=time_limit,
                    out=out, config=config, quiet=quiet, **options)


def _as_run(run: Run | str | Path) -> Run:
    return run if isinstance(run, Run) else load_run(run)


def _run_config(run: Run) -> TrainConfig:
    return TrainConfig(**{k: v for k, v in run.config.items() if k in TrainConfig.__dataclass_fields__})


def run_dataset(run: Run) -> Dataset:
    """The run's own data with its train / validation / test splits, as in training."""
    cfg = _run_config(run)
    cfg.quiet = True
    return load_data(cfg)


def evaluation_split(run: Run, source: str | None = None, split: str = "test") -> Split:
    """The images a run is evaluated on: its own data's split, or another source's."""
    cfg = _run_config(run)
    if split not in ("train", "validation", "test", "all"):
        raise DataError(f"unknown split '{split}'", "--split", "use train, validation, test or all")
    if source is None:
        ds = run_dataset(run)
    else:
        opts = cfg.data_options()
        opts.image_size, opts.color_mode, opts.quiet = run.image_size, run.color_mode, True
        ds = load_source(source, opts)
        if split != "all":
            ds = prepare_splits(ds, cfg.val_split, cfg.test_split, cfg.seed)
        if len(ds.class_names) > len(run.class_names):
            raise DataError(f"{source} has {len(ds.class_names)} classes but the model knows "
                            f"{len(run.class_names)}", source, "evaluate on data with the run's classes")
    if split == "all":
        parts = [s for s in ds.splits.values() if s.y is not None]
        return Split(np.concatenate([s.x for s in parts]), np.concatenate([s.y for s in parts]))
    if split not in ds.splits:
        raise DataError(f"the data has no {split} split", source or cfg.source,
                        f"use --split {' or '.join(ds.splits)} (or all)")
    return ds[split]


def evaluate(run: Run | str | Path, source: str | None = None, split: str = "test",
             save: bool = True) -> dict:
    """Loss, accuracy, classification report and confusion matrix; saved as
    ``evaluation[-<split>].json`` in the run directory."""
    run = _as_run(run)
    part = evaluation_split(run, source, split)
    ev = evaluate_probs(run.predict_proba(part.x), part.y, run.class_names)
    ev["split"], ev["source"] = split, source or run.data.get("source")
    if save:
        name = "evaluation.json" if source is None and split == "test" else f"evaluation-{split}.json"
        atomic.write_json(run.path / name, ev)
    return ev


def predict(run: Run | str | Path, inputs, top_k: int | None = None):
    """Probabilities (N, K) for an image array; for file paths / folders / globs, one dict per
    image with its predicted class and probabilities."""
    from .predict import collect_inputs, predict_paths, rows_for

    run = _as_run(run)
    if isinstance(inputs, np.ndarray):
        return run.predict_proba(inputs)
    items = [str(inputs)] if isinstance(inputs, (str, Path)) else [str(i) for i in inputs]
    paths = collect_inputs(items)
    probs = predict_paths(run, paths)
    return rows_for(run, [str(p) for p in paths], probs, top_k)[1]
