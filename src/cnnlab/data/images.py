"""Reading image files with Pillow into uint8 arrays, many at a time."""

from __future__ import annotations

import os
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

COLOR_MODES = ("auto", "grayscale", "rgb")
ON_BAD_IMAGE = ("error", "skip")
# Pillow warns above MAX_IMAGE_PIXELS (about 89 million) and refuses above twice that; cnnlab
# refuses above it, from the header, before a single pixel is decoded (a decompression bomb).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
MAX_PIXELS: int = Image.MAX_IMAGE_PIXELS or 89_478_485  # the most pixels an image may have (about 89 million)
BAD_IMAGE_FIX = "remove or replace the file, or pass --on-bad-image skip to leave it out"


def available_memory() -> int | None:
    """Bytes of memory the system can still give (MemAvailable), or None where it cannot tell."""
    try:
        for line in open("/proc/meminfo", encoding="ascii"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def check_fits_in_memory(n: int, size: tuple[int, int], channels: int, where: str) -> None:
    """n uint8 images of ``size`` must fit in the memory that is free, with room to spare: an
    --image-size far too large is an error before the allocation, not a crash."""
    need = int(n) * int(size[0]) * int(size[1]) * int(channels)
    free = available_memory()
    if free is not None and need > 0.8 * free:
        raise DataError(f"{n:,} images of {size[0]}x{size[1]}x{channels} need {need / 2**30:,.1f} GiB, more than "
                        f"the {free / 2**30:,.1f} GiB of memory that is free", where,
                        "use a smaller --image-size (e.g. 224 224), or fewer images")


def image_extensions() -> set[str]:
    return {ext.lower() for ext in Image.registered_extensions()}


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in image_extensions() and not path.name.startswith(".")


def printable(name: object) -> str:
    """A file or folder name as text that can be printed and written as UTF-8: bytes that are
    not UTF-8 (kept by Python as surrogates) become ``\\xNN`` escapes."""
    return str(name).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class BadImage(Exception):
    """A file that cannot be used as an image: unreadable, truncated, not an image or too large."""

    def __init__(self, path: Path, reason: str):
        super().__init__(reason)
        self.path, self.reason = path, reason

    def error(self, fix: str = BAD_IMAGE_FIX) -> DataError:
        if self.reason == "image file not found":
            fix = "check the path"
        return DataError(self.reason, printable(self.path), fix)


def _header(path: Path) -> Image.Image:
    """Open (header only) and check the pixel count; BadImage for anything unusable."""
    try:
        img = Image.open(path)
    except FileNotFoundError:
        raise BadImage(path, "image file not found") from None
    except Image.DecompressionBombError:
        raise BadImage(path, f"image has more than twice the limit of {Image.MAX_IMAGE_PIXELS:,} pixels "
                       "(a decompression bomb, or far larger than needed)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise BadImage(path, f"cannot read image: {printable(e)}") from None
    pixels = img.width * img.height
    if pixels > MAX_PIXELS:
        img.close()
        raise BadImage(path, f"image has {pixels:,} pixels ({img.width}x{img.height}), more than the "
                       f"limit of {MAX_PIXELS:,} (a decompression bomb, or far larger than needed)")
    return img


def _open(path: Path) -> Image.Image:
    img = _header(path)
    try:
        img.load()
        return img
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadImage(path, f"cannot decode image (truncated or corrupt): {printable(e)}") from None


def _is_gray(img: Image.Image) -> bool:
    return img.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F") or (
        img.mode == "P" and img.palette is not None and img.palette.mode == "L")


def _eight_bit(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit grayscale images scaled to 0..255 (Pillow's convert('L') clips them:
    a 16-bit 4369 would become 255, not 17). Float images in [0, 1] are scaled by 255."""
    if img.mode.startswith("I;16") or img.mode == "I":
        a = np.asarray(img).astype(np.float64)
        return Image.fromarray(np.rint(np.clip(a, 0, 65535) / 257.0).astype(np.uint8), "L")
    if img.mode == "F":
        a = np.nan_to_num(np.asarray(img, dtype=np.float64))
        if a.size and a.min() >= 0 and a.max() <= 1:
            a = a * 255.0
        return Image.fromarray(np.rint(np.clip(a, 0, 255)).astype(np.uint8), "L")
    return img


def to_array(img: Image.Image, size: tuple[int, int] | None, color_mode: str) -> np.ndarray:
    """An (H, W, C) uint8 array in the requested colour mode and size (bilinear resize)."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    img = _eight_bit(img)
    img = img.convert("L" if color_mode == "grayscale" else "RGB")
    if size is not None and (img.height, img.width) != tuple(size):
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def load_image(path: str | Path, size: tuple[int, int] | None, color_mode: str) -> np.ndarray:
    """One image file as uint8 (H, W, C); a DataError says what is wrong with a bad file."""
    try:
        return to_array(_open(Path(path)), size, color_mode)
    except BadImage as e:
        raise e.error("give an image file Pillow can read (PNG, JPEG, BMP, GIF, TIFF, WebP, ...)") from None


@dataclass
class ImageHeaders:
    """What the files' headers say, without decoding pixels."""

    sizes: Counter = field(default_factory=Counter)  # (H, W) -> count
    modes: Counter = field(default_factory=Counter)  # Pillow mode -> count
    gray: int = 0
    bad: dict = field(default_factory=dict)  # index -> reason

    @property
    def common_size(self) -> tuple[int, int] | None:
        return self.sizes.most_common(1)[0][0] if self.sizes else None

    @property
    def color_mode(self) -> str:
        return "grayscale" if self.gray == sum(self.sizes.values()) else "rgb"


def read_headers(paths: list[Path]) -> ImageHeaders:
    h = ImageHeaders()
    for i, p in enumerate(paths):
        try:
            with _header(p) as img:
                h.sizes[(img.height, img.width)] += 1
                h.modes[img.mode] += 1
                h.gray += _is_gray(img)
        except BadImage as e:
            h.bad[i] = e.reason
    return h


def probe(paths: list[Path]) -> tuple[tuple[int, int], str]:
    """(most common (H, W), 'grayscale' or 'rgb') over the files' headers."""
    h = read_headers(paths)
    if h.bad:
        i = min(h.bad)
        raise BadImage(paths[i], h.bad[i]).error()
    return h.common_size, h.color_mode  # type: ignore[return-value]


@dataclass
class ReadResult:
    x: Any  # uint8 (N_good, H, W, C): an array, or images on disk (diskcache.DiskImages)
    size: tuple[int, ...]
    color_mode: str
    kept: np.ndarray  # indices into the paths that were read
    bad: list[tuple[str, str]]  # (printable path, reason) of the files left out


def resolve_size_and_mode(paths: list[Path], size: tuple[int, int] | None, color_mode: str,
                          on_bad: str) -> tuple[tuple[int, int], str, dict[int, str]]:
    """The size (the most common one when None) and colour mode (grayscale when every file is,
    for 'auto') the files are read at, from their headers; and the files whose header is bad."""
    if on_bad not in ON_BAD_IMAGE:
        raise DataError(f"unknown on_bad_image '{on_bad}'", "--on-bad-image", "use error or skip")
    if not paths:
        raise DataError("no image files", "input", "give at least one image")
    bad: dict[int, str] = {}
    if size is None or color_mode == "auto":
        h = read_headers(paths)
        if h.bad and on_bad == "error":
            i = min(h.bad)
            raise BadImage(paths[i], h.bad[i]).error()
        bad.update(h.bad)
        if h.common_size is None:
            raise DataError(f"none of the {len(paths)} image files can be read", printable(paths[0].parent),
                            "check the files (cnnlab check SOURCE lists them)")
        size = size or h.common_size
        color_mode = h.color_mode if color_mode == "auto" else color_mode
    return tuple(size), color_mode, bad  # type: ignore[return-value]


def read_images(paths: list[Path], size: tuple[int, int] | None = None, color_mode: str = "auto",
                on_bad: str = "error") -> ReadResult:
    """Read files into uint8 (N, H, W, C); decoding runs in threads (Pillow frees the GIL).

    ``size`` None uses the most common size among the files; ``color_mode`` 'auto' is grayscale
    when every file is grayscale. A file that cannot be used (unreadable, truncated, not an image,
    over Pillow's pixel limit) is an error, or with ``on_bad='skip'`` is left out and listed.
    """
    size, color_mode, bad = resolve_size_and_mode(paths, size, color_mode, on_bad)
    channels = 1 if color_mode == "grayscale" else 3
    check_fits_in_memory(len(paths), size, channels, printable(paths[0].parent))
    out = np.empty((len(paths), size[0], size[1], channels), np.uint8)

    def work(i: int) -> None:
        if i in bad:
            return
        try:
            out[i] = to_array(_open(paths[i]), size, color_mode)
        except BadImage as e:
            if on_bad == "error":
                raise
            bad[i] = e.reason

    workers = min(8, (os.cpu_count() or 2) * 2)
    try:
        with ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(work, range(len(paths))):
                pass
    except BadImage as e:
        raise e.error() from None
    kept = np.asarray([i for i in range(len(paths)) if i not in bad], np.int64)
    if not len(kept):
        raise DataError(f"none of the {len(paths)} image files can be read", printable(paths[0].parent),
                        "check the files (cnnlab check SOURCE lists them)")
    x = out if len(kept) == len(paths) else out[kept]
    return ReadResult(x, tuple(size), color_mode, kept,  # type: ignore[arg-type]
                      [(printable(paths[i]), bad[i]) for i in sorted(bad)])


def load_images(paths: list[Path], size: tuple[int, int] | None = None,
                color_mode: str = "auto") -> tuple[np.ndarray, tuple[int, ...], str]:
    """Read files into uint8 (N, H, W, C); any unusable file is a DataError."""
    r = read_images(paths, size, color_mode, "error")
    return r.x, r.size, r.color_mode
