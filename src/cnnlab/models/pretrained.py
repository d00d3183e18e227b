"""ImageNet weights as Keras Applications downloads them: the same file names, URLs and published
hashes (read from keras/src/applications/*.py, Keras 3.15), cached in ``$CNNLAB_HOME/weights``
(else ``~/.cache/cnnlab/weights``). A file Keras itself cached (``~/.keras/models``) is used where
it is. ``$CNNLAB_WEIGHTS_MIRROR`` replaces Keras' base URLs with a mirror that holds the same file
names; the published hash is still checked.

    resolve_weights("imagenet", "mobilenet_v2", 0.5, 160)   # -> a checked local .h5 file
    resolve_weights("https://host/w.h5#sha256=...", ...)    # any file, checked when a hash is given
"""

from __future__ import annotations

import os
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ..fetch import Digest, fetch, file_lock, split_url

GOOGLE = "https://storage.googleapis.com/"
APPS = GOOGLE + "tensorflow/keras-applications/"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
MOBILENET_V2_SIZES = (96, 128, 160, 192, 224)
MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)


@dataclass(frozen=True)
class WeightsFile:
    name: str  # the file name, as Keras caches it
    url: str
    digest: Digest | None  # None where Keras publishes no hash (MobileNetV2)

    def mirrored(self) -> str:
        base = os.environ.get("CNNLAB_WEIGHTS_MIRROR", "").strip()
        return f"{base.rstrip('/')}/{self.name}" if base else self.url


def _md5(hex_: str) -> Digest:
    return Digest("md5", hex_)


def _sha256(hex_: str) -> Digest:
    return Digest("sha256", hex_)


