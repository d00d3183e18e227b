"""`cnnlab tune`."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from ..options import option
from ..tuning.search import SearchOptions
from . import PER_TRIAL_KEYS, ConfigFileOption, TrackOptions, add_command, given_options, tracker_from


@dataclass
class Options(ConfigFileOption, SearchOptions, TrackOptions):
    space: str | None = option(None, "the search space (cnnlab tune --example-space prints the one shipped for "
                               "Fashion-MNIST)", group="search", metavar="SPACE.yaml")
    example_space: bool = option(False, "print the example space and exit", group="search")


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "tune", Options, train={"skip": PER_TRIAL_KEYS},
                help="search hyper-parameters with Optuna; every trial is a run",
                description="Search a space of training keys and model specs (choices and ranges in place "
                "of values, in Keras' vocabulary) with Optuna: TPE proposes, a median pruner stops trials "
                "that fall behind, each trial is a run directory under the study folder, scored on the "
                "validation split (the test split is never read by a trial). The study is kept in a "
                "database (SQLite in the study folder by default): the same command continues it, and "
                "workers on other machines join it with --storage. Needs cnnlab[tune].").set_defaults(func=handle)


def handle(args) -> int:
    from ..errors import ConfigError
    from ..options import keys_of
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
    search = {k: getattr(args, k) for k in keys_of(SearchOptions)}
    result = tune(source, args.space, config=args.config, quiet=quiet, flags=tuple(overrides),
                  explicit_none=explicit_none, **search, **overrides)
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
