"""`cnnlab export`."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser("export", help="write the run as an ONNX model that takes raw images (scaling inside)",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                        description="Export a run to ONNX: input uint8 images (N, H, W, C) at the run's size, "
                        "output class probabilities; the scaling is inside, and class names, image size and "
                        "colour mode are in the metadata. The export is checked against the run's own "
                        "predictions before it is kept.")
    ex.add_argument("run", help="run directory")
    ex.add_argument("--format", default="onnx", choices=["onnx"], help="file format")
    ex.add_argument("--out", default=None, help="output file (default: RUN/model.onnx)")
    ex.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    ex.set_defaults(func=handle)


def handle(args) -> int:
    from ..exporting import export_onnx, snippet
    from ..runs import load_run

    run = load_run(args.run)
    result = export_onnx(run, args.out, args.opset)
    print(f"wrote {result['path']} (opset {result['opset']}; checked on {result['checked_images']} images: largest "
          f"probability difference {result['max_abs_diff']:.1e})")
    print("use it with onnxruntime:")
    print(snippet(run, result["path"]))
    return 0