# name -> (include_top file, include_top=False file): keras/src/applications/{vgg16,resnet,efficientnet,convnext}.py
_FIXED = {
    "vgg16": (WeightsFile("vgg16_weights_tf_dim_ordering_tf_kernels.h5",
                          APPS + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels.h5",
                          _md5("64373286793e3c8b2b4e3219cbf3544b")),
              WeightsFile("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                          APPS + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                          _md5("6d6bbae143d832006294945121d1f1fc"))),
    "resnet50": (WeightsFile("resnet50_weights_tf_dim_ordering_tf_kernels.h5",
                             APPS + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels.h5",
                             _md5("2cb95161c43110f7111970584f804107")),
                 WeightsFile("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                             APPS + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                             _md5("4d473c1dd8becc155b73f8504c6f6626"))),
    "efficientnet_b0": (WeightsFile("efficientnetb0.h5", GOOGLE + "keras-applications/efficientnetb0.h5",
                                    _md5("902e53a9f72be733fc0bcb005b3ebbac")),
                        WeightsFile("efficientnetb0_notop.h5", GOOGLE + "keras-applications/efficientnetb0_notop.h5",
                                    _md5("50bc09e76180e00e4465e1a485ddc09d"))),
    "convnext_tiny": (WeightsFile("convnext_tiny.h5", APPS + "convnext/convnext_tiny.h5",
                                  _sha256("8ae6e78ce2933352b1ef4008e6dd2f17bc40771563877d156bc6426c7cf503ff")),
                      WeightsFile("convnext_tiny_notop.h5", APPS + "convnext/convnext_tiny_notop.h5",
                                  _sha256("d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1"))),
}
# imagenet_utils.decode_predictions' class names
CLASS_INDEX = WeightsFile("imagenet_class_index.json",
                          GOOGLE + "download.tensorflow.org/data/imagenet_class_index.json",
                          _md5("c2c37ea517e94d9795004a39431a14cb"))
PUBLISHED = ("mobilenet_v2", *_FIXED)


def keras_file(backbone: str, width: float | None = None, size: int | None = None,
               include_top: bool = False) -> WeightsFile:
    """The file Keras Applications loads for ``backbone`` at ``width`` (MobileNetV2's alpha) and
    square image ``size`` (MobileNetV2 has one file per size; others take any size)."""
    if backbone == "mobilenet_v2":
        alpha = 1.0 if width is None else float(width)
        if alpha not in MOBILENET_V2_ALPHAS:
            raise DataError(f"Keras publishes no ImageNet weights for mobilenet_v2 at width {alpha:g}", "--backbone",
                            f"use a width of {', '.join(f'{a:g}' for a in MOBILENET_V2_ALPHAS)}")
        rows = size if size in MOBILENET_V2_SIZES else 224  # Keras' own fallback
        name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{rows}{'' if include_top else '_no_top'}.h5"
        return WeightsFile(name, APPS + "mobilenet_v2/" + name, None)
    if backbone not in _FIXED:
        raise DataError(f"Keras publishes no ImageNet weights for '{backbone}'", "--weights imagenet",
                        f"those with weights: {', '.join(PUBLISHED)}; or give --weights FILE.h5 or a URL")
    if width is not None:
        raise DataError(f"{backbone} has one width", "--backbone", f"write --backbone {backbone}")
    return _FIXED[backbone][0 if include_top else 1]


def weights_home() -> Path:
    home = os.environ.get("CNNLAB_HOME")
    if home:
        return Path(home) / "weights"
    from ..data.builtin import cache_dir

    return cache_dir() / "weights"


def keras_models_dir() -> Path:
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def check_hdf5(path: Path) -> None:
    """Raises DataError unless ``path`` starts with HDF5's signature (or is a .keras zip)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head != HDF5_SIGNATURE and not head.startswith(b"PK\x03\x04"):
        raise DataError(f"the file is not HDF5 (it starts with {head[:8]!r}): not a Keras weights file", str(path),
                        "check the URL: a web page or an error message may have been served in its place")


def by_hand(f: WeightsFile, dest: Path) -> str:
    return (f"on a machine with internet run `cnnlab download weights ...` and copy {dest.parent} here, or download "
            f"{f.url} yourself and put it at {dest}")


def _cached(f: WeightsFile) -> Path | None:
    for place in (weights_home() / f.name, keras_models_dir() / f.name):
        if place.is_file():
            if f.digest is not None and f.digest.of_file(place) != f.digest.hex:
                continue  # a damaged or other file: fetched again (into our cache, never over Keras')
            check_hdf5(place)
            return place
    return None


def get_file(f: WeightsFile, quiet: bool = False) -> Path:
    """The file from the cache, else downloaded (from the mirror when set) and checked."""
    dest = weights_home() / f.name
    with file_lock(dest):
        found = _cached(f)
        if found is not None:
            return found
        check = None if f.name.endswith(".json") else check_hdf5
        return fetch(f.mirrored(), dest, f.digest, what=f"weights {f.name}", by_hand=by_hand(f, dest), quiet=quiet,
                     check=check)


def url_file(text: str, quiet: bool = False) -> Path:
    """``--weights URL[#sha256=HEX]``: cached under the URL's file name (with a short hash of the URL,
    so that two hosts' w.h5 do not meet)."""
    import hashlib

    url, digest = split_url(text, "--weights")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file" and digest is None:
        path = Path(urllib.request.url2pathname(parts.path))
        if not path.is_file():
            raise DataError(f"no file at {url}", "--weights", "give an existing file")
        check_hdf5(path)
        return path
    base = Path(parts.path).name or "weights.h5"
    name = f"{hashlib.sha256(url.encode()).hexdigest()[:8]}-{base}"
    dest = weights_home() / name
    with file_lock(dest):
        if dest.is_file() and (digest is None or digest.of_file(dest) == digest.hex):
            return dest
        return fetch(url, dest, digest, what="--weights", by_hand=f"download {url} yourself and give --weights FILE",
                     quiet=quiet, check=check_hdf5)


def is_remote(text: str) -> bool:
    return text == "imagenet" or urllib.parse.urlsplit(text).scheme in ("http", "https", "file")


def spec_flag(weights: str | None) -> bool | str:
    """What a backbone is built for (backbones.backbone_spec's ``pretrained``): False without
    weights, "imagenet" for Keras' ImageNet file (``imagenet``, or a URL or path ending in one of
    its file names: EfficientNet then rescales as Keras does for weights="imagenet"), else True."""
    if weights is None:
        return False
    if weights == "imagenet":
        return "imagenet"
    base = urllib.parse.urlsplit(str(weights)).path.rsplit("/", 1)[-1]
    known = {f.name for pair in _FIXED.values() for f in pair}
    return "imagenet" if base in known or base.startswith("mobilenet_v2_weights_tf_dim_ordering") else True


def resolve_weights(text: str, backbone: str | None, width: float | None, size: int | None,
                    include_top: bool = False, quiet: bool = False) -> Path:
    """``--weights``: ``imagenet`` (Keras Applications' file for the backbone), a URL, or a file."""
    if text == "imagenet":
        if backbone is None:
            raise DataError("--weights imagenet loads a backbone's weights", "--weights", "give --backbone NAME")
        return get_file(keras_file(backbone, width, size, include_top), quiet)
    if is_remote(text):
        return url_file(text, quiet)
    return Path(text)


def cached_files() -> list[tuple[Path, int]]:
    """What the weights cache holds (finished files only), with sizes in bytes."""
    home = weights_home()
    if not home.is_dir():
        return []
    return sorted((p, p.stat().st_size) for p in home.iterdir()
                  if p.is_file() and not p.name.endswith((".part", ".lock")))
