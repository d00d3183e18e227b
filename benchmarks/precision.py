"""Issue 19, item 1: bfloat16 autocast against float32 on this CPU, side by side.

    .venv/bin/python benchmarks/precision.py                   # seeds 1 2 3, about 10 minutes

1. Accuracy: `cnnlab train fashion-mnist --model fast` and `--model fashion-cnn --recipe fast`,
   each with --precision fp32 and --precision bf16, seeds 1-3, alternating, each a whole process
   (report off). Test accuracy (read once per run) and wall time; the goal is bf16 within 0.2
   points of fp32 (medians of the 3 seeds).
2. Speed in one process: images/s of a fashion-cnn training step (batch 256, Adam) and of
   prediction (batch 256) in fp32 and under bf16 autocast, alternating, medians of --rounds
   (``--speed-only``: just this; with ``CNNLAB_MALLOC=default``, glibc's allocator settings).

On a CPU without native bf16 (no avx512_bf16 / amx_bf16 in /proc/cpuinfo) it says so and stops:
`--precision auto` stays float32 there, and an emulated bf16 figure would mislead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def train(model: str, precision: str, seed: int, runs: Path) -> dict:
    extra = ["--recipe", "fast"] if model == "fashion-cnn" else []
    name = f"{model}-{precision}-{seed}"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cnnlab", "train", "fashion-mnist", "--model", model, *extra,
                    "--precision", precision, "--seed", str(seed), "--runs-dir", str(runs), "--no-report",
                    "--quiet", "--name", name], check=True)
    wall = time.perf_counter() - t0
    run = sorted(runs.glob(f"*-{name}"))[-1]
    m = json.loads((run / "metrics.json").read_text())
    return {"test_accuracy": m["test"]["accuracy"], "wall_s": round(wall, 1), "used": m["environment"]["precision"]}


def predict_rate(model, x: torch.Tensor, dtype) -> float:
    """Images/s of ``model`` (eval mode, inference_mode) on the batch ``x``: 20 timed batches after
    3 warm-up ones, under autocast to ``dtype`` (None: float32)."""
    from cnnlab.engine.precision import autocast

    model.eval()
    with torch.inference_mode():
        for i in range(23):
            if i == 3:
                t0 = time.perf_counter()
            with autocast(dtype, x.device):
                model(x).float().softmax(1)
    return 20 * len(x) / (time.perf_counter() - t0)


def step_speed(rounds: int) -> dict:
    from cnnlab.engine.allocator import keep_freed_memory
    from cnnlab.engine.precision import autocast

    print(f"allocator: {keep_freed_memory()}")  # as `cnnlab train` does; CNNLAB_MALLOC=default: glibc's own
    from cnnlab.models import build_module, preset_spec
    from cnnlab.models.spec import parse_spec

    torch.manual_seed(0)
    model = build_module(parse_spec(preset_spec("fashion-cnn")))
    opt = torch.optim.Adam(model.parameters())
    x = torch.randn(256, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (256,))
    out: dict = {"train fp32": [], "train bf16": [], "predict fp32": [], "predict bf16": []}
    for _ in range(rounds):
        for dtype in (None, torch.bfloat16):
            key = "bf16" if dtype else "fp32"
            model.train()
            for i in range(13):  # 3 warm-up steps, then 10 timed
                if i == 3:
                    t0 = time.perf_counter()
                with autocast(dtype, x.device):
                    logits = model(x)
                loss = model.loss(logits.float(), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            out[f"train {key}"].append(10 * 256 / (time.perf_counter() - t0))
            out[f"predict {key}"].append(predict_rate(model, x, dtype))
    return {k: round(statistics.median(v)) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--models", nargs="+", default=["fast", "fashion-cnn"])
    ap.add_argument("--speed-only", action="store_true", help="item 2 only: steps and predictions in one process")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from cnnlab.engine.precision import cpu_flags, native_bf16

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    bf16 = sorted({"avx512_bf16", "amx_bf16"} & cpu_flags())
    print(f"CPU: {cpu}; native bf16 flags: {', '.join(bf16) or 'none'}; torch threads {torch.get_num_threads()}")
    if not native_bf16(torch.device("cpu")):
        print("this CPU has no native bf16: --precision auto trains in float32 here; nothing to compare")
        return
    results: dict = {"cpu": cpu, "flags": bf16, "speed": step_speed(args.rounds), "runs": {}}
    print(json.dumps(results["speed"]))
    if args.speed_only:
        return
    runs = Path(tempfile.mkdtemp(prefix="cnnlab-precision-"))
    for seed in args.seeds:
        for model in args.models:
            for prec in ("fp32", "bf16"):
                r = train(model, prec, seed, runs)
                results["runs"].setdefault(f"{model} {prec}", []).append(r)
                print(f"seed {seed} {model} {prec}: {r}", flush=True)
    summary = {k: {"median_test_accuracy": statistics.median(r["test_accuracy"] for r in v),
                   "median_wall_s": statistics.median(r["wall_s"] for r in v)} for k, v in results["runs"].items()}
    results["summary"] = summary
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
