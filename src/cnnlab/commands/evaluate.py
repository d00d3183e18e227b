"""`cnnlab evaluate`."""

from __future__ import annotations

import argparse
import json

from . import add_precision_option


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..data.dataset import SPLITS

    fmt = argparse.ArgumentDefaultsHelpFormatter
    e = sub.add_parser("evaluate", help="evaluate a run: loss, accuracy, per-class report, confusion matrix",
                       formatter_class=fmt)
    e.add_argument("run", help="run directory")
    e.add_argument("source", nargs="?", default=None,
                   help="data to evaluate on (default: the run's own data, split as in training)")
    e.add_argument("--split", default="test", choices=[*SPLITS, "all"],
                   help="which split")
    e.add_argument("--json", action="store_true", help="print JSON")
    add_precision_option(e)
    e.set_defaults(func=handle)


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
