"""Tiny data made in the tests: learnable bar images in every format cnnlab reads."""

from __future__ import annotations

import csv
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(2)


def bars(n_per_class: int = 30, size: int = 12, classes: int = 3, seed: int = 0,
         channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Class 0: a horizontal bar, 1: a vertical bar, 2: a diagonal, 3: a box; plus noise."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c in range(classes):
        for _ in range(n_per_class):
            img = rng.integers(0, 60, (size, size)).astype(np.float64)
            k = rng.integers(2, size - 3)
            if c == 0:
                img[k:k + 2, 1:-1] = 230
            elif c == 1:
                img[1:-1, k:k + 2] = 230
            elif c == 2:
                idx = np.arange(size)
                img[idx, idx] = 230
            else:
                img[2:-2, 2] = img[2:-2, -3] = img[2, 2:-2] = img[-3, 2:-2] = 230
            xs.append(img)
            ys.append(c)
    x = np.clip(np.stack(xs), 0, 255).astype(np.uint8)[..., None]
    if channels == 3:
        x = np.repeat(x, 3, axis=-1)
    y = np.asarray(ys, np.int64)
    order = rng.permutation(len(y))
    return x[order], y[order]


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory, monkeypatch):
    """No test sees the user's cache, Debian's datasets or the network by accident."""
    base = tmp_path_factory.mktemp("env")
    monkeypatch.setenv("XDG_CACHE_HOME", str(base / "cache"))
    monkeypatch.setenv("CNNLAB_SYSTEM_DATA", str(base / "system"))
    monkeypatch.setenv("CNNLAB_OFFLINE", "1")
    monkeypatch.setenv("KERAS_HOME", str(base / "keras"))
    monkeypatch.delenv("CNNLAB_DATA", raising=False)
    monkeypatch.delenv("CNNLAB_MIRROR", raising=False)
    monkeypatch.delenv("CNNLAB_CACHE", raising=False)


@pytest.fixture
def npz_path(tmp_path) -> Path:
    x, y = bars(30)
    xt, yt = bars(10, seed=1)
    p = tmp_path / "bars.npz"
    np.savez(p, x_train=x, y_train=y, x_test=xt, y_test=yt)
    return p


def write_folder(root: Path, x: np.ndarray, y: np.ndarray, names: list[str], fmt: str = "png") -> None:
    for i, (img, label) in enumerate(zip(x, y)):
        d = root / names[label]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(d / f"img{i:03d}.{fmt}")


@pytest.fixture
def folder_path(tmp_path) -> Path:
    x, y = bars(20)
    root = tmp_path / "shapes"
    write_folder(root, x, y, ["horizontal", "vertical", "diagonal"])
    return root


@pytest.fixture
def csv_dataset(tmp_path) -> Path:
    """Competition layout: images/train/{id}.png and train.csv with columns id,class."""
    x, y = bars(20)
    img_dir = tmp_path / "comp" / "images" / "train"
    img_dir.mkdir(parents=True)
    rows = []
    for i, (img, label) in enumerate(zip(x, y)):
        Image.fromarray(img[..., 0]).save(img_dir / f"{i}.png")
        rows.append({"id": i, "class": int(label)})
    path = tmp_path / "comp" / "train.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, ["id", "class"])
        w.writeheader()
        w.writerows(rows)
    return path


TINY_SPEC = {
    "name": "tiny",
    "input_shape": [12, 12, 1],
    "layers": [
        {"type": "Conv2D", "filters": 8, "kernel_size": 3, "padding": "same", "activation": "relu"},
        {"type": "MaxPooling2D", "pool_size": 2},
        {"type": "Flatten"},
        {"type": "Dense", "units": 16, "activation": "relu"},
        {"type": "Dense", "units": 3, "activation": "softmax"},
    ],
}


def train_tiny_run(folder: Path, class_names: list[str] | None = None, test_per_class: int = 6):
    """A 2-epoch run of TINY_SPEC on bar images (with its own test set) in ``folder``."""
    import cnnlab

    x, y = bars(20)
    xt, yt = bars(test_per_class, seed=2)
    np.savez(folder / "b.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    names = None
    if class_names:
        (folder / "names.txt").write_text("\n".join(class_names) + "\n", encoding="utf-8")
        names = str(folder / "names.txt")
    return cnnlab.train(f"npz:{folder / 'b.npz'}", model=TINY_SPEC, epochs=2, runs_dir=str(folder / "runs"),
                        quiet=True, batch_size=16, class_names=names)


def one_error_line(code: int, err: str, needle: str) -> str:
    """A command that refused its input as cnnlab says it must: exit code 2 and one ``error:`` line
    holding ``needle``, never an internal error or a traceback. Returns that line."""
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert len(errors) == 1 and "internal error" not in err and "Traceback" not in err, err
    assert needle in errors[0], errors[0]
    return errors[0]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 400 KB file system (tmpfs) where the machine lets this process mount one, else None."""
    import subprocess

    where = tmp_path / "tiny-disk"
    where.mkdir()
    if os_geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(where)],
                                           capture_output=True).returncode != 0:
        yield None
        return
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], capture_output=True)


def os_geteuid() -> int:
    import os

    return os.geteuid() if hasattr(os, "geteuid") else -1


def draw_stroke(page, selector: str = "#pad", x: int = 140, top: int = 30, steps: int = 12) -> None:
    """A vertical pen stroke on a page's canvas, as a user's mouse makes it (Playwright)."""
    box = page.locator(selector).bounding_box()
    page.mouse.move(box["x"] + x, box["y"] + top)
    page.mouse.down()
    for i in range(steps):
        page.mouse.move(box["x"] + x, box["y"] + top + i * 20)
    page.mouse.up()
