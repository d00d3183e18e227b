"""Built-in datasets: Fashion-MNIST and MNIST (IDX files) and scikit-learn's digits.

Look-up order for the IDX sets: ``--data-dir`` / ``$CNNLAB_DATA`` -> the user cache directory
-> ``/usr/share/datasets/<name>`` (Debian's dataset packages) -> Keras' own cache
(``~/.keras/datasets/``, or ``$KERAS_HOME/datasets``: the IDX files of
``keras.datasets.fashion_mnist`` and MNIST's ``mnist.npz``) -> download from the official
mirrors, checked against the published MD5 sums and written atomically into the cache.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, MissingDataError
from .dataset import Dataset, Split, check_labels
from .idx import read_idx
from .registry import SourceKind, register_source

FASHION_EN = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
              "Sneaker", "Bag", "Ankle boot"]
FASHION_KO = ["티셔츠", "바지", "스웨터", "드레스", "코트", "샌달", "셔츠", "스니커즈", "가방",
              "앵클 부츠"]
DIGIT_NAMES = [str(i) for i in range(10)]

PARTS = ("train_images", "train_labels", "test_images", "test_labels")


@dataclass(frozen=True)
class IdxSet:
    name: str
    files: dict  # part -> (file name, md5 of the .gz file the mirrors serve)
    mirrors: tuple
    class_names: dict  # language -> names
    apt_package: str | None
    title: str


IDX_SETS = {
    "fashion-mnist": IdxSet(
        "fashion-mnist",
        {"train_images": ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
         "train_labels": ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
         "test_images": ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
         "test_labels": ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310")},
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
         "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"),
        {"en": FASHION_EN, "ko": FASHION_KO},
        "dataset-fashion-mnist",
        "Zalando Fashion-MNIST: 60,000 + 10,000 grayscale 28x28 clothing images, 10 classes"),
    "mnist": IdxSet(
        "mnist",
        {"train_images": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
         "train_labels": ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
         "test_images": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
         "test_labels": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c")},
        ("https://ossci-datasets.s3.amazonaws.com/mnist/",
         "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        {"en": DIGIT_NAMES, "ko": DIGIT_NAMES},
        None,
        "MNIST handwritten digits: 60,000 + 10,000 grayscale 28x28 images, 10 classes"),
}



def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cnnlab"


def system_dir() -> Path:
    return Path(os.environ.get("CNNLAB_SYSTEM_DATA", "/usr/share/datasets"))


def keras_datasets_dir() -> Path:
    """Where ``keras.datasets.*.load_data()`` keeps its downloads."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "datasets"


# keras.datasets.mnist.load_data() keeps MNIST as one .npz (x_train, y_train, x_test, y_test); its sha256
# as Keras publishes it
KERAS_NPZ = {"mnist": ("mnist.npz", "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1")}


def keras_npz(name: str) -> Path | None:
    entry = KERAS_NPZ.get(name)
    if entry is None:
        return None
    p = keras_datasets_dir() / entry[0]
    return p if p.is_file() else None


def _find_file(folder: Path, gz_name: str) -> Path | None:
    for candidate in (folder / gz_name, folder / gz_name[:-3]):
        if candidate.is_file():
            return candidate
    return None


def candidate_dirs(name: str, data_dir: str | None) -> list[Path]:
    dirs = []
    user = data_dir or os.environ.get("CNNLAB_DATA")
    if user:
        dirs += [Path(user) / name, Path(user)]
    dirs += [cache_dir() / name, system_dir() / name, keras_datasets_dir() / name]
    return dirs


def locate(name: str, data_dir: str | None = None) -> dict[str, Path] | None:
    """Paths of the four IDX files in the first folder that has them all, else None."""
    spec = IDX_SETS[name]
    for folder in candidate_dirs(name, data_dir):
        found = {p: _find_file(folder, spec.files[p][0]) for p in PARTS}
        if all(found.values()):
            return found  # type: ignore[return-value]
    return None


def partial_folders(name: str, data_dir: str | None) -> str:
    """'; <folder> has 3 of the 4 files (missing X)' for folders holding only some files."""
    spec = IDX_SETS[name]
    notes = []
    for folder in candidate_dirs(name, data_dir):
        missing = [spec.files[p][0] for p in PARTS if _find_file(folder, spec.files[p][0]) is None]
        if 0 < len(missing) < len(PARTS):
            notes.append(f"{folder} has {len(PARTS) - len(missing)} of the {len(PARTS)} files "
                         f"(missing {', '.join(missing)})")
    return "".join("; " + n for n in notes)


def mirrors(name: str) -> list[str]:
    extra = os.environ.get("CNNLAB_MIRROR")
    urls = [u.strip() for u in extra.split(",") if u.strip()] if extra else []
    return urls + list(IDX_SETS[name].mirrors)


