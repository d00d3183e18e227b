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

from .comparison import CompareOptions
from .config import TrainConfig, make_config
from .data.dataset import Dataset, Split, as_array, as_labels, describe_value, label_form, labeled_splits, model_batch
from .data.sources import DataOptions, load_source
from .data.split import prepare_splits
from .errors import ArgumentTypeError, ConfigError, DataError
from .evaluation import evaluate_probs
from .models import SpecModel, build_module, spec_from
from .runs import Run, RunDir, as_run, run_path
from .training import load_data
from .training import train as _train


def load_dataset(source: str = TrainConfig.source, *, val_split: float = TrainConfig.val_split,
                 test_split: float = TrainConfig.test_split, seed: int = TrainConfig.seed, **options) -> Dataset:
    """Load a source and split it (stratified, seeded). ``options`` are DataOptions fields
    (data_dir, image_size, color_mode, labels, class_names, label_column, ...)."""
    ds = load_source(source, DataOptions(**options))
    return prepare_splits(ds, val_split, test_split, seed)


def build_model(model: str | dict = TrainConfig.model, input_shape: tuple | None = None,
                num_classes: int | None = None) -> SpecModel:
    """A torch module from a preset name, a spec file or a spec mapping; ``model.spec``
    holds the shapes and parameter counts (``print(model.spec.summary())``)."""
    return build_module(spec_from(model, input_shape, num_classes))


def summary(model: str | dict = TrainConfig.model, input_shape: tuple | None = None,
            num_classes: int | None = None) -> str:
    """The Keras-style summary table (shapes and parameter counts come from the spec alone)."""
    return spec_from(model, input_shape, num_classes).summary()


def train(source=TrainConfig.source, model: str | dict | None = None, *,
          config: str | Path | None = None, callbacks: list | tuple = (), validation_data=None, test_data=None,
          **options) -> Run | None:
    """Train and return the run (its directory is ``run.path``; None in a data-parallel process
    other than rank 0). ``model``: a preset (default
    fashion-cnn), a spec file or a spec mapping; or leave it out and give ``backbone``. ``source``: a source name, a
    loaded Dataset, or arrays ``(x_train, y_train)`` / ``((x_train, y_train), (x_test, y_test))``.
    With arrays, ``validation_data=(x_val, y_val)`` and ``test_data=(x_test, y_test)`` (Keras'
    names) give those splits; a split not given is held out of the training arrays (``val_split``,
    ``test_split``; 0 keeps them all) and training says how many.
    ``options`` are the config keys (epochs, batch_size, optimizer, lr, patience, ...).
    ``callbacks``: objects with any of ``on_train_begin(state)``, ``on_epoch_begin(state)``,
    ``on_batch_end(state, step)``, ``on_epoch_end(state, logs)``, ``on_train_end(state)``
    (subclass ``cnnlab.Callback``); ``state.request_stop(reason)`` ends training."""
    if not isinstance(callbacks, (list, tuple)):
        raise ArgumentTypeError(f"callbacks must be a list of callback objects, got {describe_value(callbacks)}",
                                "callbacks", "pass e.g. callbacks=[MyCallback()] (subclass cnnlab.Callback)")
    if source is None or not isinstance(source, (str, Path, tuple, list, Dataset)):
        raise ArgumentTypeError(f"expected a source, a Dataset or arrays (x, y), got {describe_value(source)}",
                                "source", "pass e.g. 'fashion-mnist', 'folder:photos/' or (x_train, y_train)")
    if (validation_data is not None or test_data is not None) and not isinstance(source, (tuple, list)):
        raise ConfigError("validation_data and test_data go with arrays (x_train, y_train)", "validation_data",
                          "pass the training arrays as source, or give a source's sets as val_source / test_source")
    if isinstance(source, Path):
        source = str(source)
    if isinstance(source, (tuple, list)):
        names = options.pop("class_names", None)
        if isinstance(names, str):
            from .data.sources import resolve_class_names

            names = resolve_class_names(DataOptions(class_names=names, labels=options.get("labels", "en")))
        source = arrays_dataset(source, names, "source", validation_data, test_data)
    dataset = source if isinstance(source, Dataset) else None
    if dataset is not None and options.get("labels", "en") != "en":
        from .data.sources import apply_label_language

        dataset = Dataset(dataset.source, list(dataset.class_names), dict(dataset.splits), dict(dataset.info))
        apply_label_language(dataset, options["labels"], "labels")
    src = dataset.source if dataset is not None else source
    spec = model if isinstance(model, dict) else None
    if model is not None and not isinstance(model, (str, Path, dict)):
        raise ArgumentTypeError(f"expected a preset name, a spec file or a spec mapping, got {describe_value(model)}",
                                "model", "pass e.g. model='fashion-cnn' or a dict with input_shape and layers")
    explicit_none = [k for k, v in options.items() if v is None]  # e.g. patience=None: no early stopping
    cfg = make_config(config, source=src, model=spec.get("name", "spec") if spec else
                      (str(model) if model is not None else None), explicit_none=explicit_none, **options)
    return _train(cfg, spec_override=spec, dataset=dataset, callbacks=callbacks)


