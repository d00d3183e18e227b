"""cnnlab check and the data check at the start of training; class weights and the balanced sampler."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image

import cnnlab
from cnnlab.cli import main
from cnnlab.data.check import check_dataset, findings, near_duplicate_pairs, perceptual_hashes
from cnnlab.data.dataset import Dataset, Split
from cnnlab.errors import CnnlabWarning, DataError
from conftest import TINY_SPEC, bars, write_folder


def leaky(tmp_path, size=12):
    """Bars with planted problems: 2 test images copied from train, 1 near copy (a few pixels
    changed), 1 duplicate inside train, and 1 identical pair with different labels."""
    x, y = bars(20, size=size)
    xt, yt = bars(6, seed=1, size=size)
    xt[0], yt[0] = x[3], y[3]
    xt[1], yt[1] = x[4], y[4]
    near = x[5].copy()
    near[0, :4] = np.clip(near[0, :4].astype(int) + 30, 0, 255)
    xt[2], yt[2] = near, y[5]
    x[10], y[10] = x[11], y[11]  # within train
    x[12] = x[13]
    y[12] = (y[13] + 1) % 3  # same pixels, another label
    np.savez(tmp_path / "leaky.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    return tmp_path / "leaky.npz"


def test_check_finds_exact_and_near_duplicates_and_conflicts(tmp_path):
    ds = cnnlab.load_dataset(f"npz:{leaky(tmp_path)}", val_split=0)
    r = check_dataset(ds)
    ex = r["exact_duplicates"]
    assert ex["across"] == {"train/test": 2}
    assert ex["within"]["train"] == 2 and ex["conflicting_labels"] == 1
    assert r["near_duplicates"]["across"] == {"train/test": 1}
    pair = r["near_duplicates"]["examples"][0]
    assert pair["a"]["index"] == 5 and pair["b"]["index"] == 2 and 0 < pair["mean_abs_diff"] <= 4
    levels = [level for level, _ in findings(r)]
    assert levels.count("warning") >= 3 and "error" not in levels
    assert [level for level, _ in findings(r, strict=True)].count("error") == 2


def test_near_duplicates_are_not_merely_similar_images():
    x, _ = bars(30, size=28, seed=4)
    h = perceptual_hashes(x)
    pairs = near_duplicate_pairs(x, x, h, h)
    assert {(i, j) for i, j, _ in pairs} == {(i, i) for i in range(len(x))}  # each image only matches itself


def test_cli_check_text_json_strict_and_files(tmp_path, capsys):
    x, y = bars(6)
    root = tmp_path / "photos"
    write_folder(root, x, y, ["a", "b", "c"])
    good = next((root / "b").iterdir()).read_bytes()
    (root / "b" / "cut.png").write_bytes(good[: len(good) // 2])
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(root / "a" / "other-size.png")
    assert main(["check", f"folder:{root}", "--out", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "cut.png" in out and "12x12" in out
    report = json.loads((tmp_path / "c.json").read_text())
    assert any(b["path"].endswith("cut.png") for b in report["files"]["bad"])
    assert report["files"]["distinct_sizes"] == 2
    assert main(["check", f"npz:{leaky(tmp_path)}", "--json", "--val-split", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["exact_duplicates"]["across"]["train/test"] == 2
    assert main(["check", f"npz:{leaky(tmp_path)}", "--strict", "--val-split", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 2 image(s) of the test split are exact copies of train images")


def test_cli_check_csv_lists_missing_ids_and_unlisted_files(tmp_path, capsys):
    x, y = bars(10)
    (tmp_path / "images").mkdir()
    for i, img in enumerate(x):
        Image.fromarray(img[..., 0]).save(tmp_path / "images" / f"{i}.png")
    rows = [f"{i},{c}" for i, c in enumerate(y)][2:] + ["999,0"]  # 0 and 1 unlisted, 999 missing
    (tmp_path / "t.csv").write_text("id,class\n" + "\n".join(rows) + "\n")
    assert main(["check", f"csv:{tmp_path / 't.csv'}", "--image-pattern", "images/{}.png", "--json"]) == 0
    f = json.loads(capsys.readouterr().out)["files"]
    assert f["missing_ids"] == ["999"] and f["missing_count"] == 1 and f["not_in_table_count"] == 2


def test_train_warns_about_leakage_and_strict_refuses_before_the_run_dir(tmp_path):
    src = f"npz:{leaky(tmp_path)}"
    with pytest.warns(CnnlabWarning, match="exact copies of train images") as caught:
        run = cnnlab.train(src, model=TINY_SPEC, epochs=1, runs_dir=str(tmp_path / "runs"), quiet=True, val_split=0)
    assert any(f"cnnlab check {src} shows examples" in str(w.message) for w in caught)  # the source, named
    saved = json.loads((run.path / "check.json").read_text())
    assert saved["exact_duplicates"]["across"]["train/test"] == 2
    from cnnlab.report import build_report

    page = build_report(run).read_text(encoding="utf-8")
    assert "Data check" in page and "exact copies of train images" in page
    with pytest.raises(DataError, match="exact copies"):
        cnnlab.train(src, model=TINY_SPEC, epochs=1, runs_dir=str(tmp_path / "strict"), quiet=True, strict=True)
    assert not (tmp_path / "strict").exists() or not any((tmp_path / "strict").iterdir())
    with warnings.catch_warnings():
        warnings.simplefilter("error", CnnlabWarning)
        run = cnnlab.train(src, model=TINY_SPEC, epochs=1, runs_dir=str(tmp_path / "nocheck"), quiet=True,
                           check=False)
    assert not (run.path / "check.json").exists()


def test_skipped_images_are_counted_in_the_run(tmp_path):
    x, y = bars(6)
    root = tmp_path / "photos"
    write_folder(root, x, y, ["a", "b", "c"])
    (root / "c" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(DataError, match="broken.png"):
        cnnlab.train(f"folder:{root}", model=TINY_SPEC, epochs=1, runs_dir=str(tmp_path / "r"), quiet=True)
    with pytest.warns(CnnlabWarning, match="left out 1 unreadable image"):
        run = cnnlab.train(f"folder:{root}", model=TINY_SPEC, epochs=1, runs_dir=str(tmp_path / "r"), quiet=True,
                           on_bad_image="skip")
    assert run.data["skipped_images"] == {"train": 1} and sum(run.data["splits"].values()) == 18


def _imbalanced_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = np.rint(d.images * 255 / 16).astype(np.uint8), d.target
    rng = np.random.default_rng(0)
    tr, te = [], []
    for c in range(10):
        idx = rng.permutation(np.nonzero(y == c)[0])
        te += list(idx[:50])
        tr += list(idx[50:50 + (120 if c < 5 else 12)])  # classes 5..9 have a tenth of the images
    return x[tr], y[tr], x[te], y[te]


def test_class_weights_and_balanced_sampler_raise_macro_f1_on_a_10_to_1_subset(tmp_path):
    from sklearn.metrics import f1_score

    x, y, xt, yt = _imbalanced_digits()
    spec = {"input_shape": [8, 8, 1], "layers": [
        {"type": "Flatten"}, {"type": "Dense", "units": 32, "activation": "relu"},
        {"type": "Dense", "units": 10, "activation": "softmax"}]}
    scores = {}
    for name, kw in (("none", {}), ("weighted", {"class_weight": "balanced"}), ("sampler", {"sampler": "balanced"})):
        run = cnnlab.train(((x, y), (xt, yt)), model=spec, epochs=15, batch_size=32, val_split=0, seed=0, lr=0.003,
                           runs_dir=str(tmp_path / name), quiet=True, check=False, **kw)
        scores[name] = f1_score(yt, cnnlab.predict(run, xt).argmax(1), average="macro")
        if name == "weighted":
            w = json.loads((run.path / "class_weights.json").read_text())
            assert w["0"] == pytest.approx(660 / (10 * 120)) and w["9"] == pytest.approx(660 / (10 * 12))
            assert run.config["class_weight"] == "balanced"
    assert scores["weighted"] > scores["none"] + 0.03, scores
    assert scores["sampler"] > scores["none"] + 0.03, scores


def test_class_weight_file_and_its_errors(tmp_path):
    x, y = bars(10)
    np.savez(tmp_path / "b.npz", x_train=x, y_train=y)
    (tmp_path / "w.json").write_text('{"1": 3}')
    run = cnnlab.train(f"npz:{tmp_path / 'b.npz'}", model=TINY_SPEC, epochs=1, runs_dir=str(tmp_path / "r"),
                       quiet=True, class_weight=str(tmp_path / "w.json"), check=False)
    assert json.loads((run.path / "class_weights.json").read_text()) == {"0": 1.0, "1": 3.0, "2": 1.0}
    (tmp_path / "bad.txt").write_text("1\n2\n")
    assert main(["train", f"npz:{tmp_path / 'b.npz'}", "--class-weight", str(tmp_path / "bad.txt"),
                 "--runs-dir", str(tmp_path / "r2")]) == 2
    assert main(["train", f"npz:{tmp_path / 'b.npz'}", "--class-weight", "heavy",
                 "--runs-dir", str(tmp_path / "r2")]) == 2
    assert not (tmp_path / "r2").exists() or not any((tmp_path / "r2").iterdir())


def test_check_on_in_memory_rgb_counts_grayscale_images():
    x = np.zeros((6, 8, 8, 3), np.uint8)
    x[:3, ..., 0] = 200  # three coloured, three gray
    ds = Dataset("arrays", ["a", "b"], {"train": Split(x, np.array([0, 1] * 3))})
    assert check_dataset(ds, near=False)["images"]["grayscale_in_rgb"] == 3
