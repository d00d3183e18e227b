"""``cnnlab import-keras``: a Keras model file becomes an ordinary run directory (spec,
safetensors weights, classes, preprocessing, config), so every command works on it."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from .config import TrainConfig
from .data.preprocess import Preprocessing
from .errors import SpecError
from .runs import Run, RunDir, environment, load_run

IMPORT_SCALES = ("255", "127.5", "none")


def default_scale(spec) -> str:
    """A model that starts with Rescaling or Normalization (Keras Applications' EfficientNet and
    ConvNeXt) takes raw pixels; otherwise the notebooks' ``/ 255.0``."""
    return "none" if spec.layers[0].type in ("Rescaling", "Normalization") else "255"


def import_keras(path: str | Path, *, data: str | None = None, class_names: str | None = None,
                 scale: str | None = None, name: str | None = None, runs_dir: str | Path = "runs",
                 labels: str = "en", data_dir: str | None = None, out: str | Path | None = None,
                 progress=print) -> Run:
    """Turn a ``.keras`` or legacy ``.h5`` model into a run directory and return the loaded run.

    ``scale``: what the notebook did to the pixels before ``fit`` (255: ``x / 255.0``; 127.5: to
    [-1, 1]; none: raw values); default none when the model starts with Rescaling or Normalization,
    else 255.
    ``data``: the source the model belongs to (its classes, and evaluate / report without naming
    it again); ``class_names``: a file with one per line, or fashion-mnist / mnist; ``out``: the
    run directory (default ``runs_dir/<timestamp>-<name>``)."""
    from .models import build_module, check_fits
    from .models.kerasfiles import parse_keras_spec, read_keras, torch_state
    from .training import load_data

    t0 = time.perf_counter()
    kf = read_keras(path)
    spec = parse_keras_spec(kf, name)
    model = build_module(spec)
    model.load_state_dict(torch_state(spec, model.state_dict(), kf.weights, str(path)))
    model.eval()
    ours = kf.cnnlab or {}  # a file cnnlab exported: its scaling and classes come back as they were
    if "preprocessing" in ours and scale is not None and scale != ours["preprocessing"].get("mode"):
        raise SpecError(f"the file carries its own pixel scaling ({ours['preprocessing'].get('mode')}, exported by "
                        f"cnnlab); --scale {scale} would change what the model computes", "--scale",
                        "leave out --scale: the exported scaling is restored")
    if scale is not None and scale != "none" and spec.layers[0].type == "Rescaling":
        from .errors import warn

        warn(f"the model starts with a Rescaling layer, and --scale {scale} scales the pixels before it too",
             "--scale", "leave out --scale (or --scale none) unless the notebook scaled twice")
    mode = scale or (ours["preprocessing"]["mode"] if "preprocessing" in ours else default_scale(spec))
    if mode not in IMPORT_SCALES and "preprocessing" not in ours:
        raise SpecError(f"unknown scale '{mode}'", "--scale", f"use one of {', '.join(IMPORT_SCALES)}")
    h, w = spec.input_shape[:2]
    c = spec.input_shape[2] if len(spec.input_shape) == 3 else 1
    cfg = TrainConfig(source=data or "keras", model=spec.name, image_size=[h, w],
                      color_mode="rgb" if c == 3 else "grayscale", scale=mode, class_names=class_names,
                      labels=labels, data_dir=data_dir, epochs=0, name=name)
    if "preprocessing" in ours and scale is None:
        prep = Preprocessing.from_dict(ours["preprocessing"])
    else:
        prep = Preprocessing.fit(mode, np.zeros((1, 1, 1, c), np.uint8))  # fixed scalings: no statistics
    ds = None
    if data is not None:
        cfg.quiet = True
        ds = load_data(cfg)
        check_fits(spec, ds.input_shape, ds.num_classes, str(path))
        names = list(ds.class_names)
    elif class_names is None and ours.get("class_names"):
        names = list(ours["class_names"])
    else:
        names = _class_names(cfg, spec)
    if data is None and labels != "en":  # translate the names, or say why not (never ignore --labels)
        from .data.dataset import Dataset
        from .data.sources import apply_label_language

        named = Dataset("keras", list(names), {})
        apply_label_language(named, labels, "--labels")
        names = named.class_names
    if len(names) != spec.num_classes:
        raise SpecError(f"{len(names)} class names for a model with {spec.num_classes} classes", "--class-names",
                        f"give {spec.num_classes} names, one per line")
    rd = RunDir.create_at(out) if out is not None else RunDir.create(runs_dir, name or f"{spec.name}-keras")
    try:
        metrics = _write(rd, kf, path, cfg, spec, model, prep, names, ds, mode, t0)
    except BaseException:
        shutil.rmtree(rd.path, ignore_errors=True)  # no half-written run is left behind
        raise
    run = replace(load_run(rd.path), dataset=ds)
    progress(f"imported {spec.name}: {spec.total_params:,} parameters, {len(spec.layers)} layers, classes "
             f"{', '.join(names[:10])}{', ...' if len(names) > 10 else ''}; pixels scaled: {mode}")
    if ds is not None:
        split = metrics["evaluated_on"]
        progress(f"{split} accuracy {metrics[split]['accuracy']:.4f} on {len(ds[split]):,} images of {data}")
    return run


def _write(rd: RunDir, kf, path, cfg: TrainConfig, spec, model, prep: Preprocessing, names: list[str], ds,
           mode: str, t0: float) -> dict:
    """The run's files; with data, its evaluation on the test (else validation) split."""
    from .engine.inference import predict_proba
    from .evaluation import evaluate_probs
    from .models.stats import weight_stats
    from .training import data_record

    h, w = spec.input_shape[:2]
    record = data_record(ds, False) if ds is not None else {
        "source": None, "image_size": [h, w], "channels": 3 if cfg.color_mode == "rgb" else 1,
        "color_mode": cfg.color_mode}
    rd.start(config=cfg.to_dict(), spec=spec.to_dict(), preprocessing=prep.to_dict(),
             classes={"class_names": names, "labels": cfg.labels}, weights_init=weight_stats(model),
             data={**record, "imported_from": str(path)})
    rd.save_model(model.state_dict())
    metrics = {"status": "imported", "stop_reason": f"imported from {Path(path).name}", "epochs_run": 0,
               "imported": {"file": str(path), "format": "keras" if Path(path).suffix == ".keras" else "h5",
                            "keras_version": kf.keras_version, "scale": mode}}
    if ds is not None:
        split = next(k for k in ("test", "validation", "train") if k in ds.splits)  # as the report shows
        part = ds[split]
        probs = predict_proba(model, prep, part.x, tuple(spec.input_shape[:2]), cfg.color_mode, "none")
        ev = evaluate_probs(probs, part.y, names)
        rd.save_evaluation({"split": split, **ev})
        metrics[split] = {"loss": ev["loss"], "accuracy": ev["accuracy"], "n": ev["n"]}
        metrics["evaluated_on"] = split
    metrics["wall_time_s"] = round(time.perf_counter() - t0, 3)
    metrics["environment"] = {**environment("cpu", 0, cfg.seed), "pid": os.getpid()}
    rd.finish(metrics)
    rd.mark_finished("completed", "imported")
    return metrics


def _class_names(cfg: TrainConfig, spec) -> list[str]:
    from .data.sources import resolve_class_names

    names = resolve_class_names(cfg.data_options())
    if names is not None:
        return names
    return [str(i) for i in range(spec.num_classes)]
