"""`cnnlab summary`."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    s = sub.add_parser("summary", help="Keras-style model summary of a preset or spec", formatter_class=fmt)
    s.add_argument("model", help="preset name or spec file (.yaml/.json)")
    s.add_argument("--input-shape", type=int, nargs="+", default=None, metavar="N",
                   help="adapt a preset to this input shape: H W C")
    s.add_argument("--classes", type=int, default=None, help="adapt a preset to this many classes")
    s.add_argument("--flops", action="store_true",
                   help="also count FLOPs per image: predicting, and one training step (builds the model)")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=handle)


def handle(args) -> int:
    from ..models import spec_from  # torch-free: a summary needs shapes and counts, not a module

    shape = tuple(args.input_shape) if args.input_shape else None
    spec = spec_from(args.model, shape, args.classes)
    out = spec.summary_dict() if args.json else spec.summary()
    if args.flops:
        from ..models.flops import count_flops

        flops = count_flops(spec)
        if args.json:
            out["flops_per_image"] = {"forward": flops.forward, "train": flops.train}
        else:
            out += (f"\n FLOPs per image: {flops.forward:,} predicting, {flops.train:,} in a training step "
                    "(multiply-adds count 2)")
    print(json.dumps(out, indent=2) if args.json else out)
    return 0
