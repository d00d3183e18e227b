"""Users' own images: class folders, CSV tables and NumPy .npz files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import Dataset, Split, as_uint8_images, check_labels
from .images import is_image_file, load_images

SPLIT_DIRS = {"train": ("train", "training"), "validation": ("validation", "val", "valid"),
              "test": ("test", "testing")}
LABEL_COLUMNS = ("label", "class", "target", "y", "category")
IMAGE_COLUMNS = ("image", "path", "file", "filename", "file_name", "image_path", "id")


def read_class_names(spec: str) -> list[str]:
    """Class names from a file: one per line, or a JSON list."""
    path = Path(spec)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"cannot read class names: {e.strerror}", str(path),
                        "give a text file with one class name per line") from None
    if text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON: {e.msg} at line {e.lineno}", str(path),
                            "write a JSON list of strings") from None
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) < 2 or not all(isinstance(n, str) for n in names):
        raise DataError("need at least two class names", str(path), "one class name per line")
    return names


# ---------------------------------------------------------------- folders

def _class_dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if is_image_file(p))


def load_folder(path: str, image_size=None, color_mode: str = "auto") -> Dataset:
    """``root/<class>/*.png`` or ``root/{train,validation,test}/<class>/*.png``."""
    root = Path(path)
    if not root.is_dir():
        raise DataError("folder not found", str(root), "give a folder with one sub-folder per class")
    subdirs = {d.name.lower(): d for d in _class_dirs(root)}
    layout = {}
    for split, names in SPLIT_DIRS.items():
        for n in names:
            if n in subdirs:
                layout[split] = subdirs[n]
                break
    if "train" not in layout:
        layout = {"train": root}
    classes = [d.name for d in _class_dirs(layout["train"]) if _images_in(d)]
    if not classes:
        raise DataError("no class sub-folders with images", str(layout["train"]),
                        "put each class's images in a sub-folder named after the class")
    if len(classes) == 1:
        raise DataError(f"only one class ('{classes[0]}') found", str(layout["train"]),
                        "a classifier needs at least two class sub-folders")
    files: dict[str, tuple[list[Path], list[int]]] = {}
    for split, folder in layout.items():
        paths, labels = [], []
        for d in _class_dirs(folder):
            imgs = _images_in(d)
            if not imgs:
                continue
            if d.name not in classes:
                raise DataError(f"class folder '{d.name}' is not among the training classes",
                                str(d), f"use only {', '.join(classes)}")
            paths += imgs
            labels += [classes.index(d.name)] * len(imgs)
        if not paths:
            raise DataError("no images", str(folder), "add images or remove the folder")
        files[split] = (paths, labels)
    x, size, mode = load_images(files["train"][0], image_size, color_mode)
    splits = {"train": Split(x, np.asarray(files["train"][1], np.int64),
                             [str(p.relative_to(root)) for p in files["train"][0]])}
    for split in ("validation", "test"):
        if split in files:
            xs, _, _ = load_images(files[split][0], size, mode)
            splits[split] = Split(xs, np.asarray(files[split][1], np.int64),
                                  [str(p.relative_to(root)) for p in files[split][0]])
    return Dataset(f"folder:{path}", classes, splits,
                   {"folder": str(root), "image_size": list(size), "color_mode": mode})


# ---------------------------------------------------------------- CSV tables

def read_table(path: Path) -> tuple[list[str], list[dict]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            return list(reader.fieldnames or []), rows
    except OSError as e:
        raise DataError(f"cannot read CSV: {e.strerror}", str(path), "check the path") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot parse CSV: {e}", str(path), "save it as UTF-8 CSV") from None


def pick_column(columns: list[str], wanted: str | None, candidates, path: Path,
                role: str, flag: str) -> str | None:
    if wanted:
        if wanted not in columns:
            raise DataError(f"no {role} column '{wanted}'", str(path),
                            f"use one of its columns ({', '.join(columns)}) with {flag}")
        return wanted
    lower = {c.lower(): c for c in columns}
    for c in candidates:
        if c in lower:
            return lower[c]
    return None


def resolve_image_paths(values: list[str], path: Path, pattern: str | None) -> list[Path]:
    """Each value is a path, or an id put into ``pattern`` such as ``images/train/{}.png``,
    relative to the CSV file's folder."""
    base = path.parent
    out = []
    for v in values:
        name = pattern.replace("{id}", "{}").format(v) if pattern else v
        p = Path(name)
        out.append(p if p.is_absolute() else base / p)
    missing = [p for p in out if not p.is_file()]
    if missing:
        hint = ("pass --image-pattern with the file name template, e.g. 'images/train/{}.png'"
                if not pattern else "check --image-pattern and the images folder")
        raise DataError(f"{len(missing)} of {len(out)} images listed in the CSV are missing, "
                        f"first {missing[0]}", str(path), hint)
    return out


def load_csv(path: str, label_column: str | None = None, image_column: str | None = None,
             image_pattern: str | None = None, image_size=None, color_mode: str = "auto",
             class_names: list[str] | None = None, require_labels: bool = True) -> Dataset:
    """A table with an image column (path or id) and a label column (index or class name)."""
    p = Path(path)
    columns, rows = read_table(p)
    if not rows:
        raise DataError("CSV has no rows", str(p), "add one row per image")
    label_col = pick_column(columns, label_column, LABEL_COLUMNS, p, "label", "--label-column")
    img_col = pick_column(columns, image_column, IMAGE_COLUMNS, p, "image", "--image-column")
    if img_col is None:
        img_col = columns[0]
    if label_col is None and require_labels:
        raise DataError("CSV has no label column", str(p),
                        f"name it with --label-column (columns: {', '.join(columns)})")
    ids = [r[img_col] for r in rows]
    paths = resolve_image_paths(ids, p, image_pattern)
    x, size, mode = load_images(paths, image_size, color_mode)
    info = {"csv": str(p), "image_column": img_col, "label_column": label_col,
            "image_pattern": image_pattern, "image_size": list(size), "color_mode": mode}
    raw = [(r.get(label_col) or "").strip() for r in rows] if label_col else []
    if not raw or not any(raw):  # unlabeled: a prediction template
        if require_labels:
            raise DataError(f"label column '{label_col}' is empty", str(p), "fill in the labels")
        return Dataset(f"csv:{path}", class_names or [], {"test": Split(x, None, ids)}, info)
    if all(v.lstrip("-").isdigit() for v in raw):
        y = np.asarray([int(v) for v in raw], np.int64)
        names = class_names or [str(i) for i in range(max(int(y.max()) + 1, 2))]
    else:
        names = class_names or sorted(set(raw))
        unknown = sorted(set(raw) - set(names))
        if unknown:
            raise DataError(f"label '{unknown[0]}' is not a known class", str(p),
                            f"use one of {', '.join(names)}")
        y = np.asarray([names.index(v) for v in raw], np.int64)
    y = check_labels(y, len(names), f"{p}, column '{label_col}'")
    return Dataset(f"csv:{path}", names, {"train": Split(x, y, ids)}, info)


# ---------------------------------------------------------------- npz

def load_npz(path: str, class_names: list[str] | None = None) -> Dataset:
    p = Path(path)
    try:
        npz = np.load(p, allow_pickle=False)
        keys = set(npz.files)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read .npz: {e}", str(p),
                        "save it with np.savez(path, x_train=..., y_train=...)") from None
    if not {"x_train", "y_train"} <= keys:
        raise DataError(f"missing arrays (found {', '.join(sorted(keys)) or 'none'})", str(p),
                        "save x_train and y_train (x_test, y_test optional)")
    names = class_names
    if names is None and "class_names" in keys:
        names = [str(n) for n in npz["class_names"]]
    raw = {}
    for split, suffix in (("train", "train"), ("validation", "val"), ("test", "test")):
        if f"x_{suffix}" in keys:
            if f"y_{suffix}" not in keys:
                raise DataError(f"x_{suffix} has no y_{suffix}", str(p), f"add y_{suffix}")
            raw[split] = (npz[f"x_{suffix}"], np.asarray(npz[f"y_{suffix}"]))
    if names is None:
        top = max(int(np.max(y if y.ndim == 1 else y.argmax(1))) for _, y in raw.values())
        width = raw["train"][1].shape[1] if raw["train"][1].ndim == 2 else 0
        names = [str(i) for i in range(max(top + 1, width, 2))]
    splits = {}
    for split, (x, y) in raw.items():
        where = f"{p}, x_{'val' if split == 'validation' else split}"
        x = as_uint8_images(x, where)
        y = check_labels(y, len(names), where.replace("x_", "y_"))
        if len(x) != len(y):
            raise DataError(f"{len(x)} images but {len(y)} labels", where, "make them match")
        splits[split] = Split(x, y)
    shapes = {s.x.shape[1:] for s in splits.values()}
    if len(shapes) > 1:
        raise DataError(f"splits have different image shapes {sorted(shapes)}", str(p),
                        "store every split with the same image size")
    return Dataset(f"npz:{path}", names, splits, {"npz": str(p)})
