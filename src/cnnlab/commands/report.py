"""`cnnlab report`."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..data.dataset import SPLITS

    fmt = argparse.ArgumentDefaultsHelpFormatter
    r = sub.add_parser("report", help="write the run's self-contained report.html", formatter_class=fmt)
    r.add_argument("run", help="run directory")
    r.add_argument("--out", default=None, help="output file (default: RUN/report.html)")
    r.add_argument("--split", default=None, choices=SPLITS,
                   help="the split whose results it shows (default: test, or validation when the run has no "
                   "test split)")
    r.set_defaults(func=handle)


def handle(args) -> int:
    from ..report import build_report
    from ..runs import load_run
    from ..viz import default_split

    run = load_run(args.run)
    path = build_report(run, args.out, split=args.split or default_split(run))
    print(f"report written to {path}")
    return 0
