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
    ex.add_argument("--format", default="onnx", choices=["onnx", "keras"], help="file format")
    ex.add_argument("--out", default=None, help="output file (default: RUN/model.onnx or RUN/model.keras)")
    ex.add_argument("--opset", type=int, default=17, help="ONNX opset version (--format onnx)")
    ex.set_defaults(func=handle)


def handle(args) -> int:
    from ..exporting import export_keras, export_onnx, keras_snippet, snippet
    from ..runs import load_run

    run = load_run(args.run)
    if args.format == "keras":
        result = export_keras(run, args.out)
        print(f"wrote {result['path']} (checked on {result['checked_images']} images: largest probability "
              f"difference {result['max_abs_diff']:.1e})")
        if result["flip_tta_left_out"]:
            print("note: the run averages flipped images (--tta flip); the .keras model predicts without that")
        print("use it with Keras 3:")
        print(keras_snippet(run, result["path"]))
        return 0
    result = export_onnx(run, args.out, args.opset)
    print(f"wrote {result['path']} (opset {result['opset']}; checked on {result['checked_images']} images: largest "
          f"probability difference {result['max_abs_diff']:.1e})")
    print("use it with onnxruntime:")
    print(snippet(run, result["path"]))
    return 0
