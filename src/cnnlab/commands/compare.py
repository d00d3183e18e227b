"""`cnnlab compare`."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from ..comparison import CompareOptions
from . import PER_TRIAL_KEYS, ConfigFileOption, TrackOptions, add_command, config_from_args, given_options, tracker_from


@dataclass
class Options(ConfigFileOption, CompareOptions, TrackOptions):
    pass


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "compare", Options, train={"skip": PER_TRIAL_KEYS},
                help="one leaderboard: decision tree, forest, ... and CNNs on the same split",
                description="Train every model on the same stratified split (or the same K stratified "
                "folds) with the same pixel scaling, and print a leaderboard: accuracy, macro-F1, size, "
                "train time and predict time. Saved as CSV, Markdown and HTML under --out; neural "
                "models keep their run directories there. The source's test split is never read."
                ).set_defaults(func=handle)


def handle(args) -> int:
    from ..comparison import compare
    from ..comparison.leaderboard import markdown
    from ..options import keys_of

    cfg = config_from_args(args)  # a bad value is named by its flag before any model trains
    source = getattr(args, "source", "fashion-mnist")
    tracker = tracker_from(args, cfg.runs_dir, experiment=f"compare-{str(source).split(':')[0]}")
    overrides = given_options(args)
    overrides.pop("source", None)
    own = {k: getattr(args, k) for k in keys_of(CompareOptions)}
    board = compare(getattr(args, "source", "fashion-mnist"), config=args.config,
                    quiet=overrides.pop("quiet", False), **own, **overrides)
    print(markdown(board, board.attrs["meta"]), end="")
    out = Path(board.attrs["out"])
    print(f"leaderboard written to {out / 'leaderboard.html'} (also .csv and .md)")
    if tracker is not None:
        print(f"tracked in {args.track}: {track_comparison(tracker, board)} model fold(s) ({tracker.uri})")
    if board.attrs["meta"]["interrupted"]:
        print("the comparison was interrupted: the leaderboard holds the models that finished", file=sys.stderr)
        return 130
    return 0


def track_comparison(tracker, board) -> int:
    """Every model and fold: a neural model from its run directory, a baseline from its row."""
    out = Path(board.attrs["out"])
    n = 0
    for row in board.attrs["folds"].to_dict("records"):
        model = str(row["model"])
        label = Path(model).stem if model.lower().endswith((".yaml", ".yml", ".json")) else model
        name = f"{out.name}/{label}-fold{row['fold']}"
        values = {k: row.get(k) for k in ("accuracy", "macro_f1", "train_time_s", "predict_s")}
        if isinstance(row.get("run"), str) and row["run"] and Path(row["run"]).is_dir():
            tracker.log_run(row["run"], name=name, tags={"cnnlab.compare": out.name, "cnnlab.fold": str(row["fold"])})
        else:
            tracker.log_row(name, {"model": row["model"], "fold": row["fold"], "n_train": row["n_train"],
                                   "status": row["status"]}, values)
        n += 1
    return n