def resume(run: Run | str | Path, data=None, *, callbacks: list | tuple = (), **session) -> Run | None:
    """Continue a stopped run (killed, crashed, interrupted, out of time) from the end of its last
    finished epoch, in its own directory; it ends as the uninterrupted run would have. ``data``: the
    same Dataset or arrays again, for a run trained on in-memory data. ``session``: quiet, threads,
    device or time_limit."""
    from .training import resume as _resume

    if isinstance(data, (tuple, list)):
        data = arrays_dataset(data, None, "data")
    return _resume(run_path(run), data, callbacks, **session)


def compare(source: str = TrainConfig.source, models=CompareOptions.models, *, config: str | Path | None = None,
            quiet: bool = True, **options):
    """A leaderboard (pandas DataFrame, best first) of ``models`` (default: tree, forest,
    logreg, hog-svm, fashion-cnn) trained on the same stratified
    split, or the same ``cv`` folds: baselines (tree, forest, extra-trees, logreg, knn,
    linear-svm, hgb, hog-svm, xgboost, lightgbm), presets or spec files. ``options``: ``cv``,
    ``jobs``, ``subsample`` and ``trial_time_limit`` (old name ``time_limit``; these two take a
    number or a per-model dict), ``out`` (``df.attrs["out"]``), as ``cnnlab compare``'s options,
    and training keys. ``df.attrs["folds"]`` has one row per model and fold."""
    from .comparison import DEFAULT_MODELS
    from .comparison import compare as _compare

    return _compare(source, models or DEFAULT_MODELS, config=config, quiet=quiet, **options)  # None: the default


def robustness(run: Run | str | Path, source=None, split: str = "test", corruptions="all",
               severity: int | list | tuple = 3, seed: int = 0, save: bool = True) -> dict:
    """Accuracy on ``split`` under each corruption (data/corruptions.py) at each ``severity``
    (1..5), seeded: ``{"clean", "table": {corruption: {severity: accuracy}}, "mean", "relative_drop",
    ...}``, saved as evaluation-corruptions.json in the run (``save``)."""
    import time

    from .data.corruptions import SEVERITIES, corrupt, resolve

    names = resolve(corruptions)
    levels = [severity] if isinstance(severity, int) else list(severity)
    for s in levels:
        if s not in SEVERITIES or isinstance(s, bool):
            raise ConfigError(f"severity must be from 1 to 5, got {s!r}", "--severity", "use e.g. --severity 3")
    run = as_run(run)
    part = evaluation_split(run, source, split)
    x, y = np.asarray(part.x), part.labels
    t0 = time.perf_counter()
    clean = float((run.predict_proba(x).argmax(1) == y).mean())
    table: dict[str, dict[str, float]] = {}
    for name in names:
        table[name] = {str(s): float((run.predict_proba(corrupt(x, name, s, seed)).argmax(1) == y).mean())
                       for s in levels}
    mean = float(np.mean([a for row in table.values() for a in row.values()]))
    out = {"split": "all" if isinstance(source, (tuple, list)) else split, "n": int(len(y)), "seed": seed,
           "severities": levels, "clean": clean, "table": table, "mean": mean,
           "relative_drop": (clean - mean) / clean if clean else 0.0, "seconds": round(time.perf_counter() - t0, 1)}
    if save:
        out["saved_to"] = str(RunDir(run.path).save_corruptions(out))
    return out


