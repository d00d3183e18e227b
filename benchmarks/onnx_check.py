"""Issue 17, items 2 and 4: exported models checked on the 10,000 Fashion-MNIST test images, and
inference speed of the torch engine against ONNX Runtime, side by side in one process.

    .venv/bin/python benchmarks/onnx_check.py                      # trains fashion-cnn and fast first
    .venv/bin/python benchmarks/onnx_check.py --runs runs/A runs/B # or uses these runs

For each run: export it (cnnlab export), then on the 10,000 test images held in memory as uint8,
1. the largest absolute probability difference between ONNX Runtime and `run.predict_proba`, and
   how many predicted classes differ (goal: 0 and at most 1e-5);
2. images/s of both engines at batch 256, alternating torch / onnx, ``--rounds`` times each; the
   median of each (goal: at least 20,000 images/s for fashion-cnn through the faster engine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


def train(model: str, runs: Path) -> Path:
    extra = ["--recipe", "fast"] if model == "fashion-cnn" else []
    subprocess.run([sys.executable, "-m", "cnnlab", "train", "fashion-mnist", "--model", model, *extra,
                    "--runs-dir", str(runs), "--no-report", "--quiet", "--name", model], check=True)
    return sorted(runs.glob(f"*-{model}"))[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="*", default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="runs/onnx-check")
    args = ap.parse_args()
    import cnnlab
    from cnnlab.api import run_dataset
    from cnnlab.exporting import export_onnx, onnx_proba, session

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"CPU: {cpu}; torch threads {torch.get_num_threads()}")
    out = Path(args.out)
    runs = [Path(r) for r in args.runs] if args.runs else [train(m, out) for m in ("fashion-cnn", "fast")]
    results = {"cpu": cpu, "runs": {}}
    for path in runs:
        run = cnnlab.load_run(path)
        x = np.ascontiguousarray(run_dataset(run)["test"].x)
        exported = export_onnx(run)
        sess = session(exported["path"])
        binary = run.spec.head == "binary"
        ours, theirs = run.predict_proba(x), onnx_proba(sess, x, binary)
        check = {"images": len(x), "max_abs_diff": float(np.abs(ours - theirs).max()),
                 "argmax_differs": int((ours.argmax(1) != theirs.argmax(1)).sum())}
        speed: dict[str, list[float]] = {"torch": [], "onnx": []}
        for _ in range(args.rounds):
            for engine in ("torch", "onnx"):
                t0 = time.perf_counter()
                if engine == "torch":
                    run.predict_proba(x, 256)
                else:
                    onnx_proba(sess, x, binary, 256)
                speed[engine].append(len(x) / (time.perf_counter() - t0))
        med = {k: statistics.median(v) for k, v in speed.items()}
        results["runs"][run.spec.name] = {"check": check, "images_per_s": speed, "median": med}
        print(f"{run.spec.name}: {len(x):,} test images, max |difference| {check['max_abs_diff']:.2e}, "
              f"classes differing {check['argmax_differs']}; images/s torch {med['torch']:,.0f}, "
              f"onnx {med['onnx']:,.0f} (median of {args.rounds})", flush=True)
    (out / "result.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
