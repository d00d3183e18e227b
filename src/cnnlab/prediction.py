"""Predictions for arrays, image files, folders, globs and CSV templates."""

from __future__ import annotations

import csv
import glob
import io
from pathlib import Path

import numpy as np

from . import atomic
from .data.files import read_image_table, resolve_image_paths
from .data.images import is_image_file, load_images
from .errors import DataError, MissingDataError
from .models.backbones import feature_layer


def collect_inputs(inputs: list[str]) -> list[Path]:
    """Image files, folders (searched recursively) and glob patterns, in a stable order."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if is_image_file(f))
            if not found:
                raise DataError("no images in folder", str(p), "give a folder with image files")
            out += found
        elif p.is_file():
            out.append(p)
        elif any(ch in item for ch in "*?["):
            found = sorted(Path(f) for f in glob.glob(item, recursive=True) if is_image_file(Path(f)))
            if not found:
                raise DataError("no images match the pattern", item, "check the pattern")
            out += found
        else:
            raise MissingDataError("input not found", item, "give image files, folders, globs or a .csv")
    return out


def predict_paths(run, paths: list[Path], batch_size: int = 256, keep: float | None = None):
    """Probabilities (N, K) of the images at ``paths``; with ``keep`` (the share of the run's
    held-out images an image must look as familiar as: ``predict --reject``) also the energy score
    of each and whether it is "unknown": (probs, scores, unknown)."""
    x, _, _ = load_images(paths, run.image_size, run.color_mode)
    if keep is None:
        return run.predict_proba(x, batch_size)
    limit = run.ood_threshold(keep)
    probs, energy = run.predict_scored(x, batch_size)
    return probs, energy, energy < limit


def rows_for(run, names: list[str], probs: np.ndarray, top_k: int | None,
             rejected: tuple | None = None) -> tuple[list[str], list[dict]]:
    """The CSV rows of predictions; ``rejected``: (scores, unknown) adds the columns ``unknown``
    and ``ood_score`` (the energy: higher is more like the training data)."""
    classes = run.class_names
    cols = ["input", "class_index", "class_name"] + (["unknown", "ood_score"] if rejected is not None else [])
    k = min(top_k or 0, len(classes))
    cols += [c for i in range(1, k + 1) for c in (f"top{i}_class", f"top{i}_prob")]
    cols += [f"prob_{c}" for c in classes]
    rows: list[dict] = []
    order = np.argsort(-probs, axis=1)
    for name, p, o in zip(names, probs, order):
        r: dict = {"input": name, "class_index": int(o[0]), "class_name": classes[o[0]]}
        if rejected is not None:
            r["unknown"] = bool(rejected[1][len(rows)])
            r["ood_score"] = float(rejected[0][len(rows)])
        for i in range(k):
            r[f"top{i + 1}_class"] = classes[o[i]]
            r[f"top{i + 1}_prob"] = float(p[o[i]])
        r.update({f"prob_{c}": float(v) for c, v in zip(classes, p)})
        rows.append(r)
    return cols, rows


def predict_template(run, csv_path: str, image_column: str | None = None,
                     image_pattern: str | None = None, label_column: str | None = None,
                     top_k: int | None = None, submission: bool = False) -> tuple[list[str], list[dict]]:
    """Fill a CSV template's label column with predicted class indices (a submission file).

    The table says where its images are: a column of paths, or ids with ``image_pattern``. The
    run's training pattern is never assumed (it points at the training images)."""
    p = Path(csv_path)
    columns, table, label_col, _, ids = read_image_table(p, label_column, image_column)
    label_col = label_col or run.data.get("label_column") or "label"
    train_pattern = run.data.get("image_pattern")  # an example only: it names the *training* images
    example = train_pattern.replace("train", "test") if train_pattern else "images/test/{}.png"
    paths = resolve_image_paths(ids, p, image_pattern, example=example)
    probs = predict_paths(run, paths)
    pred = probs.argmax(1)
    out_cols = columns + ([label_col] if label_col not in columns else [])
    rows = [dict(r, **{label_col: int(c)}) for r, c in zip(table, pred)]
    if submission:
        return out_cols, rows
    extra_cols, extra = rows_for(run, ids, probs, top_k)
    extra_cols = [c for c in extra_cols if c not in ("input", "class_index")]
    return out_cols + extra_cols, [dict(r, **{k: e[k] for k in extra_cols}) for r, e in zip(rows, extra)]