def ood(run: Run | str | Path, source, split: str = "test", save: bool = True) -> dict:
    """How well the run tells its own kind of images (its ``split``) from another source's (all its
    images, at the run's size and colour mode): per score (energy, max_softmax; engine/ood.py) the
    AUROC, the FPR at 95% TPR and the accuracy on the kept images; saved as evaluation-ood.json."""
    from .engine.ood import SCORES, detection, scores

    run = as_run(run)
    part = evaluation_split(run, None, split)
    if isinstance(source, (tuple, list)) or _is_array(source):
        images = np.asarray(source[0] if isinstance(source, (tuple, list)) else source)
        where = "arrays"
        if images.shape[1:3] != tuple(run.image_size):
            raise DataError(f"images of {images.shape[1]}x{images.shape[2]} for a model of "
                            f"{run.image_size[0]}x{run.image_size[1]}", "ood", "resize them to the run's size")
    else:
        where = str(source)
        images = _other_images(run, where)
    binary = run.spec.head == "binary"
    logits = run.predict_logits(np.asarray(part.x))
    ins, outs = scores(logits, binary), scores(run.predict_logits(images), binary)
    right = ((logits[:, 0] > 0).astype(np.int64) if binary else logits.argmax(1)) == part.labels  # one pass
    result = {"split": split, "source": where, "in_images": int(len(part.x)), "out_images": int(len(images)),
              **{name: detection(ins[name], outs[name], right) for name in SCORES},
              "histogram": {name: {"in": ins[name].tolist(), "out": outs[name].tolist()} for name in SCORES}}
    if save:
        rd = RunDir(run.path)
        result["saved_to"] = str(rd.save_json(rd.OOD, {k: v for k, v in result.items() if k != "histogram"}))
    return result


def _other_images(run: Run, source: str) -> np.ndarray:
    """The images of another source at the run's size and colour mode: a folder of images (no
    class folders needed: unknowns have no labels; searched recursively), a glob, or any source
    train takes (digits, npz:FILE, ...), all its splits."""
    path = source.split(":", 1)[1] if source.startswith("folder:") else source
    if Path(path).is_dir() or any(ch in path for ch in "*?["):
        from .data.images import load_images
        from .prediction import collect_inputs

        return load_images(collect_inputs([path]), run.image_size, run.color_mode)[0]
    opts = _run_config(run).data_options()
    opts.image_size, opts.color_mode, opts.quiet, opts.class_names, opts.labels = \
        run.image_size, run.color_mode, True, None, "en"
    other = load_source(source, opts)
    return np.concatenate([np.asarray(s.x) for s in other.splits.values()])


