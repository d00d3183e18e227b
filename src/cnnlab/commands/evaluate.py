"""`cnnlab evaluate`."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from ..options import Choice, option
from . import PrecisionOption, add_command


def _splits() -> tuple:
    from ..data.dataset import SPLITS

    return (*SPLITS, "all")


@dataclass
class Options(PrecisionOption):
    run: str = option(None, "run directory", positional=True, required=True)
    source: str | None = option(None, "data to evaluate on", positional=True,
                             default_text="the run's own data, split as in training")
    split: str = option("test", "which split", Choice(_splits))
    json: bool = option(False, "print JSON")


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "evaluate", Options, help="evaluate a run: loss, accuracy, per-class report, confusion matrix"
                ).set_defaults(func=handle)


def handle(args) -> int:
    from ..api import evaluate
    from ..evaluation import format_evaluation
    from ..runs import load_run

    run = load_run(args.run).with_precision(args.precision)
    ev = evaluate(run, args.source, args.split)
    if args.json:
        print(json.dumps({k: v for k, v in ev.items() if k != "report_text"}, indent=2, ensure_ascii=False))
    else:
        print(format_evaluation(ev, args.split))
        print(f"saved {ev['saved_to']}")
    return 0
