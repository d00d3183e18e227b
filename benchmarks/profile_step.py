"""Issue 19, item 4: where the time of one training step and one prediction batch goes.

    .venv/bin/python benchmarks/profile_step.py            # fp32 and bf16 where the CPU has it

torch.profiler over 20 steps (after 5 warm-up steps) of:
- a `fast` preset training step as its recipe runs it: batch 64, Adam, one-cycle lr, label
  smoothing 0.1, the input scaled and made channels_last as the loop does;
- a fashion-cnn prediction batch of 256 (eval mode, inference_mode).
Prints the top operators by self CPU time and their share, per precision.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.profiler import ProfilerActivity, profile


def fast_step(dtype):
    from cnnlab.engine.precision import autocast
    from cnnlab.models import build_module, parse_spec, preset_spec

    torch.manual_seed(0)
    model = build_module(parse_spec(preset_spec("fast"))).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.008)
    x8 = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)
    y = torch.randint(0, 10, (64,))

    def step():
        xb = ((x8.float() - 72.9) * (1 / 90.0)).contiguous(memory_format=torch.channels_last)
        with autocast(dtype, xb.device):
            logits = model(xb)
        loss = model.loss(logits.float(), y, 0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def predict_batch(dtype):
    from cnnlab.engine.precision import autocast
    from cnnlab.models import build_module, parse_spec, preset_spec

    torch.manual_seed(0)
    model = build_module(parse_spec(preset_spec("fashion-cnn"))).eval()
    x = torch.randn(256, 1, 28, 28).contiguous(memory_format=torch.channels_last)

    def step():
        with torch.inference_mode(), autocast(dtype, x.device):
            model(x).float().softmax(1)
    return step


def table(step, top: int) -> list[dict]:
    for _ in range(5):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(20):
            step()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: -e.self_cpu_time_total)
    return [{"op": e.key, "share": round(100 * e.self_cpu_time_total / total, 1),
             "ms_per_step": round(e.self_cpu_time_total / 20 / 1000, 3)} for e in events[:top]] + [
        {"op": "total", "share": 100.0, "ms_per_step": round(total / 20 / 1000, 3)}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from cnnlab.engine.precision import native_bf16

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    dtypes = [None] + ([torch.bfloat16] if native_bf16(torch.device("cpu")) else [])
    out: dict = {"cpu": cpu, "threads": torch.get_num_threads()}
    print(f"CPU: {cpu}; torch threads {out['threads']}")
    for name, make in (("fast training step (batch 64)", fast_step), ("fashion-cnn prediction (batch 256)",
                                                                      predict_batch)):
        for dtype in dtypes:
            label = f"{name}, {'bf16' if dtype else 'fp32'}"
            rows = table(make(dtype), args.top)
            out[label] = rows
            print(f"\n{label}")
            for r in rows:
                print(f"  {r['share']:5.1f}%  {r['ms_per_step']:8.3f} ms  {r['op']}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
