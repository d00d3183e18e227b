"""The GPU checks of issue 16 in one command, within about 5 minutes on one machine.

    python benchmarks/gpu_check.py --data npz:fm.npz          # a Fashion-MNIST subset, or fashion-mnist
    python benchmarks/gpu_check.py --data fashion-mnist --out gpu.json

1. One GPU: the `fast` preset with its recipe. Reports the time to its test accuracy, training
   images per second, and the precision used (bfloat16 mixed where the card has it, else
   float16 with a gradient scaler).
2. Every GPU (when there are several): the same run with `--nproc N` (NCCL, one process per GPU,
   the same global batch). Reports images per second and the scaling efficiency,
   ``(images/s with N) / (N x images/s with 1)``.
3. A data-parallel run killed with SIGTERM after its first epoch and resumed with `--resume`:
   that it completes.

The figures go into docs/performance.md with the card's name.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

CNNLAB = [sys.executable, "-m", "cnnlab"]


def train(data: str, runs: str, *extra: str) -> dict:
    t0 = time.perf_counter()
    done = subprocess.run([*CNNLAB, "train", data, "--model", "fast", "--device", "cuda", "--no-report",
                           "--quiet", "--no-check", "--runs-dir", runs, *extra], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"cnnlab train {' '.join(extra)} failed:\n{done.stderr[-3000:]}")
    run = sorted(glob.glob(f"{runs}/*"))[-1]
    m = json.load(open(f"{run}/metrics.json"))
    data_json = json.load(open(f"{run}/data.json"))
    images = data_json["splits"]["train"] * m["epochs_run"]
    return {"wall_s": round(wall, 1), "train_time_s": m["train_time_s"], "test_accuracy": m["test"]["accuracy"],
            "images_per_s": round(images / m["train_time_s"]), "precision": m["environment"].get("precision"),
            "distributed": m.get("distributed"), "gpu": m["environment"].get("gpu")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--out", default=None, help="also write the results as JSON")
    ap.add_argument("--runs-dir", default="/tmp/cnnlab-gpu-check")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run this on a GPU machine")
    n = torch.cuda.device_count()
    out = {"card": torch.cuda.get_device_name(0), "gpus": n, "torch": torch.__version__}
    out["one_gpu"] = train(args.data, f"{args.runs_dir}/one")
    print(json.dumps(out, indent=2), flush=True)
    if n > 1:
        out["all_gpus"] = train(args.data, f"{args.runs_dir}/all", "--nproc", str(n))
        out["scaling_efficiency"] = round(out["all_gpus"]["images_per_s"] / (n * out["one_gpu"]["images_per_s"]), 3)

    # SIGTERM after the first epoch, then --resume
    runs = f"{args.runs_dir}/resume"
    nproc = ["--nproc", str(n)] if n > 1 else []
    p = subprocess.Popen([*CNNLAB, "train", args.data, "--model", "fast", "--device", "cuda", "--no-report",
                          "--quiet", "--no-check", "--epochs", "4", "--runs-dir", runs, *nproc],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not any(Path(h).read_text().count("\n") >= 2
                                             for h in glob.glob(f"{runs}/*/history.csv")):
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGTERM)
    p.wait(timeout=120)
    run = sorted(glob.glob(f"{runs}/*"))[-1]
    done = subprocess.run([*CNNLAB, "train", "--resume", run, "--no-report", *nproc], capture_output=True, text=True)
    m = json.load(open(f"{run}/metrics.json"))
    out["resume"] = {"interrupted_exit_code": p.returncode, "resume_exit_code": done.returncode,
                     "resumed_after_epochs": m.get("resumed_after_epochs"), "status": m["status"],
                     "epochs_run": m["epochs_run"]}
    print(json.dumps(out, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
