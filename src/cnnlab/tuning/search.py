"""``cnnlab tune``: Optuna searches a space (tuning/space.py); every trial is a cnnlab run.

- The study lives in a folder (``out``): ``study.db`` (SQLite, the default storage), ``trials/``
  (one ordinary run directory per trial), the leaderboard files, and ``refit/`` with ``--refit``.
  ``--storage URL`` puts the study in any database Optuna accepts, so several machines can work on
  one study; their run directories stay on their own machines.
- Optuna's TPE sampler proposes (seeded: the number of workers the study had before is added to
  ``seed``, so a fresh single-worker search repeats and parallel workers differ); its median
  pruner hears every epoch's validation metric and stops trials that fall behind.
- Trials train on the training split and are scored on the validation split; they never see the
  test split. ``--refit`` trains the best trial's model and settings on training + validation data
  and reads the test split once.
- ``--trials N`` is the study's total: a worker starts a trial only while the study holds fewer
  than N (finished or running). On one machine, workers take turns under a file lock in the study
  folder, so two of them never both start the N-th trial.
- A trial whose spec or settings are invalid, or whose loss becomes NaN, fails with its one-line
  reason and the search goes on. Ctrl-C stops the trial in progress (its run is kept and marked
  interrupted) and the study stays consistent: the same command continues it, retrying the
  interrupted trial's parameters first. A worker that dies without a word (killed, a lost
  machine) stops sending heartbeats; its trial is failed and retried after the grace period.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import sys
import time
import warnings
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from ..errors import CnnlabError, ConfigError, ShapeError
from ..options import Choice, Interval, Rule, option
from .space import draw, first_values, load_space, optuna_suggest

METRICS = {"val_accuracy": "maximize", "val_loss": "minimize"}
HEARTBEAT_S, GRACE_S = 20, 120


def need_optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError("cnnlab tune needs Optuna, which is not installed", "cnnlab tune",
                          "pip install 'cnnlab[tune]'") from None
    # a failed trial is one line of ours; Optuna's own warning would add its traceback
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


@dataclass
class Search:
    """What every worker of one search shares: picklable, so ``--jobs`` can hand it to processes."""

    space: dict
    space_where: str
    overrides: dict  # the flags (and API keywords) given for every trial
    config_file: str | None
    flags: tuple
    explicit_none: tuple  # keys given as none (e.g. --patience none)
    out: str
    storage: str
    study: str
    trials: int
    metric: str = "val_accuracy"
    time_limit: float | None = None
    trial_time_limit: float | None = None
    deadline: float | None = None  # time.time() at which the whole search ends
    quiet: bool = False
    threads: int | None = None

    def gate(self) -> Gate:
        """The study folder's lock: workers on this machine take turns through it."""
        return Gate(Path(self.out) / ".trial.lock")

    def base_config(self, **more):
        from ..config import make_config

        explicit_none = (*self.explicit_none, *more.pop("explicit_none", ()))
        return make_config(self.config_file, flags=self.flags, explicit_none=explicit_none,
                           **{**self.overrides, **more})


def study_name_for(space_path: str | None, source: str) -> str:
    stem = Path(space_path).stem if space_path else "space"
    return f"{stem}-{source.split(':')[0]}"


def open_study(s: Search, worker: bool = True):
    """The study, made on first use; a study made with another space or metric is an error. Workers
    starting at once on one machine take turns (the study folder's lock): one makes the database's
    tables and sets the study up, the others find it made. Each ``worker`` draws with its own seed
    (``seed`` + how many workers the study had before it), so two never propose the same trials."""
    optuna = need_optuna()
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    seed = s.base_config().seed
    mine = {"space": s.space, "metric": s.metric, "settings": study_settings(s)}
    gate = s.gate()
    gate.acquire()
    try:
        try:
            storage = RDBStorage(s.storage, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                 heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2),
                                 engine_kwargs={"connect_args": {"timeout": 60}} if s.storage.startswith("sqlite")
                                 else None)
        except Exception as e:  # a bad URL, a missing database driver, a database that does not answer
            raise ConfigError(f"cannot open the study storage: {str(e).splitlines()[0][:200]}", s.storage,
                              "give a database URL Optuna accepts, e.g. sqlite:///study.db or "
                              "postgresql://user@host/db") from None
        study = optuna.create_study(study_name=s.study, storage=storage, load_if_exists=True,
                                    direction=METRICS[s.metric],
                                    pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2))
        made = study.user_attrs.get("cnnlab")
        if made is None:
            study.set_user_attr("cnnlab", mine)
            for point in s.space.get("start", []):  # the space's starting points run first
                study.enqueue_trial(point, user_attrs={"start": True})
        if worker:
            n = study.user_attrs.get("workers", 0)
            study.set_user_attr("workers", n + 1)
            study.sampler = optuna.samplers.TPESampler(seed=seed + n)
    finally:
        gate.release()
    mine = json.loads(json.dumps(mine))
    if made is not None and "settings" in made:
        differ = [k for k in STUDY_SETTINGS if made["settings"].get(k) != mine["settings"].get(k)]
        if differ:
            k = differ[0]
            raise ConfigError(f"the study '{s.study}' was made with {k} {made['settings'].get(k)!r}; this search has "
                              f"{mine['settings'].get(k)!r}, so its trials would not be comparable", s.storage,
                              f"continue it with the same {'--' + k.replace('_', '-')}, or start a new --study")
    if made is not None and {k: made.get(k) for k in ("space", "metric")} != \
            {k: mine.get(k) for k in ("space", "metric")}:
        what = "search space" if made.get("space") != mine["space"] else "metric"
        raise ConfigError(f"the study '{s.study}' was made with another {what}", s.storage,
                          "give the same --space and --metric to continue it, or a new --study name")
    return study


