"""torch.compile against eager, side by side in one process (docs/performance.md).

    .venv/bin/python benchmarks/compile_ab.py                  # deep-bn-cnn, batch 500
    .venv/bin/python benchmarks/compile_ab.py --model fashion-cnn --batch 256

Times one training step (forward, backward, Adam) of a preset on random data, eager and
compiled alternating, and the first block's ReLU -> BatchNorm -> MaxPool chain alone.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from cnnlab.models.build import build_module
from cnnlab.models.presets import spec_from


def timed(fn, repeats: int, steps: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            fn()
        out.append((time.perf_counter() - t) / steps * 1000)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="deep-bn-cnn")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args(argv)
    torch.manual_seed(0)

    model = build_module(spec_from(args.model))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randn(args.batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))

    def stepper(module):
        def step():
            loss = model.loss(module(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return step

    eager, t0 = stepper(model), time.perf_counter()
    compiled = stepper(torch.compile(model))
    compiled()
    print(f"{args.model}, batch {args.batch}: compile + first step {time.perf_counter() - t0:.1f} s")
    ms = {"eager": [], "compiled": []}
    for _ in range(args.repeats):  # alternate, so drifts in machine speed hit both
        ms["eager"] += timed(eager, 1, args.steps)
        ms["compiled"] += timed(compiled, 1, args.steps)
    e, c = statistics.median(ms["eager"]), statistics.median(ms["compiled"])
    print(f"training step: eager {e:.0f} ms, compiled {c:.0f} ms ({c / e:.2f}x)")

    bn, pool = nn.BatchNorm2d(64, momentum=0.01), nn.MaxPool2d(2)

    def chain(t):
        return pool(bn(torch.relu(t)))

    a = torch.randn(args.batch, 64, 28, 28).contiguous(memory_format=torch.channels_last)
    grad = torch.ones(args.batch, 64, 14, 14)

    def chain_step(fn):
        def step():
            t = a.detach().requires_grad_()
            fn(t).backward(grad)
        return step

    t0 = time.perf_counter()
    compiled_chain = torch.compile(chain)
    chain_step(compiled_chain)()
    print(f"block-1 chain: compile {time.perf_counter() - t0:.1f} s")
    ms = {"eager": [], "compiled": []}
    for _ in range(args.repeats + 2):
        ms["eager"] += timed(chain_step(chain), 1, 1)
        ms["compiled"] += timed(chain_step(compiled_chain), 1, 1)
    e, c = statistics.median(ms["eager"]), statistics.median(ms["compiled"])
    print(f"block-1 ReLU->BatchNorm->MaxPool fwd+bwd: eager {e:.0f} ms, compiled {c:.0f} ms ({c / e:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
