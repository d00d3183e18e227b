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
    out = Path(out)
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
