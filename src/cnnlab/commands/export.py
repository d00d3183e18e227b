"""`cnnlab export`."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ..options import Choice, Interval, option
from . import add_command


def _formats() -> tuple:
    from ..shipping import FORMATS

    return tuple(FORMATS)


def _formats_help() -> str:
    from ..shipping import FORMATS

    return "file format: " + "; ".join(f"{f.name}: {f.help}" for f in FORMATS.values())


@dataclass
class Options:
    run: str = option(None, "run directory", positional=True, required=True)
    format: str = option("onnx", _formats_help, Choice(_formats))
    out: str | None = option(None, "output file (a folder for triton)",
                             default_text="in the run directory: model.onnx, model.keras, model_repository/")
    opset: int = option(17, "ONNX opset version (--format onnx)", Interval(1))
    quantize: str = option("none", "int8: ONNX Runtime's static quantization, calibrated on up to 1,000 training "
                           "images (--format onnx); the export reports size, images/s and accuracy against float32",
                           Choice(("none", "int8")))
    check_browser: bool = option(False, "--format web: also run the check images through the page in headless "
                                 "Chromium (Playwright), recorded in export-check.json")
    check_only: str | None = option(None, "check an exported file (.onnx, .keras) against the run again and write "
                                    "export-check.json beside it; nothing is exported", metavar="FILE")


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "export", Options, help="write the run as an ONNX or Keras model that takes raw images",
                description="Export a run to ONNX (input uint8 images (N, H, W, C) at the run's size, "
                "output class probabilities) or to a Keras 3 .keras file (raw pixel values in, its "
                "first layer a Rescaling with the run's scaling). Class names, image size and colour "
                "mode go in the metadata. The export is checked against the run on its whole test split "
                "before it is kept (export-check.json: top-1 agreement, largest probability difference, "
                "images/s), and MODEL_CARD.md and metadata.json are written beside it.").set_defaults(func=handle)


def handle(args) -> int:
    from ..runs import load_run
    from ..shipping import FORMATS

    run = load_run(args.run)
    if args.check_only:
        from ..exportcli import check_file

        lines = check_file(run, args.check_only)
    else:
        lines = FORMATS[args.format].run(run, args.out, {"opset": args.opset, "quantize": args.quantize,
                                                    "check_browser": args.check_browser})
    for line in lines:
        print(line)
    return 0
