"""--track tensorboard|mlflow: what train, compare and tune log, read back with each library's reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from cnnlab.cli import main
from conftest import TINY_SPEC, bars

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")


@pytest.fixture
def data(tmp_path) -> str:
    x, y = bars(20)
    xt, yt = bars(6, seed=1)
    np.savez(tmp_path / "b.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    return f"npz:{tmp_path / 'b.npz'}"


@pytest.fixture
def spec(tmp_path) -> str:
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(TINY_SPEC))
    return str(p)


def only_run(runs: Path) -> Path:
    (run,) = [p for p in runs.iterdir() if (p / "metrics.json").is_file()]
    return run


def events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    acc.Reload()
    return acc


def test_train_writes_tensorboard_events(data, spec, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["train", data, "--model", spec, "--epochs", "3", "--patience", "none", "--runs-dir", str(runs),
                 "--no-report", "--quiet", "--track", "tensorboard"]) == 0
    assert "tracked in tensorboard" in capsys.readouterr().out
    run = only_run(runs)
    acc = events(runs / "tensorboard" / run.name)
    tags = acc.Tags()
    history = [line.split(",") for line in (run / "history.csv").read_text().splitlines()[1:]]
    loss = acc.Scalars("loss/train")
    assert [e.step for e in loss] == [1, 2, 3]
    assert [round(e.value, 5) for e in loss] == [round(float(h[1]), 5) for h in history]
    assert [e.step for e in acc.Scalars("accuracy/validation")] == [1, 2, 3]
    assert acc.Scalars("learning_rate")[0].value == pytest.approx(0.001)
    metrics = json.loads((run / "metrics.json").read_text())
    assert acc.Scalars("test/accuracy")[0].value == pytest.approx(metrics["test"]["accuracy"])
    assert any(t.startswith("weights/") for t in tags["histograms"])
    assert {e.step for e in acc.Histograms(tags["histograms"][0])} == {1, 2, 3}
    assert "confusion_matrix/test" in tags["images"]


def test_train_logs_an_mlflow_run(data, spec, tmp_path):
    from mlflow import MlflowClient

    runs = tmp_path / "runs"
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    assert main(["train", data, "--model", spec, "--epochs", "2", "--patience", "none", "--lr", "0.003",
                 "--runs-dir", str(runs), "--no-report", "--quiet", "--track", "mlflow", "--track-uri", uri]) == 0
    run = only_run(runs)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("cnnlab")
    (logged,) = client.search_runs([exp.experiment_id])
    assert logged.info.run_name == run.name and logged.info.status == "FINISHED"
    assert logged.data.params["lr"] == "0.003" and logged.data.params["epochs"] == "2"
    loss = client.get_metric_history(logged.info.run_id, "loss")
    assert sorted(m.step for m in loss) == [1, 2]
    metrics = json.loads((run / "metrics.json").read_text())
    assert logged.data.metrics["test_accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    files = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert {"metrics.json", "config.yaml", "history.csv"} <= files
    assert not (Path.cwd() / "mlruns").exists()


def test_a_run_whose_loss_becomes_nan_is_logged_as_failed(data, spec, tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    assert main(["train", data, "--model", spec, "--optimizer", "sgd", "--lr", "1e30", "--epochs", "3",
                 "--runs-dir", str(tmp_path / "runs"), "--no-report", "--quiet", "--track", "mlflow",
                 "--track-uri", uri]) == 2
    client = MlflowClient(tracking_uri=uri)
    (logged,) = client.search_runs([client.get_experiment_by_name("cnnlab").experiment_id])
    assert logged.info.status == "FAILED" and logged.data.tags["cnnlab.status"] == "nan_loss"


def test_tune_logs_each_trial_once(data, tmp_path):
    from mlflow import MlflowClient

    pytest.importorskip("optuna")
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"epochs": 2, "lr": {"loguniform": [1e-3, 1e-2]}, "model": TINY_SPEC}))
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    cmd = ["tune", data, "--space", str(space), "--out", str(tmp_path / "s"), "--quiet", "--track", "mlflow",
           "--track-uri", uri]
    assert main([*cmd, "--trials", "2"]) == 0
    assert main([*cmd, "--trials", "3"]) == 0  # continued: only the new trial is logged
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("space-npz")
    logged = client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags["cnnlab.trial"] for r in logged) == ["0", "1", "2"]
    assert all("search.lr" in r.data.tags and "val_accuracy" in r.data.metrics for r in logged)
    assert all(r.data.params["lr"] == r.data.tags["search.lr"] for r in logged)


def test_compare_logs_baselines_and_networks(data, spec, tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", data, "--models", f"tree,{spec}", "--epochs", "2", "--out", str(out), "--quiet",
                 "--runs-dir", str(tmp_path / "runs"), "--track", "tensorboard"]) == 0
    logs = tmp_path / "runs" / "tensorboard" / out.name
    folders = sorted(p.name for p in logs.iterdir())
    assert folders == ["tiny-fold1", "tree-fold1"], folders
    assert "accuracy" in events(logs / "tree-fold1").Tags()["scalars"]


def test_missing_extra_and_uri_without_tracker_are_one_line(data, spec, tmp_path, capsys, monkeypatch):
    assert main(["train", data, "--track-uri", "x", "--runs-dir", str(tmp_path)]) == 2
    assert "--track-uri needs --track" in capsys.readouterr().err
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    assert main(["train", data, "--track", "mlflow", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "pip install 'cnnlab[track]'" in err and err.count("\n") == 1
    assert not any((tmp_path).glob("*-npz"))  # nothing trained


def test_a_new_tracker_is_one_class(data, spec, tmp_path, monkeypatch):
    """Issue 29: a tracker kind registers like a layer kind. One file adds a tracker that appends
    JSON lines; --track offers it, and train logs each epoch and the finished run through it."""
    import textwrap

    import cnnlab.tracking as tracking

    monkeypatch.setattr(tracking, "TRACKERS", dict(tracking.TRACKERS))  # as it was, after the test
    (tmp_path / "jsonl_tracker.py").write_text(textwrap.dedent('''
        import json
        from pathlib import Path

        from cnnlab.tracking import Tracker, register_tracker

        @register_tracker
        class JsonLines(Tracker):
            kind = "jsonl"

            def default_uri(self, runs_dir):
                return str(runs_dir / "log.jsonl")

            def open_store(self):
                Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
                Path(self.uri).touch()

            def write(self, **row):
                with open(self.uri, "a") as f:
                    f.write(json.dumps(row) + "\\n")

            def start(self, live, name):
                live.handle = name

            def epoch(self, live, logs, epoch, model):
                self.write(run=live.handle, epoch=epoch, loss=logs["loss"])

            def abandon(self, live):
                self.write(run=live.handle, failed=True)

            def log_run(self, run_dir, *, live=None, experiment=None, parent=None, name=None, tags=None):
                metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
                self.write(run=Path(run_dir).name, test_accuracy=metrics["test"]["accuracy"])
                return self.uri
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    import jsonl_tracker  # noqa: F401  (registers the kind)

    assert main(["train", data, "--model", spec, "--epochs", "2", "--runs-dir", str(tmp_path / "runs"),
                 "--no-report", "--quiet", "--track", "jsonl"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "runs" / "log.jsonl").read_text().splitlines()]
    run = only_run(tmp_path / "runs")
    assert [r.get("epoch") for r in rows] == [1, 2, None] and {r["run"] for r in rows} == {run.name}
    assert rows[-1]["test_accuracy"] == json.loads((run / "metrics.json").read_text())["test"]["accuracy"]
