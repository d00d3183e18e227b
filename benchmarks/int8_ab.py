"""int8 static quantization (FX graph mode, x86/fbgemm) against fp32 inference, side by side.

    .venv/bin/python benchmarks/int8_ab.py                   # fashion-cnn, batches 64, 256, 1024
    .venv/bin/python benchmarks/int8_ab.py --model fast

Issue 3, item 5 asks for 20,000 Fashion-MNIST images per second with fashion-cnn. fp32 is
compute-bound here (docs/performance.md), so this measures what int8 buys. The model is
calibrated on random data: the speed does not depend on the calibration, and accuracy is not
measured here. Images per second are medians of alternating rounds.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from cnnlab.models.build import build_module
from cnnlab.models.presets import spec_from

sys.path.insert(0, str(Path(__file__).parent))
from step_ab import alternate  # noqa: E402


class FlattenHWC(nn.Module):
    """cnnlab's Keras-order Flatten without its rank check, which FX cannot trace."""

    def forward(self, x):
        return x.permute(0, 2, 3, 1).flatten(1)


def plain_sequential(model) -> nn.Sequential:
    """The spec model's layers as one traceable Sequential, dropout left out (inference)."""
    mods = []
    for block in model.blocks:
        for m in block:
            name = type(m).__name__
            if "Dropout" in name:
                continue
            mods.append(FlattenHWC() if "Flatten" in name else m)
    return nn.Sequential(*mods).eval()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="fashion-cnn")
    ap.add_argument("--batches", nargs="+", type=int, default=[64, 256, 1024])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.manual_seed(0)
    fp32 = plain_sequential(build_module(spec_from(args.model)).eval())
    example = torch.randn(256, 1, 28, 28)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        prepared = prepare_fx(plain_sequential(build_module(spec_from(args.model)).eval()),
                              get_default_qconfig_mapping("x86"), (example,))
        with torch.no_grad():
            for _ in range(4):
                prepared(torch.rand(256, 1, 28, 28))
        int8 = convert_fx(prepared)
    print(f"{args.model}, {torch.get_num_threads()} threads, images per second (medians of {args.rounds} rounds)")
    for bs in args.batches:
        x = torch.rand(bs, 1, 28, 28)
        xc = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            fns = {"fp32": lambda xc=xc: fp32(xc), "int8": lambda x=x: int8(x)}
            for f in fns.values():
                f()
            s = alternate(fns, args.rounds, max(1, 2048 // bs))
        print(f"  batch {bs:>5}: fp32 {bs / s['fp32']:8,.0f}   int8 {bs / s['int8']:8,.0f}   "
              f"({s['fp32'] / s['int8']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