class Gate:
    """A lock file in the study folder: held from "may I start a trial?" until the trial exists."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> None:
        self.fd = fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        with suppress(ImportError):
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the lock
            self.fd = None


def counted(study) -> int:
    """Trials that count against --trials: finished or running; not waiting ones, and not failed
    ones that are retried (interrupted, or a worker that stopped answering)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = ({t.user_attrs.get("retry_of") for t in trials} | {t.system_attrs.get("failed_trial") for t in trials})
    n = 0
    for t in trials:
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
            n += 1
        elif t.state == TrialState.FAIL and not t.user_attrs.get("interrupted") and t.number not in retried:
            n += 1
    return n


def queue_retries(study) -> None:
    """Interrupted trials' parameters, queued once to run again first."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for t in trials:
        if t.state == TrialState.FAIL and t.user_attrs.get("interrupted") and t.number not in retried and t.params:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)


class Report:
    """The training callback of a trial: each epoch's validation metric goes to Optuna's pruner."""

    def __init__(self, trial, metric: str):
        self.trial, self.metric, self.pruned_at = trial, metric, None

    def on_epoch_end(self, state, logs: dict) -> None:
        value = logs.get(self.metric)
        if value is None or value != value:  # no validation score, or NaN: nothing to judge
            return
        self.trial.report(float(value), state.epoch)
        if self.trial.should_prune():
            self.pruned_at = state.epoch
            state.request_stop(f"pruned: epoch {state.epoch}'s {self.metric} {value:.4f} is below the median of "
                               "earlier trials at that epoch", "stopped")


def trial_spec(model, ds) -> dict | None:
    """The drawn model as a spec mapping (the data's image shape when the space leaves it out), or
    None for a preset or spec file (``model`` then goes into the configuration)."""
    if not isinstance(model, dict):
        return None
    spec = copy.deepcopy(model)
    spec.setdefault("name", "trial")
    has_input = "input_shape" in spec or any(isinstance(v, dict) and v.get("type") == "Input"
                                            for v in spec.get("layers") or [])
    if not has_input:
        spec["input_shape"] = list(ds.input_shape)
    return spec


def objective_for(s: Search, ds, gate: Gate):
    optuna = need_optuna()
    from ..training import train_here as train

    def objective(trial) -> float:
        gate.release()  # the trial exists: another worker may ask for the next one
        t0 = time.time()
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        try:
            drawn, model = draw(s.space, optuna_suggest(trial))
            spec = trial_spec(model, ds)
            limits = [v for v in (s.trial_time_limit, s.deadline and max(1.0, s.deadline - time.time())) if v]
            keys = {**drawn, "model": model if isinstance(model, str) else (spec or {}).get("name"),
                    "runs_dir": str(Path(s.out) / "trials"), "name": f"trial-{trial.number:04d}",
                    "test_split": 0, "check": False, "quiet": True, "time_limit": min(limits) if limits else None}
            if model is None:
                keys.pop("model")
            if s.threads:
                keys["threads"] = s.threads
            cfg = s.base_config(origins={k: s.space_where for k in drawn}, **keys,
                                explicit_none=tuple(k for k, v in drawn.items() if v is None))  # patience: null
            report = Report(trial, s.metric)
            run = train(cfg, spec_override=spec, dataset=ds, callbacks=[report])
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        except CnnlabError as e:
            trial.set_user_attr("error", e.line())
            if e.where and Path(e.where).is_dir():  # the loss became NaN: the run is kept
                trial.set_user_attr("run", os.path.relpath(e.where, s.out))
            trial.set_user_attr("time_s", round(time.time() - t0, 1))
            say(s, f"trial {trial.number} failed: {e.line()}")
            raise
        m = run.metrics
        trial.set_user_attr("run", os.path.relpath(run.path, s.out))
        trial.set_user_attr("epochs", m.get("epochs_run"))
        trial.set_user_attr("best_epoch", m.get("best_epoch"))
        trial.set_user_attr("time_s", round(time.time() - t0, 1))
        trial.set_user_attr("status", m.get("status"))
        if m.get("status") == "interrupted":
            trial.set_user_attr("interrupted", True)
            raise KeyboardInterrupt
        value = (m.get("best") or {}).get(s.metric)
        if report.pruned_at is not None:
            say(s, f"trial {trial.number} pruned at epoch {report.pruned_at}")
            raise optuna.TrialPruned()
        if value is None:
            raise ConfigError(f"trial {trial.number} has no {s.metric}", str(run.path),
                              "give the search a validation split (--val-split) or set (--val-source)")
        say(s, f"trial {trial.number}: {s.metric} {value:.4f} in {time.time() - t0:.0f}s "
               f"({', '.join(f'{k} {v}' for k, v in trial.params.items())})")
        return float(value)

    return objective


def say(s: Search, line: str) -> None:
    if not s.quiet:
        print(line, file=sys.stderr, flush=True)


def trial_data(s: Search):
    """The source's training and validation splits (its test split left out: trials never read it)."""
    from ..data.dataset import Dataset
    from ..training import load_data

    cfg = s.base_config()
    ds = load_data(cfg)
    if "validation" not in ds.splits:
        raise ConfigError("a search needs validation data to score its trials", "--val-split",
                          "give --val-split above 0 (default 0.2) or --val-source")
    return ds, Dataset(ds.source, ds.class_names, {k: ds.splits[k] for k in ("train", "validation")}, dict(ds.info))


def run_worker(s: Search, data=None):
    """One worker: trials until the study holds --trials of them or the time is up. Returns the
    data it loaded (every split), for a refit in the same process. ``data``: trial_data(s), when
    already loaded."""
    from ..training import set_threads

    if s.threads:
        set_threads(s.threads)
    full, ds = data or trial_data(s)
    study = open_study(s)
    gate = s.gate()
    objective = objective_for(s, ds, gate)
    try:
        while True:
            gate.acquire()
            try:
                queue_retries(study)
                if counted(study) >= s.trials or (s.deadline is not None and time.time() >= s.deadline):
                    break
                study.optimize(objective, n_trials=1, catch=(CnnlabError,))
            finally:
                gate.release()
    finally:
        gate.release()
    return full


def check_search(s: Search) -> None:
    """Every fixed value of the space, and the flags, checked once before the study: the first
    choice and low end of every node stand in for what trials will draw."""
    drawn, model = draw(s.space, first_values)
    keys = {**drawn, **({"model": model} if isinstance(model, str) else {})}
    s.base_config(origins={k: s.space_where for k in keys}, **keys,
                  explicit_none=tuple(k for k, v in keys.items() if v is None))


def check_points(s: Search, ds) -> None:
    """Every value the space can draw, checked on the data before the study exists: each choice and
    both ends of each range (one node at a time) must give valid settings, a spec without unknown
    layers or arguments, and a model within the parameter and memory limits. A typo in a layer or a
    range up to a billion filters is one line now, not a study of failed trials. A layer that does
    not fit its input's shape (a 20-pixel pooling) may fit with other drawn values: a trial that
    draws it fails with its reason, and the search goes on."""
    import torch

    from ..models.init import weights_file
    from ..training import check_training_memory, resolve_spec
    from .space import points_to_check

    base = s.base_config()
    if base.backbone and base.weights:  # fetched (and checked) once, before any trial: a bad URL is one line now
        weights_file(base.backbone, base.weights, ds.input_shape, base.quiet)

    for path, value, suggest in points_to_check(s.space):
        where = f"{s.space_where}: {path}"
        try:
            drawn, model = draw(s.space, suggest)
            keys = {**drawn, **({"model": model} if isinstance(model, str) else {})}
            cfg = s.base_config(origins={k: s.space_where for k in keys}, **keys,
                                explicit_none=tuple(k for k, v in keys.items() if v is None))
            if cfg.backbone:
                from ..models.backbones import backbone_spec
                from ..models.pretrained import spec_flag

                model = backbone_spec(cfg.backbone, ds.input_shape, ds.num_classes, pretrained=spec_flag(cfg.weights))
            spec = resolve_spec(trial_spec(model, ds) or cfg.model, ds.input_shape, ds.num_classes)
            check_training_memory(spec, cfg.batch_size, torch.device("cpu"))
        except ShapeError:
            continue  # this value may fit other values of the other nodes: a trial that draws a misfit fails alone
        except CnnlabError as e:
            if e.where and str(e.where).startswith(f"{s.space_where}: "):
                raise  # a setting's value: the message names its key in the space already
            raise type(e)(e.what, f"{where} = {json.dumps(value, default=str)[:80]}" +
                          (f"; {e.where}" if e.where else ""), e.fix) from None


STUDY_SETTINGS = ("source", "val_source", "test_source", "val_split", "test_split", "seed", "scale", "image_size",
                  "color_mode", "labels", "class_names")


def study_settings(s: Search) -> dict:
    """What makes two trials comparable: the data, its split and scaling. A study continued with
    other values would rank trials scored on different images."""
    cfg = s.base_config()
    return json.loads(json.dumps({k: getattr(cfg, k) for k in STUDY_SETTINGS}))


def _at_least_one(v) -> bool:
    return v >= 1


@dataclass
class SearchOptions:
    """A search's own settings, declared once: ``cnnlab tune``'s options and ``cnnlab.tune``'s
    keywords are made and checked from these (cnnlab.options)."""

    trials: int = option(20, "trials in the study in all, across workers and continued searches",
                         Rule(_at_least_one, "a whole number of at least 1"), group="search", metavar="N")
    search_time_limit: float | None = option(
        None, "seconds for the whole search: no trial starts after it, the one running stops at it; --time-limit is "
        "the old spelling", Interval(0, open_lo=True), group="search", metavar="S", example="600",
        renamed_from=("time_limit",))
    trial_time_limit: float | None = option(None, "seconds per trial; it keeps its best epoch so far",
                                            Interval(0, open_lo=True), group="search", metavar="S", example="600")
    metric: str = option("val_accuracy", "what trials are scored by, at their best epoch", Choice(tuple(METRICS)),
                         group="search")
    storage: str | None = option(None, "the study's database, any URL Optuna accepts, e.g. "
                                 "postgresql://user@host/db", group="search", metavar="URL",
                                 default_text="sqlite:///OUT/study.db")
    study: str | None = option(None, "the study's name", group="search", metavar="NAME",
                               default_text="<space file name>-<source>")
    jobs: int = option(1, "worker processes on this machine, sharing the cores", Rule(_at_least_one,
                       "a whole number of at least 1"), group="search", metavar="J", example="2")
    out: str | Path | None = option(None, "the study folder", group="search", metavar="DIR",
                                    default_text="RUNS_DIR/<study>")
    refit: bool = option(False, "afterwards, train the best trial on training + validation data and read the test "
                         "split once", group="search")


@dataclass
class TrialSettings:
    """The training keys every trial of a search shares: a YAML file, the flags (or API keywords)
    given, and which of them were given as none."""

    overrides: dict
    config: str | None = None
    flags: tuple = ()
    explicit_none: tuple = ()
    quiet: bool = False
    threads: int | None = None


def make_search(source: str, space: str | dict, opts: SearchOptions, trial: TrialSettings) -> Search:
    from ..config import make_config

    if isinstance(space, dict):
        from .space import check_space

        space_where = "space"
        check_space(space, space_where)
    else:
        space_where = str(space)
        space = load_space(space)
    explicit_none = tuple(trial.explicit_none)
    overrides = {k: v for k, v in trial.overrides.items() if v is not None or k in explicit_none}
    base = make_config(trial.config, flags=trial.flags, explicit_none=explicit_none, source=source, **overrides)
    name = opts.study or study_name_for(None if space_where == "space" else space_where, base.source)
    folder = Path(opts.out) if opts.out else Path(base.runs_dir) / name
    s = Search(space=space, space_where=space_where, overrides={"source": source, **overrides},
               config_file=trial.config, flags=tuple(trial.flags), explicit_none=explicit_none, out=str(folder),
               storage=opts.storage or f"sqlite:///{(folder / 'study.db').resolve()}", study=name,
               trials=int(opts.trials), metric=opts.metric, time_limit=opts.search_time_limit,
               trial_time_limit=opts.trial_time_limit, quiet=trial.quiet, threads=trial.threads)
    check_search(s)
    return s
