"""Training-step time of engine variants, side by side in one process (issue 3, docs/performance.md).

    .venv/bin/python benchmarks/step_ab.py                 # fused Adam, BatchNorm placement, batch size
    .venv/bin/python benchmarks/step_ab.py --rounds 7 --images 4096
    .venv/bin/python benchmarks/step_ab.py --groups denormals whitening
    .venv/bin/python benchmarks/step_ab.py --groups relu_pool relu_pool_predict --rounds 9

Every variant runs forward + backward + optimizer step on the same random batch, in
channels_last, and the variants alternate round by round, so drifts in machine speed hit all of
them. Printed: the median time per image over the rounds, and its ratio to the first variant
of its group.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cnnlab.models.build import build_module
from cnnlab.models.presets import spec_from

sys.path.insert(0, str(Path(__file__).parent))
from fast_screen import bn_cnn, pool_first_cnn  # noqa: E402


def alternate(fns: dict, rounds: int, calls: dict | int = 1) -> dict:
    """Median seconds per call of each function, the functions alternating round by round."""
    calls = calls if isinstance(calls, dict) else dict.fromkeys(fns, calls)
    out: dict = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            for _ in range(calls[k]):
                fn()
            out[k].append((time.perf_counter() - t) / calls[k])
    return {k: statistics.median(v) for k, v in out.items()}


def stepper(model_spec, batch: int, fused: bool | None = True, flush_denormal: bool = False,
            spec_order: bool = False, train: bool = True):
    torch.manual_seed(0)
    model = build_module(spec_from(model_spec))
    if spec_order:  # every layer's modules in the spec's order (no ReLU/MaxPool swap)
        model._plan = [m for block in model.blocks for m in block]
    opt = torch.optim.Adam(model.parameters(), 1e-3, eps=1e-7, fused=fused)
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    def flushed():
        torch.set_flush_denormal(True)  # a process-wide flag: on for this variant's steps only
        try:
            step()
        finally:
            torch.set_flush_denormal(False)

    @torch.inference_mode()
    def predict():
        model.eval()
        model(x)

    fn = flushed if flush_denormal else step if train else predict
    for _ in range(3):  # warm-up: oneDNN primitives, allocator
        fn()
    return fn


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--images", type=int, default=2048, help="images per variant per round")
    ap.add_argument("--groups", nargs="+", default=["adam", "placement", "batch"],
                    choices=["adam", "placement", "batch", "whitening", "denormals",
                             "relu_pool", "relu_pool_predict"])
    args = ap.parse_args(argv)
    bn16 = bn_cnn((16, 32, 64))
    groups = {
        "adam": {
            "foreach Adam (torch's default)": (bn16, 64, None), "fused Adam": (bn16, 64, True)},
        "placement": {
            "conv -> BN -> ReLU -> pool": (bn16, 64, True),
            "conv -> pool -> BN -> ReLU (the fast preset)": (pool_first_cnn((16, 32, 64)), 64, True)},
        "batch": {f"batch {b}": ("fast", b, True) for b in (32, 64, 128, 256)},
        "whitening": {"first conv trained from Glorot (pf16)": (pool_first_cnn((16, 32, 64)), 64, True),
                      "first conv a fixed whitening (the fast preset)": ("fast", 64, True)},
        "denormals": {"the fast preset, batch 64": ("fast", 64, True),
                      "the same, torch.set_flush_denormal(True)": ("fast", 64, True, True)},
        "relu_pool": {"fashion-cnn, conv -> ReLU -> pool (spec order)": ("fashion-cnn", 64, True, False, True),
                      "fashion-cnn, conv -> pool -> ReLU (the engine)": ("fashion-cnn", 64, True)},
        "relu_pool_predict": {
            "fashion-cnn, conv -> ReLU -> pool (spec order)": ("fashion-cnn", 256, True, False, True, False),
            "fashion-cnn, conv -> pool -> ReLU (the engine)": ("fashion-cnn", 256, True, False, False, False)},
    }
    titles = {"adam": "Adam at batch 64 (conv -> BN -> ReLU -> pool model)",
              "placement": "BatchNorm placement, batch 64, fused Adam", "batch": "batch size, the fast preset",
              "whitening": "first layer, batch 64, fused Adam", "denormals": "flushing denormals",
              "relu_pool": "ReLU before or after max-pooling, training step, batch 64",
              "relu_pool_predict": "ReLU before or after max-pooling, prediction, batch 256"}
    print(f"{torch.get_num_threads()} threads, medians of {args.rounds} alternating rounds, "
          f"{args.images} images per variant per round")
    for key in args.groups:
        title, variants = titles[key], groups[key]
        fns = {name: stepper(*v) for name, v in variants.items()}
        batch = {name: v[1] for name, v in variants.items()}
        s = alternate(fns, args.rounds, {k: max(1, args.images // b) for k, b in batch.items()})
        per_image = {k: s[k] / batch[k] * 1e6 for k in s}
        first = next(iter(per_image.values()))
        print(f"\n{title}")
        for k, us in per_image.items():
            print(f"  {k:<46} {us:6.0f} us/image  {us / first:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
