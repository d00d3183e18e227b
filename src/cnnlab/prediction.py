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


def predict_paths(run, paths: list[Path], batch_size: int = 256) -> np.ndarray:
    x, _, _ = load_images(paths, run.image_size, run.color_mode)
    return run.predict_proba(x, batch_size)


def rows_for(run, names: list[str], probs: np.ndarray, top_k: int | None) -> tuple[list[str], list[dict]]:
    classes = run.class_names
    cols = ["input", "class_index", "class_name"]
    k = min(top_k or 0, len(classes))
    cols += [c for i in range(1, k + 1) for c in (f"top{i}_class", f"top{i}_prob")]
    cols += [f"prob_{c}" for c in classes]
    rows = []
    order = np.argsort(-probs, axis=1)
    for name, p, o in zip(names, probs, order):
        r = {"input": name, "class_index": int(o[0]), "class_name": classes[o[0]]}
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
