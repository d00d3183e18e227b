"""Users' own images: class folders, CSV tables and NumPy .npz files."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from ..errors import DataError, MissingDataError, warn
from .dataset import Dataset, Split, check_labels, label_form, labeled_splits
from .diskcache import read_any
from .images import ReadResult, is_image_file, printable
from .registry import SourceKind, register_source

SPLIT_DIRS = {"train": ("train", "training"), "validation": ("validation", "val", "valid"),
              "test": ("test", "testing")}
LABEL_COLUMNS = ("label", "class", "target", "y", "category")
IMAGE_COLUMNS = ("image", "path", "file", "filename", "file_name", "image_path", "id")
INDEX = "index"  # --image-column index: the images are named by row number (0, 1, 2, ...)
CLASS_FILE = "classes.txt"  # class names beside a CSV, one per line (cnnlab export-images writes it)


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


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if is_image_file(p))


def _note_skipped(r: ReadResult, where: str, source: str) -> list[tuple[str, str]]:
    if r.bad:
        warn(f"left out {len(r.bad)} unreadable image(s), first {r.bad[0][0]}: {r.bad[0][1]}", where,
             f"cnnlab check {source} lists them all")
    return r.bad


def check_no_class_emptied(before: list, after: list, names: list[str], where: str) -> None:
    """``--on-bad-image skip`` must not leave a class that had images with none: the model would
    learn a class it never sees."""
    had, left = set(before), set(after)
    emptied = [names[c] if isinstance(c, (int, np.integer)) and 0 <= c < len(names) else str(c)
               for c in sorted(had - left, key=str)]
    if emptied:
        raise DataError(f"every image of class {', '.join(emptied[:3])} is unreadable, so skipping them leaves the "
                        "class empty", where, "fix or replace those files (cnnlab check lists them), or remove the "
                        "class")


def _bad_list(bad: list[tuple[str, str]], limit: int = 1000) -> list[dict]:
    return [{"path": p, "reason": r} for p, r in bad[:limit]]


def load_folder(path: str, image_size=None, color_mode: str = "auto", on_bad: str = "error",
                cache: str = "memory", quiet: bool = False) -> Dataset:
    """``root/<class>/*.png`` or ``root/{train,validation,test}/<class>/*.png``."""
    root = Path(path)
    if not root.is_dir():
        raise MissingDataError("folder not found", printable(root), "give a folder with one sub-folder per class")
    layout = folder_layout(root)
    classes = [d.name for d in _class_dirs(layout["train"]) if images_in(d)]
    if not classes:
        raise DataError("no class sub-folders with images", printable(layout["train"]),
                        "put each class's images in a sub-folder named after the class")
    if len(classes) == 1:
        raise DataError(f"only one class ('{printable(classes[0])}') found", printable(layout["train"]),
                        "a classifier needs at least two class sub-folders")
    files: dict[str, tuple[list[Path], list[int]]] = {}
    for split, folder in layout.items():
        paths, labels = [], []
        for d in _class_dirs(folder):
            imgs = images_in(d)
            if not imgs:
                continue
            if d.name not in classes:
                raise DataError(f"class folder '{printable(d.name)}' is not among the training classes",
                                printable(d), f"use only {', '.join(map(printable, classes))}")
            paths += imgs
            labels += [classes.index(d.name)] * len(imgs)
        if not paths:
            raise DataError("no images", printable(folder), "add images or remove the folder")
        files[split] = (paths, labels)
    splits, skipped = {}, {}
    size, mode = image_size, color_mode
    for split in ("train", "validation", "test"):
        if split not in files:
            continue
        paths, labels = files[split]
        r = read_any(paths, size, mode, on_bad, cache, quiet)
        size, mode = r.size, r.color_mode  # later splits take the training split's size and mode
        skipped[split] = _note_skipped(r, printable(layout[split]), f"folder:{printable(root)}")
        kept_labels = np.asarray(labels, np.int64)[r.kept]
        if split == "train":
            check_no_class_emptied(list(labels), kept_labels.tolist(), [printable(c) for c in classes],
                                   printable(layout[split]))
        splits[split] = Split(r.x, kept_labels,
                              [printable(paths[i].relative_to(root)) for i in r.kept])
    info = {"folder": printable(root), "image_size": list(size), "color_mode": mode, **cache_info(splits)}
    if any(skipped.values()):
        info["skipped_images"] = {k: len(v) for k, v in skipped.items() if v}
        info["bad_images"] = _bad_list([b for v in skipped.values() for b in v])
    return Dataset(f"folder:{path}", [printable(c) for c in classes], splits, info)


def cache_info(splits: dict) -> dict:
    """Where the decoded images are: the disk cache's folder when they are there."""
    on_disk = [s.x for s in splits.values() if hasattr(s.x, "subset")]
    return {"cache": "disk", "cache_dir": str(on_disk[0].path.parent)} if on_disk else {}


def folder_layout(root: Path) -> dict[str, Path]:
    """The folder of each split: root/train, root/validation, root/test, or root itself."""
    subdirs = {d.name.lower(): d for d in _class_dirs(root)}
    layout = {}
    for split, names in SPLIT_DIRS.items():
        for n in names:
            if n in subdirs:
                layout[split] = subdirs[n]
                break
    return layout if "train" in layout else {"train": root}


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


def _fill(pattern: str, value: str) -> str:
    """``pattern`` with the id put in: '{}' or '{id}', with a format spec such as '{:05d}' too
    (numeric ids are then numbers)."""
    pattern = pattern.replace("{id", "{")
    for v in (value, int(value) if value.strip().lstrip("-").isdigit() else None):
        if v is None:
            continue
        try:
            return pattern.format(v)
        except (ValueError, IndexError, KeyError, TypeError, AttributeError):
            continue
    raise DataError(f"cannot put the id {value!r} into the image pattern {pattern!r}", "--image-pattern",
                    "write {} where the id goes, e.g. 'images/train/{}.png' ('{:05d}' pads numeric ids)")


def check_pattern(pattern: str | None) -> None:
    if pattern is not None and ("{" not in pattern or "}" not in pattern):
        raise DataError(f"the image pattern {pattern!r} has no {{}} for the id, so every row would be "
                        "the same file", "--image-pattern", "write e.g. 'images/train/{}.png'")


def resolve_image_paths(values: list[str], path: Path, pattern: str | None,
                        on_missing: str = "error", example: str = "images/train/{}.png") -> list[Path]:
    """Each value is a path, or an id put into ``pattern`` such as ``images/train/{}.png``,
    relative to the CSV file's folder. A missing file is an error (``on_missing='skip'``: the
    caller drops it; cnnlab check lists them)."""
    check_pattern(pattern)
    base = path.parent
    out = []
    for v in values:
        p = Path(_fill(pattern, v) if pattern else v)
        out.append(p if p.is_absolute() else base / p)
    missing = [p for p in out if not p.is_file()]
    if missing and (on_missing == "error" or len(missing) == len(out)):
        hint = (f"pass --image-pattern with the file name template of these images, e.g. '{example}'"
                if not pattern else "check --image-pattern and the images folder")
        raise DataError(f"{len(missing)} of {len(out)} images listed in the CSV are missing, "
                        f"first {printable(missing[0])}", printable(path), hint)
    return out


def pick_image_column(columns: list[str], rows: list[dict], wanted: str | None, label_col: str | None,
                 path: Path) -> tuple[str, list[str]]:
    """The image column and its values; ``index`` means the row numbers (0, 1, 2, ...)."""
    if wanted == INDEX and INDEX not in columns:
        return INDEX, [str(i) for i in range(len(rows))]
    col = pick_column(columns, wanted, IMAGE_COLUMNS, path, "image", "--image-column")
    if col is None:
        others = [c for c in columns if c != label_col]
        if not others:
            raise DataError(f"the CSV has no image column: its only column '{label_col}' holds the labels",
                            printable(path), "if the images are named by row number, pass --image-column index "
                            "--image-pattern 'images/train/{}.png'")
        col = others[0]
    if col == label_col:
        raise DataError(f"the image column '{col}' is also the label column", printable(path),
                        "name the image column with --image-column, or --image-column index when the "
                        "images are named by row number")
    return col, [r[col] for r in rows]


def class_file_beside(path: Path) -> list[str] | None:
    """The class names in ``classes.txt`` next to a CSV (as cnnlab export-images writes it)."""
    f = path.parent / CLASS_FILE
    return read_class_names(str(f)) if f.is_file() else None


def drop_duplicates(paths: list[Path], raw: list[str], ids: list[str], where: str) -> np.ndarray:
    """Indices of the rows to keep: a file listed twice with the same label is kept once (with a
    warning); listed with two different labels, it is an error."""
    first: dict[str, int] = {}
    keep = []
    for i, p in enumerate(paths):
        key = os.path.normpath(os.path.abspath(p))
        j = first.setdefault(key, i)
        if j == i:
            keep.append(i)
        elif raw and raw[i] != raw[j]:
            raise DataError(f"image {printable(ids[i])} is listed twice with different labels "
                            f"('{raw[j]}' in row {j + 1}, '{raw[i]}' in row {i + 1})", where,
                            "keep one row per image with its correct label")
    if len(keep) < len(paths):
        warn(f"{len(paths) - len(keep)} duplicate row(s) name an image already listed; each image is "
             "used once", where, "remove the duplicate rows")
    return np.asarray(keep, np.int64)


def read_image_table(p: Path, label_column: str | None, image_column: str | None):
    """(columns, rows, label column or None, image column, image ids) of a CSV table."""
    columns, rows = read_table(p)
    if not rows:
        raise DataError("CSV has no rows", printable(p), "add one row per image")
    label_col = pick_column(columns, label_column, LABEL_COLUMNS, p, "label", "--label-column")
    img_col, ids = pick_image_column(columns, rows, image_column, label_col, p)
    return columns, rows, label_col, img_col, ids


def load_csv(path: str, opts, class_names: list[str] | None = None, require_labels: bool = True,
             on_missing: str = "error") -> Dataset:
    """A table with an image column (path or id) and a label column (index or class name).
    ``opts``: the source's DataOptions (the columns, image pattern, size, colour mode, what to do
    with a bad image, the cache and quiet)."""
    label_column, image_column, image_pattern = opts.label_column, opts.image_column, opts.image_pattern
    image_size, color_mode, on_bad = opts.image_size, opts.color_mode, opts.on_bad_image
    p = Path(path)
    columns, rows, label_col, img_col, ids = read_image_table(p, label_column, image_column)
    if label_col is None and require_labels:
        raise DataError("CSV has no label column", printable(p),
                        f"name it with --label-column (columns: {', '.join(columns)})")
    raw = [(r.get(label_col) or "").strip() for r in rows] if label_col else []
    labeled = bool(raw) and any(raw)
    paths = resolve_image_paths(ids, p, image_pattern, on_missing)
    present = [i for i, q in enumerate(paths) if q.is_file()]
    missing = len(paths) - len(present)
    if missing:  # on_missing='skip': rows without a file are left out (and counted)
        paths, ids = [paths[i] for i in present], [ids[i] for i in present]
        raw = [raw[i] for i in present] if raw else raw
        rows = [rows[i] for i in present]
    keep = drop_duplicates(paths, raw, ids, printable(p)) if labeled else np.arange(len(paths))
    if len(keep) < len(paths):
        paths, ids, raw = [paths[i] for i in keep], [ids[i] for i in keep], [raw[i] for i in keep]
    r = read_any(paths, image_size, color_mode, on_bad, opts.cache, opts.quiet)
    bad = _note_skipped(r, printable(p), f"csv:{printable(p)}")
    ids = [ids[i] for i in r.kept]
    names_from = None
    if class_names is None:
        class_names = class_file_beside(p)
        names_from = str(p.parent / CLASS_FILE) if class_names else None
    info = {"csv": printable(p), "image_column": img_col, "label_column": label_col,
            "image_pattern": image_pattern, "image_size": list(r.size), "color_mode": r.color_mode,
            **cache_info({"all": Split(r.x)})}
    if names_from:
        info["class_names_file"] = printable(names_from)
    if len(keep) < len(rows):
        info["duplicate_rows_dropped"] = int(len(rows) - len(keep))
    if bad:
        info["skipped_images"] = {"train" if labeled else "test": len(bad)}
        info["bad_images"] = _bad_list(bad)
    if missing:
        info["missing_images"] = missing
    if not labeled:  # unlabeled: a prediction template
        if require_labels:
            raise DataError(f"label column '{label_col}' is empty", printable(p), "fill in the labels")
        return Dataset(f"csv:{path}", class_names or [], {"test": Split(r.x, None, ids)}, info)
    if bad:
        check_no_class_emptied(raw, [raw[i] for i in r.kept], [], printable(p))
    raw = [raw[i] for i in r.kept]
    if all(v.lstrip("-").isdigit() for v in raw):
        y = np.asarray([int(v) for v in raw], np.int64)
        names = class_names or [str(i) for i in range(max(int(y.max()) + 1, 2))]
    else:
        names = class_names or sorted(set(raw))
        unknown = sorted(set(raw) - set(names))
        if unknown:
            raise DataError(f"label '{unknown[0]}' is not a known class", printable(p),
                            f"use one of {', '.join(names)}")
        y = np.asarray([names.index(v) for v in raw], np.int64)
    y = check_labels(y, len(names), f"{printable(p)}, column '{label_col}'")
    return Dataset(f"csv:{path}", names, {"train": Split(r.x, y, ids)}, info)


# ---------------------------------------------------------------- npz

def _npz_arrays(p: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz file, read without unpickling anything."""
    fix = "save it with np.savez(path, x_train=..., y_train=...) from numeric arrays"
    try:
        with np.load(p, allow_pickle=False) as npz:
            if not hasattr(npz, "files"):
                raise DataError("not an .npz archive (a single .npy array?)", printable(p), fix)
            return {k: npz[k] for k in npz.files}
    except DataError:
        raise
    except ValueError as e:
        if "Object arrays" in str(e):
            what = "it holds object arrays (pickled Python objects), which cnnlab never loads"
        elif "pickled" in str(e):
            what = "not an .npz archive"
        else:
            what = f"cannot read .npz: {e}"
        raise DataError(what, printable(p), fix) from None
    except (OSError, EOFError, KeyError) as e:
        reason = "the file is empty" if isinstance(e, EOFError) else f"cannot read .npz: {e}"
        raise DataError(reason, printable(p), fix) from None
    except Exception as e:  # zipfile.BadZipFile and other damage inside the archive
        raise DataError(f"damaged .npz archive: {e}", printable(p), fix) from None


def load_npz(path: str, class_names: list[str] | None = None) -> Dataset:
    p = Path(path)
    arrays = _npz_arrays(p)
    keys = set(arrays)
    if not {"x_train", "y_train"} <= keys:
        raise DataError(f"missing arrays (found {', '.join(sorted(keys)) or 'none'})", printable(p),
                        "save x_train and y_train (x_test, y_test optional)")
    names = class_names
    if names is None and "class_names" in keys:
        cn = arrays["class_names"]
        if cn.ndim != 1 or cn.dtype.kind not in "USiu":
            raise DataError(f"class_names has shape {cn.shape} and dtype {cn.dtype}", f"{printable(p)}, class_names",
                            "store a 1-D array of strings")
        names = [str(n) for n in cn]
    suffix = {"train": "train", "validation": "val", "test": "test"}
    raw = {}
    for split, sfx in suffix.items():
        if f"x_{sfx}" in keys:
            if f"y_{sfx}" not in keys:
                raise DataError(f"x_{sfx} has no y_{sfx}", printable(p), f"add y_{sfx}")
            raw[split] = (arrays[f"x_{sfx}"], arrays[f"y_{sfx}"])
    names, splits = labeled_splits(raw, names, lambda split, xy: f"{printable(p)}, {xy}_{suffix[split]}")
    return Dataset(f"npz:{path}", names, splits, {"npz": printable(p), "label_form": label_form(raw)})


register_source(SourceKind(
    "folder", lambda path, opts, names, require_labels, on_missing:
        load_folder(path, opts.image_size, opts.color_mode, opts.on_bad_image, opts.cache, opts.quiet),
    "one sub-folder per class, optionally under train/ validation/ test/", takes_path=True,
    claims=lambda p: p.is_dir()))
register_source(SourceKind(
    "csv", lambda path, opts, names, require_labels, on_missing:
        load_csv(path, opts, names, require_labels, on_missing),
    "a table with an image column (path or id) and a label column", takes_path=True,
    claims=lambda p: p.suffix.lower() == ".csv" and p.exists(), reads_class_names=True))
register_source(SourceKind(
    "npz", lambda path, opts, names, require_labels, on_missing: load_npz(path, names),
    "arrays x_train, y_train (x_val, y_val, x_test, y_test optional)", takes_path=True,
    claims=lambda p: p.suffix.lower() == ".npz" and p.exists(), reads_class_names=True, in_memory=True))
