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
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from .errors import ConfigError, first_line

KINDS = ("tensorboard", "mlflow")
EPOCH_KEYS = {"loss": "loss/train", "accuracy": "accuracy/train", "val_loss": "loss/validation",
              "val_accuracy": "accuracy/validation", "lr": "learning_rate"}


def check_installed(kind: str) -> None:
    import importlib.util

    if kind not in KINDS:
        raise ConfigError(f"unknown tracker '{kind}'", "--track", f"use one of {', '.join(KINDS)}")
    if importlib.util.find_spec(kind) is None:  # each tracker's package has its name
        raise ConfigError(f"--track {kind} needs the {kind} package, which is not installed", "--track",
                          "pip install 'cnnlab[track]'")


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def confusion_figure(evaluation: dict, class_names: list[str]):
    from .viz.figures import confusion

    return confusion(evaluation["confusion_matrix"], class_names)


class Tracker:
    """Where runs are logged: ``Tracker("tensorboard" | "mlflow", uri, runs_dir)``."""

    def __init__(self, kind: str, uri: str | None = None, runs_dir: str | Path = "runs", experiment: str = "cnnlab"):
        check_installed(kind)
        self.kind, self.experiment = kind, experiment
        base = Path(runs_dir)
        if kind == "tensorboard":
            self.uri = uri or str(base / "tensorboard")
        else:
            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
            self.uri = uri or f"sqlite:///{(base / 'mlflow.db').resolve()}"
        self._client = None
        self.check()

    def check(self) -> None:
        """Open the store now, before any run or study folder exists: a URI that cannot be used
        (not a folder, read-only, not a tracking URI) is a ConfigError naming it."""
        fix = ("give a writable folder with --track-uri" if self.kind == "tensorboard" else
               "give a database URI such as sqlite:///runs/mlflow.db, or an http(s):// MLflow server")
        try:
            if self.kind == "tensorboard":
                folder = Path(self.uri)
                if folder.exists() and not folder.is_dir():
                    raise ValueError(f"{folder} is a file, not a folder")
                folder.mkdir(parents=True, exist_ok=True)
                probe = folder / f".cnnlab-write-test-{os.getpid()}"
                probe.write_bytes(b"")
                probe.unlink()
                return
            if not self.uri.startswith(("sqlite:///", "postgresql", "mysql", "mssql", "http://", "https://",
                                        "databricks")):
                raise ValueError(f"'{self.uri}' is not a database or server URI (MLflow's file store is retired)")
            if self.uri.startswith("sqlite:///"):
                Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            self.experiment_id()
        except Exception as e:  # OSError, MlflowException, SQLAlchemy's errors: all mean "cannot use it"
            said = getattr(e, "strerror", None) or first_line(e, 200)
            raise ConfigError(f"cannot use the {self.kind} store: {said}", f"--track-uri {self.uri}", fix) from None

    # ---------------------------------------------------------------- MLflow plumbing
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

    def start_mlflow(self, name: str, tags: dict | None = None, experiment: str | None = None,
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

    # ---------------------------------------------------------------- TensorBoard plumbing
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

    # ---------------------------------------------------------------- runs
    def live(self) -> Live:
        """A training callback: each epoch logged as it ends (``cnnlab train --track``)."""
        return Live(self)

    def log_run(self, run_dir: str | Path, *, live: Live | None = None, experiment: str | None = None,
                parent: str | None = None, name: str | None = None, tags: dict | None = None) -> str:
        """Log a finished run directory (what ``live`` has not logged yet); returns the log folder
        (TensorBoard) or the MLflow run id."""
        from .runs import RunDir

        rd = RunDir(Path(run_dir))
        name = name or rd.path.name
        history = rd.read_history() if (rd.path / RunDir.HISTORY).is_file() else []
        metrics = rd.read_metrics()
        evaluation = rd.read_optional(RunDir.EVALUATION)
        classes = (rd.read_optional(RunDir.CLASSES) or {}).get("class_names") or []
        last = len(history)
        test = {f"test_{k}": v for k, v in (metrics.get("test") or {}).items() if k in ("loss", "accuracy")}
        if self.kind == "tensorboard":
            w = live.writer if live is not None and live.writer is not None else self.writer(name)
            if live is None:
                for row in history:
                    self.write_epoch(w, row, int(row["epoch"]))
                weights = rd.weights_file()
                if weights.is_file():
                    from safetensors.torch import load_file

                    self.write_histograms(w, load_file(str(weights)), last)
            for k, v in test.items():
                w.add_scalar(k.replace("test_", "test/"), float(v), last)
            if evaluation and evaluation.get("confusion_matrix") and classes:
                w.add_figure("confusion_matrix/test", confusion_figure(evaluation, classes), last, close=True)
            w.close()
            return w.log_dir
        run_id = live.run_id if live is not None and live.run_id else self.start_mlflow(name, tags, experiment, parent)
        if live is None:
            for row in history:
                self.log_metrics(run_id, {k: row.get(k) for k in EPOCH_KEYS}, int(row["epoch"]))
        config = rd.read_config() if (rd.path / RunDir.CONFIG).is_file() else {}
        spec = rd.read_optional(RunDir.SPEC) or {}
        self.log_params(run_id, {**config, "spec_name": spec.get("name", "")})
        self.log_metrics(run_id, {**test, "best_epoch": metrics.get("best_epoch"),
                                  "train_time_s": metrics.get("train_time_s")}, last)
        c = self.client()
        c.set_tag(run_id, "cnnlab.status", str(metrics.get("status", "")))
        c.set_tag(run_id, "cnnlab.run_dir", str(rd.path.resolve()))
        c.log_artifacts(run_id, str(rd.path))
        status = metrics.get("status")
        ended = {"interrupted": "KILLED", "nan_loss": "FAILED"}.get(status, "FINISHED")
        c.set_terminated(run_id, ended)
        return run_id

    def log_row(self, name: str, params: dict, values: dict, *, experiment: str | None = None,
                parent: str | None = None, step: int = 0) -> str:
        """A result with no run directory (a baseline of ``compare``, a study's summary)."""
        if self.kind == "tensorboard":
            w = self.writer(name)
            for k, v in values.items():
                if _finite(v):
                    w.add_scalar(k, float(v), step)
            w.add_text("params", "\n".join(f"{k}: {v}" for k, v in params.items()), step)
            w.close()
            return w.log_dir
        run_id = self.start_mlflow(name, experiment=experiment, parent=parent)
        self.log_params(run_id, params)
        self.log_metrics(run_id, values, step)
        self.client().set_terminated(run_id, "FINISHED")
        return run_id


class Live:
    """The training callback behind ``Tracker.live()``."""

    def __init__(self, tracker: Tracker):
        self.tracker, self.writer, self.run_id = tracker, None, None

    def on_train_begin(self, state) -> None:
        if state.run_dir is None:  # a data-parallel process other than rank 0
            return
        name = Path(state.run_dir).name
        if self.tracker.kind == "tensorboard":
            self.writer = self.tracker.writer(name)
        else:
            self.run_id = self.tracker.start_mlflow(name)

    def abandon(self) -> None:
        """Training failed before the run directory was complete: close what was opened."""
        if self.writer is not None:
            self.writer.close()
        elif self.run_id is not None:
            self.tracker.client().set_terminated(self.run_id, "FAILED")

    def on_epoch_end(self, state, logs: dict) -> None:
        if self.writer is not None:
            self.tracker.write_epoch(self.writer, logs, state.epoch)
            self.tracker.write_histograms(self.writer, state.model.state_dict(), state.epoch)
            self.writer.flush()
        elif self.run_id is not None:
            self.tracker.log_metrics(self.run_id, {k: logs.get(k) for k in EPOCH_KEYS}, state.epoch)
