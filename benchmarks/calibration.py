"""Issue 31, item 1: test-set calibration of Fashion-MNIST models before and after temperature
scaling (fitted on the validation split at the end of training).

    .venv/bin/python benchmarks/calibration.py                     # fast and fashion-cnn
    .venv/bin/python benchmarks/calibration.py --models fast

Each model trains as a user would train it, in a fresh process (`cnnlab train fashion-mnist --model
NAME --no-report`), with one change for `fast`: its recipe trains on all 60,000 images and keeps
no validation split, so it runs with `--val-split 0.1` (temperature scaling needs held-out images;
the test split is never used to fit it). metrics.json's `calibration` holds the test ECE (15 bins)
and NLL, raw and calibrated; the table prints them with the temperature and the test accuracy.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import announce  # noqa: E402

EXTRA = {"fast": ["--val-split", "0.1"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["fast", "fashion-cnn"])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    announce()
    work = Path(args.out or tempfile.mkdtemp(prefix="cnnlab-calibration-"))
    rows = []
    for name in args.models:
        runs = work / name
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "cnnlab", "train", "fashion-mnist", "--model", name, "--no-report",
                               "-q", "--runs-dir", str(runs), *EXTRA.get(name, [])], capture_output=True, text=True)
        if done.returncode:
            sys.exit(done.stderr[-2000:])
        run = sorted(runs.iterdir())[-1]
        m = json.loads((run / "metrics.json").read_text())
        cal = m["calibration"]
        rows.append({"model": name, "val_split": EXTRA.get(name, ["", "0.2"])[1], "T": cal.get("temperature"),
                     "accuracy": m["test"]["accuracy"], **cal.get("test", {}),
                     "wall_s": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
    print("\n| model | val split | temperature | test accuracy | test ECE raw | calibrated | test NLL raw "
          "| calibrated |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['val_split']} | {r['T']:.3f} | {r['accuracy']:.4f} | {r['ece_raw']:.4f} | "
              f"**{r['ece']:.4f}** | {r['nll_raw']:.4f} | {r['nll']:.4f} |")
    print(f"work in {work}")


if __name__ == "__main__":
    main()
