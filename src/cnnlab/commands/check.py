"""`cnnlab check`."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from ..labelissues import LabelIssueOptions
from ..options import option
from . import ConfigFileOption, add_command, config_from_args, given_options

# The keys that say what the data is and how it is split: `cnnlab check` takes these.
DATA_KEYS = ("source", "val_source", "test_source", "data_dir", "image_size", "color_mode", "labels",
             "class_names", "label_column", "image_column", "image_pattern", "download", "on_bad_image",
             "val_split", "test_split", "seed", "strict", "exclude", "relabel")
# The keys of the models --label-issues trains (one per fold), beside --model.
FOLD_KEYS = ("backbone", "weights", "epochs", "batch_size", "lr", "precision", "threads", "device", "runs_dir",
             "quiet")


@dataclass
class Options(ConfigFileOption, LabelIssueOptions):
    json: bool = option(False, "print the report as JSON", default_text="text")
    out: str | None = option(None, "also write the JSON report to FILE", metavar="FILE.json")
    near: bool = option(True, "skip the near-duplicate search (perceptual hashes)", default_text="search")


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "check", Options, train={"only": DATA_KEYS + FOLD_KEYS},
                help="check a dataset before training: duplicates, leakage, class balance, unreadable files",
                description="Load a data source as training would (same splits for the same --seed) and "
                "report exact duplicates within and across splits, near duplicates across splits, class "
                "counts and imbalance, unreadable files, image sizes and modes, and for CSV tables ids "
                "without a file and files not in the table. Exit code 2 with --strict when images are "
                "shared across splits. With --label-issues: the images that are probably labelled wrong "
                "(out-of-fold probabilities of K models, cleanlab), as label-issues.csv for --exclude or "
                "--relabel.").set_defaults(func=handle)


def handle(args) -> int:
    from ..atomic import write_json
    from ..data.check import check_source, findings, format_report

    cfg = config_from_args(args, drop=FOLD_KEYS)
    found = None
    if args.label_issues or args.oof:
        from ..labelissues import need_cleanlab

        need_cleanlab()  # before the data check's minutes, not after
    report = check_source(cfg, near=args.near)
    if args.label_issues or args.oof:
        found = label_issues(args, format_report(report, cfg.strict))
        report["label_issues"] = found.to_json()
        report["label_issues_checked"] = {"images": found.checked, "split": found.split, "found": len(found.rows),
                                          "folder": str(found.out), "seconds": round(found.seconds, 1)}
    if args.out:
        write_json(args.out, report)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(format_report(report, cfg.strict))
        if found is not None:
            from ..labelissues import format_issues

            print(format_issues(found, args.top))
        if args.out:
            print(f"report written to {args.out}")
    errors = [m for level, m in findings(report, cfg.strict) if level == "error"]
    if errors:
        from ..errors import DataError

        raise DataError(errors[0], cfg.source, "remove the copies from one of the splits (cnnlab check lists "
                        "examples), or leave out --strict")
    return 0


def label_issues(args, check_text: str):
    """--label-issues: the folds' config (the model's own recipe), the suspects and their files."""
    import sys

    from ..labelissues import LabelIssueOptions, find, fold_config
    from ..options import keys_of
    from ..report.labels import write_label_page

    opts = LabelIssueOptions(**{k: getattr(args, k) for k in keys_of(LabelIssueOptions)})
    overrides = given_options(args)
    cfg = fold_config(args.config, opts, overrides, flags=list(overrides))
    quiet = cfg.quiet or args.json
    found = find(cfg, opts, say=lambda line: None if quiet else print(line, file=sys.stderr, flush=True))
    write_label_page(found, check_text)
    return found
