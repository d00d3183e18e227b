"""MODEL_CARD.md and metadata.json: what an exported model is, written beside it by every export.

The card says what a person deciding whether to use the model needs, from the run's own records:
the architecture and its parameter count, the data (source, split sizes and fingerprints), the
classes, the training recipe, the test metrics with the per-class table and the most confused
pairs, the calibration and the "unknown" threshold, the parity of every export in the folder
(export-check.json), the command that reproduces the run and the software versions. metadata.json
holds the same for machines (the web export's page reads its classes and threshold there).
"""

from __future__ import annotations

import json
from pathlib import Path

from . import atomic
from .parity import line_of, records
from .runs import Run, RunDir

CARD = "MODEL_CARD.md"
METADATA = "metadata.json"
RECIPE_KEYS = ("model", "backbone", "weights", "epochs", "batch_size", "optimizer", "lr", "schedule", "weight_decay",
               "label_smoothing", "augment", "rotation_range", "width_shift_range", "height_shift_range",
               "horizontal_flip", "zoom_range", "early_stopping", "patience", "tta", "calibration", "precision",
               "recipe", "seed", "val_split", "scale")


def _versions(run: Run) -> dict:
    import platform

    from .version import __version__

    trained = {k: v for k, v in (run.metrics.get("environment") or {}).items()
               if k in ("cnnlab", "python", "torch", "numpy", "pillow", "scikit_learn", "device", "precision")}
    from importlib.metadata import PackageNotFoundError, version

    now = {"cnnlab": __version__, "python": platform.python_version()}
    for name in ("torch", "onnx", "onnxruntime", "keras"):  # read from the installed metadata: nothing imported
        try:
            now[name] = version(name)
        except PackageNotFoundError:  # not installed: not part of this export
            pass
    return {"trained_with": trained, "exported_with": now}


def _reproduce(run: Run) -> dict:
    cmd = (run.metrics.get("environment") or {}).get("command")
    line = None
    if isinstance(cmd, str) and " train " in f" {cmd} ":
        line = "cnnlab " + cmd[cmd.index("train"):]
    return {"config": f"cnnlab train --config {run.path / 'config.yaml'}", "as_run": line}


def metadata(run: Run, folder: Path) -> dict:
    """Everything the card says, as a dict."""
    data, spec = run.data, run.spec
    evaluation = RunDir(run.path).read_optional(RunDir.EVALUATION) or {}
    calibration = run.metrics.get("calibration") or {}
    ood = None
    if run.ood:
        ood = {"score": run.ood.get("score", "energy"), "fitted_on": run.ood.get("fitted_on"),
               "threshold_keep_95": run.ood_threshold(0.95), "percentiles": run.ood["percentiles"]}
    return {
        "run_id": run.path.name, "model": spec.name, "layers": len(spec.layers), "params": spec.total_params,
        "trainable_params": spec.trainable_params, "image_size": list(run.image_size), "color_mode": run.color_mode,
        "input": "uint8 images (N, H, W, C), pixel values 0..255; the scaling is inside the model",
        "class_names": run.class_names,
        "data": {"source": data.get("source"), "splits": data.get("splits"), "fingerprints": data.get("fingerprints"),
                 "class_counts": data.get("class_counts")},
        "recipe": {k: run.config[k] for k in RECIPE_KEYS if run.config.get(k) is not None},
        "test": {k: evaluation.get(k) for k in ("accuracy", "loss", "n", "classification_report", "most_confused")
                 if k in evaluation} or run.metrics.get("test"),
        "calibration": calibration or None, "unknown": ood,
        "parity": records(folder), "reproduce": _reproduce(run), "versions": _versions(run)}


