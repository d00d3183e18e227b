"""`cnnlab check`."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from ..options import option
from . import ConfigFileOption, add_command, config_from_args

# The keys that say what the data is and how it is split: `cnnlab check` takes these.
DATA_KEYS = ("source", "val_source", "test_source", "data_dir", "image_size", "color_mode", "labels",
             "class_names", "label_column", "image_column", "image_pattern", "download", "on_bad_image",
             "val_split", "test_split", "seed", "strict")


@dataclass
class Options(ConfigFileOption):
    json: bool = option(False, "print the report as JSON", default_text="text")
    out: str | None = option(None, "also write the JSON report to FILE", metavar="FILE.json")
    near: bool = option(True, "skip the near-duplicate search (perceptual hashes)", default_text="search")


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "check", Options, train={"only": DATA_KEYS},
                help="check a dataset before training: duplicates, leakage, class balance, unreadable files",
                description="Load a data source as training would (same splits for the same --seed) and "
                "report exact duplicates within and across splits, near duplicates across splits, class "
                "counts and imbalance, unreadable files, image sizes and modes, and for CSV tables ids "
                "without a file and files not in the table. Exit code 2 with --strict when images are "
                "shared across splits.").set_defaults(func=handle)


def handle(args) -> int:
    from ..atomic import write_json
    from ..data.check import check_source, findings, format_report

    cfg = config_from_args(args)
    report = check_source(cfg, near=args.near)
    if args.out:
        write_json(args.out, report)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(format_report(report, cfg.strict))
        if args.out:
            print(f"report written to {args.out}")
    errors = [m for level, m in findings(report, cfg.strict) if level == "error"]
    if errors:
        from ..errors import DataError

        raise DataError(errors[0], cfg.source, "remove the copies from one of the splits (cnnlab check lists "
                        "examples), or leave out --strict")
    return 0
