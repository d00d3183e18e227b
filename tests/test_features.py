"""Issue 28, item 3: `--recipe features`, Chollet's fast feature extraction. The frozen backbone runs
once per image; its pooled features are cached on disk, keyed by the weights, image size and images;
the head trains on them and gives the run that frozen end-to-end training gives; a second run reuses
the cache."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

from cnnlab.cli import main  # noqa: E402
from conftest import one_error_line  # noqa: E402
from test_backbones import _applications_weights, random_batchnorm  # noqa: E402


@pytest.fixture
def photos(tmp_path, monkeypatch):
    """40 32x32 RGB images of 2 classes (a bright or dark left half), a Keras-written MobileNetV2
    0.35 weights file (random, with random BatchNorm statistics), and an empty cache."""
    monkeypatch.setenv("CNNLAB_HOME", str(tmp_path / "home"))
    rng = np.random.default_rng(0)
    x = rng.integers(60, 200, (40, 32, 32, 3)).astype(np.uint8)
    y = np.arange(40) % 2
    x[y == 1, :, :16] = 250
    x[y == 0, :, :16] = 5
    np.savez(tmp_path / "p.npz", x_train=x, y_train=y, x_test=x[:10], y_test=y[:10])
    keras.utils.set_random_seed(2)
    model = random_batchnorm(keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, include_top=False,
                                                            weights=None))
    _applications_weights(model, tmp_path / "m.h5")
    return tmp_path


def train(tmp, *extra):
    return main(["train", f"npz:{tmp / 'p.npz'}", "--backbone", "mobilenet_v2:0.35", "--weights", str(tmp / "m.h5"),
                 "--epochs", "4", "--batch-size", "8", "--lr", "0.01", "--precision", "fp32", "--seed", "3",
                 "--runs-dir", str(tmp / "runs"), "--no-report", "--no-check", *extra])


def last_run(tmp):
    return sorted((tmp / "runs").iterdir())[-1]


def history(run) -> list[dict]:
    import csv

    with open(run / "history.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_features_train_the_head_as_frozen_end_to_end_training_does_and_are_computed_once(photos, capsys,
                                                                                          monkeypatch):
    from cnnlab.engine import featurecache
    from cnnlab.runs import load_run

    assert train(photos, "--recipe", "features") == 0
    out = "".join(capsys.readouterr())
    assert "features: train 32 images through avg_pool" in out and "features: validation 8 images" in out
    assert "into the head: top_dropout, predictions" in out
    feats_run = last_run(photos)
    cached = sorted((photos / "home" / "features").iterdir())
    assert len(cached) == 2
    # the same head on the same frozen backbone, trained end to end on the images
    assert train(photos, "--recipe", "features", "--no-features", "--freeze-until", "out_relu") == 0
    capsys.readouterr()
    ends = [h["val_loss"] for h in history(last_run(photos))]
    feats = [h["val_loss"] for h in history(feats_run)]
    assert len(ends) == len(feats) == 4 and np.allclose(ends, feats, rtol=1e-4, atol=1e-6)
    assert len(set(np.round(feats, 6))) > 1  # the head learned something

    # a second run with another learning rate: the backbone does not run again
    def no_pass(*a, **k):
        raise AssertionError("the backbone ran again")

    monkeypatch.setattr(featurecache, "pooled_features", no_pass)
    assert train(photos, "--recipe", "features", "--lr", "0.003") == 0
    out = "".join(capsys.readouterr())
    assert out.count("images from the cache") == 2
    assert sorted((photos / "home" / "features").iterdir()) == cached
    monkeypatch.undo()
    # the run is an ordinary run on images: its test accuracy is the whole network's on them
    run = load_run(feats_run)
    x = np.load(photos / "p.npz")["x_test"]
    probs = run.predict_proba(x)
    metrics = json.loads((feats_run / "metrics.json").read_text())
    assert abs(metrics["test"]["accuracy"] - float((probs.argmax(1) == np.arange(10) % 2).mean())) < 1e-9


def test_other_images_or_weights_compute_new_features(photos, capsys):
    assert train(photos, "--recipe", "features", "--epochs", "2") == 0
    assert train(photos, "--recipe", "features", "--epochs", "2", "--image-size", "40", "40") == 0
    keras.utils.set_random_seed(5)
    other = random_batchnorm(keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, include_top=False,
                                                            weights=None), seed=5)
    _applications_weights(other, photos / "m.h5")
    assert train(photos, "--recipe", "features", "--epochs", "2") == 0
    capsys.readouterr()
    assert len(list((photos / "home" / "features").iterdir())) == 6
    assert train(photos, "--recipe", "features", "--epochs", "2", "--val-split", "0.25") == 0
    assert "through avg_pool" in "".join(capsys.readouterr())  # another split: other images


@pytest.mark.parametrize("extra,needle", [
    (["--horizontal-flip"], "rules out augmentation"),
    (["--freeze-until", "Conv1"], "rules out --freeze-until"),
])
def test_what_features_cannot_do_is_one_line(photos, capsys, extra, needle):
    code = train(photos, "--recipe", "features", *extra)
    one_error_line(code, capsys.readouterr().err, needle)
    assert not (photos / "runs").exists() or not list((photos / "runs").iterdir())


def test_features_without_a_backbone_is_one_line(tmp_path, capsys):
    from conftest import bars

    x, y = bars(8, size=28)
    np.savez(tmp_path / "b.npz", x_train=x, y_train=y)
    code = main(["train", f"npz:{tmp_path / 'b.npz'}", "--recipe", "features", "--runs-dir", str(tmp_path / "r")])
    one_error_line(code, capsys.readouterr().err, "so it needs --backbone")
