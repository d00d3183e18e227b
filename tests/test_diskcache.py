"""Data larger than memory (issue 16, item 4): folder and CSV images decoded once into an on-disk
cache and read a batch at a time, with the same results as in memory."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

import cnnlab
from cnnlab.data import diskcache
from cnnlab.data.diskcache import DiskImages, cache_root
from cnnlab.data.sources import DataOptions, load_source
from cnnlab.errors import CnnlabError
from conftest import TINY_SPEC, bars, write_folder


@pytest.fixture
def photos(tmp_path) -> Path:
    x, y = bars(20, size=12, seed=3)
    root = tmp_path / "photos"
    write_folder(root, x, y, ["horizontal", "vertical", "diagonal"])
    return root


def caches() -> list[Path]:
    root = cache_root()
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []


def test_disk_images_behave_like_the_array(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (50, 4, 5, 3), dtype=np.uint8)
    (tmp_path / "x.u8").write_bytes(x.tobytes())
    d = DiskImages(tmp_path / "x.u8", (4, 5, 3))
    assert d.shape == x.shape and len(d) == 50 and d.dtype == np.uint8
    assert np.array_equal(np.asarray(d), x)
    for key in (3, -1, slice(5, 9), slice(None, None, 7), np.array([9, 2, 2, 40]), x[:, 0, 0, 0] > 128):
        assert np.array_equal(d[key], x[key]), key
    assert np.array_equal(d[:, 0], x[:, 0])
    sub = d.subset(np.array([7, 3, 30]))  # a split: a view of some rows
    assert isinstance(sub, DiskImages) and np.array_equal(sub[[2, 0]], x[[30, 7]])
    assert np.array_equal(sub.subset([1])[0], x[3])
    with pytest.raises(IndexError):
        d[50]


def test_training_from_the_disk_cache_equals_training_in_memory(photos, tmp_path, capsys):
    opts = dict(model=TINY_SPEC, epochs=3, batch_size=8, seed=2, quiet=False, threads=2, rotation_range=10.0,
                check=True)
    mem = cnnlab.train(f"folder:{photos}", runs_dir=str(tmp_path / "mem"), cache="memory", **opts)
    assert not caches()
    disk = cnnlab.train(f"folder:{photos}", runs_dir=str(tmp_path / "disk"), cache="disk", **opts)
    assert "decoding images into the disk cache: 60/60" in capsys.readouterr().err
    assert disk.data["cache"] == "disk" and len(caches()) == 1
    a, b = load_file(str(mem.path / "model.safetensors")), load_file(str(disk.path / "model.safetensors"))
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)  # the same bytes, the same training
    assert disk.metrics["test"] == mem.metrics["test"]
    assert disk.data["fingerprints"] == mem.data["fingerprints"]


def test_the_cache_is_reused_and_rebuilt_when_a_file_changes(photos, capsys):
    opts = DataOptions(cache="disk")
    first = load_source(f"folder:{photos}", opts)
    assert "decoding" in capsys.readouterr().err
    again = load_source(f"folder:{photos}", opts)
    assert "decoding" not in capsys.readouterr().err and len(caches()) == 1
    assert np.array_equal(np.asarray(again["train"].x), np.asarray(first["train"].x))
    f = next((photos / "vertical").iterdir())
    from PIL import Image

    Image.fromarray(np.full((12, 12), 200, np.uint8)).save(f)
    os.utime(f, ns=(1, 1))  # a changed size or time makes a new key
    changed = load_source(f"folder:{photos}", opts)
    assert "decoding" in capsys.readouterr().err and len(caches()) == 2
    i = changed["train"].ids.index(str(f.relative_to(photos)))
    assert (changed["train"].x[i] == 200).all()


def test_an_interrupted_build_leaves_no_cache(photos, monkeypatch):
    real = diskcache.CHUNK
    monkeypatch.setattr(diskcache, "CHUNK", 16)
    calls = []
    from cnnlab.data import images

    original = images.read_images

    def failing(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*a, **k)

    monkeypatch.setattr(images, "read_images", failing)
    with pytest.raises(KeyboardInterrupt):
        load_source(f"folder:{photos}", DataOptions(cache="disk", quiet=True))
    assert not caches() and not list(cache_root().iterdir())  # nor a temporary folder
    assert real == 512


def test_csv_sources_and_auto_choice(csv_dataset, monkeypatch):
    opts = DataOptions(image_pattern="images/train/{}.png", cache="auto", quiet=True)
    assert not hasattr(load_source(f"csv:{csv_dataset}", opts)["train"].x, "subset")  # fits: memory
    monkeypatch.setattr(diskcache, "available_memory", lambda: 1000)  # 1 kB free: the disk
    ds = load_source(f"csv:{csv_dataset}", opts)
    assert isinstance(ds["train"].x, DiskImages) and ds.info["cache"] == "disk"
    mem = load_source(f"csv:{csv_dataset}", DataOptions(image_pattern="images/train/{}.png", cache="memory"))
    assert np.array_equal(np.asarray(ds["train"].x), mem["train"].x)


def test_an_unwritable_cache_is_one_line(photos, tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("CNNLAB_CACHE", str(blocked))
    with pytest.raises(CnnlabError, match="cannot create the decoded-image cache"):
        load_source(f"folder:{photos}", DataOptions(cache="disk"))


def test_an_image_rewritten_with_its_old_size_and_time_is_decoded_again(photos, capsys):
    """Same size, modification time set back (cp -p, touch -r): the change time still moves."""
    from PIL import Image

    opts = DataOptions(cache="disk", quiet=True)
    load_source(f"folder:{photos}", opts)
    f = next((photos / "vertical").iterdir())
    before = os.stat(f)
    import io

    old = f.read_bytes()
    for k in range(144):  # one pixel changed, in a PNG no longer than the old file (then padded to its size:
        img = np.asarray(Image.open(f)).copy()  # readers stop at IEND)
        img.flat[k] = 255 - img.flat[k]
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "PNG")
        if len(buf.getvalue()) <= len(old):
            break
    f.write_bytes(buf.getvalue() + b"\0" * (len(old) - len(buf.getvalue())))
    os.utime(f, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(f).st_size == before.st_size and os.stat(f).st_mtime_ns == before.st_mtime_ns
    again = load_source(f"folder:{photos}", opts)
    assert len(caches()) == 2  # a new cache, not the stale one
    i = again["train"].ids.index(str(f.relative_to(photos)))
    assert np.array_equal(again["train"].x[i][..., 0], img)


def test_corrupted_cache_bytes_are_found_and_the_cache_rebuilt(photos, capsys):
    opts = DataOptions(cache="disk", quiet=True)
    first = load_source(f"folder:{photos}", opts)
    (cache,) = caches()
    data = bytearray((cache / diskcache.DATA_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle
    (cache / diskcache.DATA_FILE).write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="decoded-image cache is damaged"):
        again = load_source(f"folder:{photos}", opts)
    assert np.array_equal(np.asarray(again["train"].x), np.asarray(first["train"].x))  # decoded afresh
    assert diskcache.verify_chunks(cache / diskcache.DATA_FILE, 144, __import__("json").loads(
        (cache / diskcache.META_FILE).read_text())["chunks"]) is None