def calibrate(run: Run | str | Path, source=None, split: str = "validation", method: str = "temperature") -> dict:
    """Fit temperature scaling for a run (one trained before calibration existed, or on other
    data): on its ``split`` (default validation; ``source``: other data, as evaluate takes it),
    saved as calibration.json and used by every later load. ``method="none"``: back to raw
    probabilities. Returns the record: temperature, and ECE / NLL before and after on the split
    (and on the test split when the run has one of its own)."""
    from .engine.calibration import fit_temperature, measures, raw_of, unfit_reason

    if method not in ("temperature", "none"):
        raise ConfigError(f"unknown calibration method {method!r}", "method", "use temperature or none")
    run = as_run(run)
    rd = RunDir(run.path)
    if method == "none":
        rd.save_calibration({"method": "none"})
        run.model.temperature = 1.0
        return {"method": "none"}
    before = run.model.temperature  # the raw probabilities are the run's, unscaled

    def raw(part: Split) -> np.ndarray:
        return raw_of(run.predict_proba(part.x), before)

    part = evaluation_split(run, source, split)
    probs, energy = run.predict_scored(part.x)  # one pass: the temperature's fit and the ood threshold's
    fit_on = raw_of(probs, before)
    t = fit_temperature(fit_on, part.labels)
    why = unfit_reason(len(part.labels), t)
    if why is not None:
        raise DataError(f"cannot calibrate on this split: {why}", str(run.path),
                        "fit on more held-out images (another split, or data: cnnlab calibrate RUN SOURCE)")
    where = "all" if isinstance(source, (tuple, list)) else split
    record: dict = {"method": "temperature", "temperature": t, "fitted_on": where,
                    "source": "arrays" if isinstance(source, (tuple, list)) else (source or run.data.get("source")),
                    where: measures(fit_on, part.labels, t)}
    if source is None and split != "test":
        try:
            test = evaluation_split(run, None, "test")
        except DataError:  # no test split of its own
            test = None
        if test is not None:
            record["test"] = measures(raw(test), test.labels, t)
    rd.save_calibration(record)
    run.model.temperature = t
    if source is None:  # the "unknown" threshold from the same held-out images (a run from before cnnlab kept one)
        from .engine.ood import fitted

        record["ood"] = fitted(energy, split)
        rd.save_json(RunDir.OOD_SCORE, record["ood"])
    return record


def label_issues(source: str = TrainConfig.source, *, config: str | Path | None = None, quiet: bool = True,
                 **options):
    """The images of ``source`` that are probably labelled wrong (``cnnlab check --label-issues``):
    out-of-fold probabilities of ``folds`` models (``model``, default fast), ranked by cleanlab.
    ``options``: the command's (``LabelIssueOptions``: folds, model, split, oof, issues_dir) and the
    folds' training keys (epochs, backbone, ...). Returns a LabelIssues: ``.rows`` (ranked), ``.pairs``,
    ``.out`` (label-issues.csv and oof.npy)."""
    import sys

    from .labelissues import LabelIssueOptions, find, fold_config, need_cleanlab
    from .options import checked, keys_of

    need_cleanlab()
    own = {a for k in keys_of(LabelIssueOptions).values() for a in (k.name, *k.option.other_names)}
    opts = checked(LabelIssueOptions, "cnnlab.label_issues", **{k: options.pop(k) for k in list(options) if k in own})
    cfg = fold_config(config, opts, {"source": source, "quiet": quiet, **options})
    return find(cfg, opts, say=(lambda line: None) if quiet else (lambda line: print(line, file=sys.stderr)))


def _is_array(x) -> bool:
    return isinstance(x, np.ndarray) or (hasattr(x, "detach") and hasattr(x, "shape"))  # NumPy or torch


def _run_config(run: Run) -> TrainConfig:
    return TrainConfig.from_stored(run.config)


def arrays_dataset(data, class_names: list[str] | None = None, where: str = "data", validation=None,
                   test=None) -> Dataset:
    """A Dataset from NumPy arrays as Keras users hold them: ``(x, y)``, or
    ``((x_train, y_train), (x_test, y_test))`` as ``keras.datasets.*.load_data()`` returns; plus
    ``validation`` and ``test`` pairs (Keras' validation_data). Images (N, H, W) or (N, H, W, C),
    uint8 or floats in [0, 1] (NumPy arrays or torch tensors); labels class indices or one-hot."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise DataError(f"expected (x, y) or ((x_train, y_train), (x_test, y_test)), got "
                        f"{describe_value(data)}", where, "pass a pair of arrays: images and labels")
    parts = {"train": data[0], "test": data[1]} if all(isinstance(d, (tuple, list)) for d in data) \
        else {"train": data}
    for split, extra, name in (("validation", validation, "validation_data"), ("test", test, "test_data")):
        if extra is None:
            continue
        if split in parts:
            raise ConfigError("the test split is given twice: in source and as test_data", name, "give it once")
        if not isinstance(extra, (tuple, list)) or len(extra) != 2:
            raise DataError(f"expected a pair (x, y), got {describe_value(extra)}", name,
                            f"pass {name}=(images, labels)")
        parts[split] = extra
    for split, part in parts.items():
        if not isinstance(part, (tuple, list)) or len(part) != 2:
            raise DataError(f"the {split} part is not a pair (x, y)", where, "pass (images, labels)")
    names = {"x": "images", "y": "labels"}
    parts = {split: (as_array(x, f"{where}, {split} images"), as_labels(y)) for split, (x, y) in parts.items()}
    class_names, splits = labeled_splits(parts, class_names, lambda split, xy: f"{where}, {split} {names[xy]}")
    return Dataset("arrays", list(class_names), splits, {"arrays": True, "label_form": label_form(parts)})


def _name_lookup(names: list[str]) -> dict[str, int]:
    """Loose keys of the run's class names (and of their built-in translations) -> class index."""
    from .data.builtin import IDX_SETS
    from .data.sources import class_key

    lookup = {}
    for i, n in enumerate(names):
        lookup[class_key(n)] = i
        for s in IDX_SETS.values():
            for lang in s.class_names.values():
                if n in lang:  # a built-in name: its translations match too
                    j = list(lang).index(n)
                    for other in s.class_names.values():
                        lookup.setdefault(class_key(other[j]), i)
    return lookup


