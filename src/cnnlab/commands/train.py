"""`cnnlab train`."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from ..options import Interval, option
from . import (
    ConfigFileOption,
    ReportOption,
    TrackOptions,
    add_command,
    config_from_args,
    given_options,
    os_error_line,
    tracker_from,
)


@dataclass
class Options(ConfigFileOption, ReportOption, TrackOptions):
    resume: str | None = option(None, "continue a stopped run (killed, crashed, Ctrl-C, out of time) from the end of "
                                "its last finished epoch, in its own directory; only --quiet, --threads, --device "
                                "and --time-limit may change", metavar="RUN", default_text="a new run")
    nproc: int | None = option(None, "data-parallel training in N processes on this machine, started through torchrun "
                            "(gloo on CPU, NCCL with one GPU each); --batch-size is the global batch",
                            Interval(1, 256), metavar="N", example="2",
                            default_text="one process; several machines: torchrun ... -m cnnlab train, "
                            "docs/distributed.md")


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "train", Options, train={}, help="train a model and evaluate it on the test set",
                description="Train a model. With no arguments: fashion-cnn on Fashion-MNIST with the "
                "notebooks' recipe (Adam, validation split 0.2, early stopping with patience 2, "
                "best weights restored), evaluated on the test set.").set_defaults(func=handle)


def handle(args) -> int:
    from ..engine.distributed import launched
    from ..evaluation import format_evaluation
    from ..runs import RunDir
    from ..training import train

    if args.nproc is not None and not launched():
        return launch_processes(args)
    live = None
    if args.resume:
        tracker_from(args, ".")  # a tracker that cannot work fails before training, not after
        run, cfg = resumed(args)
        tracker = tracker_from(args, cfg.runs_dir) if run is not None else None
    else:
        cfg = config_from_args(args)
        tracker = tracker_from(args, cfg.runs_dir)
        live = tracker.live() if tracker else None
        try:
            run = train(cfg, callbacks=[live] if live else ())
        except Exception as e:  # the tracked run ends as failed, not running
            where = Path(getattr(e, "where", None) or "")
            if live is not None and (where / RunDir.METRICS).is_file():  # the loss became NaN: the run is kept
                tracker.log_run(where, live=live)
            elif live is not None:
                live.abandon()
            raise
    if run is None:  # a data-parallel process other than rank 0: rank 0 reports
        return 0
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
    if tracker is not None:
        print(f"tracked in {args.track}: {tracker.log_run(run.path, live=live)} ({tracker.uri})")
    if m.get("status") == "interrupted":
        print("training was interrupted: the best checkpoint so far is kept", file=sys.stderr)
        return 130
    return 0


def resumed(args):
    """``--resume RUN``: the run continued, and its configuration."""
    from ..config import TrainConfig
    from ..errors import ConfigError
    from ..options import keys_of
    from ..training import SESSION_KEYS, resume

    given = given_options(args)
    other = [k for k in given if k not in SESSION_KEYS] + (["config"] if args.config else [])
    if other:
        flag = "--config" if other[0] == "config" else keys_of(TrainConfig)[other[0]].flag
        raise ConfigError(f"{flag} cannot change a resumed run", flag,
                          "leave it out: the run keeps its own settings (only --quiet, --threads, --device and "
                          "--time-limit may change)")
    run = resume(args.resume, **given)
    if run is None:  # a data-parallel process other than rank 0
        return None, None
    cfg = TrainConfig.from_stored(run.config)
    for k, v in given.items():
        setattr(cfg, k, v)
    return run, cfg


def launch_processes(args) -> int:
    """``--nproc N``: check the settings once here, then start N processes of the same command."""
    from ..engine.distributed import check_global_batch, launch
    from ..errors import ConfigError

    if not args.resume:  # what can be checked here is checked once, before N processes start
        import os
        from pathlib import Path

        import torch

        from ..data.sources import parse_source
        from ..models import spec_from

        cfg = config_from_args(args)
        check_global_batch(cfg.batch_size, args.nproc)
        cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
        have = torch.cuda.device_count() if cuda else (os.cpu_count() or 1)
        if args.nproc > have:
            raise ConfigError(f"{args.nproc} processes for {have} {'GPU' if cuda else 'CPU core'}(s)", "--nproc",
                              f"use --nproc {have} or fewer: each process needs a {'GPU' if cuda else 'core'}")
        if cfg.backbone is None:
            spec_from(cfg.model)
        for src in (cfg.source, cfg.val_source, cfg.test_source):
            kind, path = parse_source(src) if src else (None, None)
            if path is not None and not Path(path).exists():
                from ..errors import MissingDataError

                raise MissingDataError(f"{kind} not found", path, "check the path")
    argv = list(args.argv)
    i = next(i for i, a in enumerate(argv) if a == "--nproc" or a.startswith("--nproc="))
    del argv[i:i + (1 if "=" in argv[i] else 2)]
    launch(args.nproc, argv)
    return 0
