"""`cnnlab predict`."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ..options import Interval, Rule, option
from ..textwidth import ljust
from . import EngineOption, PrecisionOption, add_command


def _reject_ok(v) -> bool:
    return keep_share(v) is not None or v == "none"


def keep_share(v: str | None) -> float | None:
    """--reject's value as the share of held-out images to keep: auto is 0.95, P is P; None for
    none (or a value that is neither)."""
    if v == "auto":
        return 0.95
    try:
        return float(v) if v is not None and 0.0 < float(v) < 1.0 else None
    except ValueError:
        return None


@dataclass
class Options(EngineOption, PrecisionOption):
    run: str = option(None, "run directory, or imagenet:NAME[:WIDTH] for Keras Applications' ImageNet classifier "
                      "(mobilenet_v2, vgg16, resnet50; its weights download once, as --weights imagenet)",
                      positional=True, required=True)
    inputs: list = option(None, "image files, folders, glob patterns, or one CSV template", positional=True,
                          required=True, nargs="+", item=str)
    out: str | None = option(None, "write predictions to this CSV file", short="-o", metavar="OUT")
    top_k: int | None = option(None, "add the K most likely classes per image", Interval(1), metavar="K")
    image_column: str | None = option(None, "CSV template: the image path/id column")
    image_pattern: str | None = option(None, "CSV template: file name template for ids, e.g. 'images/test/{}.png'")
    label_column: str | None = option(None, "CSV template: the column to fill")
    submission: bool = option(False, "CSV template: write only the template's columns (a competition submission)")
    reject: str | None = option(None, "say unknown for images unlike the training data (energy score): auto keeps "
                                "95% of the run's held-out images, or give the share to keep, e.g. 0.9; adds the "
                                "unknown and ood_score columns", Rule(_reject_ok, "auto, none, or a share in (0, 1)"),
                                metavar="auto|P", example="auto")


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "predict", Options, help="classify image files, folders, globs or a CSV template"
                ).set_defaults(func=handle)


def handle(args) -> int:
    from ..data.images import printable
    from ..prediction import collect_inputs, format_csv, predict_paths, predict_template, rows_for, write_csv
    from ..runs import load_run

    if args.run.startswith("imagenet:"):
        from ..errors import ConfigError
        from ..prediction import imagenet_run

        if args.engine != "torch":
            raise ConfigError(f"--engine {args.engine} needs a run directory to export into", "--engine",
                              "leave out --engine for imagenet:NAME")
        run = imagenet_run(args.run)
    else:
        run = load_run(args.run)
    from ..shipping import ENGINES

    run = ENGINES[args.engine].apply(run.with_precision(args.precision))
    keep = keep_share(args.reject)
    if len(args.inputs) == 1 and args.inputs[0].lower().endswith(".csv") and Path(args.inputs[0]).is_file():
        if keep is not None:
            from ..errors import ConfigError

            raise ConfigError("--reject marks image files, not a CSV template", "--reject",
                              "leave it out: a submission never rejects (every id gets a class)")
        cols, rows = predict_template(run, args.inputs[0], args.image_column, args.image_pattern,
                                      args.label_column, args.top_k, args.submission)
    else:
        paths = collect_inputs(args.inputs)
        rejected = None
        if keep is None:
            probs = predict_paths(run, paths)
        else:
            probs, energy, unknown = predict_paths(run, paths, keep=keep)
            rejected = (energy, unknown)
        cols, rows = rows_for(run, [printable(p) for p in paths], probs, args.top_k, rejected)
        if len(paths) == 1 and not args.out:
            p = probs[0]
            if rejected is not None and rejected[1][0]:
                print(f"{printable(paths[0])}: unknown (ood score {rejected[0][0]:.3f}, below the threshold that keeps "
                      f"{keep:.0%} of the run's held-out images); most like {run.class_names[int(p.argmax())]} "
                      f"({p.max():.4f})")
                return 0
            print(f"{printable(paths[0])}: {run.class_names[int(p.argmax())]} ({p.max():.4f})")
            shown = sorted(zip(run.class_names, p), key=lambda t: -t[1])
            for name, v in shown[:args.top_k or (5 if len(shown) > 20 else len(shown))]:
                print(f"  {ljust(name, 16)} {v:.4f} {'#' * int(round(v * 40))}")
            return 0
    if args.out:
        write_csv(args.out, cols, rows)
        print(f"wrote {len(rows):,} predictions to {args.out}")
    else:
        print(format_csv([c for c in cols if not c.startswith("prob_")], rows), end="")
    return 0
