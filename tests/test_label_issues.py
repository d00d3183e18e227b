"""Issue 30: bad labels found (cnnlab check --label-issues: out-of-fold probabilities, cleanlab),
acted on (train --exclude / --relabel), and the interpretation views (top losses, most confused)."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest
import yaml

import cnnlab
from cnnlab.cli import main
from conftest import TINY_SPEC, bars, one_error_line, train_tiny_run, write_folder

FLIPPED = [3, 17, 40, 66, 91, 110]  # positions whose label the tests change


@pytest.fixture
def noisy(tmp_path):
    """120 bar images of 3 classes with 6 labels flipped to another class (5%), and a spec."""
    x, y = bars(40)
    clean = y.copy()
    for i in FLIPPED:
        y[i] = (y[i] + 1) % 3
    xt, yt = bars(10, seed=5)
    np.savez(tmp_path / "noisy.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY_SPEC), encoding="utf-8")
    return {"source": f"npz:{tmp_path / 'noisy.npz'}", "spec": str(tmp_path / "tiny.yaml"), "clean": clean,
            "x": x, "y": y, "dir": tmp_path}


def check_args(n, out, *more):
    return ["check", n["source"], "--label-issues", "--folds", "3", "--model", n["spec"], "--epochs", "12",
            "--batch-size", "16", "--issues-dir", str(out), "--no-near", "--runs-dir", str(n["dir"] / "runs"), *more]


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_flipped_labels_are_found_ranked_and_written(noisy, capsys):
    out = noisy["dir"] / "issues"
    assert main(check_args(noisy, out)) == 0
    text = capsys.readouterr().out
    assert "label issues:" in text and "per class pair (given -> suggested)" in text and "rank" in text
    rows = read_rows(out / "label-issues.csv")
    assert list(rows[0]) == ["rank", "split", "index", "path", "given", "suggested", "score", "p_given",
                             "p_suggested"]
    found = {int(r["index"]) for r in rows}
    assert len(found & set(FLIPPED)) >= 5, (sorted(found), FLIPPED)  # recall
    assert len(found & set(FLIPPED)) / len(found) >= 0.5  # the clean images are mostly left alone
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores), "worst first"
    for r in rows:
        i = int(r["index"])
        if i in FLIPPED:  # the suggestion is the label before the flip
            assert r["suggested"] == str(noisy["clean"][i]) and r["given"] == str(noisy["y"][i])
    oof = np.load(out / "oof.npy")
    assert oof.shape == (120, 3) and np.allclose(oof.sum(1), 1, atol=1e-4)
    page = (out / "label-issues.html").read_text(encoding="utf-8")
    assert "Label issues" in page and "data:image/png;base64," in page and "\u2192" in page
    assert (out / "label-issues.png").stat().st_size > 1000
    assert len(list((out / "folds").iterdir())) == 3  # one run per fold, kept like compare's


def test_json_lists_the_issues_and_a_second_look_trains_nothing(noisy, capsys, monkeypatch):
    out = noisy["dir"] / "issues"
    assert main(check_args(noisy, out, "--json")) == 0
    report = json.loads(capsys.readouterr().out)
    items = report["label_issues"]
    assert report["label_issues_checked"]["images"] == 120
    assert items and set(items[0]) >= {"index", "path", "given", "suggested", "score"}
    import cnnlab.training

    def no_training(*a, **k):
        raise AssertionError("a second look must not train")

    monkeypatch.setattr(cnnlab.training, "train_here", no_training)
    assert main(check_args(noisy, noisy["dir"] / "again", "--json")) == 0  # the cache
    again = json.loads(capsys.readouterr().out)["label_issues"]
    assert again == items
    monkeypatch.setenv("CNNLAB_HOME", str(noisy["dir"] / "empty-home"))  # no cache: the saved file
    assert main(check_args(noisy, noisy["dir"] / "third", "--json", "--oof", str(out / "oof.npy"))) == 0
    assert json.loads(capsys.readouterr().out)["label_issues"] == items


def test_the_api_finds_them_too(noisy):
    found = cnnlab.label_issues(noisy["source"], model=noisy["spec"], folds=3, epochs=12, batch_size=16,
                                issues_dir=noisy["dir"] / "api", runs_dir=str(noisy["dir"] / "runs"))
    assert found.checked == 120 and len({r["index"] for r in found.rows} & set(FLIPPED)) >= 5
    assert found.pairs and sum(n for _, _, n in found.pairs) == len(found.rows)


def test_exclude_and_relabel_act_on_the_csv_and_are_recorded(noisy, capsys):
    out = noisy["dir"] / "issues"
    assert main(check_args(noisy, out)) == 0
    rows = read_rows(out / "label-issues.csv")
    capsys.readouterr()
    runs = noisy["dir"] / "trained"
    base = ["train", noisy["source"], "--model", noisy["spec"], "--epochs", "1", "--runs-dir", str(runs), "-q"]
    assert main([*base, "--exclude", str(out / "label-issues.csv"), "--val-split", "0"]) == 0
    run = cnnlab.load_run(next(runs.iterdir()))
    assert run.data["label_edits"]["excluded"] == len(rows)
    assert run.data["splits"]["train"] == 120 - len(rows)
    assert "images excluded (listed in label-issues.csv)" in (run.path / "report.html").read_text(encoding="utf-8")
    # --relabel: the suggestions become the labels
    from cnnlab.config import make_config
    from cnnlab.training import load_data

    ds = load_data(make_config(source=noisy["source"], relabel=str(out / "label-issues.csv"), val_split=0))
    fixed = {int(r["index"]) for r in rows} & set(FLIPPED)
    assert all(ds["train"].y[i] == noisy["clean"][i] for i in fixed)
    assert ds.info["label_edits"]["relabelled"] == len(rows)


def test_a_folder_source_is_named_by_path(tmp_path, capsys):
    x, y = bars(20)
    write_folder(tmp_path / "shapes", x, y, ["horizontal", "vertical", "diagonal"])
    first = sorted((tmp_path / "shapes" / "vertical").iterdir())[0].relative_to(tmp_path / "shapes").as_posix()
    (tmp_path / "drop.csv").write_text(f"path\n{first}\n", encoding="utf-8")
    runs = tmp_path / "runs"
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY_SPEC), encoding="utf-8")
    assert main(["train", f"folder:{tmp_path / 'shapes'}", "--exclude", str(tmp_path / "drop.csv"), "--model",
                 str(tmp_path / "tiny.yaml"), "--epochs", "1", "--runs-dir", str(runs), "-q", "--no-report"]) == 0
    run = cnnlab.load_run(next(runs.iterdir()))
    assert run.data["label_edits"]["excluded"] == 1


@pytest.mark.parametrize("case", ["folds", "small_class", "unknown_index", "unknown_path", "unknown_class",
                                  "no_column"])
def test_bad_label_inputs_are_one_line(case, noisy, capsys):
    d = noisy["dir"]
    (d / "bad_index.csv").write_text("index,suggested\n9999,1\n", encoding="utf-8")
    (d / "bad_path.csv").write_text("path\nno/such.png\n", encoding="utf-8")
    (d / "bad_class.csv").write_text("index,suggested\n3,giraffe\n", encoding="utf-8")
    (d / "no_column.csv").write_text("id,label\n3,1\n", encoding="utf-8")
    train = ["train", noisy["source"], "--epochs", "1", "--runs-dir", str(d / "runs"), "-q"]
    argv, needle = {
        "folds": (check_args(noisy, d / "o")[:-2] + ["--folds", "1"], "--folds"),
        "small_class": (check_args(noisy, d / "o") + ["--folds", "60"], "folds need at least 60"),
        "unknown_index": ([*train, "--exclude", str(d / "bad_index.csv")], "index '9999' is not an image"),
        "unknown_path": ([*train, "--exclude", str(d / "bad_path.csv")], "'no/such.png' is not an image"),
        "unknown_class": ([*train, "--relabel", str(d / "bad_class.csv")], "'giraffe' is not a class"),
        "no_column": ([*train, "--exclude", str(d / "no_column.csv")], "no index or path column"),
    }[case]
    code = main(argv)
    one_error_line(code, capsys.readouterr().err, needle)
    assert not (d / "runs").exists() or not any((d / "runs").iterdir())


def test_a_check_without_label_issues_loads_no_cleanlab(noisy, capsys):
    sys.modules.pop("cleanlab", None)
    assert main(["check", noisy["source"], "--no-near"]) == 0
    assert "cleanlab" not in sys.modules and "label issues" not in capsys.readouterr().out


def test_most_confused_and_top_losses(tmp_path, capsys):
    run = train_tiny_run(tmp_path)
    assert main(["evaluate", str(run.path)]) == 0
    text = capsys.readouterr().out
    assert "most confused" in text
    assert main(["evaluate", str(run.path), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    cm = np.asarray(ev["confusion_matrix"])
    pairs = ev["most_confused"]
    assert sum(p["count"] for p in pairs) == cm.sum() - np.trace(cm)
    assert [p["count"] for p in pairs] == sorted((p["count"] for p in pairs), reverse=True)
    out = tmp_path / "tl.png"
    assert main(["plot", str(run.path), "top-losses", "--n", "4", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
    from cnnlab.report import build_report

    page = build_report(run).read_text(encoding="utf-8")
    assert "Most confused" in page and "Top losses" in page
