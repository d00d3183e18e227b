"""Issue 30, item 2: `cnnlab check --label-issues` against labels flipped on purpose.

    .venv/bin/python benchmarks/label_noise.py                       # 5% and 10% uniform, 5% class-pair
    .venv/bin/python benchmarks/label_noise.py --noise uniform:0.05 --no-train

Data: a stratified 20,000-image subset of Fashion-MNIST's training set (seed 0). A noise setting flips
a seeded fraction of its labels: `uniform` to another class drawn uniformly, `pair` to the class
the images of that class are most often taken for (T-shirt <-> shirt, pullover <-> coat, sneaker <->
ankle boot, ...: PAIR below). The real test split (10,000 images, labels untouched) goes along.

For each setting the command a user types runs in a fresh process, timed end to end:

    cnnlab check npz:noisy.npz --label-issues --val-split 0 --no-near --issues-dir DIR

(default settings otherwise: 5 folds of the `fast` preset), and the flagged images are scored
against the flipped ones: precision, recall. The 40 best-ranked flags that were not flipped are
drawn in DIR/unflipped-flags.png, to judge by eye how many are mislabelled in Fashion-MNIST itself.
Then (unless --no-train) the `fast` preset trains on the noisy subset and on it less the flagged
images (`--exclude label-issues.csv`), same seed, and both are tested on the real test split.
The CPU and other processes' load are printed first.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import numpy as np
from machine import announce  # noqa: E402

import cnnlab

# the class each Fashion-MNIST class is most often taken for (its confusion matrix, any CNN)
PAIR = {0: 6, 1: 3, 2: 4, 3: 0, 4: 2, 5: 7, 6: 0, 7: 9, 8: 6, 9: 7}


def flip(y: np.ndarray, kind: str, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(y), size=int(round(rate * len(y))), replace=False))
    noisy = y.copy()
    if kind == "uniform":
        noisy[idx] = (y[idx] + rng.integers(1, 10, size=len(idx))) % 10
    else:
        noisy[idx] = np.array([PAIR[int(c)] for c in y[idx]])
    return noisy, idx


def cli(*args: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cnnlab", *args], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"cnnlab {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - t0, done.stdout


def trained_test_accuracy(source: str, runs: Path, *more: str) -> float:
    cli("train", source, "--model", "fast", "--runs-dir", str(runs), "-q", "--no-report", *more)
    run = cnnlab.load_run(sorted(runs.iterdir())[-1])
    return float(run.metrics["test"]["accuracy"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--noise", nargs="+", default=["uniform:0.05", "uniform:0.10", "pair:0.05"])
    ap.add_argument("--subset", type=int, default=20_000)
    ap.add_argument("--no-train", action="store_true", help="skip the clean-versus-noisy training")
    ap.add_argument("--out", default=None, help="keep the work here (default: a temporary folder)")
    args = ap.parse_args()
    from cnnlab.data.split import stratified_indices

    announce()
    work = Path(args.out or tempfile.mkdtemp(prefix="cnnlab-label-noise-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["CNNLAB_HOME"] = str(work / "home")  # a cold out-of-fold cache: every check trains
    ds = cnnlab.load_dataset("fashion-mnist", val_split=0)
    x, y = ds["train"].x, ds["train"].y
    _, keep = stratified_indices(y, args.subset / len(y), 0, "fashion-mnist")
    x, y = x[keep], y[keep]
    rows = []
    for setting in args.noise:
        kind, rate = setting.split(":")
        noisy, flipped = flip(y, kind, float(rate), seed=1)
        case = work / setting.replace(":", "-")
        case.mkdir(exist_ok=True)
        np.savez(case / "noisy.npz", x_train=x, y_train=noisy, x_test=ds["test"].x, y_test=ds["test"].y)
        source = f"npz:{case / 'noisy.npz'}"
        seconds, _ = cli("check", source, "--label-issues", "--val-split", "0", "--no-near", "--issues-dir",
                         str(case / "issues"), "--runs-dir", str(case / "runs"))
        with open(case / "issues" / "label-issues.csv", newline="") as f:
            flags = [int(r["index"]) for r in csv.DictReader(f)]
        hit = np.isin(flags, flipped)
        precision = float(hit.mean()) if flags else 0.0
        recall = float(np.isin(flipped, flags).mean())
        row = {"noise": setting, "images": len(y), "flipped": len(flipped), "flagged": len(flags),
               "precision": round(precision, 4), "recall": round(recall, 4), "check_s": round(seconds, 1)}
        unflipped = [i for i, h in zip(flags, hit) if not h][:40]
        draw_unflipped(x, y, noisy, unflipped, ds.class_names, case / "issues" / "unflipped-flags.png")
        if not args.no_train:
            row["test_acc_noisy"] = trained_test_accuracy(source, case / "train-noisy", "--val-split", "0")
            row["test_acc_cleaned"] = trained_test_accuracy(source, case / "train-cleaned", "--val-split", "0",
                                                            "--exclude", str(case / "issues" / "label-issues.csv"))
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| noise | flipped | flagged | precision | recall | check wall time | test acc. noisy | cleaned |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['noise']} | {r['flipped']:,} | {r['flagged']:,} | {r['precision']:.3f} | {r['recall']:.3f} | "
              f"{r['check_s']:.0f} s | {r.get('test_acc_noisy', float('nan')):.4f} | "
              f"{r.get('test_acc_cleaned', float('nan')):.4f} |")
    print(f"work in {work}")


def draw_unflipped(x, y, noisy, idx, names, path: Path) -> None:
    """The best-ranked flags whose label was not flipped: Fashion-MNIST's own label, to be judged."""
    from cnnlab.viz.figures import titled_grid

    fig = titled_grid([x[i] for i in idx], [f"#{i}\ngiven {names[noisy[i]]}" for i in idx], cols=10,
                      empty="none")
    fig.savefig(path, dpi=80)


if __name__ == "__main__":
    main()
