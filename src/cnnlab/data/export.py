"""Write a dataset as PNG files plus CSV labels: the layout competitions hand out.

OUT/images/train/0.png ...   OUT/train.csv        (id,class)
OUT/images/test/0.png ...    OUT/test.csv         (id,class)
                             OUT/test_sample.csv  (id,class with class empty: a submission template)
                             OUT/classes.txt      (one class name per line, in index order)
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from .. import atomic
from .dataset import Dataset


def _save_png(path: Path, arr) -> None:
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    atomic.write_with(path, lambda tmp: img.save(tmp, format="PNG"))


def export_images(ds: Dataset, out: str | Path, limit: int | None = None) -> dict[str, int]:
    """The dataset's images and labels under ``out``, which must not exist or be empty. Everything is
    written into a temporary folder beside it and renamed into place at the end, so a full disk or a
    Ctrl-C leaves no half-exported folder."""
    import shutil
    import tempfile

    from ..errors import ConfigError

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError("the output folder is not empty" if out.is_dir() else "the output is a file", str(out),
                          "give a new folder: cnnlab export-images SOURCE NEW_FOLDER")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        counts = _write_all(ds, tmp, limit)
        if out.is_dir():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and e.filename and str(tmp) in str(e.filename):
            raise OSError(e.errno, e.strerror, str(out)) from None  # name the folder asked for, not ours
        raise
    return counts


def _write_all(ds: Dataset, out: Path, limit: int | None) -> dict[str, int]:
    counts = {}
    workers = min(8, (os.cpu_count() or 2) * 2)
    for split, s in ds.splits.items():
        n = len(s) if limit is None else min(limit, len(s))
        folder = out / "images" / split
        folder.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda i, f=folder, x=s.x: _save_png(f / f"{i}.png", x[i]), range(n)))
        lines = ["id,class"] + [f"{i},{'' if s.y is None else int(s.y[i])}" for i in range(n)]
        atomic.write_text(out / f"{split}.csv", "\n".join(lines) + "\n")
        if split == "test":
            atomic.write_text(out / "test_sample.csv", "id,class\n" + "".join(f"{i},\n" for i in range(n)))
        counts[split] = n
    atomic.write_text(out / "classes.txt", "\n".join(ds.class_names) + "\n")
    return counts
