"""Issue 19, item 4: glibc's allocator settings against a training step, side by side.

    .venv/bin/python benchmarks/allocator_ab.py                 # batch 32 and 256, 3 rounds

Each arm is a fresh process (glibc reads its settings once): a fashion-cnn training step in bf16
where the CPU has it (else fp32), fused Adam, a new batch indexed from 48,000 uint8 images each
step, 300 timed steps after 20 warm-up steps. Arms alternate within every round:
- ``default``: glibc's own thresholds (``CNNLAB_MALLOC=default``);
- ``mmap``: ``MALLOC_MMAP_THRESHOLD_`` raised to 32 MB only;
- ``cnnlab``: what `cnnlab train` does (engine/allocator.py: mmap and trim thresholds raised).
Prints ms per step per arm and round, and the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

PROBE = r"""
import json, sys, time
import torch
from cnnlab.engine.allocator import keep_freed_memory
from cnnlab.engine.precision import autocast, native_bf16
from cnnlab.models import build_module, parse_spec, preset_spec
said = keep_freed_memory()
torch.manual_seed(0)
model = build_module(parse_spec(preset_spec("fashion-cnn"))).train()
opt = torch.optim.Adam(model.parameters(), lr=0.001, fused=True)
x8 = torch.randint(0, 256, (48000, 1, 28, 28), dtype=torch.uint8)
y = torch.randint(0, 10, (48000,))
dtype = torch.bfloat16 if native_bf16(torch.device("cpu")) else None
b = int(sys.argv[1])
perm = torch.randperm(48000)
def step(i):
    idx = perm[(i * b) % 47000:(i * b) % 47000 + b]
    xb = ((x8[idx].float() - 72.9) * (1 / 90.0)).contiguous(memory_format=torch.channels_last)
    with autocast(dtype, xb.device):
        logits = model(xb)
    loss = model.loss(logits.float(), y[idx])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
for i in range(20):
    step(i)
t0 = time.perf_counter()
for i in range(300):
    step(i)
print(json.dumps({"ms": (time.perf_counter() - t0) / 300 * 1000, "allocator": said,
                  "dtype": str(dtype or "float32")}))
"""

ARMS = {"default": {"CNNLAB_MALLOC": "default"},
        "mmap": {"MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024)},
        "cnnlab": {}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 256])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"CPU: {cpu}")
    results: dict = {}
    for r in range(args.rounds):
        for b in args.batches:
            for arm, env in ARMS.items():
                env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env
                out = json.loads(subprocess.run([sys.executable, "-c", PROBE, str(b)], env=env, check=True,
                                                capture_output=True, text=True).stdout)
                results.setdefault((b, arm), []).append(out["ms"])
                print(f"round {r + 1} batch {b} {arm}: {out['ms']:.2f} ms a step ({out['dtype']}; {out['allocator']})",
                      flush=True)
    for (b, arm), v in results.items():
        print(f"batch {b} {arm}: median {statistics.median(v):.2f} ms ({' / '.join(f'{x:.2f}' for x in v)})")


if __name__ == "__main__":
    main()
