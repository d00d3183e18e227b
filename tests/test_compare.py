"""cnnlab compare: every baseline on tiny data, the same folds for every model, the files."""

import json

import numpy as np
import pytest
import yaml

import cnnlab
from cnnlab.cli import main
from cnnlab.comparison.baselines import BASELINES, hog_features, installed
from cnnlab.errors import ConfigError
from conftest import TINY_SPEC, bars

ALL_BASELINES = [b for b in BASELINES if BASELINES[b].needs is None or installed(BASELINES[b].needs)]


@pytest.fixture
def bars_npz(tmp_path):
    x, y = bars(40, size=16)
    p = tmp_path / "bars16.npz"
    np.savez(p, x_train=x, y_train=y)
    return p


@pytest.fixture
def tiny_spec_file(tmp_path):
    spec = dict(TINY_SPEC, input_shape=[16, 16, 1])
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def test_every_baseline_and_a_cnn_on_one_split(bars_npz, tiny_spec_file, tmp_path):
    models = ALL_BASELINES + [str(tiny_spec_file)]
    board = cnnlab.compare(f"npz:{bars_npz}", models, out=tmp_path / "cmp", epochs=6, batch_size=16,
                           patience=None, seed=3)
    assert list(board["model"]) != models and set(board["model"]) == set(models)
    assert (board["status"] == "ok").all(), board[["model", "status", "note"]]
    assert list(board["rank"]) == list(range(1, len(models) + 1))
    assert board["accuracy"].is_monotonic_decreasing
    # every model beats chance (1/3); the leader is nearly perfect; sizes and times are filled in
    assert (board["accuracy"] >= 0.45).all() and board["accuracy"].iloc[0] >= 0.9, board[["model", "accuracy"]]
    assert (board["size"] > 0).all() and (board["train_time_s"] > 0).all()
    assert (board["n_eval"] == 24).all() and (board["n_train"] == 96).all()
    kinds = dict(zip(board["model"], board["kind"]))
    assert kinds["tree"] == "decision tree" and kinds[str(tiny_spec_file)] == "neural network (CNN)"
    units = dict(zip(board["model"], board["size_unit"]))
    assert units["tree"] == "nodes" and units["logreg"] == "params" and units[str(tiny_spec_file)] == "params"
    out = tmp_path / "cmp"
    for name in ("leaderboard.csv", "leaderboard.md", "leaderboard.html", "folds.csv", "compare.json", "folds.npz"):
        assert (out / name).is_file(), name
    page = (out / "leaderboard.html").read_text(encoding="utf-8")
    assert "<svg" in page and page.count("<tr>") == len(models) + 1 and "http" not in page.split("<svg")[0]
    md = (out / "leaderboard.md").read_text(encoding="utf-8")
    assert md.count("\n| ") == len(models) + 1
    # the neural model kept its run directory, loadable like any run
    run_dir = board.attrs["folds"].set_index("model").loc[str(tiny_spec_file), "run"]
    assert cnnlab.load_run(run_dir).spec.total_params > 0


def test_the_fast_recipe_trains_each_model_but_keeps_the_comparison_split(bars_npz, tiny_spec_file, tmp_path):
    # the fast recipe trains on every image (val_split 0), which must not empty the evaluation split
    board = cnnlab.compare(f"npz:{bars_npz}", ["tree", str(tiny_spec_file)], out=tmp_path / "fast",
                           recipe="fast", epochs=2, seed=3)
    assert (board["status"] == "ok").all(), board[["model", "status", "note"]]
    assert (board["n_eval"] == 24).all() and (board["n_train"] == 96).all()
    run = cnnlab.load_run(board.attrs["folds"].set_index("model").loc[str(tiny_spec_file), "run"])
    assert run.config["schedule"] == "onecycle" and run.config["batch_size"] == 64


def test_every_model_sees_the_same_folds(bars_npz, tiny_spec_file, tmp_path):
    from sklearn.model_selection import StratifiedKFold

    board = cnnlab.compare(f"npz:{bars_npz}", ["tree", "knn", str(tiny_spec_file)], cv=3,
                           out=tmp_path / "cv", epochs=2, batch_size=16, seed=5)
    folds = board.attrs["folds"]
    assert len(folds) == 9
    per_fold = folds.groupby("fold")["eval_digest"].nunique()
    assert (per_fold == 1).all()  # one set of evaluation images per fold, whatever the model
    assert folds.groupby("model")["eval_digest"].nunique().eq(3).all()
    saved = np.load(tmp_path / "cv" / "folds.npz")
    _, y = bars(40, size=16)
    # seed 003's recipe: hold out the validation split (train_test_split, stratified, the seed), then
    # StratifiedKFold over the remaining training images in train_test_split's order
    from sklearn.model_selection import train_test_split

    keep, held = train_test_split(np.arange(len(y)), test_size=0.2, random_state=5, stratify=y)
    skf = StratifiedKFold(3, shuffle=True, random_state=5)
    for k, (tr, ev) in enumerate(skf.split(np.zeros(len(keep)), y[keep])):
        assert np.array_equal(saved[f"fold{k + 1}_eval"], np.sort(keep[ev]))
        assert np.array_equal(saved[f"fold{k + 1}_train"], keep[tr])  # in the notebook's order
        assert not set(saved[f"fold{k + 1}_train"]) & set(held)  # the validation images stay out
    assert (board["n_train"] + board["n_eval"] == 96).all()
    assert board["accuracy_std"].notna().all() and (board["folds"] == 3).all()
    assert "±" in (tmp_path / "cv" / "leaderboard.md").read_text(encoding="utf-8")


