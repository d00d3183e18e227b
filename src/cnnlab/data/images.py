"""Reading image files with Pillow into uint8 arrays, many at a time."""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

COLOR_MODES = ("auto", "grayscale", "rgb")


def image_extensions() -> set[str]:
    return {ext.lower() for ext in Image.registered_extensions()}


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in image_extensions() and not path.name.startswith(".")


def _open(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
        return img
    except FileNotFoundError:
        raise DataError("image file not found", str(path), "check the path") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read image: {e}", str(path),
                        "remove or replace the file (it is corrupt or not an image)") from None
    except Image.DecompressionBombError:
        raise DataError("image has too many pixels", str(path), "resize it first") from None


def _is_gray(img: Image.Image) -> bool:
    return img.mode in ("1", "L", "LA", "I", "I;16", "F") or (
        img.mode == "P" and img.palette is not None and img.palette.mode == "L")


def probe(paths: list[Path]) -> tuple[tuple[int, int], str]:
    """(most common (H, W), 'grayscale' or 'rgb') over the files' headers."""
    sizes, gray = Counter(), 0
    for p in paths:
        try:
            with Image.open(p) as img:
                sizes[(img.height, img.width)] += 1
                gray += _is_gray(img)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise DataError(f"cannot read image: {e}", str(p),
                            "remove or replace the file (it is corrupt or not an image)") from None
    return sizes.most_common(1)[0][0], "grayscale" if gray == len(paths) else "rgb"


def to_array(img: Image.Image, size: tuple[int, int] | None, color_mode: str) -> np.ndarray:
    """An (H, W, C) uint8 array in the requested colour mode and size (bilinear resize)."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    img = img.convert("L" if color_mode == "grayscale" else "RGB")
    if size is not None and (img.height, img.width) != tuple(size):
        img = img.resize((size[1], size[0]), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def load_image(path: str | Path, size: tuple[int, int] | None, color_mode: str) -> np.ndarray:
    return to_array(_open(Path(path)), size, color_mode)


def load_images(paths: list[Path], size: tuple[int, int] | None = None,
                color_mode: str = "auto") -> tuple[np.ndarray, tuple[int, int], str]:
    """Read files into uint8 (N, H, W, C); decoding runs in threads (Pillow frees the GIL).

    ``size`` None uses the most common size among the files; ``color_mode`` 'auto' is
    grayscale when every file is grayscale.
    """
    if not paths:
        raise DataError("no image files", "input", "give at least one image")
    if size is None or color_mode == "auto":
        common, mode = probe(paths)
        size = size or common
        color_mode = mode if color_mode == "auto" else color_mode
    channels = 1 if color_mode == "grayscale" else 3
    out = np.empty((len(paths), size[0], size[1], channels), np.uint8)

    def work(i: int) -> None:
        out[i] = load_image(paths[i], size, color_mode)

    workers = min(8, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(work, range(len(paths))):
            pass
    return out, tuple(size), color_mode  # type: ignore[return-value]
