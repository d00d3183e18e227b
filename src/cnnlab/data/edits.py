"""``--exclude FILE.csv`` and ``--relabel FILE.csv``: acting on what ``cnnlab check --label-issues``
found (or any list a person made).

A table names images by ``path`` (a folder's relative file path or a CSV table's id, as the check
writes it) or by ``index`` (the image's position in the source's own split as loaded, before any
validation or test split is carved from it; a ``split`` column says which, default train). The
label-issues CSV has both, and either works on its own. ``--relabel`` reads the new label from a
``suggested`` column (a class name, or a class index). The edits apply to the source as loaded,
before it is split, so every command that loads the run's data again (evaluate, report, resume)
sees the same images; data.json records what was changed.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import Dataset, Split


def read_table(path: str, flag: str) -> list[dict]:
    """The rows of an edit table, with ``index`` or ``path`` among its columns."""
    p = Path(path)
    where = f"{flag} {path}"
    if not p.is_file():
        raise DataError("file not found", where, "give the label-issues.csv that cnnlab check wrote, or a CSV "
                        "with an index or path column")
    try:
        with p.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = [c.strip() for c in reader.fieldnames or []]
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"not a readable CSV file ({e})", where, "save it as UTF-8 CSV") from None
    if "index" not in columns and "path" not in columns:
        raise DataError(f"no index or path column (columns: {', '.join(columns) or 'none'})", where,
                        "name the images in a column 'index' (positions in the source's split) or 'path'")
    return [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in rows]


def _locator(ds: Dataset):
    """id -> (split, position) for the splits that have ids (folder and CSV sources)."""
    where: dict[str, tuple[str, int]] = {}
    for name, s in ds.splits.items():
        for i, ident in enumerate(s.ids or []):
            where.setdefault(str(ident), (name, i))
    return where


def locate(ds: Dataset, rows: list[dict], where: str) -> list[tuple[str, int]]:
    """Each row's image as (split, position in that split); a row naming no image of the data is
    an error that says which row."""
    by_id = _locator(ds)
    out = []
    for n, row in enumerate(rows, start=2):  # row 1 is the header
        if row.get("path"):
            if row["path"] not in by_id:
                raise DataError(f"row {n}: {row['path']!r} is not an image of {ds.source}", where,
                                "use the label-issues.csv cnnlab check wrote for this source, or fix the row")
            out.append(by_id[row["path"]])
            continue
        split = row.get("split") or "train"
        text = row.get("index", "")
        if split not in ds.splits:
            raise DataError(f"row {n}: {ds.source} has no {split} split", where,
                            f"use a split of the source: {', '.join(ds.splits)}")
        size = len(ds.splits[split])
        if not text.isdigit() or int(text) >= size:
            raise DataError(f"row {n}: index {text!r} is not an image of the {split} split ({size:,} images)",
                            where, "use the label-issues.csv cnnlab check wrote for this source, or fix the row")
        out.append((split, int(text)))
    return out


def _class_of(text: str, names: list[str], n: int, where: str) -> int:
    if text in names:
        return names.index(text)
    folded = [i for i, c in enumerate(names) if c.lower() == text.lower()]
    if len(folded) == 1:
        return folded[0]
    if text.isdigit() and int(text) < len(names):
        return int(text)
    raise DataError(f"row {n}: suggested class {text!r} is not a class of the data", where,
                    f"use one of {', '.join(names)} (or a class index 0-{len(names) - 1})")


def apply_label_edits(ds: Dataset, exclude: str | None, relabel: str | None) -> Dataset:
    """``ds`` with the images of ``exclude`` left out and the labels of ``relabel`` replaced (an
    image in both is left out); ``info["label_edits"]`` counts what changed."""
    return edited(ds, exclude, relabel)[0]


def edited(ds: Dataset, exclude: str | None, relabel: str | None) -> tuple[Dataset, dict[str, np.ndarray]]:
    """``apply_label_edits``, and for each split the positions in ``ds`` of the images kept."""
    kept = {k: np.arange(len(s)) for k, s in ds.splits.items()}
    if exclude is None and relabel is None:
        return ds, kept
    splits = dict(ds.splits)
    record: dict = {}
    if relabel is not None:
        where = f"--relabel {relabel}"
        rows = read_table(relabel, "--relabel")
        if rows and "suggested" not in rows[0]:
            raise DataError("no suggested column", where, "give the new label of each image in a column 'suggested'")
        changed = 0
        ys = {k: (s.y.copy() if s.y is not None else None) for k, s in splits.items()}
        for n, (row, (split, i)) in enumerate(zip(rows, locate(ds, rows, where)), start=2):
            y = ys[split]
            if y is None:
                raise DataError(f"row {n}: the {split} split has no labels to change", where, "relabel labeled images")
            new = _class_of(row.get("suggested", ""), ds.class_names, n, where)
            changed += int(y[i] != new)
            y[i] = new
        splits = {k: Split(s.x, ys[k], s.ids) for k, s in splits.items()}
        record.update(relabel_file=str(Path(relabel).resolve()), relabelled=changed)
    if exclude is not None:
        where = f"--exclude {exclude}"
        rows = read_table(exclude, "--exclude")
        drop: dict[str, set[int]] = {}
        for split, i in locate(ds, rows, where):
            drop.setdefault(split, set()).add(i)
        for split, gone in drop.items():
            keep = np.setdiff1d(np.arange(len(splits[split])), np.fromiter(gone, np.int64))
            splits[split] = splits[split].take(keep)
            kept[split] = keep
        if "train" in splits and len(splits["train"]) == 0:
            raise DataError("the exclusions leave no training images", where, "exclude fewer images")
        record.update(exclude_file=str(Path(exclude).resolve()), excluded=sum(len(g) for g in drop.values()),
                      excluded_by_split={k: len(g) for k, g in drop.items()})
    info = {**ds.info, "label_edits": record}
    return Dataset(ds.source, ds.class_names, splits, info), kept
