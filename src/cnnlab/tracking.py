"""``--track tensorboard|mlflow``: runs written where practitioners already look.

- TensorBoard (``torch.utils.tensorboard``): one log folder per run, named like its run
  directory, under ``--track-uri`` (default ``RUNS_DIR/tensorboard``): per-epoch loss and
  accuracy (train and validation), the learning rate, weight histograms, the test metrics and the
  confusion-matrix figure.
- MLflow (``MlflowClient``, no global state): one MLflow run per cnnlab run in an experiment
  (``cnnlab``, the study's name for ``tune``, ``compare-<source>`` for ``compare``), under
  ``--track-uri`` (default ``sqlite:///RUNS_DIR/mlflow.db``, artifacts beside it): the resolved
  configuration as parameters, per-epoch metrics, the test metrics, and the run directory's files
  as artifacts. MLflow's telemetry is switched off unless the user switched it on.

``cnnlab train`` logs while it trains (a callback: each epoch as it ends, weight histograms from
the live model) and finishes from the run directory. ``compare`` and ``tune`` log each model or
trial from its run directory afterwards (weights: the kept ones), a baseline from its row.

Each kind is a ``Tracker`` subclass registered in ``TRACKERS`` (``@register_tracker``); ``--track``'s
choices and ``make_tracker`` read the table, and nothing else switches on the kind. A new kind is
one class: its default store, the check of its store, and how it logs an epoch, a run and a row.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from .errors import ConfigError, first_line

EPOCH_KEYS = {"loss": "loss/train", "accuracy": "accuracy/train", "val_loss": "loss/validation",
              "val_accuracy": "accuracy/validation", "lr": "learning_rate"}

TRACKERS: dict[str, type[Tracker]] = {}


def register_tracker(cls: type[Tracker]) -> type[Tracker]:
    """Class decorator: add a tracker kind (its ``kind`` is the --track name)."""
    TRACKERS[cls.kind] = cls
    return cls


def check_installed(kind: str) -> None:
    import importlib.util

    if kind not in TRACKERS:
        raise ConfigError(f"unknown tracker '{kind}'", "--track", f"use one of {', '.join(TRACKERS)}")
    package = TRACKERS[kind].package
    if package and importlib.util.find_spec(package) is None:
        raise ConfigError(f"--track {kind} needs the {package} package, which is not installed", "--track",
                          "pip install 'cnnlab[track]'")


def make_tracker(kind: str, uri: str | None = None, runs_dir: str | Path = "runs",
                 experiment: str = "cnnlab") -> Tracker:
    """The tracker of ``kind`` (a --track name), its store opened and checked."""
    check_installed(kind)
    return TRACKERS[kind](uri, runs_dir, experiment)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def confusion_figure(evaluation: dict, class_names: list[str]):
    from .viz.figures import confusion

    return confusion(evaluation["confusion_matrix"], class_names)


def _run_record(run_dir: str | Path) -> dict:
    """What a tracker logs of a finished run directory."""
    from .runs import RunDir

    rd = RunDir(Path(run_dir))
    history = rd.read_history() if (rd.path / RunDir.HISTORY).is_file() else []
    metrics = rd.read_metrics()
    return {"rd": rd, "history": history, "metrics": metrics, "last": len(history),
            "evaluation": rd.read_optional(RunDir.EVALUATION),
            "classes": (rd.read_optional(RunDir.CLASSES) or {}).get("class_names") or [],
            "test": {f"test_{k}": v for k, v in (metrics.get("test") or {}).items() if k in ("loss", "accuracy")}}


class Tracker:
    """Where runs are logged. A subclass per kind (``TRACKERS``); ``make_tracker`` builds one."""

    kind = ""
    package = ""  # the package it needs (checked before anything starts)
    fix = ""  # what to do when its store cannot be used

    def __init__(self, uri: str | None = None, runs_dir: str | Path = "runs", experiment: str = "cnnlab"):
        self.experiment = experiment
        self.uri = uri or self.default_uri(Path(runs_dir))
        self.check()

    def default_uri(self, runs_dir: Path) -> str:
        raise NotImplementedError

    def open_store(self) -> None:
        """Open the store, raising anything when it cannot be used."""
        raise NotImplementedError

    def check(self) -> None:
        """Open the store now, before any run or study folder exists: a URI that cannot be used
        (not a folder, read-only, not a tracking URI) is a ConfigError naming it."""
        try:
            self.open_store()
        except Exception as e:  # OSError, MlflowException, SQLAlchemy's errors: all mean "cannot use it"
            said = getattr(e, "strerror", None) or first_line(e, 200)
            raise ConfigError(f"cannot use the {self.kind} store: {said}", f"--track-uri {self.uri}", self.fix) \
                from None

    def live(self) -> Live:
        """A training callback: each epoch logged as it ends (``cnnlab train --track``)."""
        return Live(self)

    # what each kind does
    def start(self, live: Live, name: str) -> None:
        """A run begins training: open what ``live`` logs into."""
        raise NotImplementedError

    def epoch(self, live: Live, logs: dict, epoch: int, model) -> None:
        raise NotImplementedError

    def abandon(self, live: Live) -> None:
        """Training failed before the run directory was complete: close what was opened."""
        raise NotImplementedError

    def log_run(self, run_dir: str | Path, *, live: Live | None = None, experiment: str | None = None,
                parent: str | None = None, name: str | None = None, tags: dict | None = None) -> str:
        """Log a finished run directory (what ``live`` has not logged yet); returns where it went."""
        raise NotImplementedError

    def log_row(self, name: str, params: dict, values: dict, *, experiment: str | None = None,
                parent: str | None = None, step: int = 0) -> str:
        """A result with no run directory (a baseline of ``compare``, a study's summary)."""
        raise NotImplementedError


@register_tracker
class TensorBoard(Tracker):
    """One log folder per run under ``--track-uri``: scalars, weight histograms, the confusion matrix."""

    kind = package = "tensorboard"
    fix = "give a writable folder with --track-uri"

    def default_uri(self, runs_dir: Path) -> str:
        return str(runs_dir / "tensorboard")

    def open_store(self) -> None:
        folder = Path(self.uri)
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{folder} is a file, not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".cnnlab-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()

    def writer(self, name: str):
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(Path(self.uri) / name))

    @staticmethod
    def write_epoch(writer, logs: dict, epoch: int) -> None:
        for key, tag in EPOCH_KEYS.items():
            if _finite(logs.get(key)):
                writer.add_scalar(tag, float(logs[key]), epoch)

    @staticmethod
    def write_histograms(writer, state_dict: dict, epoch: int) -> None:
        for name, t in state_dict.items():
            if t.is_floating_point() and t.numel() > 1:
                writer.add_histogram(f"weights/{name}", t.detach().float().cpu(), epoch)

    def start(self, live: Live, name: str) -> None:
        live.handle = self.writer(name)

    def epoch(self, live: Live, logs: dict, epoch: int, model) -> None:
        self.write_epoch(live.handle, logs, epoch)
        self.write_histograms(live.handle, model.state_dict(), epoch)
        live.handle.flush()

    def abandon(self, live: Live) -> None:
        live.handle.close()

    def log_run(self, run_dir, *, live=None, experiment=None, parent=None, name=None, tags=None) -> str:
        r = _run_record(run_dir)
        w = live.handle if live is not None and live.handle is not None else self.writer(name or r["rd"].path.name)
        if live is None:
            for row in r["history"]:
                self.write_epoch(w, row, int(row["epoch"]))
            weights = r["rd"].weights_file()
            if weights.is_file():
                from safetensors.torch import load_file

                self.write_histograms(w, load_file(str(weights)), r["last"])
        for k, v in r["test"].items():
            w.add_scalar(k.replace("test_", "test/"), float(v), r["last"])
        if r["evaluation"] and r["evaluation"].get("confusion_matrix") and r["classes"]:
            w.add_figure("confusion_matrix/test", confusion_figure(r["evaluation"], r["classes"]), r["last"],
                         close=True)
        w.close()
        return w.log_dir

    def log_row(self, name, params, values, *, experiment=None, parent=None, step=0) -> str:
        w = self.writer(name)
        for k, v in values.items():
            if _finite(v):
                w.add_scalar(k, float(v), step)
        w.add_text("params", "\n".join(f"{k}: {v}" for k, v in params.items()), step)
        w.close()
        return w.log_dir


