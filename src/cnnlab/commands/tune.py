"""`cnnlab tune`."""

from __future__ import annotations

import argparse
import sys

from . import add_track_options, add_train_options, given_options, tracker_from


def add_parser(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("tune", help="search hyper-parameters with Optuna; every trial is a run",
                       description="Search a space of training keys and model specs (choices and ranges in place "
                       "of values, in Keras' vocabulary) with Optuna: TPE proposes, a median pruner stops trials "
                       "that fall behind, each trial is a run directory under the study folder, scored on the "
                       "validation split (the test split is never read by a trial). The study is kept in a "
                       "database (SQLite in the study folder by default): the same command continues it, and "
                       "workers on other machines join it with --storage. Needs cnnlab[tune].")
    add_train_options(t, skip=("model", "name", "time_limit"), report=False)
    add_track_options(t)
    g = t.add_argument_group("search")
    g.add_argument("--space", metavar="SPACE.yaml", default=None,
                   help="the search space (cnnlab tune --example-space prints the one shipped for Fashion-MNIST)")
    g.add_argument("--example-space", action="store_true", help="print the example space and exit")
    g.add_argument("--trials", type=int, default=20, metavar="N",
                   help="trials in the study in all, across workers and continued searches (default: %(default)s)")
    g.add_argument("--search-time-limit", "--time-limit", dest="search_time_limit", type=float, default=None,
                   metavar="S", help="seconds for the whole search: no trial starts after it, the one running stops "
                   "at it; --time-limit is the old spelling (default: none)")
    g.add_argument("--trial-time-limit", type=float, default=None, metavar="S",
                   help="seconds per trial; it keeps its best epoch so far (default: none)")
    g.add_argument("--metric", default="val_accuracy", choices=("val_accuracy", "val_loss"),
                   help="what trials are scored by, at their best epoch (default: %(default)s)")
    g.add_argument("--storage", default=None, metavar="URL",
                   help="the study's database, any URL Optuna accepts, e.g. postgresql://user@host/db "
                   "(default: sqlite:///OUT/study.db)")
    g.add_argument("--study", default=None, metavar="NAME",
                   help="the study's name (default: <space file name>-<source>)")
    g.add_argument("--jobs", type=int, default=1, metavar="J",
                   help="worker processes on this machine, sharing the cores (default: %(default)s)")
    g.add_argument("--out", default=None, metavar="DIR", help="the study folder (default: RUNS_DIR/<study>)")
    g.add_argument("--refit", action="store_true",
                   help="afterwards, train the best trial on training + validation data and read the test split "
                   "once (default: no)")
    t.set_defaults(func=handle)


def handle(args) -> int:
    from ..errors import ConfigError
    from ..tuning import example_space, tune
    from ..tuning.results import markdown_summary

    if args.example_space:
        print(example_space(), end="")
        return 0
    if not args.space:
        raise ConfigError("no search space given", "--space",
                          "give --space SPACE.yaml (cnnlab tune --example-space > space.yaml writes an example)")
    overrides = given_options(args)
    source = overrides.pop("source", "fashion-mnist")
    quiet = overrides.pop("quiet", False)
    explicit_none = tuple(k for k, v in overrides.items() if v is None)
    tracker = tracker_from(args, overrides.get("runs_dir", "runs"))
    result = tune(source, args.space, trials=args.trials, jobs=args.jobs, refit=args.refit,
                  time_limit=args.search_time_limit, trial_time_limit=args.trial_time_limit, storage=args.storage,
                  study=args.study, out=args.out, metric=args.metric, config=args.config, quiet=quiet,
                  flags=tuple(overrides), explicit_none=explicit_none, **overrides)
    print(markdown_summary(result), end="")
    print(f"leaderboard written to {result.out / 'leaderboard.html'} (also .csv and .md)")
    if tracker is not None:
        from ..tuning.results import track_study

        print(f"tracked in {args.track}: {track_study(tracker, result)} new trial(s) ({tracker.uri})")
    if result.interrupted:
        print(f"the search was interrupted: run the same command to continue study '{result.study}'",
              file=sys.stderr)
        return 130
    return 0
