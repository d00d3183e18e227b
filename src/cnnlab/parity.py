"""Parity certificates: every export is checked against the run it came from before it is kept.

The check runs the run's whole test split (up to 10,000 validation images when it has no test
split; random pixels only when the run's data is not on this machine) through the run's torch
model and through the exported file in its own runtime (ONNX Runtime on the CPU, Keras 3 for a
.keras file, ...), and measures the top-1 agreement, the largest and mean absolute probability
difference and each runtime's images/s. The record goes into ``export-check.json`` beside the file
(one entry per exported file in that folder), and one line is printed:

    parity: 10,000/10,000 top-1 agree, max |Δp| 4.8e-7

A float export that differs by more than 1e-5 in any probability (or disagrees on a class where
the run's top two are further apart than that) is refused; an int8 export must agree on at least
99% of the classes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from . import atomic
from .errors import CnnlabError

CHECK_FILE = "export-check.json"
TOLERANCE = 1e-5  # float exports: the largest probability difference
INT8_AGREEMENT = 0.99  # int8 exports: the least share of images whose class agrees
MAX_VALIDATION = 10_000
T = TypeVar("T")


def parity_images(run) -> tuple[np.ndarray, str, np.ndarray | None]:
    """The images an export is checked on, where they come from and their labels: the run's whole
    test split, else up to 10,000 images of its validation split, else 64 random images (no labels)."""
    from .api import run_dataset

    try:
        ds = run_dataset(run)
    except (CnnlabError, OSError):
        ds = None
    for name, limit in (("test", None), ("validation", MAX_VALIDATION)):
        if ds is not None and name in ds.splits and len(ds[name].x):
            part = ds[name]
            labels = part.y[:limit] if part.y is not None else None
            return np.asarray(part.x[:limit]), name, labels
    h, w = run.image_size
    c = 3 if run.color_mode == "rgb" else 1
    return np.random.default_rng(0).integers(0, 256, (64, h, w, c), dtype=np.uint8), "random", None


def timed(fn: Callable[[np.ndarray], T], x: np.ndarray) -> tuple[T, float]:
    """``fn(x)`` and the images per second it ran at."""
    t0 = time.perf_counter()
    out = fn(x)
    return out, len(x) / max(time.perf_counter() - t0, 1e-9)


@dataclass
class Parity:
    """How an exported file agrees with its run on ``images`` images of ``split``."""

    file: str
    runtime: str  # what ran the file: "onnxruntime-cpu", "keras-3-torch", ...
    split: str
    images: int
    agree: int
    max_abs_dp: float
    mean_abs_dp: float
    images_per_s: dict = field(default_factory=dict)  # runtime -> images/s, the run's torch model too
    precision: str = "float32"  # or int8
    ood_score_max_rel_diff: float | None = None
    refused: str | None = None  # why the export was refused; None: kept
    against: str = "cnnlab predict"  # what the file was compared with
    file_bytes: dict | None = None  # int8: {"float32": bytes, "int8": bytes}
    accuracy: dict | None = None  # int8: the split's accuracy of the float32 and int8 files
    tolerance: float = TOLERANCE  # float exports: the largest probability difference allowed

    def line(self) -> str:
        return line_of(asdict(self))

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def line_of(entry: dict) -> str:
    """The parity line of a record (a Parity's, or one read from export-check.json)."""
    try:
        text = f"parity: {entry['agree']:,}/{entry['images']:,} top-1 agree, max |Δp| {entry['max_abs_dp']:.1e}"
    except (KeyError, TypeError, ValueError):
        return "parity: (the record is damaged)"
    precision = entry.get("precision", "float32")
    return text + (f" ({precision})" if precision != "float32" else "")


def measure(ours: np.ndarray, theirs: np.ndarray, scores: tuple | None = None, **about) -> Parity:
    """The parity of ``theirs`` (the file's probabilities) with ``ours`` (the run's), and whether the
    export is refused; ``scores``: (the run's ood scores, the file's), compared relative to their
    size; ``about``: the Parity fields that say what was checked (file, runtime, split,
    images_per_s, precision, against)."""
    n = len(ours)
    diff = np.abs(ours - theirs) if n else np.zeros((0, 1))
    agree = ours.argmax(1) == theirs.argmax(1) if n else np.zeros(0, bool)
    about["file"] = Path(about["file"]).name
    about["images_per_s"] = {k: round(v, 1) for k, v in about.get("images_per_s", {}).items()}
    p = Parity(images=n, agree=int(agree.sum()), max_abs_dp=float(diff.max()) if n else 0.0,
               mean_abs_dp=float(diff.mean()) if n else 0.0, **about)
    if scores is not None and scores[1] is None:
        p.refused = "the file gives no ood score"
        return p
    if scores is not None and n:
        a, b = scores
        p.ood_score_max_rel_diff = float((np.abs(a - b) / np.maximum(1.0, np.abs(a))).max())
    if p.precision == "int8":
        if n and p.agree / n < INT8_AGREEMENT:
            p.refused = f"top-1 agreement {p.agree / n:.2%} is below {INT8_AGREEMENT:.0%}"
        return p
    top2 = np.sort(ours, 1)[:, -2:] if n and ours.shape[1] > 1 else None
    clear = (top2[:, 1] - top2[:, 0] > 2 * p.tolerance) if top2 is not None else np.ones(n, bool)
    if p.max_abs_dp > p.tolerance:
        p.refused = f"a probability differs by {p.max_abs_dp:.2g} (the limit is {p.tolerance:g})"
    elif (~agree & clear).any():
        p.refused = f"{int((~agree & clear).sum())} images get another class"
    elif not (p.ood_score_max_rel_diff or 0.0) <= p.tolerance:  # NaN too
        p.refused = f"the ood score differs by {p.ood_score_max_rel_diff:.2g} of its size"
    return p


def certify(p: Parity, out: Path) -> None:
    """Refuse the export (a CnnlabError naming the file) when ``p`` says so."""
    if p.refused:
        raise CnnlabError(f"the exported model disagrees with the run: {p.refused}; {p.line()}", str(out),
                          "the file was not kept; report it (the run itself is unchanged)")


def record(p: Parity, folder: Path) -> Path:
    """``export-check.json`` in ``folder``: this file's entry added to (or replacing) the others'."""
    path = folder / CHECK_FILE
    entries: dict = {}
    if path.is_file():
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            entries = {}
        entries = entries if isinstance(entries, dict) else {}
    entries[p.file] = p.to_dict()
    atomic.write_text(path, json.dumps(entries, indent=2, ensure_ascii=False) + "\n")
    return path


def records(folder: Path) -> dict:
    """Every parity record in ``folder``'s export-check.json (file name -> record)."""
    try:
        entries = json.loads((folder / CHECK_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}
