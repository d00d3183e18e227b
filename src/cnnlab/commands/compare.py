"""`cnnlab compare`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import add_track_options, add_train_options, config_from_args, given_options, tracker_from


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..comparison import DEFAULT_MODELS
    from ..comparison.baselines import BASELINES

    c = sub.add_parser("compare", help="one leaderboard: decision tree, forest, ... and CNNs on the same split",
                       description="Train every model on the same stratified split (or the same K stratified "
                       "folds) with the same pixel scaling, and print a leaderboard: accuracy, macro-F1, size, "
                       "train time and predict time. Saved as CSV, Markdown and HTML under --out; neural "
                       "models keep their run directories there. The source's test split is never read.")
    add_train_options(c, skip=("model", "name", "time_limit"), report=False)
    cg = c.add_argument_group("comparison")
    cg.add_argument("--models", default=",".join(DEFAULT_MODELS), metavar="LIST",
                    help="comma-separated: baselines " + ", ".join(BASELINES) + "; any preset (cnnlab models) "
                    "or spec file (default: %(default)s)")
    cg.add_argument("--cv", type=int, default=None, metavar="K",
                    help="K stratified folds of the labeled training data instead of one validation split "
                    "(default: none)")
    cg.add_argument("--jobs", type=int, default=1, metavar="N", help="parallel jobs for the baselines (default: 1)")
    cg.add_argument("--subsample", default=None, metavar="N",
                    help="train each model on at most N images (stratified); per model: 20000,knn=5000 "
                    "(default: all)")
    cg.add_argument("--trial-time-limit", "--time-limit", dest="time_limit_each", default=None, metavar="S",
                    help="seconds per model and fold; a baseline over it is reported as timeout, a neural "
                    "model stops and keeps its best epoch; per model: 600,forest=120; --time-limit is the old "
                    "spelling (default: none)")
    cg.add_argument("--out", default=None, metavar="DIR",
                    help="where the leaderboard goes (default: RUNS_DIR/<timestamp>-compare-<source>)")
    add_track_options(c)
    c.set_defaults(func=handle)


def handle(args) -> int:
    from ..comparison import compare
    from ..comparison.leaderboard import markdown

    cfg = config_from_args(args)  # a bad value is named by its flag before any model trains
    source = getattr(args, "source", "fashion-mnist")
    tracker = tracker_from(args, cfg.runs_dir, experiment=f"compare-{str(source).split(':')[0]}")
    overrides = given_options(args)
    overrides.pop("source", None)
    board = compare(getattr(args, "source", "fashion-mnist"), args.models, cv=args.cv, jobs=args.jobs,
                    subsample_n=args.subsample, time_limit=args.time_limit_each, out=args.out,
                    config=args.config, quiet=overrides.pop("quiet", False), **overrides)
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
