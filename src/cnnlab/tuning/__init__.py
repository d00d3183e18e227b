"""Hyper-parameter search on Optuna (``cnnlab tune``, ``cnnlab.tune``). search.py runs a study's
workers, space.py reads and draws the space, results.py writes the leaderboard."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .search import Search, SearchOptions, TrialSettings, check_points, make_search, open_study, run_worker, trial_data
from .space import example_space

__all__ = ["TuneResult", "example_space", "tune"]


@dataclass
class TuneResult:
    study: str
    out: Path
    storage: str
    metric: str = "val_accuracy"
    rows: list[dict] = field(default_factory=list)  # the leaderboard, best first
    best: dict | None = None  # the best finished trial's row
    refit: dict | None = None  # {"trial", "run", "test_accuracy"} with refit
    interrupted: bool = False


def tune(source: str = "fashion-mnist", space: str | dict = "", *, trials: int = 20, jobs: int = 1,
         refit: bool = False, **options) -> TuneResult:
    """Search ``space`` (a YAML file or a mapping, tuning/space.py) on ``source`` with Optuna.

    ``options``: the search's settings (``SearchOptions``, as ``cnnlab tune``'s options:
    search_time_limit (old name time_limit), trial_time_limit (seconds), storage (a database URL;
    default SQLite in the study folder), study (its name), out (the study folder), metric
    (val_accuracy or val_loss)), config (a YAML file of training keys), quiet, threads, flags and
    explicit_none (the command line's), and any training key, the same for every trial. ``jobs``
    workers run on this machine (processes sharing the study); more machines join by running the
    same search with the same ``storage`` and ``study``. ``refit``: the best trial retrained on
    training + validation data and evaluated once on the test split.
    """
    from ..options import checked, keys_of
    from .results import write_results

    names = {a for k in keys_of(SearchOptions).values() for a in (k.name, *k.option.other_names)}
    opts = checked(SearchOptions, "cnnlab.tune", trials=trials, jobs=jobs, refit=refit,
                   **{k: v for k, v in options.items() if k in names})
    trial = {k: v for k, v in options.items() if k not in names}
    settings = TrialSettings({}, **{k: trial.pop(k) for k in ("config", "flags", "explicit_none", "quiet",
                                                              "threads") if k in trial})
    settings.overrides = trial
    if opts.jobs > 1 and settings.threads is None:
        settings.threads = max(1, (os.cpu_count() or 1) // opts.jobs)  # the workers share the cores
    s = make_search(source, space, opts, settings)
    loaded = trial_data(s)  # before any file exists: a search without validation data leaves nothing
    check_points(s, loaded[1])
    out = Path(s.out)
    made_out = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    if s.time_limit:
        s.deadline = time.time() + s.time_limit
    try:
        study = open_study(s, worker=False)  # made here, before the workers start
    except BaseException:
        if made_out:  # a storage that does not open, a study of other settings: no folder left behind
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        raise
    interrupted, data = run_workers(s, loaded, opts.jobs)
    base, trial_ds = s.base_config(), loaded[1]
    meta: dict = {"study": s.study, "source": source, "metric": s.metric, "storage": s.storage,
            "settings": f"trials train on {len(trial_ds['train']):,} images and are scored on "
                        f"{len(trial_ds['validation']):,} validation images (val_split {base.val_split:g}, seed "
                        f"{base.seed}, pixel scaling {base.scale}); {s.trials} trial(s) asked for"
                        + (f", {s.time_limit:g} s in all" if s.time_limit else "")
                        + (f", {s.trial_time_limit:g} s each" if s.trial_time_limit else "")}
    result = TuneResult(s.study, out, s.storage, s.metric, interrupted=interrupted)
    if opts.refit and not interrupted:
        result.refit = refit_best(s, study, data)
        meta["refit"] = result.refit
    result.rows = write_results(study, out, meta)
    result.best = next((r for r in result.rows if r["state"] == "complete"), None)
    return result


def run_workers(s: Search, loaded, jobs: int) -> tuple[bool, dict | None]:
    """This process as worker 0 and ``jobs - 1`` spawned workers, until the study is done:
    (interrupted, every split of the source as worker 0 loaded it)."""
    interrupted = False
    procs = []
    data = None
    try:
        if jobs > 1:
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")
            procs = [ctx.Process(target=_worker, args=(s,), name=f"cnnlab-tune-{k}") for k in range(1, jobs)]
            for p in procs:
                p.start()
        data = run_worker(s, loaded)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        for p in procs:
            try:
                p.join()
            except KeyboardInterrupt:
                interrupted = True
                p.join()
    interrupted = interrupted or any(p.exitcode == 130 for p in procs)
    failed = [p for p in procs if p.exitcode not in (0, 130)]
    if failed:
        print(f"warning: {len(failed)} worker(s) ended with an error; the study holds what they finished",
              file=sys.stderr)
    return interrupted, data


def _worker(s: Search) -> None:
    """A --jobs worker process: its exit code says how it ended (130: Ctrl-C)."""
    try:
        run_worker(s)
    except KeyboardInterrupt:
        sys.exit(130)


def refit_best(s: Search, study, full=None) -> dict | None:
    """The best finished trial's model and settings trained on training + validation data, then
    evaluated once on the test split. A constant learning rate trains for the trial's best epoch
    count; a schedule (one-cycle, cosine) for the trial's epochs, so it runs as it did. ``full``:
    the source's splits if already loaded (else read again)."""
    import numpy as np
    from optuna.trial import TrialState

    from ..data.dataset import Dataset, Split
    from ..errors import ConfigError
    from ..runs import RunDir
    from ..training import train_here as train

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE and t.user_attrs.get("run")]
    if not done:
        print("refit skipped: no trial finished", file=sys.stderr)
        return None
    best = study.best_trial
    run_dir = Path(s.out) / best.user_attrs["run"]
    if not run_dir.is_dir():
        raise ConfigError(f"the best trial's run directory is not on this machine: {run_dir}", "--refit",
                          "refit on the machine that ran that trial")
    rd = RunDir(run_dir)
    stored = rd.read_config()
    spec = rd.read_optional(RunDir.SPEC)
    if full is None:
        full, _ = trial_data(s)
    parts = {"train": full["train"], "validation": full["validation"]}
    if all(isinstance(p.x, np.ndarray) for p in parts.values()):
        both = Split(np.concatenate([p.x for p in parts.values()]), np.concatenate([p.y for p in parts.values()]))
        data = Dataset(full.source, full.class_names, {"train": both, "test": full["test"]}, dict(full.info))
    else:  # images cached on disk: the source read again, without a validation split
        data = None
    keys = {k: v for k, v in stored.items()
            if k not in ("source", "runs_dir", "name", "quiet", "time_limit", "check", "test_split")}
    constant = stored.get("schedule", "constant") == "constant"
    epochs = best.user_attrs.get("best_epoch") if constant else stored.get("epochs")
    keys.update(val_split=0, val_source=None, patience=None, restore_best=False, epochs=epochs,
                explicit_none=("val_source", "patience"))
    cfg = s.base_config(runs_dir=s.out, name="refit", quiet=s.quiet, **keys)
    run = train(cfg, spec_override=spec, dataset=data)
    return {"trial": best.number, "run": os.path.relpath(run.path, s.out),
            "test_accuracy": run.metrics["test"]["accuracy"], "val_value": best.value}
