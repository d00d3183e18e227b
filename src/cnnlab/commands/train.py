"""`cnnlab train`."""

from __future__ import annotations

import argparse
import sys

from . import add_train_options, config_from_args, os_error_line


def add_parser(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a model and evaluate it on the test set",
                       description="Train a model. With no arguments: fashion-cnn on Fashion-MNIST with the "
                       "notebooks' recipe (Adam, validation split 0.2, early stopping with patience 2, "
                       "best weights restored), evaluated on the test set.")
    add_train_options(t)
    t.set_defaults(func=handle)


def handle(args) -> int:
    from ..evaluation import format_evaluation
    from ..runs import RunDir
    from ..training import train

    cfg = config_from_args(args)
    run = train(cfg)
    m = run.metrics
    ev = RunDir(run.path).read_optional(RunDir.EVALUATION)
    if ev is not None and not cfg.quiet:
        print(format_evaluation(ev, "test"))
    if "test" in m:
        print(f"test accuracy {m['test']['accuracy']:.4f} - test loss {m['test']['loss']:.4f} - "
              f"best epoch {m['best_epoch']} of {m['epochs_run']} - {m['wall_time_s']:.1f}s")
    if args.report and m.get("status") != "interrupted":
        from ..report import build_report
        from ..viz import default_split

        try:
            print(f"report written to {build_report(run, split=default_split(run))}")
        except OSError as e:  # the trained run is complete; only the report is missing
            print(f"warning: report.html was not written: {os_error_line(e)}; then run: cnnlab report "
                  f"{run.path}", file=sys.stderr)
    print(f"run written to {run.path}")
    if m.get("status") == "interrupted":
        print("training was interrupted: the best checkpoint so far is kept", file=sys.stderr)
        return 130
    return 0
