"""`cnnlab backbones`."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ..options import option
from . import add_command


@dataclass
class Options:
    input_shape: tuple | list = option((224, 224, 3), "the image shape the counts are for", nargs=3, item=int,
                                       metavar=("H", "W", "C"))


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "backbones", Options, help="list the architectures --backbone builds, with their parameter "
                "counts").set_defaults(func=handle)


def handle(args) -> int:
    from ..models import parse_spec
    from ..models.backbones import BACKBONES, backbone_spec

    shape = tuple(args.input_shape)
    print(f"{'backbone':<22}{'params':>12}  (the backbone alone, on {'x'.join(map(str, shape))} images; "
          "Keras counts the same)")
    for b in BACKBONES.values():
        for width in b.widths or (None,):
            name = b.name if width is None else f"{b.name}:{width:g}"
            spec = parse_spec(backbone_spec(name, shape, 10))
            body = sum(layer.params for layer in spec.layers[:-1])  # less the new Dense head
            default = "  (the default)" if b.widths and width == b.widths[0] else ""
            print(f"{name:<22}{body:>12,}{default}")
        print(f"  {b.description}\n  min. image size {b.min_size}; pretrained weights: {b.weights}")
    print("\nTrain one: cnnlab train SOURCE --backbone mobilenet_v2:0.35 --image-size 96 96 [--weights imagenet "
          "--recipe finetune]")
    return 0