def download(name: str, dest: Path | None = None, timeout: float = 30.0,
             quiet: bool = False) -> Path:
    """Download the four IDX files into ``dest`` (the cache by default), checking MD5 sums, from
    the first mirror that has each (``$CNNLAB_MIRROR`` first).

    Each file is verified before it is renamed into place (cnnlab.fetch: a progress bar, resumed
    when cut short), so a failed or corrupt download leaves nothing behind.
    """
    from ..fetch import Digest, FetchError, fetch

    spec = IDX_SETS[name]
    dest = dest or cache_dir() / name
    errors = []
    for part in PARTS:
        fname, md5 = spec.files[part]
        if (dest / fname).is_file():
            continue
        for base in mirrors(name):
            url = base.rstrip("/") + "/" + fname
            if not url.startswith(("http://", "https://")):
                errors.append(f"{url}: not an http(s) URL")
                continue
            try:
                fetch(url, dest / fname, Digest("md5", md5), what=f"{name} {fname}", timeout=timeout, quiet=quiet)
            except FetchError as e:
                errors.append(e.what)
                continue
            break
        else:
            raise DataError(f"could not download {name} file {fname}", "; ".join(errors[-3:]),
                            how_to_get(name))
    return dest


def how_to_get(name: str) -> str:
    spec = IDX_SETS[name]
    ways = []
    if spec.apt_package:
        ways.append(f"sudo apt-get install {spec.apt_package}")
    ways.append(f"cnnlab download {name} (needs internet)")
    ways.append(f"keras.datasets.{name.replace('-', '_')}.load_data() once (cnnlab reads Keras' cache)")
    files = ", ".join(spec.files[p][0] for p in PARTS)
    ways.append(f"or copy {files} into {cache_dir() / name} or a folder given by --data-dir")
    return "; ".join(ways)


def load_idx_set(name: str, data_dir: str | None = None, allow_download: bool = True,
                 labels: str = "en", quiet: bool = False) -> Dataset:
    paths = locate(name, data_dir)
    npz = keras_npz(name)
    if paths is None and npz is not None:
        return load_keras_npz(name, npz, labels)
    if paths is None:
        places = [str(d) for d in candidate_dirs(name, data_dir)]
        if name in KERAS_NPZ:
            places.append(str(keras_datasets_dir() / KERAS_NPZ[name][0]))
        looked = ", ".join(places) + partial_folders(name, data_dir)
        offline = allow_download and os.environ.get("CNNLAB_OFFLINE", "") in ("", "0")
        if not offline:
            raise MissingDataError(f"{name} not found", f"looked in {looked}; downloads are off",
                            how_to_get(name))
        try:
            download(name, quiet=quiet)
        except DataError as e:
            raise MissingDataError(f"{name} not found and download failed", f"looked in {looked}; {e.where}",
                            how_to_get(name)) from None
        paths = locate(name, data_dir)
        assert paths is not None
    arrays = {p: read_idx(paths[p]) for p in PARTS}
    splits = {}
    for split, prefix in (("train", "train"), ("test", "test")):
        x, y = arrays[f"{prefix}_images"], arrays[f"{prefix}_labels"]
        where = str(paths[f"{prefix}_images"])
        if x.ndim != 3 or y.ndim != 1:
            raise DataError(f"unexpected IDX shapes {x.shape} and {y.shape}", where,
                            "delete the files and fetch them again")
        if len(x) != len(y):
            raise DataError(f"{len(x)} images but {len(y)} labels",
                            f"{where} and {paths[f'{prefix}_labels']}",
                            "delete the files and fetch them again")
        y = check_labels(y, 10, str(paths[f"{prefix}_labels"]))
        splits[split] = Split(np.ascontiguousarray(x[..., None]), y)
    return Dataset(name, list(IDX_SETS[name].class_names[labels]), splits,
                   {"folder": str(paths["train_images"].parent)})


def load_keras_npz(name: str, path: Path, labels: str = "en") -> Dataset:
    """MNIST from the .npz file keras.datasets.mnist.load_data() downloaded, checked against Keras'
    published sha256 (a changed or partial file is named, never used)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != KERAS_NPZ[name][1]:
        raise DataError(f"Keras' {path.name} does not have the published checksum (a partial or changed download)",
                        str(path), f"delete it and run keras.datasets.{name}.load_data() again, or cnnlab download "
                        f"{name}")
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    splits = {split: Split(np.ascontiguousarray(arrays[f"x_{split}"][..., None]),
                           check_labels(arrays[f"y_{split}"], 10, str(path))) for split in ("train", "test")}
    return Dataset(name, list(IDX_SETS[name].class_names[labels]), splits, {"folder": str(path)})


def load_digits_set() -> Dataset:
    """scikit-learn's embedded 8x8 digits (1,797 images), scaled from 0..16 to 0..255."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return Dataset("digits", list(DIGIT_NAMES), {"train": Split(x, d.target.astype(np.int64))},
                   {"folder": "scikit-learn (embedded)"})


def _found(name: str) -> tuple[bool, str]:
    """Whether the IDX set is here now, and where (or how to get it)."""
    found = locate(name)
    if found is None and keras_npz(name) is not None:
        return True, str(keras_npz(name))
    return (True, str(found["train_images"].parent)) if found else (False, "not found; " + how_to_get(name))


def _idx_loader(n: str):
    def load(path, opts, names, require_labels, on_missing) -> Dataset:
        return load_idx_set(n, opts.data_dir, opts.download, opts.labels, opts.quiet)

    return load


for _name, _set in IDX_SETS.items():
    register_source(SourceKind(_name, _idx_loader(_name), _set.title, in_memory=True, translates=True,
                               available=functools.partial(_found, _name)))
register_source(SourceKind("digits", lambda *_: load_digits_set(),
                           "scikit-learn digits: 1,797 grayscale 8x8 images, 10 classes", in_memory=True,
                           available=lambda: (True, "scikit-learn (embedded)")))