def test_subsample_and_time_limit_are_reported(bars_npz, tiny_spec_file, tmp_path):
    board = cnnlab.compare(f"npz:{bars_npz}", ["tree", "forest", str(tiny_spec_file)],
                           subsample="60,tree=30", time_limit={"forest": 0.001, str(tiny_spec_file): 0.001},
                           out=tmp_path / "lim", epochs=50, batch_size=16, patience=None)
    rows = board.set_index("model")
    assert rows.loc["tree", "n_train"] == 30 and rows.loc["forest", "n_train"] == 60
    assert rows.loc["forest", "status"] == "timeout" and np.isnan(rows.loc["forest", "accuracy"])
    assert "time limit" in rows.loc["forest", "note"]
    assert list(board["model"])[-1] == "forest"  # listed, last, not dropped
    # a neural model stops at its limit and still reports the epoch it reached
    assert rows.loc[str(tiny_spec_file), "status"] == "time limit"
    assert rows.loc[str(tiny_spec_file), "accuracy"] > 0
    assert "timeout" in (tmp_path / "lim" / "leaderboard.md").read_text(encoding="utf-8")


def test_unknown_model_is_rejected_with_the_valid_names(bars_npz, capsys, tmp_path):
    code = main(["compare", f"npz:{bars_npz}", "--models", "tree,randomforest", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "unknown model 'randomforest'" in err and "forest" in err and "fashion-cnn" in err
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match="not among the compared models"):
        cnnlab.compare(f"npz:{bars_npz}", ["tree"], subsample="knn=5", out=tmp_path / "y")
    with pytest.raises(cnnlab.CnnlabError, match="smallest class"):
        cnnlab.compare(f"npz:{bars_npz}", ["tree"], cv=50, out=tmp_path / "z")


def test_cli_prints_and_saves_the_leaderboard(bars_npz, capsys, tmp_path):
    code = main(["compare", f"npz:{bars_npz}", "--models", "tree,logreg", "--cv", "2", "--jobs", "2",
                 "--out", str(tmp_path / "c"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "| 1 |" in out and "| 2 |" in out and "leaderboard.html" in out
    saved = json.loads((tmp_path / "c" / "compare.json").read_text(encoding="utf-8"))
    assert saved["cv"] == 2 and [r["model"] for r in saved["leaderboard"]] == [
        line.split("|")[2].strip() for line in out.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]


def test_hog_matches_scikit_image():
    # reference values: skimage.feature.hog(img, 9, (4, 4), (2, 2), block_norm="L2-Hys")
    img = np.array([[0, 3, 6, 9, 12, 15, 18, 21], [2, 12, 22, 32, 42, 17, 27, 37],
                    [8, 25, 42, 24, 41, 23, 40, 57], [18, 42, 31, 55, 44, 33, 57, 46],
                    [32, 63, 59, 55, 51, 47, 78, 74], [50, 53, 56, 59, 62, 65, 68, 71],
                    [72, 82, 92, 102, 112, 87, 97, 107], [98, 115, 132, 114, 131, 113, 130, 147]], np.uint8)
    ref = [0.057899, 0.080415, 0.309996, 0.309996, 0.257575, 0.0, 0.0, 0.0, 0.0, 0.057899, 0.0, 0.241486,
           0.216981, 0.250994, 0.112213, 0.0, 0.132414, 0.0, 0.115797, 0.093779, 0.0, 0.309996, 0.309996,
           0.084432, 0.0, 0.02877, 0.0, 0.115797, 0.093779, 0.134675, 0.273638, 0.309996, 0.309996, 0.0, 0.0, 0.0]
    ours = hog_features(img[None, :, :, None], cell=4)
    assert ours.shape == (1, 36)
    np.testing.assert_allclose(ours[0], ref, atol=2e-6)
    # a batch gives each image's own features
    both = hog_features(np.stack([img, img.T])[..., None], cell=4, chunk=1)
    np.testing.assert_allclose(both[0], ours[0], atol=1e-7)
    assert not np.allclose(both[1], ours[0])


def test_copies_in_the_pool_are_reported_once_and_folds_are_not_rechecked(tmp_path, tiny_spec_file):
    from cnnlab.errors import CnnlabWarning

    x, y = bars(20, size=16)
    x[5], y[5] = x[6], y[6]
    np.savez(tmp_path / "dup.npz", x_train=x, y_train=y)
    with pytest.warns(CnnlabWarning, match="1 labeled image\\(s\\) are exact copies") as caught:
        board = cnnlab.compare(f"npz:{tmp_path / 'dup.npz'}", ["tree", str(tiny_spec_file)], cv=2,
                               out=tmp_path / "cmp", epochs=1)
    assert sum("exact copies" in str(w.message) for w in caught) == 1
    runs = [p for p in (tmp_path / "cmp" / "runs").iterdir()]
    assert runs and not any((r / "check.json").exists() for r in runs)
    assert (board["status"] == "ok").all()
