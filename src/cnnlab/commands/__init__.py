"""One module per ``cnnlab`` command, its parser beside its handler (as in Hugging Face
accelerate's ``commands/``): each has ``add_parser(sub)``, which registers the command and sets
``func=handle``, and ``handle(args) -> int``. ``cli.py`` only registers them, in ``COMMANDS`` order.

A command module imports only light modules at the top (argparse, json, pathlib, the option
table); what a command needs to run (torch, matplotlib, the engine) is imported inside ``handle``,
so ``cnnlab --help`` and ``cnnlab COMMAND --help`` stay fast.
"""

from __future__ import annotations

import argparse
import errno

# the order of `cnnlab --help`
COMMANDS = ("train", "compare", "tune", "check", "serve", "evaluate", "predict", "embed", "summary", "report", "plot",
            "explain", "export", "import_keras", "models", "backbones", "datasets", "download", "export_images")


def add_train_options(p: argparse.ArgumentParser, skip: tuple = (), report: bool = True,
                      only: tuple | None = None) -> None:
    """The training-configuration keys as options (generated from their declarations,
    cnnlab.options); ``skip`` leaves some keys out, ``only`` keeps just those."""
    from ..config import GROUPS, TrainConfig
    from ..options import add_arguments

    p.add_argument("--config", metavar="FILE.yaml", help="YAML file with the same keys as these options; "
                   "flags override it (default: none)")
    groups = add_arguments(p, TrainConfig, GROUPS, skip, only)
    if report:
        groups["output"].add_argument("--no-report", dest="report", action="store_false", default=True,
                                      help="skip writing report.html at the end (default: write it)")


def add_precision_option(p: argparse.ArgumentParser) -> None:
    """``--precision`` of a command that predicts (evaluate, predict): the choices are the engine's."""
    from ..engine.precision import PRECISIONS

    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="torch engine: fp32 (exact), or autocast: auto is bf16 where the hardware does it natively")


def add_engine_option(p: argparse.ArgumentParser) -> None:
    """``--engine`` of a command that predicts with a run (predict, serve): the registered engines."""
    from ..shipping import ENGINES

    p.add_argument("--engine", default="torch", choices=list(ENGINES),
                   help="what predicts: " + "; ".join(f"{e.name}: {e.help}" for e in ENGINES.values()))


def add_track_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tracking")
    from ..tracking import TRACKERS

    g.add_argument("--track", choices=list(TRACKERS), default=None,
                   help="also log to TensorBoard event files or an MLflow tracking store (needs cnnlab[track]; "
                   "default: neither)")
    g.add_argument("--track-uri", default=None, metavar="URI",
                   help="TensorBoard: the log folder (default: RUNS_DIR/tensorboard); MLflow: the tracking URI "
                   "(default: sqlite:///RUNS_DIR/mlflow.db)")


def tracker_from(args: argparse.Namespace, runs_dir, experiment: str = "cnnlab"):
    """The Tracker the command line asks for, or None; checked before any training."""
    if not getattr(args, "track", None):
        if getattr(args, "track_uri", None):
            from ..errors import ConfigError

            raise ConfigError("--track-uri needs --track", "--track-uri", "add --track tensorboard or --track mlflow")
        return None
    from ..tracking import make_tracker

    return make_tracker(args.track, args.track_uri, runs_dir, experiment)


def given_options(args: argparse.Namespace) -> dict:
    """The configuration keys given on the command line, read into their types."""
    from ..config import TrainConfig
    from ..options import given

    return given(args, TrainConfig)


def config_from_args(args: argparse.Namespace, drop: tuple = ()):
    """The TrainConfig of a command line: defaults < recipe < --config FILE < flags; an error
    names the flag it came from."""
    from ..config import make_config

    overrides = {k: v for k, v in given_options(args).items() if k not in drop}
    explicit_none = [k for k, v in overrides.items() if v is None]  # e.g. --patience none
    return make_config(args.config, flags=list(overrides), explicit_none=explicit_none, **overrides)


def image_arg(run, image: str | None):
    """The image a user named for a run's figure (resized as the run expects), or None."""
    from ..data.images import load_image

    return None if image is None else load_image(image, run.image_size, run.color_mode)


def os_error_line(e: OSError) -> str:
    """A file-system failure (disk full, read-only folder, permission) as the one-line error."""
    where = e.filename if e.filename is not None else "the file system"
    fixes = {errno.ENOSPC: "free some disk space, or write elsewhere (--runs-dir / --out)",
             errno.EACCES: "check the folder's permissions, or write elsewhere (--runs-dir / --out)",
             errno.EROFS: "the file system is read-only: write elsewhere (--runs-dir / --out)",
             errno.EDQUOT: "your disk quota is used up: free some space"}
    fix = fixes.get(e.errno or 0, "check the path, the disk and the permissions")
    return f"{e.strerror or e} ({where}): {fix}"
