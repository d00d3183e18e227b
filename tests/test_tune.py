"""cnnlab tune: the space file, a study's trials as runs, failures, budgets, continuing, workers, refit."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import cnnlab
from cnnlab.cli import main
from cnnlab.errors import ConfigError
from cnnlab.tuning.space import check_space, draw, example_space, first_values
from conftest import bars

optuna = pytest.importorskip("optuna")

SPACE = {
    "epochs": 2,
    "batch_size": 16,
    "lr": {"loguniform": [1e-3, 1e-2]},
    "model": {"name": "searched", "layers": [
        {"repeat": {"int": [1, 2], "name": "blocks"}, "layers": [
            {"type": "Conv2D", "filters": {"choice": [4, 8], "name": "filters"}, "kernel_size": 3,
             "padding": "same", "activation": "relu"},
            {"type": "MaxPooling2D", "pool_size": 2}]},
        {"type": "Flatten"},
        {"type": "Dropout", "rate": {"uniform": [0.1, 0.4]}},
        {"type": "Dense", "units": 3, "activation": "softmax"}]},
}


@pytest.fixture
def data(tmp_path) -> str:
    x, y = bars(24)
    xt, yt = bars(8, seed=1)
    np.savez(tmp_path / "b.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    return f"npz:{tmp_path / 'b.npz'}"


def write_space(tmp_path: Path, space: dict, name: str = "space.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(space, sort_keys=False))
    return p


def board(out: Path) -> list[dict]:
    with open(out / "leaderboard.csv", newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------ the space


def test_a_repeated_block_draws_each_copy_and_names_it():
    drawn = {}

    def last(name, kind, node):  # the high end / last choice, recorded
        arg = node[kind]
        drawn[name] = arg[-1]
        return arg[-1]

    values, model = draw(SPACE, last)
    assert values == {"epochs": 2, "batch_size": 16, "lr": 1e-2}
    assert [layer["type"] for layer in model["layers"]] == ["Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D",
                                                             "Flatten", "Dropout", "Dense"]
    assert set(drawn) == {"lr", "blocks", "filters_1", "filters_2", "model.layers.2.rate"}
    values, model = draw(SPACE, first_values)
    assert [layer["type"] for layer in model["layers"]][:3] == ["Conv2D", "MaxPooling2D", "Flatten"]


@pytest.mark.parametrize("space, message, where", [
    ({"lr": {"uniform": [0.5, 0.1]}}, "uniform needs [low, high] with low < high", "space: lr"),
    ({"lr": {"loguniform": [0, 0.1]}}, "loguniform needs a low above 0", "space: lr"),
    ({"batch_size": {"choice": []}}, "choice needs a list of values", "space: batch_size"),
    ({"batch_size": {"int": [16, 64], "choice": [1]}}, "a search node has int beside choice", "space: batch_size"),
    ({"epochs": {"int": [1.5, 3]}}, "int needs whole numbers", "space: epochs"),
    ({"model": {"layers": [{"type": "Dropout", "rate": {"uniform": [0.1]}}]}}, "uniform needs [low, high]",
     "space: model.layers.0.rate"),
    ({"lrr": {"uniform": [0.1, 0.2]}}, "unknown key 'lrr'", "space"),
    ({"source": {"choice": ["digits", "mnist"]}}, "'source' cannot be part of a search space", "space: source"),
    ({"lr": 0.01}, "the search space searches nothing", "space"),
    ({"lr": {"uniform": [0.1, 0.2]}, "start": {"lr": 0.1}}, "start must be a list", "space: start"),
])
def test_a_bad_space_is_one_line_naming_the_place(space, message, where):
    with pytest.raises(ConfigError) as e:
        check_space(space, "space")
    assert message in e.value.what and e.value.where == where and "\n" not in e.value.line()


def test_the_example_space_is_valid_and_printed(capsys):
    space = yaml.safe_load(example_space())
    check_space(space, "example")
    assert main(["tune", "--example-space"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == space


def test_a_bad_fixed_value_fails_before_any_trial(data, tmp_path, capsys):
    space = write_space(tmp_path, {**SPACE, "optimizer": "adm"})
    assert main(["tune", data, "--space", str(space), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "space.yaml: optimizer" in err and "adm" in err
    assert not (tmp_path / "s").exists()


# ------------------------------------------------------------------ a study


def test_a_study_runs_trials_as_runs_and_never_reads_the_test_split(data, tmp_path):
    out = tmp_path / "study"
    result = cnnlab.tune(data, SPACE, trials=4, out=out, seed=3, quiet=True, refit=True)
    rows = board(out)
    assert len(rows) == 4 and sorted(int(r["trial"]) for r in rows) == [0, 1, 2, 3]
    assert {r["state"] for r in rows} <= {"complete", "pruned"}
    values = [float(r["val_accuracy"]) for r in rows if r["state"] == "complete"]
    assert values == sorted(values, reverse=True)  # best first
    for r in rows:
        run = out / r["run"]
        spec = json.loads((run / "spec.json").read_text())
        convs = [layer for layer in spec["layers"] if layer["type"] == "Conv2D"]
        assert len(convs) == int(r["blocks"])
        assert convs[0]["filters"] == int(r["filters_1"])
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["lr"] == pytest.approx(float(r["lr"]))
        assert not (run / "evaluation.json").exists()  # no trial reads the test split
        assert "test" not in json.loads((run / "metrics.json").read_text())
        assert json.loads((run / "data.json").read_text())["splits"] == {"train": 57, "validation": 15}
    assert result.best["trial"] == int(rows[0]["trial"])
    # the refit: the best trial's model on training + validation data, the test split read once
    refit = json.loads((out / result.refit["run"] / "metrics.json").read_text())
    assert refit["test"]["n"] == 24 and 0 <= result.refit["test_accuracy"] <= 1
    refit_data = json.loads((out / result.refit["run"] / "data.json").read_text())
    assert refit_data["splits"] == {"train": 72, "test": 24}  # training + validation images, the test split
    page = (out / "leaderboard.html").read_text()
    assert "data:image/png;base64," in page and "Refit of trial" in page
    assert "| rank | trial | state | val_accuracy | lr | blocks | filters_1 |" in (out / "leaderboard.md").read_text()


def test_failed_trials_are_recorded_and_the_search_goes_on(data, tmp_path):
    space = {**SPACE, "model": {"name": "maybe", "layers": [
        {"type": "Conv2D", "filters": 4, "kernel_size": 3, "activation": "relu"},
        {"type": "MaxPooling2D", "pool_size": {"choice": [2, 20], "name": "pool"}},
        {"type": "Flatten"}, {"type": "Dense", "units": 3, "activation": "softmax"}]},
        "optimizer": "sgd", "lr": {"choice": [0.01, 1.0e+30], "name": "lr"},
        "start": [{"pool": 2, "lr": 0.01}]}  # the space's starting point runs first
    out = tmp_path / "s"
    cnnlab.tune(data, space, trials=8, out=out, seed=1, quiet=True)
    rows = board(out)
    assert len(rows) == 8
    failed = [r for r in rows if r["state"] == "fail"]
    reasons = {r["reason"] for r in failed}
    assert any("pool_size [20, 20]" in why for why in reasons), reasons
    assert any("loss became NaN" in why for why in reasons), reasons
    assert all(r["pool"] == "20" or r["lr"] != "0.01" for r in failed)
    (first,) = [r for r in rows if r["trial"] == "0"]
    assert first["state"] == "complete" and first["pool"] == "2" and first["lr"] == "0.01"


def test_the_time_limit_bounds_the_whole_search(data, tmp_path):
    out = tmp_path / "s"
    t0 = time.perf_counter()
    result = cnnlab.tune(data, {**SPACE, "epochs": 100_000, "patience": None}, trials=100, time_limit=4, out=out,
                         quiet=True)
    assert time.perf_counter() - t0 < 30
    (only,) = result.rows  # the first trial met the limit: it stopped there, and no other started
    assert only["state"] == "complete" and 1 <= only["epochs"] < 100_000
    run = json.loads((out / only["run"] / "metrics.json").read_text())
    assert run["status"] == "time_limit"


def test_continuing_needs_the_same_space(data, tmp_path, capsys):
    out = tmp_path / "s"
    cnnlab.tune(data, SPACE, trials=1, out=out, quiet=True)
    other = write_space(tmp_path, {**SPACE, "lr": {"loguniform": [1e-4, 1e-3]}})
    assert main(["tune", data, "--space", str(other), "--out", str(out), "--study", "space-npz", "--trials", "2"]) == 2
    assert "was made with another search space" in capsys.readouterr().err


def test_a_storage_that_does_not_open_is_one_line(data, tmp_path, capsys):
    space = write_space(tmp_path, SPACE)
    assert main(["tune", data, "--space", str(space), "--storage", "nosuchdb://x/y", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "cannot open the study storage" in err and err.count("\n") == 1


# ------------------------------------------------------------------ processes


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "cnnlab", "tune", *args]


def test_ctrl_c_leaves_a_study_the_same_command_continues(data, tmp_path):
    space = write_space(tmp_path, {**SPACE, "epochs": 30, "patience": None})
    out = tmp_path / "s"
    cmd = cli(data, "--space", str(space), "--out", str(out), "--trials", "3", "--threads", "1")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "trials").glob("*/history.csv"))) < 1:
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "run the same command to continue" in err
    first = board(out)
    interrupted = [r for r in first if "interrupted" in r["reason"]]
    assert len(interrupted) == 1, first
    # continued: the interrupted trial's parameters run again, and the study ends with 3 counted trials
    done = subprocess.run([*cmd[:-2], "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = board(out)
    counted = [r for r in rows if "interrupted" not in r["reason"]]
    assert len(counted) == 3 and all(r["state"] in ("complete", "pruned") for r in counted)
    retry = [r for r in rows if f"retry of trial {interrupted[0]['trial']}" in r["reason"]]
    assert len(retry) == 1 and retry[0]["lr"] == interrupted[0]["lr"]


def test_two_workers_share_one_sqlite_study_without_duplicates_or_losses(data, tmp_path):
    space = write_space(tmp_path, SPACE)
    out = tmp_path / "s"
    # the study exists before the workers start, as `cnnlab tune` makes it
    cmd = cli(data, "--space", str(space), "--out", str(out), "--trials", "6", "--threads", "1", "--quiet")
    env = {**os.environ}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    study = optuna.load_study(study_name="space-npz", storage=f"sqlite:///{out / 'study.db'}")
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state.is_finished() for t in trials)
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2, "both processes ran trials"
    assert len({t.params["lr"] for t in trials}) == 6, "each worker samples with its own seed"
    runs = sorted(p.name for p in (out / "trials").iterdir())
    assert len(runs) == 6 and len({r.rsplit("-", 1)[-1] for r in runs}) == 6


def test_jobs_starts_workers_on_this_machine(data, tmp_path):
    out = tmp_path / "s"
    # trials of a few seconds each, so the second process (started from scratch) gets some
    result = cnnlab.tune(data, {**SPACE, "epochs": 150, "patience": None}, trials=6, jobs=2, out=out, quiet=True)
    assert sorted(r["trial"] for r in result.rows) == list(range(6))
    study = optuna.load_study(study_name=result.study, storage=result.storage)
    assert len({t.user_attrs["worker"] for t in study.get_trials()}) == 2
