"""Issue 17, item 6: does fine-tuning from an earlier run help a small new set?

    .venv/bin/python benchmarks/finetune.py                 # seeds 1 2 3, about 2 minutes

1. Pre-trains fashion-cnn on Fashion-MNIST classes 0-4 (T-shirt/top, Trouser, Pullover, Dress,
   Coat; all 30,000 training images) with `--recipe fast`.
2. For each seed: 100 training images per class of classes 5-9 (Sandal, Shirt, Sneaker, Bag,
   Ankle boot), drawn with that seed, scored on all 5,000 test images of those classes.
   - scratch: fashion-cnn from random weights, 20 epochs, Adam 0.001, batch 32;
   - fine-tuned: `--init-from` the pre-trained run with `--recipe finetune` (3 epochs of the new
     head, then 17 of every layer at lr x 0.3), the same 20 epochs and batch.
   Neither uses a validation split or early stopping: the 500 images all train.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np

import cnnlab


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    ds = cnnlab.load_dataset("fashion-mnist", val_split=0, test_split=0)
    x, y, xt, yt = ds["train"].x, ds["train"].y, ds["test"].x, ds["test"].y
    runs = Path(tempfile.mkdtemp(prefix="cnnlab-finetune-"))
    old = y < 5
    base = cnnlab.train((x[old], y[old]), model="fashion-cnn", recipe="fast", runs_dir=str(runs / "base"),
                        quiet=True, check=False, class_names=ds.class_names[:5], seed=0)
    print(f"CPU: {cpu}. Pre-trained on classes 0-4: {old.sum():,} images, "
          f"{base.metrics['train_time_s']:.0f} s")
    test = (xt[yt >= 5], yt[yt >= 5] - 5)
    common = dict(model="fashion-cnn", epochs=20, batch_size=32, val_split=0, patience=None, quiet=True,
                  check=False, class_names=ds.class_names[5:])
    results: dict[str, list[float]] = {"scratch": [], "finetuned": []}
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        idx = np.concatenate([rng.choice(np.flatnonzero(y == c), args.per_class, replace=False) for c in range(5, 10)])
        small = ((x[idx], y[idx] - 5), test)
        scratch = cnnlab.train(small, seed=seed, runs_dir=str(runs / "scratch"), **common)
        tuned = cnnlab.train(small, seed=seed, init_from=str(base.path), recipe="finetune",
                             runs_dir=str(runs / "tuned"), **common)
        results["scratch"].append(scratch.metrics["test"]["accuracy"])
        results["finetuned"].append(tuned.metrics["test"]["accuracy"])
        print(f"seed {seed}: scratch {results['scratch'][-1]:.4f}, fine-tuned {results['finetuned'][-1]:.4f}",
              flush=True)
    mean = {k: statistics.mean(v) for k, v in results.items()}
    print(f"mean over {len(args.seeds)} seeds: scratch {mean['scratch']:.4f}, fine-tuned {mean['finetuned']:.4f}, "
          f"difference {mean['finetuned'] - mean['scratch']:+.4f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"cpu": cpu, "results": results, "mean": mean}, indent=2) + "\n")


if __name__ == "__main__":
    main()
