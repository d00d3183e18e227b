"""Issue 19, item 4: index-free max pooling (models/build.MaxPool2d) against torch's op, in prediction.

    .venv/bin/python benchmarks/pool_ab.py                      # 7 alternating rounds

1. The op alone on 256 x 32 x 28 x 28 channels_last (fashion-cnn's first pooling), fp32 and bf16.
2. A whole fashion-cnn prediction at batch 256 (inference_mode; bf16 autocast where the CPU has
   it), with the fast path switched off and on in turn in one process; images/s, medians.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from precision import predict_rate  # benchmarks/precision.py: the same prediction timing


def per_call_ms(fn, n: int = 50) -> float:
    for _ in range(5):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    from cnnlab.engine.precision import native_bf16
    from cnnlab.models import build_module, parse_spec, preset_spec
    from cnnlab.models.build import MaxPool2d

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    dtypes = [None] + ([torch.bfloat16] if native_bf16(torch.device("cpu")) else [])
    print(f"CPU: {cpu}; torch threads {torch.get_num_threads()}")
    pool = MaxPool2d(2, 2)
    with torch.inference_mode():
        for dtype in dtypes:
            y = torch.randn(256, 32, 28, 28).to(dtype or torch.float32).contiguous(memory_format=torch.channels_last)
            print(f"op alone, {dtype or torch.float32}: torch {per_call_ms(lambda y=y: F.max_pool2d(y, 2)):.2f} ms, "
                  f"cnnlab {per_call_ms(lambda y=y: pool(y)):.2f} ms")
    model = build_module(parse_spec(preset_spec("fashion-cnn"))).eval()
    pools = [m for m in model.modules() if isinstance(m, MaxPool2d)]
    x = torch.randn(256, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    rates: dict = {}
    for _ in range(args.rounds):
        for dtype in dtypes:
            for fast in (False, True):
                for p in pools:
                    p.halves = fast
                rates.setdefault((str(dtype or torch.float32), fast), []).append(predict_rate(model, x, dtype))
    for (dtype, fast), v in rates.items():
        print(f"fashion-cnn prediction, {dtype}, {'index-free' if fast else 'torch op'}: "
              f"{statistics.median(v):,.0f} images/s")


if __name__ == "__main__":
    main()