def _table(rows: list[list], head: list[str]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + \
        ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def render(meta: dict, summary: str) -> str:
    """The card's Markdown."""
    d = meta["data"]
    lines = [f"# Model card: {meta['model']} ({meta['run_id']})", "",
             "## Model", "",
             f"- {meta['model']}: {meta['layers']} layers, {meta['params']:,} parameters "
             f"({meta['trainable_params']:,} trainable)",
             f"- Input: {meta['image_size'][0]}x{meta['image_size'][1]} {meta['color_mode']} images: {meta['input']}",
             f"- Output: the probabilities of {len(meta['class_names'])} classes, and an ood score "
             "(higher is more like the training data)", "", "```", summary.rstrip(), "```", "",
             "## Data", "", f"- Source: {d['source']}"]
    if d.get("splits"):
        lines.append("- Splits: " + ", ".join(f"{k} {v:,}" for k, v in d["splits"].items()))
    if d.get("fingerprints"):
        lines.append("- Split fingerprints (sha256 of the images and labels): "
                     + ", ".join(f"{k} `{v}`" for k, v in d["fingerprints"].items()))
    counts = (d.get("class_counts") or {}).get("train") or [""] * len(meta["class_names"])
    lines += ["", "## Classes", ""] + _table([[i, n, c] for i, (n, c) in enumerate(zip(meta["class_names"], counts))],
                                             ["index", "class", "training images"])
    lines += ["", "## Training recipe", ""] + [f"- {k}: {v}" for k, v in meta["recipe"].items()]
    lines += ["", "## Test results", ""] + _test_lines(meta.get("test") or {})
    lines += ["", "## Calibration and \"unknown\"", ""] + _trust_lines(meta)
    lines += ["", "## Export parity", ""]
    for name, p in meta["parity"].items():
        p = p if isinstance(p, dict) else {}
        speeds = ", ".join(f"{k} {v:,.0f} images/s" for k, v in (p.get("images_per_s") or {}).items()
                           if isinstance(v, (int, float)))
        lines.append(f"- {name} ({p.get('runtime')}, {p.get('split')} split, against "
                     f"{p.get('against', 'cnnlab predict')}): {line_of(p)}; {speeds}")
    r = meta["reproduce"]
    lines += ["", "## Reproduce", "", "```", r["config"]] + ([r["as_run"]] if r["as_run"] else []) + ["```"]
    v = meta["versions"]
    lines += ["", "## Software", "",
              "- Trained with: " + ", ".join(f"{k} {x}" for k, x in v["trained_with"].items()),
              "- Exported with: " + ", ".join(f"{k} {x}" for k, x in v["exported_with"].items()), ""]
    return "\n".join(lines)


def _test_lines(test: dict) -> list[str]:
    if not test:
        return ["The run has no test split of its own."]
    lines = [f"Accuracy {test['accuracy']:.4f} on {test.get('n', 0):,} images (loss {test.get('loss', 0):.4f})."]
    report = test.get("classification_report") or {}
    rows = [[name, f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1-score']:.3f}", int(r["support"])]
            for name, r in report.items() if isinstance(r, dict) and "support" in r and name not in
            ("macro avg", "weighted avg")]
    if rows:
        lines += [""] + _table(rows, ["class", "precision", "recall", "f1", "images"])
    pairs = test.get("most_confused") or []
    if pairs:
        lines += ["", "Most confused (actual -> predicted: images):", ""]
        lines += [f"- {p.get('actual')} -> {p.get('predicted')}: {p.get('count')}" for p in pairs[:5]]
    return lines


def _trust_lines(meta: dict) -> list[str]:
    cal, ood = meta.get("calibration") or {}, meta.get("unknown")
    lines = []
    if cal.get("method") == "temperature":
        t = cal.get("test") or {}
        lines.append(f"- Temperature {cal['temperature']:.4f} (fitted on {cal.get('fitted_on')})"
                     + (f": test ECE {t['ece_raw']:.4f} -> {t['ece']:.4f}, NLL {t['nll_raw']:.4f} -> {t['nll']:.4f}"
                        if t else ""))
    else:
        lines.append("- Not calibrated: the probabilities are the network's own")
    lines.append(f"- Unknown below ood score {ood['threshold_keep_95']:.4f} (keeps 95% of the {ood['fitted_on']} "
                 "images)" if ood else "- No \"unknown\" threshold")
    return lines


def write(run: Run, folder: Path) -> tuple[Path, Path]:
    """MODEL_CARD.md and metadata.json in ``folder`` (after export-check.json is written there)."""
    meta = metadata(run, folder)
    card = atomic.write_text(folder / CARD, render(meta, run.spec.summary()))
    data = atomic.write_text(folder / METADATA, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return card, data
