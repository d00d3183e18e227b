"""Issue 32, item 2: int8 against float32 ONNX on a run's test split: file size, ONNX Runtime
images/s (medians of alternating passes, side by side in one process) and accuracy.

    .venv/bin/python benchmarks/int8.py --run RUN            # a Fashion-MNIST fashion-cnn run, say
    .venv/bin/python benchmarks/int8.py --train fashion-cnn  # trains one first (cnnlab train fashion-mnist)

Goal on fashion-cnn: >= 3.5x smaller, >= 1.5x the float32 images/s, accuracy within 0.3 points.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from machine import announce  # noqa: E402


def images_per_s(sess, x: np.ndarray, batch: int) -> float:
    from cnnlab.exporting import onnx_proba

    t0 = time.perf_counter()
    onnx_proba(sess, x, False, batch)
    return len(x) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="a run directory")
    ap.add_argument("--train", default="fashion-cnn", help="the model to train when --run is not given")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, nargs="+", default=[256, 1])
    args = ap.parse_args()
    announce()
    work = Path(tempfile.mkdtemp(prefix="cnnlab-int8-"))
    run_dir = args.run
    if run_dir is None:
        subprocess.run([sys.executable, "-m", "cnnlab", "train", "fashion-mnist", "--model", args.train, "-q",
                        "--no-report", "--runs-dir", str(work / "runs")], check=True)
        run_dir = str(sorted((work / "runs").iterdir())[-1])
    import cnnlab
    from cnnlab.exporting import export_onnx, onnx_proba, session
    from cnnlab.parity import parity_images
    from cnnlab.quantizing import export_int8

    run = cnnlab.load_run(run_dir)
    x, split, y = parity_images(run)
    f32 = export_onnx(run, work / "float32.onnx")["path"]
    q8 = export_int8(run, work / "int8.onnx")
    s32, s8 = session(f32), session(q8["path"])
    print(f"run {run_dir}: {split} split, {len(x):,} images")
    size32, size8 = f32.stat().st_size, q8["path"].stat().st_size
    print(f"size: float32 {size32:,} B, int8 {size8:,} B: {size32 / size8:.2f}x smaller (goal >= 3.5x)")
    for batch in args.batch:
        n = x if batch > 1 else x[:2000]
        fast, slow = [], []
        for _ in range(args.repeats):  # alternating, so drifts in the machine's speed hit both
            slow.append(images_per_s(s32, n, batch))
            fast.append(images_per_s(s8, n, batch))
        a, b = statistics.median(slow), statistics.median(fast)
        print(f"batch {batch}: onnxruntime images/s float32 {a:,.0f}, int8 {b:,.0f}: {b / a:.2f}x "
              f"(medians of {args.repeats}; goal >= 1.5x)")
    if y is not None:
        acc32 = float((onnx_proba(s32, x, False).argmax(1) == y).mean())
        acc8 = float((onnx_proba(s8, x, False).argmax(1) == y).mean())
        print(f"accuracy: float32 {acc32:.4f}, int8 {acc8:.4f}: {(acc8 - acc32) * 100:+.2f} points (goal within 0.3)")
    print(q8["parity"].line())


if __name__ == "__main__":
    main()
