"""The data check on the real Fashion-MNIST: what `cnnlab check fashion-mnist --val-split 0` finds,
written as docs/check.md with a picture of the near-duplicate pairs (docs/check-pairs.png).

    .venv/bin/python benchmarks/check_fashion.py [--val-split 0] [--out docs]

Exact duplicates are counted by a hash of the decoded pixels (none are expected: all 70,000
images are distinct); near duplicates across train and test by a perceptual hash plus a pixel
check (cnnlab/data/check.py says how).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cnnlab.config import make_config
from cnnlab.data.check import check_source, findings, near_duplicate_pairs, perceptual_hashes
from cnnlab.data.sources import load_source


def cpu_name() -> str:
    """'AMD EPYC (family 25, model 17, 2 cores)': the model name alone does not tell Zen 1 from Zen 4."""
    info = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    import os

    name = info.get("model name") or platform.processor() or "unknown CPU"
    return f"{name} (family {info.get('cpu family', '?')}, model {info.get('model', '?')}, {os.cpu_count()} cores)"


def pairs_picture(path: Path, n: int = 12) -> list[tuple[int, int, float, str]]:
    """Every train/test near-duplicate pair of the full 60,000 / 10,000 split, the first ``n`` drawn."""
    ds = load_source("fashion-mnist")
    xa, xb = ds["train"].x, ds["test"].x
    pairs = [p for p in near_duplicate_pairs(xa, xb, perceptual_hashes(xa), perceptual_hashes(xb)) if p[2] > 0]
    tiles = []
    for i, j, _ in pairs[:n]:
        tile = np.concatenate([xa[i, ..., 0], np.full((28, 2), 128, np.uint8), xb[j, ..., 0]], 1)
        tiles.append(np.pad(tile, 4, constant_values=255))
    rows = [np.concatenate(tiles[r:r + 6], 1) for r in range(0, len(tiles), 6)]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1])), constant_values=255) for r in rows]
    grid = np.concatenate(rows, 0)
    Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(path)
    names = ds.class_names
    return [(i, j, m, names[int(ds["train"].y[i])]) for i, j, m in pairs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--val-split", type=float, default=0.0)
    ap.add_argument("--out", default="docs")
    args = ap.parse_args()
    out = Path(args.out)
    t0 = time.perf_counter()
    report = check_source(make_config(source="fashion-mnist", val_split=args.val_split, quiet=True))
    took = time.perf_counter() - t0
    pairs = pairs_picture(out / "check-pairs.png")
    ex = report["exact_duplicates"]
    nd = report["near_duplicates"]
    lines = [
        "# The data check on the real Fashion-MNIST",
        "",
        f"`cnnlab check fashion-mnist --val-split {args.val_split:g}` on {cpu_name()}: {took:.1f} s, data "
        "loading included. Reproduce with `.venv/bin/python benchmarks/check_fashion.py`.",
        "",
        "| finding | result |",
        "|---|---|",
        "| images | " + ", ".join(f"{k} {v:,}" for k, v in report["splits"].items()) + " |",
        "| exact duplicates within a split | " + ", ".join(f"{k} {v}" for k, v in ex["within"].items()) + " |",
        "| exact duplicates across splits | " + (", ".join(f"{k} {v}" for k, v in ex["across"].items()) or "none")
        + " |",
        f"| identical images with different labels | {ex['conflicting_labels']} |",
        "| near duplicates across splits (test images with a near copy) | "
        + ", ".join(f"{k} {v}" for k, v in nd["across"].items()) + " |",
        f"| imbalance ratio (largest / smallest training class) | {report['classes']['imbalance_ratio']:.2f} |",
        "",
        f"A near duplicate: perceptual hashes within {nd['max_bits']} of 64 bits, and a mean absolute pixel "
        f"difference of at most {nd['max_mad']:g} (of 255). Without the pixel check, the hash alone would pair "
        "thousands of merely similar items (Fashion-MNIST's products are photographed alike).",
        "",
        "Findings, as `cnnlab train` reports them:",
        "",
        *[f"- {level}: {msg}" for level, msg in findings(report)],
        "",
        f"All {len(pairs)} train/test pairs (train index, test index, mean pixel difference, class):",
        "",
        "| train | test | difference | class |",
        "|---|---|---|---|",
        *[f"| {i} | {j} | {m:.2f} | {c} |" for i, j, m, c in pairs],
        "",
        "The first twelve pairs, training image left, test image right:",
        "",
        "![near-duplicate pairs across Fashion-MNIST's train and test splits](check-pairs.png)",
        "",
    ]
    (out / "check.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