def format_csv(columns: list[str], rows: list[dict]) -> str:
    """Rows as CSV text, probabilities with 6 decimals."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    return buf.getvalue()


def write_csv(path: str | Path, columns: list[str], rows: list[dict]) -> Path:
    return atomic.write_text(path, format_csv(columns, rows))


# ----------------------------------------------------------------------------- features (cnnlab embed)

def embed_array(model, spec, prep, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """float32 (N, D) features of uint8 (N, H, W, C) images at :func:`feature_layer`."""
    from .engine.featurecache import pooled_features

    return pooled_features(model, feature_layer(spec), prep, x, batch_size)


def backbone_embedder(text: str, weights: str | None, image_size: tuple[int, int], quiet: bool = False):
    """(model, spec, preprocessing) of a backbone alone (``NAME[:WIDTH]``) at ``image_size``, with
    ``weights`` (imagenet, a URL or a file) loaded; its own scaling (MobileNetV2: [-1, 1])."""
    h, w = image_size
    return _backbone_model(text, (h, w, 3), weights, quiet, include_top=False)[:3]


def _backbone_model(text: str, shape: tuple, weights: str | None, quiet: bool, include_top: bool):
    """(model, spec, preprocessing, weights file): the backbone built for ``shape`` with ``weights``
    loaded (none: random; the file is then None), scaled as its weights expect."""
    from .data.preprocess import Preprocessing
    from .engine.progress import Progress
    from .models import build_module, parse_spec
    from .models.backbones import backbone_spec, parse_backbone
    from .models.init import pretrained_weights
    from .models.pretrained import spec_flag

    spec = parse_spec(backbone_spec(text, shape, 2, pretrained=spec_flag(weights), include_top=include_top))
    model = build_module(spec).eval()
    source = None
    if weights is not None:
        source = pretrained_weights(model, spec, text, weights, shape, Progress(1, 1, True).message, quiet,
                                    include_top)["source"]
    mode = parse_backbone(text)[0].settings.get("scale", "255")
    return model, spec, Preprocessing.fit(mode, np.zeros((1, 1, 1, 3), np.uint8)), source


def write_features(path: str | Path, names: list[str], features: np.ndarray) -> Path:
    """``.npy``: the (N, D) float32 array; ``.csv``: one row per input, columns input, f0..f{D-1}."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return atomic.write_npy(path, features.astype(np.float32))
    cols = ["input"] + [f"f{j}" for j in range(features.shape[1])]
    rows = [{"input": n, **{f"f{j}": float(v) for j, v in enumerate(row)}} for n, row in zip(names, features)]
    return write_csv(path, cols, rows)


def imagenet_run(text: str, quiet: bool = False):
    """``imagenet:NAME[:WIDTH]``: Keras Applications' ImageNet classifier (include_top=True) as a
    Run: its weights and the class index file (imagenet_utils' imagenet_class_index.json) fetched
    and checked like any weights, 224 x 224 RGB input, the backbone's own scaling."""
    import json

    from .models.pretrained import CLASS_INDEX, get_file
    from .runs import Run

    name = text.partition(":")[2]
    model, spec, prep, source = _backbone_model(name, (224, 224, 3), "imagenet", quiet, include_top=True)
    index_path = get_file(CLASS_INDEX, quiet)
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        names = [str(index[str(i)][1]) for i in range(1000)]
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise DataError(f"the ImageNet class index is not Keras' ({type(e).__name__})", str(index_path),
                        "delete it; the next use fetches it again") from None
    return Run(Path(source), spec, model, prep, names,
               {"image_size": [224, 224], "channels": 3, "color_mode": "rgb"}, {"source": text})
