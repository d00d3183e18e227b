"""`cnnlab summary`."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from ..options import Interval, option
from . import add_command


@dataclass
class Options:
    model: str = option(None, "preset name or spec file (.yaml/.json)", positional=True, required=True)
    input_shape: list | None = option(None, "adapt a preset to this input shape: H W C", nargs="+", item=int,
                                      metavar="N")
    classes: int | None = option(None, "adapt a preset to this many classes", Interval(1))
    flops: bool = option(False, "also count FLOPs per image: predicting, and one training step (builds the model)")
    json: bool = option(False, "print JSON")


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "summary", Options, help="Keras-style model summary of a preset or spec").set_defaults(func=handle)


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
