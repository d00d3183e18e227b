"""torch.compile against eager, side by side in one process (docs/performance.md).

    .venv/bin/python benchmarks/compile_ab.py                  # deep-bn-cnn, batch 500
    .venv/bin/python benchmarks/compile_ab.py --model fashion-cnn --batch 256

Times one training step (forward, backward, Adam) of a preset on random data, eager and
compiled alternating, and the first block's ReLU -> BatchNorm -> MaxPool chain alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

from cnnlab.models.build import build_module
from cnnlab.models.presets import spec_from

sys.path.insert(0, str(Path(__file__).parent))
from step_ab import alternate  # noqa: E402


def side_by_side(eager, compiled, rounds: int, steps: int) -> tuple[float, float]:
    """Median ms per call of each, alternating rounds so drifts in machine speed hit both."""
    s = alternate({"eager": eager, "compiled": compiled}, rounds, steps)
    return s["eager"] * 1000, s["compiled"] * 1000


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="deep-bn-cnn")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args(argv)
    torch.manual_seed(0)

    spec = spec_from(args.model)
    model = build_module(spec)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    h, w, *c = spec.input_shape  # a flat-input preset (deep-mlp) has no channel axis
    x = torch.randn(args.batch, c[0] if c else 1, h, w).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, spec.num_classes, (args.batch,))

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
    e, c = side_by_side(eager, compiled, args.repeats, args.steps)
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
    e, c = side_by_side(chain_step(chain), chain_step(compiled_chain), args.repeats + 2, 1)
    print(f"block-1 ReLU->BatchNorm->MaxPool fwd+bwd: eager {e:.0f} ms, compiled {c:.0f} ms ({c / e:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
