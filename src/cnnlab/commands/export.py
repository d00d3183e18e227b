"""`cnnlab export`."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser("export", help="write the run as an ONNX or Keras model that takes raw images",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                        description="Export a run to ONNX (input uint8 images (N, H, W, C) at the run's size, "
                        "output class probabilities) or to a Keras 3 .keras file (raw pixel values in, its "
                        "first layer a Rescaling with the run's scaling). Class names, image size and colour "
                        "mode go in the metadata. The export is checked against the run's own predictions "
                        "before it is kept.")
    ex.add_argument("run", help="run directory")
    from ..shipping import FORMATS

    ex.add_argument("--format", default="onnx", choices=list(FORMATS),
                    help="file format: " + "; ".join(f"{f.name}: {f.help}" for f in FORMATS.values()))
    ex.add_argument("--out", default=None, help="output file (default: in the run directory: model.onnx, "
                    "model.keras)")
    ex.add_argument("--opset", type=int, default=17, help="ONNX opset version (--format onnx)")
    ex.set_defaults(func=handle)


def handle(args) -> int:
    from ..runs import load_run
    from ..shipping import FORMATS

    for line in FORMATS[args.format].run(load_run(args.run), args.out, {"opset": args.opset}):
        print(line)
    return 0