@register_tracker
class MLflow(Tracker):
    """One MLflow run per cnnlab run: parameters, metrics per epoch, the run directory as artifacts."""

    kind = package = "mlflow"
    fix = "give a database URI such as sqlite:///runs/mlflow.db, or an http(s):// MLflow server"

    def __init__(self, uri: str | None = None, runs_dir: str | Path = "runs", experiment: str = "cnnlab"):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        self._client = None
        super().__init__(uri, runs_dir, experiment)

    def default_uri(self, runs_dir: Path) -> str:
        return f"sqlite:///{(runs_dir / 'mlflow.db').resolve()}"

    def open_store(self) -> None:
        if not self.uri.startswith(("sqlite:///", "postgresql", "mysql", "mssql", "http://", "https://",
                                    "databricks")):
            raise ValueError(f"'{self.uri}' is not a database or server URI (MLflow's file store is retired)")
        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.experiment_id()

    def client(self):
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def experiment_id(self, name: str | None = None) -> str:
        name = name or self.experiment
        c = self.client()
        exp = c.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = None
        if self.uri.startswith("sqlite:///"):  # artifacts beside the database, not in ./mlruns
            location = (Path(self.uri.removeprefix("sqlite:///")).parent / "mlflow-artifacts" / name).resolve().as_uri()
        return c.create_experiment(name, artifact_location=location)

    def start_run(self, name: str, tags: dict | None = None, experiment: str | None = None,
                  parent: str | None = None) -> str:
        tags = {"cnnlab.run": name, **(tags or {})}
        if parent:
            tags["mlflow.parentRunId"] = parent
        return self.client().create_run(self.experiment_id(experiment), run_name=name, tags=tags).info.run_id

    def log_metrics(self, run_id: str, values: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in values.items() if _finite(v)]
        if metrics:
            self.client().log_batch(run_id, metrics=metrics)

    def log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 parameters a call
            self.client().log_batch(run_id, params=items[i:i + 100])

    def start(self, live: Live, name: str) -> None:
        live.handle = self.start_run(name)

    def epoch(self, live: Live, logs: dict, epoch: int, model) -> None:
        self.log_metrics(live.handle, {k: logs.get(k) for k in EPOCH_KEYS}, epoch)

    def abandon(self, live: Live) -> None:
        self.client().set_terminated(live.handle, "FAILED")

    def log_run(self, run_dir, *, live=None, experiment=None, parent=None, name=None, tags=None) -> str:
        from .runs import RunDir

        r = _run_record(run_dir)
        rd, metrics = r["rd"], r["metrics"]
        run_id = live.handle if live is not None and live.handle else \
            self.start_run(name or rd.path.name, tags, experiment, parent)
        if live is None:
            for row in r["history"]:
                self.log_metrics(run_id, {k: row.get(k) for k in EPOCH_KEYS}, int(row["epoch"]))
        config = rd.read_config() if (rd.path / RunDir.CONFIG).is_file() else {}
        spec = rd.read_optional(RunDir.SPEC) or {}
        self.log_params(run_id, {**config, "spec_name": spec.get("name", "")})
        self.log_metrics(run_id, {**r["test"], "best_epoch": metrics.get("best_epoch"),
                                  "train_time_s": metrics.get("train_time_s")}, r["last"])
        c = self.client()
        c.set_tag(run_id, "cnnlab.status", str(metrics.get("status", "")))
        c.set_tag(run_id, "cnnlab.run_dir", str(rd.path.resolve()))
        c.log_artifacts(run_id, str(rd.path))
        ended = {"interrupted": "KILLED", "nan_loss": "FAILED"}.get(metrics.get("status"), "FINISHED")
        c.set_terminated(run_id, ended)
        return run_id

    def log_row(self, name, params, values, *, experiment=None, parent=None, step=0) -> str:
        run_id = self.start_run(name, experiment=experiment, parent=parent)
        self.log_params(run_id, params)
        self.log_metrics(run_id, values, step)
        self.client().set_terminated(run_id, "FINISHED")
        return run_id


class Live:
    """The training callback behind ``Tracker.live()``: ``handle`` is what the tracker logs into
    (a TensorBoard writer, an MLflow run id), opened when training begins."""

    def __init__(self, tracker: Tracker):
        self.tracker = tracker
        self.handle: Any = None  # a TensorBoard writer, an MLflow run id

    def on_train_begin(self, state) -> None:
        if state.run_dir is None:  # a data-parallel process other than rank 0
            return
        self.tracker.start(self, Path(state.run_dir).name)

    def abandon(self) -> None:
        if self.handle is not None:
            self.tracker.abandon(self)

    def on_epoch_end(self, state, logs: dict) -> None:
        if self.handle is not None:
            self.tracker.epoch(self, logs, state.epoch, state.model)