def align_classes(ds: Dataset, run: Run, where: str) -> Dataset:
    """Labels renumbered to the run's classes, matched by name: another source's classes may be
    ordered differently, be a subset, or be the built-in names in another language. Unnamed
    classes ('0', '1', ...) are class indices."""
    from .data.sources import class_key

    src, names = ds.class_names, run.class_names
    if src == names:
        return ds
    if src == [str(i) for i in range(len(src))]:  # no names, only indices
        if len(src) > len(names):
            raise DataError(f"labels go up to {len(src) - 1} but the run has {len(names)} classes", where,
                            "evaluate on data with the run's classes")
        return Dataset(ds.source, list(names), ds.splits, dict(ds.info))
    lookup = _name_lookup(names)
    unknown = [n for n in src if class_key(n) not in lookup]
    if unknown:
        raise DataError(f"class(es) {', '.join(unknown[:5])} of this data are not among the run's classes "
                        f"({', '.join(names)})", where,
                        "name the classes as in training (folder names, classes.txt or --class-names)")
    mapping = np.asarray([lookup[class_key(n)] for n in src], np.int64)
    splits = {k: Split(s.x, None if s.y is None else mapping[s.y], s.ids) for k, s in ds.splits.items()}
    return Dataset(ds.source, list(names), splits, dict(ds.info))


def run_dataset(run: Run) -> Dataset:
    """The run's own data with its train / validation / test splits, as in training."""
    if run.dataset is not None:
        return run.dataset
    if run.data.get("source") is None and run.data.get("imported_from"):
        raise DataError("the run was imported from a Keras file without --data, so it has no data of its own",
                        str(run.path), "name the data: cnnlab evaluate RUN SOURCE (or import again with --data)")
    if run.data.get("source") == "arrays":
        raise DataError("the run was trained on arrays in memory, so its data cannot be loaded again",
                        str(run.path), "pass the data: cnnlab.evaluate(run, (x_test, y_test))")
    cfg = _run_config(run)
    cfg.quiet = True
    return load_data(cfg)


