"""``cnnlab import-keras``: a Keras model file becomes an ordinary run directory (spec,
safetensors weights, classes, preprocessing, config), so every command works on it."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import TrainConfig
from .data.preprocess import Preprocessing
from .errors import SpecError
from .options import Choice, option

if TYPE_CHECKING:  # runs brings torch: imported when a file is imported, not for --help
    from .runs import Run, RunDir

IMPORT_SCALES = ("255", "127.5", "none")


def default_scale(spec) -> str:
    """A model that starts with Rescaling or Normalization (Keras Applications' EfficientNet and
    ConvNeXt) takes raw pixels; otherwise the notebooks' ``/ 255.0``."""
    return "none" if spec.layers[0].type in ("Rescaling", "Normalization") else "255"


@dataclass
class ImportOptions:
    """What ``cnnlab import-keras`` and ``cnnlab.import_keras`` take besides the file, declared
    once (cnnlab.options): the command's options and the API's keywords are checked from these."""

    data: str | None = option(None, "the data the model was trained on (e.g. fashion-mnist, a folder): its class "
                              "names, and the split evaluate and report use", metavar="SOURCE")
    class_names: str | None = option(None, "class names: a file with one per line, or fashion-mnist / mnist",
                                     metavar="FILE", default_text="the data's, else 0, 1, 2, ...")
    labels: str = option("en", "class-name language of built-in sets", Choice(("en", "ko")))
    scale: str | None = option(None, "what the notebook did to pixels before fit: 255 (x / 255.0), 127.5 (to "
                               "[-1, 1]) or none", Choice(IMPORT_SCALES),
                               default_text="none when the model starts with Rescaling or Normalization, else 255")
    name: str | None = option(None, "the run's name", default_text="the model's name")
    data_dir: str | None = option(None, "where built-in data sets are looked for")
    runs_dir: str | Path = option("runs", "where the run directory is made")
    out: str | Path | None = option(None, "the run directory itself (new or empty)", metavar="DIR",
                                    default_text="RUNS_DIR/<timestamp>-<name>")


@dataclass
class _Imported:
    """A Keras file read and rebuilt: what its run directory is written from."""

    kf: Any
    path: str | Path
    spec: Any
    model: Any
    mode: str
    t0: float


def import_keras(path: str | Path, *, progress=print, **options) -> Run:
    """Turn a ``.keras`` or legacy ``.h5`` model into a run directory and return the loaded run.

    ``options`` (``ImportOptions``, as the command's): ``scale``: what the notebook did to the
    pixels before ``fit`` (255: ``x / 255.0``; 127.5: to [-1, 1]; none: raw values); default none
    when the model starts with Rescaling or Normalization, else 255.
    ``data``: the source the model belongs to (its classes, and evaluate / report without naming
    it again); ``class_names``: a file with one per line, or fashion-mnist / mnist; ``labels``,
    ``name``, ``data_dir``, ``runs_dir``; ``out``: the run directory (default
    ``runs_dir/<timestamp>-<name>``)."""
    from .options import checked
    from .runs import RunDir, load_run

    o = checked(ImportOptions, "cnnlab.import_keras", **options)
    data, class_names, scale, name, labels = o.data, o.class_names, o.scale, o.name, o.labels
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
                      labels=labels, data_dir=o.data_dir, epochs=0, name=name)
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
    rd = RunDir.create_at(o.out) if o.out is not None else RunDir.create(o.runs_dir, name or f"{spec.name}-keras")
    try:
        metrics = _write(rd, _Imported(kf, path, spec, model, mode, t0), cfg, prep, names, ds)
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


def _write(rd: RunDir, imp: _Imported, cfg: TrainConfig, prep: Preprocessing, names: list[str], ds) -> dict:
    """The run's files; with data, its evaluation on the test (else validation) split."""
    from .engine.inference import predict_proba
    from .evaluation import evaluate_probs
    from .models.stats import weight_stats
    from .runs import environment
    from .training import data_record

    kf, path, spec, model, mode = imp.kf, imp.path, imp.spec, imp.model, imp.mode
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
    metrics["wall_time_s"] = round(time.perf_counter() - imp.t0, 3)
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
