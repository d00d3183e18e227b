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
from dataclasses import dataclass

from ..options import Choice, option

# the order of `cnnlab --help`
COMMANDS = ("train", "compare", "tune", "check", "serve", "evaluate", "calibrate", "predict", "embed", "summary",
            "report", "plot", "explain", "export", "import_keras", "models", "backbones", "datasets", "download",
            "export_images")


# training keys that tune and compare set per trial or model, so they are not their options
PER_TRIAL_KEYS = ("model", "name", "time_limit")


def add_train_options(p: argparse.ArgumentParser, skip: tuple = (), only: tuple | None = None) -> dict:
    """The training-configuration keys as options (generated from their declarations,
    cnnlab.options); ``skip`` leaves some keys out, ``only`` keeps just those. Returns the groups."""
    from ..config import GROUPS, TrainConfig
    from ..options import add_arguments

    return add_arguments(p, TrainConfig, GROUPS, skip, only)


def _precisions() -> tuple:
    from ..engine.precision import PRECISIONS

    return tuple(PRECISIONS)


def _engines() -> tuple:
    from ..shipping import ENGINES

    return tuple(ENGINES)


def _engines_help() -> str:
    from ..shipping import ENGINES

    return "what predicts: " + "; ".join(f"{e.name}: {e.help}" for e in ENGINES.values())


def _trackers() -> tuple:
    from ..tracking import TRACKERS

    return tuple(TRACKERS)


# The options several commands share, declared once (mixed into a command's own declaration).
@dataclass
class PrecisionOption:
    """``--precision`` of a command that predicts (evaluate, predict): the engine's choices."""

    precision: str = option("fp32", "torch engine: fp32 (exact), or autocast: auto is bf16 where the hardware does "
                         "it natively", Choice(_precisions))


@dataclass
class EngineOption:
    """``--engine`` of a command that predicts with a run (predict, serve): the registered engines."""

    engine: str = option("torch", _engines_help, Choice(_engines))


@dataclass
class TrackOptions:
    """``--track`` and ``--track-uri`` of a command that trains (train, tune, compare)."""

    track: str | None = option(None, "also log to TensorBoard event files or an MLflow tracking store (needs "
                            "cnnlab[track])", Choice(_trackers), group="tracking", default_text="neither")
    track_uri: str | None = option(None, "TensorBoard: the log folder; MLflow: the tracking URI", group="tracking",
                                metavar="URI", default_text="RUNS_DIR/tensorboard, or sqlite:///RUNS_DIR/mlflow.db")


@dataclass
class ConfigFileOption:
    """``--config FILE.yaml`` of a command that takes training keys."""

    config: str | None = option(None, "YAML file with the same keys as these options; flags override it",
                             metavar="FILE.yaml")


@dataclass
class ReportOption:
    report: bool = option(True, "skip writing report.html at the end", group="output", default_text="write it")


def add_command(sub: argparse._SubParsersAction, name: str, options, groups: tuple = (),
                train: dict | None = None, **parser_kw):
    """The parser of command ``name``: its options generated from the declaration ``options`` (a
    dataclass of :func:`cnnlab.options.key` fields), after the training keys when ``train`` gives
    ``add_train_options``' arguments. ``cli.main`` reads the options into their types and checks
    them (:func:`cnnlab.options.read_options`) before the handler runs."""
    from ..options import add_arguments

    p = sub.add_parser(name, **parser_kw)
    sections = add_train_options(p, **train) if train is not None else {}
    add_arguments(p, options, groups, sections=sections)
    p.set_defaults(_options=options)
    return p


def tracker_from(args: argparse.Namespace, runs_dir, experiment: str = "cnnlab"):
    """The Tracker the command line asks for, or None; checked before any training."""
    if not getattr(args, "track", None):  # read by read_options: None when not given
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
