"""`cnnlab report`."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ..options import Choice, option
from . import add_command


def _splits() -> tuple:
    from ..data.dataset import SPLITS

    return tuple(SPLITS)


@dataclass
class Options:
    run: str = option(None, "run directory", positional=True, required=True)
    out: str | None = option(None, "output file", default_text="RUN/report.html")
    split: str | None = option(None, "the split whose results it shows", Choice(_splits),
                               default_text="test, or validation when the run has no test split")


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "report", Options, help="write the run's self-contained report.html").set_defaults(func=handle)


def handle(args) -> int:
    from ..report import build_report
    from ..runs import load_run
    from ..viz import default_split

    run = load_run(args.run)
    path = build_report(run, args.out, split=args.split or default_split(run))
    print(f"report written to {path}")
    return 0
