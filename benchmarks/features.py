"""Issue 28, item 3: `--recipe features` (Chollet's fast feature extraction) against frozen end-to-end
training, per epoch, on a 2-class folder of 2,000 150 x 150 RGB images.

    .venv/bin/python benchmarks/features.py                          # MobileNetV2, 3 repeats
    .venv/bin/python benchmarks/features.py --backbone vgg16 --repeats 1 --epochs 2

The data: benchmarks/photos.py's folder (random crops of scikit-learn's two sample photos, saved as
150 x 150 JPEGs), 1,000 per class to train (a validation split of 0.2 holds out 400) and 100 per
class to test. The backbone starts from random weights: no network here, and the time of a pass
does not depend on the weights' values.

Two arms, alternating, the same settings otherwise (batch 32, Adam, every epoch run):
- features: `--recipe features`, run twice: with an empty cache (the one feature pass, then the
  head's epochs) and again with the cache filled (the head's epochs only);
- frozen: `--unfreeze-from avg_pool` (every backbone layer frozen, the head trains on images).

Per epoch: the median of history.csv's time_s (training and the validation pass). The one feature
pass: the cold features run's wall time less the warm one's. The CPU and other processes' load
before the first run are printed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from photos import build_folder  # noqa: E402

import cnnlab  # noqa: E402


def epoch_times(run) -> list[float]:
    with open(Path(run.path) / "history.csv") as f:
        return [float(row["time_s"]) for row in csv.DictReader(f)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="mobilenet_v2")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from cnnlab.engine.threads import LoadMeter

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    meter = LoadMeter()
    time.sleep(2)
    load = meter.read() or 0.0
    print(f"CPU: {cpu}; {os.cpu_count()} cores; other processes' load before: {load:.2f} cores", flush=True)
    work = Path(tempfile.mkdtemp(prefix="cnnlab-features-"))
    build_folder(work / "photos", 1000, 100, seed=0)
    os.environ["CNNLAB_HOME"] = str(work / "home")
    common = {"backbone": args.backbone, "image_size": (150, 150), "color_mode": "rgb", "epochs": args.epochs,
              "patience": None, "test_source": str(work / "photos" / "test"), "quiet": True, "check": False,
              "runs_dir": str(work / "runs")}
    rows = {"features (cold cache)": [], "features (warm cache)": [], "frozen end to end": []}
    for rep in range(args.repeats):
        shutil.rmtree(work / "home", ignore_errors=True)
        for name, opts in (("features (cold cache)", {"recipe": "features"}),
                           ("features (warm cache)", {"recipe": "features"}),
                           ("frozen end to end", {"unfreeze_from": "avg_pool"})):
            t0 = time.perf_counter()
            run = cnnlab.train(str(work / "photos" / "train"), seed=rep + 1, **common, **opts)
            wall = time.perf_counter() - t0
            times = epoch_times(run)
            rows[name].append({"wall_s": round(wall, 2), "epoch_s": statistics.median(times),
                               "epochs": times, "test_accuracy": run.metrics["test"]["accuracy"]})
            print(f"repeat {rep + 1} {name}: whole run {wall:.1f} s, median epoch {statistics.median(times):.3f} s, "
                  f"test accuracy {run.metrics['test']['accuracy']:.4f}", flush=True)
    med = {k: statistics.median(r["epoch_s"] for r in v) for k, v in rows.items()}
    feature_epoch = statistics.median([med["features (cold cache)"], med["features (warm cache)"]])
    passes = [c["wall_s"] - w["wall_s"] for c, w in zip(rows["features (cold cache)"], rows["features (warm cache)"])]
    summary = {"cpu": cpu, "load_before": load, "backbone": args.backbone, "images": 2000, "image_size": 150,
               "epochs": args.epochs, "repeats": args.repeats, "median_epoch_s": med,
               "feature_pass_s": statistics.median(passes),
               "speedup_per_epoch": med["frozen end to end"] / feature_epoch, "runs": rows}
    print(f"{args.backbone}: frozen end to end {med['frozen end to end']:.2f} s per epoch, features "
          f"{feature_epoch:.3f} s per epoch: {summary['speedup_per_epoch']:.0f}x (goal >= 20x); the one feature pass "
          f"{summary['feature_pass_s']:.1f} s", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
