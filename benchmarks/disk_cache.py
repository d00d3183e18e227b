"""Data larger than memory (issue 16, item 4): one epoch of small-convnet on a generated folder of
RGB 150x150 images through the disk cache, with its peak resident memory, and the disk cache's
training speed against the in-memory path on a subset that fits.

    .venv/bin/python benchmarks/disk_cache.py                      # 40,000 images (about 2.7 GB decoded)
    .venv/bin/python benchmarks/disk_cache.py --images 4000 --subset 1000 --rounds 1   # a quick look

1. Generates ``--images`` JPEG files in two class folders under ``--root`` (kept for later runs):
   soft stripes, horizontal for one class and vertical for the other, with noise.
2. Builds the disk cache (``cnnlab check``-free: one `load_source` call in its own process) and
   reports the time and the peak resident memory (``/usr/bin/time -f %M``).
3. Trains one epoch of small-convnet from the cache (``--cache disk``; val 0.1, test 0.1) and
   reports images/s and the peak resident memory. Goal: at most 1.5 GB.
4. On the first ``--subset`` images: one epoch with ``--cache memory`` and one with ``--cache disk``,
   alternating, ``--rounds`` times each. Reports the median images/s of each and their ratio.
   Goal: disk at least 0.8 x memory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent.parent
CNNLAB = [sys.executable, "-m", "cnnlab"]
TRAIN = ["--model", "small-convnet", "--image-size", "150", "150", "--color-mode", "rgb", "--epochs", "1",
         "--val-split", "0.1", "--test-split", "0.1", "--no-check", "--no-report", "--quiet", "--patience", "none"]


def _make(args: tuple) -> None:
    from PIL import Image

    root, start, stop = args
    rng = np.random.default_rng(start)
    yy, xx = np.mgrid[0:150, 0:150]
    for i in range(start, stop):
        label = i % 2
        folder = Path(root) / ("horizontal" if label == 0 else "vertical")
        path = folder / f"{i:06d}.jpg"
        if path.exists():
            continue
        freq, phase = rng.uniform(0.05, 0.2), rng.uniform(0, 6.3)
        wave = np.sin((yy if label == 0 else xx) * freq + phase)
        img = 128 + 80 * wave[..., None] * rng.uniform(0.5, 1.0, 3) + rng.normal(0, 12, (150, 150, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)


def generate(root: Path, n: int) -> None:
    for name in ("horizontal", "vertical"):
        (root / name).mkdir(parents=True, exist_ok=True)
    step = 1000
    with Pool(os.cpu_count() or 2) as pool:
        pool.map(_make, [(str(root), i, min(n, i + step)) for i in range(0, n, step)])


def subset(root: Path, sub: Path, n: int) -> None:
    for name in ("horizontal", "vertical"):
        (sub / name).mkdir(parents=True, exist_ok=True)
        files = sorted((root / name).iterdir())[: n // 2]
        for f in files:
            link = sub / name / f.name
            if not link.exists():
                link.symlink_to(f)


def timed(cmd: list[str], env: dict) -> tuple[float, int, subprocess.CompletedProcess]:
    """Wall seconds and peak resident memory (bytes) of a command."""
    t0 = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return wall, int(done.stderr.strip().splitlines()[-1]) * 1024, done


def epoch(source: str, cache: str, runs: Path, env: dict) -> dict:
    wall, rss, _ = timed([*CNNLAB, "train", source, *TRAIN, "--cache", cache, "--runs-dir", str(runs)], env)
    run = sorted(runs.iterdir())[-1]
    m = json.loads((run / "metrics.json").read_text())
    n = json.loads((run / "data.json").read_text())["splits"]["train"]
    return {"cache": cache, "train_images": n, "train_time_s": m["train_time_s"],
            "images_per_s": n / m["train_time_s"], "peak_rss_gb": rss / 2**30, "wall_s": wall,
            "test_accuracy": m.get("test", {}).get("accuracy")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=40_000)
    ap.add_argument("--subset", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--root", default="/tmp/cnnlab-disk-bench")
    ap.add_argument("--skip-full", action="store_true", help="only the subset comparison")
    args = ap.parse_args()
    root = Path(args.root)
    data, cache = root / f"photos-{args.images}", root / "cache"
    env = dict(os.environ, CNNLAB_CACHE=str(cache), PYTHONPATH=str(HERE / "src"))
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"CPU: {cpu}, {os.cpu_count()} cores")
    t0 = time.perf_counter()
    generate(data, args.images)
    print(f"generated {args.images:,} JPEG files in {time.perf_counter() - t0:.0f} s under {data}")
    out = {"cpu": cpu, "images": args.images, "decoded_gb": args.images * 150 * 150 * 3 / 2**30}
    if not args.skip_full:
        build = [sys.executable, "-c", "from cnnlab.data.sources import DataOptions, load_source; "
                 f"load_source('folder:{data}', DataOptions(image_size=(150, 150), color_mode='rgb', cache='disk'))"]
        wall, rss, _ = timed(build, env)
        out["cache_build"] = {"wall_s": wall, "peak_rss_gb": rss / 2**30}
        print(f"disk cache: built in {wall:.0f} s, peak resident memory {rss / 2**30:.2f} GB", flush=True)
        full = epoch(f"folder:{data}", "disk", root / "runs-full", env)
        out["full_epoch"] = full
        print(f"one epoch from the disk cache: {full['train_images']:,} images at {full['images_per_s']:.1f}/s, "
              f"peak resident memory {full['peak_rss_gb']:.2f} GB (goal <= 1.5)", flush=True)
    sub = root / f"subset-{args.subset}"
    subset(data, sub, args.subset)
    rates: dict[str, list[float]] = {"memory": [], "disk": []}
    for _ in range(args.rounds):
        for mode in ("memory", "disk"):
            r = epoch(f"folder:{sub}", mode, root / f"runs-{mode}", env)
            rates[mode].append(r["images_per_s"])
            print(f"  subset of {args.subset:,}, {mode}: {r['images_per_s']:.1f} images/s, "
                  f"peak {r['peak_rss_gb']:.2f} GB", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    out["subset"] = {"images": args.subset, "images_per_s": rates, "median": med, "ratio": med["disk"] / med["memory"]}
    print(f"subset: disk / memory = {med['disk']:.1f} / {med['memory']:.1f} images/s = "
          f"{med['disk'] / med['memory']:.2f} (goal >= 0.8)")
    (root / "result.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
