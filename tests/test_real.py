"""A few checks on the real Fashion-MNIST files (Debian's dataset-fashion-mnist package)."""

from pathlib import Path

import numpy as np
import pytest

import cnnlab
from cnnlab.data.dataset import Dataset
from cnnlab.data.sources import DataOptions, load_source

SYSTEM = Path("/usr/share/datasets")
pytestmark = [pytest.mark.real,
              pytest.mark.skipif(not (SYSTEM / "fashion-mnist").is_dir(),
                                 reason="dataset-fashion-mnist is not installed")]


@pytest.fixture(scope="module")
def fashion():
    return load_source("fashion-mnist", DataOptions(data_dir=str(SYSTEM), labels="ko"))


def test_real_fashion_mnist_loads_with_korean_names(fashion):
    assert fashion["train"].x.shape == (60000, 28, 28, 1) and fashion["test"].x.shape == (10000, 28, 28, 1)
    assert np.bincount(fashion["train"].y).tolist() == [6000] * 10
    assert fashion.class_names[:3] == ["티셔츠", "바지", "스웨터"]


def test_real_split_matches_notebook_sizes(fashion):
    from cnnlab.data.split import prepare_splits

    ds = prepare_splits(Dataset(fashion.source, fashion.class_names, dict(fashion.splits)), 0.2, 0.2, 42)
    assert (len(ds["train"]), len(ds["validation"]), len(ds["test"])) == (48000, 12000, 10000)
    assert np.bincount(ds["validation"].y).tolist() == [1200] * 10


def test_real_short_training_learns(fashion, tmp_path):
    from cnnlab.data.dataset import Split

    rng = np.random.default_rng(0)
    tr = rng.choice(60000, 6000, replace=False)
    te = rng.choice(10000, 2000, replace=False)
    small = Dataset("fashion-mnist", fashion.class_names,
                    {"train": fashion["train"].take(tr), "test": Split(fashion["test"].x[te], fashion["test"].y[te])})
    run = cnnlab.train(small, model="fashion-cnn", epochs=2, batch_size=64, runs_dir=str(tmp_path), quiet=True)
    assert run.metrics["test"]["accuracy"] > 0.75
    assert run.class_names[9] == "앵클 부츠"


def test_real_fashion_mnist_data_check(fashion):
    """No exact duplicates among the 70,000 images; a handful of test images have a near copy in
    train (13 on the 60,000 / 10,000 split, docs/check.md)."""
    from cnnlab.data.check import check_dataset

    report = check_dataset(Dataset("fashion-mnist", fashion.class_names, dict(fashion.splits)))
    ex = report["exact_duplicates"]
    assert ex["within"] == {"train": 0, "test": 0} and ex["across"] == {} and ex["conflicting_labels"] == 0
    assert report["near_duplicates"]["across"] == {"train/test": 13}
    assert report["classes"]["imbalance_ratio"] == 1.0