def evaluation_split(run: Run, source=None, split: str = "test") -> Split:
    """The images a run is evaluated on: its own data's split (checked to be the split it was
    trained against), another source's (classes matched by name), or arrays ``(x, y)``."""
    if split not in ("train", "validation", "test", "all"):
        raise DataError(f"unknown split {split!r}", "split", "use train, validation, test or all")
    if source is not None and not isinstance(source, (str, Path, tuple, list)):
        raise ArgumentTypeError(f"expected a source or arrays (x, y), got {describe_value(source)}", "source",
                                "pass a source name ('fashion-mnist', 'folder:PATH', ...) or a pair (x_test, y_test)")
    if isinstance(source, (tuple, list)):
        if len(source) == 2 and _is_array(source[0]):  # (x, y): one image without its batch axis too
            source = (model_batch(source[0], run.image_shape, "data, images"), as_labels(source[1]))
        ds = align_classes(arrays_dataset(source, where="data"), run, "data")
        split = "all"
    elif source is None:
        ds = run_dataset(run)
        recorded = run.data.get("fingerprints") or {}
        parts = list(ds.splits) if split == "all" else [split]
        for k in parts:
            if k in recorded and k in ds.splits and ds.splits[k].fingerprint() != recorded[k]:
                was = run.data.get("splits", {}).get(k)
                fix = ("the run was trained on a Dataset changed in memory (e.g. subsampled): pass the data, "
                       "cnnlab.evaluate(run, (x_test, y_test))" if run.data.get("in_memory") else
                       "the source's files changed since training; evaluate on it explicitly "
                       "(cnnlab evaluate RUN SOURCE) or train again")
                raise DataError(f"the {k} split loaded now ({len(ds.splits[k]):,} images) is not the one the run "
                                f"was trained against ({was if was is not None else '?'} images)",
                                run.data.get("source") or str(run.path), fix)
    else:
        cfg = _run_config(run)
        opts = cfg.data_options()
        opts.image_size, opts.color_mode, opts.quiet = run.image_size, run.color_mode, True
        # the other source's own class names (its folders, classes.txt, ...) are matched by name below
        opts.class_names, opts.labels = None, "en"
        ds = align_classes(load_source(str(source), opts), run, str(source))
        if split != "all":
            ds = prepare_splits(ds, cfg.val_split, cfg.test_split, cfg.seed)
    if split == "all":
        labeled = [s for s in ds.splits.values() if s.y is not None]
        return Split(np.concatenate([s.x for s in labeled]), np.concatenate([s.labels for s in labeled]))
    if split not in ds.splits:
        raise DataError(f"the data has no {split} split", source or run.data.get("source"),
                        f"use --split {' or '.join(ds.splits)} (or all)")
    return ds[split]


def evaluate(run: Run | str | Path, source=None, split: str = "test", save: bool = True) -> dict:
    """Loss, accuracy, classification report and confusion matrix; saved in the run directory
    (``ev["saved_to"]``). ``source``: None (the run's own data), a source string, or arrays
    ``(x, y)``."""
    run = as_run(run)
    part = evaluation_split(run, source, split)
    ev = evaluate_probs(run.predict_proba(part.x), part.labels, run.class_names)
    ev["split"] = "all" if isinstance(source, (tuple, list)) else split
    ev["source"] = "arrays" if isinstance(source, (tuple, list)) else (source or run.data.get("source"))
    if save:
        ev["saved_to"] = str(RunDir(run.path).save_evaluation(ev, source, split))
    return ev


def predict(run: Run | str | Path, inputs, top_k: int | None = None):
    """Probabilities (N, K) for an image array; for file paths / folders / globs, one dict per
    image with its predicted class and probabilities (numbers)."""
    from .data.images import printable
    from .prediction import collect_inputs, predict_paths, rows_for

    run = as_run(run)
    named = isinstance(inputs, (list, tuple)) and [isinstance(i, (str, Path)) for i in inputs]
    if _is_array(inputs) or (named and not any(named)):  # an array, or lists / arrays of pixels
        return run.predict_proba(inputs)
    if named and not all(named):
        raise ArgumentTypeError(f"expected image arrays or file paths, got {describe_value(inputs)} mixing "
                                f"{', '.join(sorted({type(i).__name__ for i in inputs}))}", "inputs",
                                "pass one image array (N, H, W[, C]), or a list of paths, folders or globs")
    if not isinstance(inputs, (str, Path, list, tuple)):
        raise ArgumentTypeError(f"expected images, got {describe_value(inputs)}", "inputs",
                                "pass an image array (N, H, W[, C]), a path, a folder, a glob or a list of them")
    items = [str(inputs)] if isinstance(inputs, (str, Path)) else [str(i) for i in inputs]
    if not items:
        raise DataError("no inputs (an empty list)", "inputs", "pass images, paths, folders or globs")
    paths = collect_inputs(items)
    probs = predict_paths(run, paths)
    return rows_for(run, [printable(p) for p in paths], probs, top_k)[1]
