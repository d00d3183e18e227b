import gzip
import hashlib
import http.server
import threading
from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data import builtin
from cnnlab.data.augment import AugmentOptions, augment
from cnnlab.data.idx import parse_idx, read_idx, write_idx
from cnnlab.data.preprocess import Preprocessing
from cnnlab.data.sources import DataOptions, load_source
from cnnlab.data.split import prepare_splits
from cnnlab.errors import ConfigError, DataError
from conftest import bars, write_folder

# ------------------------------------------------------------------ IDX and built-in sets


def make_idx_set(folder, n_train=40, n_test=20, compress=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ext = ".gz" if compress else ""
    parts = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
             "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
             "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
             "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10}
    for name, arr in parts.items():
        write_idx(folder / (name + ext), arr)
    return parts


def test_idx_round_trip_raw_and_gzip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a.idx", "a.idx.gz"):
        write_idx(tmp_path / name, arr)
        assert np.array_equal(read_idx(tmp_path / name), arr)


@pytest.mark.parametrize("data,needle", [
    (b"\x01\x00\x08\x01", "bad magic"),
    (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x05abc", "needs 5"),
])
def test_corrupt_idx_bytes(data, needle):
    with pytest.raises(DataError, match=needle):
        parse_idx(data, "x")


def test_corrupt_gzip_idx_names_the_file(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(b"\x1f\x8b" + b"garbage")
    with pytest.raises(DataError) as e:
        read_idx(p)
    assert str(p) in e.value.line() and "fetch it again" in e.value.line()


def test_lookup_order_data_dir_then_cache_then_system(tmp_path, monkeypatch):
    system = tmp_path / "system"
    make_idx_set(system / "fashion-mnist", n_train=30)
    monkeypatch.setenv("CNNLAB_SYSTEM_DATA", str(system))
    ds = load_source("fashion-mnist")
    assert len(ds["train"]) == 30 and ds.info["folder"].startswith(str(system))
    cache = builtin.cache_dir() / "fashion-mnist"
    make_idx_set(cache, n_train=20, compress=False)  # raw files work too
    assert len(load_source("fashion-mnist")["train"]) == 20
    mine = tmp_path / "mine"
    make_idx_set(mine / "fashion-mnist", n_train=10)
    assert len(load_source("fashion-mnist", DataOptions(data_dir=str(mine)))["train"]) == 10
    monkeypatch.setenv("CNNLAB_DATA", str(mine))
    assert len(load_source("fashion-mnist")["train"]) == 10


def test_korean_class_names(tmp_path, monkeypatch):
    make_idx_set(tmp_path / "fashion-mnist")
    ds = load_source("fashion-mnist", DataOptions(data_dir=str(tmp_path), labels="ko"))
    assert ds.class_names[0] == "티셔츠" and ds.class_names[9] == "앵클 부츠"
    assert load_source("fashion-mnist", DataOptions(data_dir=str(tmp_path))).class_names[9] == "Ankle boot"


def test_offline_and_nothing_found_says_where_and_how():
    with pytest.raises(DataError) as e:
        load_source("fashion-mnist")
    msg = e.value.line()
    assert "looked in" in msg and "cache" in msg and "apt-get install dataset-fashion-mnist" in msg
    assert "cnnlab download fashion-mnist" in msg


class _Server:
    """A static file server on 127.0.0.1 for download tests."""

    def __init__(self, root):
        handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
        handler.log_message = lambda *a, **k: None
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    root = tmp_path / "mirror"
    make_idx_set(root)
    files = {}
    for part, (fname, _) in builtin.IDX_SETS["mnist"].files.items():
        files[part] = (fname, hashlib.md5((root / fname).read_bytes()).hexdigest())
    monkeypatch.setitem(builtin.IDX_SETS, "mnist",
                        builtin.IdxSet("mnist", files, ("http://127.0.0.1:9/unreachable/",),
                                       builtin.IDX_SETS["mnist"].class_names, None, "test"))
    server = _Server(root)
    monkeypatch.setenv("CNNLAB_MIRROR", server.url)
    monkeypatch.setenv("CNNLAB_OFFLINE", "0")
    yield root
    server.close()


def test_download_from_local_mirror_with_checksums(mirror):
    ds = load_source("mnist", DataOptions(quiet=True))
    assert len(ds["train"]) == 40 and len(ds["test"]) == 20
    cached = builtin.cache_dir() / "mnist"
    assert sorted(p.name for p in cached.iterdir()) == sorted(f for f, _ in builtin.IDX_SETS["mnist"].files.values())


def test_download_with_bad_checksum_writes_nothing(mirror):
    (mirror / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"tampered"))
    with pytest.raises(DataError, match="has md5 .* but .* was published"):
        load_source("mnist", DataOptions(quiet=True))
    cached = builtin.cache_dir() / "mnist"
    assert not (cached / "train-images-idx3-ubyte.gz").exists()
    assert not any(p.name.endswith(".tmp") for p in cached.iterdir()) if cached.exists() else True


def test_digits_builtin():
    ds = load_source("digits")
    assert ds["train"].x.shape == (1797, 8, 8, 1) and ds["train"].x.dtype == np.uint8
    assert ds["train"].x.max() == 255


# ------------------------------------------------------------------ users' own images


def test_folder_with_split_level_and_resizing(tmp_path):
    x, y = bars(6)
    names = ["a", "b", "c"]
    write_folder(tmp_path / "d" / "train", x, y, names)
    write_folder(tmp_path / "d" / "test", x[:6], y[:6], names, fmt="jpg")
    (tmp_path / "d" / "train" / "a" / "notes.txt").write_text("not an image")
    ds = load_source("folder:" + str(tmp_path / "d"), DataOptions(image_size=(16, 20), color_mode="rgb"))
    assert ds.class_names == names
    assert ds["train"].x.shape == (18, 16, 20, 3) and ds["test"].x.shape == (6, 16, 20, 3)
    assert ds["train"].ids[0].startswith("train/a/")


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        load_source(f"folder:{tmp_path / 'empty'}")
    x, y = bars(3, classes=1)
    write_folder(tmp_path / "one", x, y, ["cats"])
    with pytest.raises(DataError, match="only one class \\('cats'\\)"):
        load_source(f"folder:{tmp_path / 'one'}")
    x, y = bars(3, classes=2)
    write_folder(tmp_path / "bad", x, y, ["a", "b"])
    (tmp_path / "bad" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError) as e:
        load_source(f"folder:{tmp_path / 'bad'}")
    assert "broken.png" in e.value.line() and "remove or replace" in e.value.line()


def test_csv_with_ids_and_pattern(csv_dataset):
    with pytest.raises(DataError, match="image-pattern"):
        load_source(f"csv:{csv_dataset}")
    ds = load_source(f"csv:{csv_dataset}", DataOptions(image_pattern="images/train/{}.png"))
    assert ds.class_names == ["0", "1", "2"] and ds["train"].x.shape == (60, 12, 12, 1)
    img = np.asarray(Image.open(csv_dataset.parent / "images" / "train" / "5.png"))
    assert np.array_equal(ds["train"].x[5, ..., 0], img)


def test_csv_errors(csv_dataset):
    with pytest.raises(DataError, match="no label column 'label'.*--label-column"):
        load_source(f"csv:{csv_dataset}", DataOptions(label_column="label", image_pattern="images/train/{}.png"))
    (csv_dataset.parent / "images" / "train" / "7.png").unlink()
    with pytest.raises(DataError, match="1 of 60 images .* missing, first .*7.png"):
        load_source(f"csv:{csv_dataset}", DataOptions(image_pattern="images/train/{}.png"))


def test_csv_with_class_name_labels_and_paths(tmp_path):
    x, y = bars(4, classes=2)
    lines = ["file,label"]
    for i, (img, lab) in enumerate(zip(x, y)):
        Image.fromarray(img[..., 0]).save(tmp_path / f"p{i}.png")
        lines.append(f"p{i}.png,{'cat' if lab else 'dog'}")
    (tmp_path / "t.csv").write_text("\n".join(lines))
    ds = load_source(str(tmp_path / "t.csv"))
    assert ds.class_names == ["cat", "dog"] and set(ds["train"].y) == {0, 1}


def test_npz_and_label_range(tmp_path):
    x, y = bars(5)
    np.savez(tmp_path / "ok.npz", x_train=x[..., 0].astype(np.float32) / 255, y_train=y)
    ds = load_source(f"npz:{tmp_path / 'ok.npz'}")
    assert ds["train"].x.dtype == np.uint8 and ds["train"].x.shape == (15, 12, 12, 1)
    assert abs(int(ds["train"].x.max()) - int(x.max())) <= 1
    names = tmp_path / "names.txt"
    names.write_text("a\nb\n")
    with pytest.raises(DataError, match="label 2 is outside the class range 0..1"):
        load_source(f"npz:{tmp_path / 'ok.npz'}", DataOptions(class_names=str(names)))
    np.savez(tmp_path / "neg.npz", x_train=x, y_train=y - 1)
    with pytest.raises(DataError, match="label -1 is outside"):
        load_source(f"npz:{tmp_path / 'neg.npz'}")


def test_unknown_source():
    with pytest.raises(DataError, match="unknown data source 'fashion'"):
        load_source("fashion")


# ------------------------------------------------------------------ split, scaling, augmentation


def test_stratified_split_is_seeded_and_keeps_proportions(npz_path):
    ds = load_source(f"npz:{npz_path}")
    a = prepare_splits(ds, 0.2, 0.2, seed=42)
    b = prepare_splits(load_source(f"npz:{npz_path}"), 0.2, 0.2, seed=42)
    assert np.array_equal(a["validation"].x, b["validation"].x)
    assert np.bincount(a["validation"].y).tolist() == [6, 6, 6]
    assert len(a["train"]) == 72 and len(a["test"]) == 30  # the npz's own test set is kept
    c = prepare_splits(load_source(f"npz:{npz_path}"), 0.2, 0.2, seed=7)
    assert not np.array_equal(a["validation"].x, c["validation"].x)


@pytest.mark.parametrize("mode", ["minmax", "minmax-per-channel", "standard", "standard-per-channel", "255"])
def test_scaling_fitted_on_train_only(mode):
    rng = np.random.default_rng(0)
    train = rng.integers(20, 200, (50, 6, 6, 3), dtype=np.uint8)
    prep = Preprocessing.fit(mode, train)
    z = prep.apply_numpy(train)
    if mode.startswith("minmax"):
        axes = (0, 1, 2) if mode.endswith("channel") else None
        assert np.allclose(z.min(axis=axes), 0) and np.allclose(z.max(axis=axes), 1)
    elif mode.startswith("standard"):
        axes = (0, 1, 2) if mode.endswith("channel") else None
        assert np.allclose(z.mean(axis=axes), 0, atol=1e-4) and np.allclose(z.std(axis=axes), 1, atol=1e-4)
    assert Preprocessing.from_dict(prep.to_dict()) == prep


def test_unknown_scale():
    with pytest.raises(ConfigError, match="unknown scale"):
        Preprocessing.fit("zscore", np.zeros((1, 2, 2, 1), np.uint8))


def _batch():
    x = torch.zeros(4, 1, 8, 8)
    x[:, :, 2, 1:5] = 255.0  # a short horizontal line at row 2
    return x


def test_augmentation_identity_and_flips():
    g = torch.Generator().manual_seed(0)
    x = _batch()
    assert torch.equal(augment(x, AugmentOptions(), g), x)
    out = augment(x, AugmentOptions(horizontal_flip=True, vertical_flip=True), torch.Generator().manual_seed(1))
    for img in out:
        candidates = [x[0], x[0].flip(2), x[0].flip(1), x[0].flip(1).flip(2)]
        assert any(torch.equal(img, c) for c in candidates)


def test_affine_shift_moves_content_and_fill_modes():
    x = _batch()
    o = AugmentOptions(width_shift_range=2.0, fill_mode="constant")
    out = augment(x, o, torch.Generator().manual_seed(3))
    assert out.shape == x.shape
    assert out.sum() <= x.sum() + 1e-3  # content moves, nothing is invented with constant fill
    for mode in ("nearest", "reflect", "wrap"):
        o = AugmentOptions(rotation_range=30, zoom_range=0.2, shear_range=10, fill_mode=mode)
        out = augment(x, o, torch.Generator().manual_seed(3))
        assert out.shape == x.shape and torch.isfinite(out).all() and out.min() >= -1e-3
    wrapped = augment(x, AugmentOptions(width_shift_range=4.0, fill_mode="wrap"), torch.Generator().manual_seed(5))
    assert torch.allclose(wrapped.sum((1, 2, 3)), x.sum((1, 2, 3)), rtol=1e-3)  # wrap keeps every pixel


def test_random_crop_and_erasing():
    x = torch.arange(64.0).view(1, 1, 8, 8).repeat(16, 1, 1, 1)
    out = augment(x, AugmentOptions(random_crop=2), torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert (out != x).any(dim=(1, 2, 3)).sum() > 0
    centre = out[:, 0, 2:6, 2:6]  # interior values come from the image, shifted by <= 2
    assert ((centre >= 0) & (centre < 64)).all()
    erased = augment(x + 1, AugmentOptions(random_erasing=1.0), torch.Generator().manual_seed(0))
    assert ((erased == 0).flatten(1).sum(1) > 0).all()


def test_augment_options_validation():
    with pytest.raises(ConfigError, match="fill_mode"):
        AugmentOptions(fill_mode="mirror").validate()
    with pytest.raises(ConfigError, match="zoom"):
        AugmentOptions(zoom_range=1.5).validate()
