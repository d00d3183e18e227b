"""Issue 31, item 3: the robustness report (cnnlab evaluate RUN --corruptions)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnnlab.cli import main
from cnnlab.data.corruptions import CORRUPTIONS, corrupt, resolve
from conftest import one_error_line, train_tiny_run


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_every_corruption_works_on_gray_and_rgb_any_size_and_repeats(name):
    rng = np.random.default_rng(0)
    for shape in ((5, 12, 12, 1), (3, 40, 56, 3)):
        x = rng.integers(20, 200, shape, dtype=np.uint8)
        for s in (1, 5):
            out = corrupt(x, name, s, seed=7)
            assert out.shape == x.shape and out.dtype == np.uint8
            assert np.array_equal(out, corrupt(x, name, s, seed=7)), "the same seed, the same images"
            assert not np.array_equal(out, x), "a corruption changes the images"
    mild, severe = corrupt(x, name, 1, seed=7), corrupt(x, name, 5, seed=7)
    if name != "invert":  # severity changes nothing there
        assert np.abs(severe.astype(int) - x).mean() >= np.abs(mild.astype(int) - x).mean() * 0.99


def test_names_and_did_you_mean():
    assert resolve("all") == list(CORRUPTIONS)
    assert resolve("rotate, jpeg,rotate") == ["rotate", "jpeg"]
    assert resolve(["gaussian-noise"]) == ["gaussian_noise"]
    with pytest.raises(Exception, match="did you mean rotate"):
        resolve("rotat")


def test_the_table_is_printed_saved_and_reported(tmp_path, capsys):
    run = train_tiny_run(tmp_path)
    assert main(["evaluate", str(run.path), "--corruptions", "--severity", "1", "5"]) == 0
    out = capsys.readouterr().out
    assert "mean corruption accuracy" in out and "relative drop" in out and "severity 5" in out
    table = json.loads((run.path / "evaluation-corruptions.json").read_text())
    assert set(table["table"]) == set(CORRUPTIONS) and table["severities"] == [1, 5]
    accs = [a for row in table["table"].values() for a in row.values()]
    assert abs(table["mean"] - np.mean(accs)) < 1e-9 and 0 <= min(accs) <= max(accs) <= 1
    assert main(["evaluate", str(run.path), "--corruptions", "rotate,jpeg", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert list(again["table"]) == ["rotate", "jpeg"] and again["severities"] == [3]
    assert main(["evaluate", str(run.path), "--corruptions", "rotate,jpeg", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["table"] == again["table"], "seeded: the same numbers twice"
    from cnnlab.report import build_report

    page = build_report(run).read_text(encoding="utf-8")
    assert "Robustness" in page and "one image under each corruption" in page


@pytest.mark.parametrize("argv,needle", [(["--corruptions", "rotat"], "did you mean rotate"),
                                         (["--corruptions", "--severity", "6"], "--severity")])
def test_bad_corruption_inputs_are_one_line(argv, needle, tmp_path, capsys):
    run = train_tiny_run(tmp_path)
    code = main(["evaluate", str(run.path), *argv])
    one_error_line(code, capsys.readouterr().err, needle)


def test_ood_scores_tell_the_runs_images_from_others(tmp_path, capsys):
    """Issue 31, item 2 (its measurement): evaluate --ood SOURCE."""
    run = train_tiny_run(tmp_path)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (50, 12, 12, 1), dtype=np.uint8)
    np.savez(tmp_path / "noise.npz", x_train=noise, y_train=np.zeros(50, np.int64))
    assert main(["evaluate", str(run.path), "--ood", f"npz:{tmp_path / 'noise.npz'}", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for name in ("energy", "max_softmax"):
        r = result[name]
        assert 0 <= r["auroc"] <= 1 and 0 <= r["fpr_at_95_tpr"] <= 1 and 0 <= r["kept_accuracy"] <= 1
    assert result["out_images"] == 50 and (run.path / "ood.png").stat().st_size > 1000
    assert json.loads((run.path / "evaluation-ood.json").read_text())["energy"] == result["energy"]
    assert main(["evaluate", str(run.path), "--ood", f"npz:{tmp_path / 'noise.npz'}"]) == 0
    assert "FPR@95TPR" in capsys.readouterr().out
    code = main(["evaluate", str(run.path), "--ood", f"folder:{tmp_path / 'nowhere'}"])
    one_error_line(code, capsys.readouterr().err, "not found")


def test_ood_sources_of_unlabelled_images_and_of_other_shapes(tmp_path, capsys):
    """Unknowns have no labels: a plain folder of images (any size, RGB) is a source; images that
    are not images of any shape are one error line; arrays at another size are refused."""
    from PIL import Image

    import cnnlab
    from cnnlab.errors import DataError

    run = train_tiny_run(tmp_path)
    rng = np.random.default_rng(1)
    (tmp_path / "photos" / "more").mkdir(parents=True)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(
            tmp_path / "photos" / ("more" if i % 2 else "") / f"{i}.jpg")
    assert main(["evaluate", str(run.path), "--ood", str(tmp_path / "photos"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["out_images"] == 6
    for name, shape, needle in (("flat", (10, 144), "store images as (N, H, W)"),
                                ("five", (10, 12, 12, 5), "C = 1 or 3")):
        np.savez(tmp_path / f"{name}.npz", x_train=np.zeros(shape, np.uint8), y_train=np.zeros(10, np.int64))
        code = main(["evaluate", str(run.path), "--ood", f"npz:{tmp_path / name}.npz"])
        one_error_line(code, capsys.readouterr().err, needle)
    with pytest.raises(DataError, match="images of 20x20 for a model of 12x12"):
        cnnlab.ood(run, np.zeros((4, 20, 20, 1), np.uint8), save=False)


def test_ood_detection_math():
    from cnnlab.engine.ood import detection, scores

    logits = np.array([[10.0, 0, 0], [8, 1, 0], [0.1, 0, 0.2], [0, 0.1, 0]])
    s = scores(logits)
    assert s["energy"][0] > s["energy"][2] and np.allclose(s["max_softmax"].max(), np.exp(10) / (np.exp(10) + 2))
    d = detection(np.array([5.0, 6, 7, 8]), np.array([1.0, 2]), np.array([True, True, False, True]))
    assert d["auroc"] == 1.0 and d["fpr_at_95_tpr"] == 0.0


def test_predict_rejects_images_unlike_the_training_data(tmp_path, capsys):
    """Issue 31, item 2: the energy score's percentiles kept with the run (ood.json), --reject."""
    import csv

    from PIL import Image

    import cnnlab
    from conftest import TINY_SPEC, bars

    x, y = bars(100)
    np.savez(tmp_path / "b.npz", x_train=x, y_train=y)
    run = cnnlab.train(f"npz:{tmp_path / 'b.npz'}", model=TINY_SPEC, epochs=4, runs_dir=str(tmp_path / "runs"),
                       quiet=True, batch_size=32)
    record = json.loads((run.path / "ood.json").read_text())
    assert record["score"] == "energy" and record["fitted_on"] == "validation" and len(record["percentiles"]) == 101
    folder = tmp_path / "imgs"
    folder.mkdir()
    xt, _ = bars(5, seed=3)
    for i, img in enumerate(xt):
        Image.fromarray(img[..., 0]).save(folder / f"bar{i}.png")
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(folder / f"noise{i}.png")
    out = tmp_path / "p.csv"
    assert main(["predict", str(run.path), str(folder), "--reject", "auto", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    unknown = {r["input"].split("/")[-1]: r["unknown"] == "True" for r in rows}
    assert sum(unknown[f"noise{i}.png"] for i in range(8)) >= 6, unknown  # noise is not a bar
    assert sum(unknown[f"bar{i}.png"] for i in range(15)) <= 3, unknown
    assert all(float(r["ood_score"]) == float(r["ood_score"]) for r in rows)
    assert main(["predict", str(run.path), str(folder), "--out", str(tmp_path / "plain.csv")]) == 0
    assert "unknown" not in (tmp_path / "plain.csv").read_text().splitlines()[0], "only with --reject"
    (run.path / "ood.json").unlink()  # a run from before: no threshold to reject with
    code = main(["predict", str(run.path), str(folder), "--reject", "auto"])
    one_error_line(code, capsys.readouterr().err, "no out-of-distribution threshold")


@pytest.mark.parametrize("value", ["1.5", "0", "most"])
def test_reject_takes_auto_or_a_share(value, tmp_path, capsys):
    code = main(["predict", str(tmp_path / "run"), "x.png", "--reject", value])
    one_error_line(code, capsys.readouterr().err, "--reject")
