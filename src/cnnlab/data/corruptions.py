"""Corruptions real photos have, for ``cnnlab evaluate RUN --corruptions``: how a model holds up.

After ImageNet-C (Hendrycks & Dietterich, "Benchmarking neural network robustness to common
corruptions and perturbations", ICLR 2019) and MNIST-C (Mu & Gilmer, "MNIST-C: a robustness
benchmark for computer vision", 2019), written here with NumPy, torch tensor ops and Pillow:
whole batches at once (JPEG alone goes image by image, through Pillow's encoder). Every corruption
takes uint8 images (N, H, W, C), grayscale or RGB, of any size, a severity 1..5 and a seeded
generator, and returns uint8 images of the same shape: the same seed gives the same images.

Sizes (blur radius, shift, occlusion) are fractions of the image side, so a 28x28 digit and a
224x224 photo are corrupted alike; the noise and colour amounts are ImageNet-C's where it has the
corruption (on pixel values scaled to [0, 1]), MNIST-C's otherwise.
"""

from __future__ import annotations

import difflib
import io
import math
from collections.abc import Callable

import numpy as np

from ..errors import ConfigError

SEVERITIES = (1, 2, 3, 4, 5)


def _float(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / 255.0


def _uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def gaussian_noise(x, s, rng):
    c = (0.08, 0.12, 0.18, 0.26, 0.38)[s - 1]
    return _uint8(_float(x) + rng.normal(0.0, c, x.shape).astype(np.float32))


def shot_noise(x, s, rng):
    c = (60, 25, 12, 5, 3)[s - 1]
    return _uint8(rng.poisson(_float(x) * c).astype(np.float32) / c)


def impulse_noise(x, s, rng):
    amount = (0.03, 0.06, 0.09, 0.17, 0.27)[s - 1]
    out = x.copy()
    hit = rng.random(x.shape[:3]) < amount  # salt or pepper on whole pixels (every channel)
    salt = rng.random(x.shape[:3]) < 0.5
    out[hit & salt] = 255
    out[hit & ~salt] = 0
    return out


def _conv(x: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Each image convolved with its own (or one shared) normalised kernel, edges replicated."""
    import torch
    import torch.nn.functional as F

    n, h, w, c = x.shape
    k = torch.from_numpy(kernels.astype(np.float32))
    if k.ndim == 2:
        k = k.expand(n, *k.shape)
    size = k.shape[-1]
    t = torch.from_numpy(x).float().permute(0, 3, 1, 2).reshape(1, n * c, h, w)
    t = F.pad(t, (size // 2,) * 4, mode="replicate")
    weight = k.repeat_interleave(c, 0).unsqueeze(1)  # (n * c, 1, size, size)
    out = F.conv2d(t, weight, groups=n * c).reshape(n, c, h, w).permute(0, 2, 3, 1)
    return np.clip(out.numpy() + 0.5, 0, 255).astype(np.uint8)


def defocus_blur(x, s, rng):
    r = max(0.6, (0.02, 0.035, 0.05, 0.065, 0.08)[s - 1] * min(x.shape[1:3]))
    size = 2 * math.ceil(r) + 1
    ax = np.arange(size) - size // 2
    d = np.sqrt(ax[:, None] ** 2 + ax[None] ** 2)
    disk = np.clip(r + 0.5 - d, 0.0, 1.0)  # an anti-aliased disk
    return _conv(x, disk / disk.sum())


def motion_blur(x, s, rng):
    length = max(2.0, (0.06, 0.1, 0.14, 0.18, 0.22)[s - 1] * min(x.shape[1:3]))
    size = 2 * math.ceil(length / 2) + 1
    angles = rng.uniform(0, np.pi, len(x))
    ax = np.arange(size) - size // 2
    yy, xx = np.meshgrid(ax, ax, indexing="ij")
    # distance of each kernel cell to the line through the centre at each image's angle
    dist = np.abs(np.sin(angles)[:, None, None] * xx - np.cos(angles)[:, None, None] * yy)
    along = np.abs(np.cos(angles)[:, None, None] * xx + np.sin(angles)[:, None, None] * yy)
    k = np.clip(1.0 - dist, 0.0, 1.0) * (along <= length / 2)
    return _conv(x, k / k.sum((1, 2), keepdims=True))


def _affine(x: np.ndarray, thetas: np.ndarray) -> np.ndarray:
    """Each image moved by its own 2x3 affine matrix (normalised coordinates), zeros outside."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(x).float().permute(0, 3, 1, 2)
    grid = F.affine_grid(torch.from_numpy(thetas.astype(np.float32)), list(t.shape), align_corners=False)
    out = F.grid_sample(t, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return np.clip(out.permute(0, 2, 3, 1).numpy() + 0.5, 0, 255).astype(np.uint8)


def _signs(rng, n: int) -> np.ndarray:
    return np.where(rng.random(n) < 0.5, -1.0, 1.0)


def rotate(x, s, rng):
    a = np.deg2rad((10, 20, 30, 40, 50)[s - 1]) * _signs(rng, len(x))
    th = np.zeros((len(x), 2, 3))
    th[:, 0, 0], th[:, 0, 1], th[:, 1, 0], th[:, 1, 1] = np.cos(a), -np.sin(a), np.sin(a), np.cos(a)
    return _affine(x, th)


def shear(x, s, rng):
    k = (0.1, 0.2, 0.3, 0.4, 0.5)[s - 1] * _signs(rng, len(x))
    th = np.zeros((len(x), 2, 3))
    th[:, 0, 0], th[:, 0, 1], th[:, 1, 1] = 1.0, k, 1.0
    return _affine(x, th)


def scale(x, s, rng):
    z = (0.9, 0.8, 0.7, 0.6, 0.5)[s - 1]  # the image shrinks to z of its size, centred
    th = np.zeros((len(x), 2, 3))
    th[:, 0, 0] = th[:, 1, 1] = 1.0 / z
    return _affine(x, th)


def translate(x, s, rng):
    d = 2 * (0.05, 0.1, 0.15, 0.2, 0.25)[s - 1]  # of the side, in normalised coordinates (-1..1)
    a = rng.uniform(0, 2 * np.pi, len(x))
    th = np.zeros((len(x), 2, 3))
    th[:, 0, 0] = th[:, 1, 1] = 1.0
    th[:, 0, 2], th[:, 1, 2] = d * np.cos(a), d * np.sin(a)
    return _affine(x, th)


def brightness(x, s, rng):
    return _uint8(_float(x) + (0.1, 0.2, 0.3, 0.4, 0.5)[s - 1])


def contrast(x, s, rng):
    c = (0.6, 0.5, 0.4, 0.3, 0.2)[s - 1]
    f = _float(x)
    mean = f.mean(axis=(1, 2, 3), keepdims=True)
    return _uint8((f - mean) * c + mean)


def pixelate(x, s, rng):
    import torch
    import torch.nn.functional as F

    f = (0.6, 0.5, 0.4, 0.3, 0.25)[s - 1]
    n, h, w, c = x.shape
    t = torch.from_numpy(x).float().permute(0, 3, 1, 2)
    small = F.interpolate(t, size=(max(1, round(h * f)), max(1, round(w * f))), mode="area")
    out = F.interpolate(small, size=(h, w), mode="nearest")
    return np.clip(out.permute(0, 2, 3, 1).numpy() + 0.5, 0, 255).astype(np.uint8)


def jpeg(x, s, rng):
    from PIL import Image

    quality = (25, 18, 15, 10, 7)[s - 1]
    out = np.empty_like(x)
    for i, img in enumerate(x):
        im = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=quality)
        back = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
        out[i] = back.reshape(img.shape)
    return out


def stripes(x, s, rng):
    """MNIST-C's stripe: bright lines across the image, every ``period`` rows or columns."""
    period = (8, 6, 5, 4, 3)[s - 1]
    out = x.copy()
    h, w = x.shape[1:3]
    vertical = rng.random(len(x)) < 0.5
    phase = rng.integers(0, period, len(x))
    rows = (np.arange(h)[None] - phase[:, None]) % period == 0
    cols = (np.arange(w)[None] - phase[:, None]) % period == 0
    line = np.where(vertical[:, None, None], cols[:, None, :], rows[:, :, None])  # (N, H, W)
    out[line] = 255
    return out


def occlusion(x, s, rng):
    """A black square of ``side`` of the image side, at a random place."""
    side = (0.2, 0.3, 0.4, 0.5, 0.6)[s - 1]
    n, h, w = x.shape[:3]
    bh, bw = max(1, round(h * side)), max(1, round(w * side))
    top = rng.integers(0, h - bh + 1, n)
    left = rng.integers(0, w - bw + 1, n)
    rows = (np.arange(h)[None] >= top[:, None]) & (np.arange(h)[None] < (top + bh)[:, None])
    cols = (np.arange(w)[None] >= left[:, None]) & (np.arange(w)[None] < (left + bw)[:, None])
    out = x.copy()
    out[rows[:, :, None] & cols[:, None, :]] = 0
    return out


def invert(x, s, rng):
    """MNIST-C's inverse: dark on light instead of light on dark (severity has no effect)."""
    return 255 - x


CORRUPTIONS: dict[str, Callable] = {f.__name__: f for f in (
    gaussian_noise, shot_noise, impulse_noise, defocus_blur, motion_blur, rotate, shear, scale, translate,
    brightness, contrast, pixelate, jpeg, stripes, occlusion, invert)}


def resolve(names: str | list | tuple | None) -> list[str]:
    """Corruption names from ``all``, a comma-separated string or a list; an unknown one is the one
    error line, with the closest name."""
    if names is None or names == "all" or names == ["all"]:
        return list(CORRUPTIONS)
    items = names.split(",") if isinstance(names, str) else [str(n) for n in names]
    out = []
    for name in (n.strip().replace("-", "_") for n in items if n.strip()):
        if name not in CORRUPTIONS:
            close = difflib.get_close_matches(name, list(CORRUPTIONS), 1)
            raise ConfigError(f"unknown corruption '{name}'", "--corruptions",
                              (f"did you mean {close[0]}? " if close else "")
                              + f"use all, or some of {', '.join(CORRUPTIONS)}")
        if name not in out:
            out.append(name)
    if not out:
        raise ConfigError("no corruptions named", "--corruptions", "use all, or e.g. gaussian_noise,rotate")
    return out


def corrupt(x: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """``x`` (uint8, (N, H, W, C)) with corruption ``name`` at ``severity`` (1..5), seeded."""
    if severity not in SEVERITIES:
        raise ConfigError(f"severity must be from 1 to 5, got {severity!r}", "--severity", "use e.g. --severity 3")
    fn = CORRUPTIONS[resolve([name])[0]]
    # the seed, the corruption and the severity pick the random numbers: the same table twice
    rng = np.random.default_rng([seed, list(CORRUPTIONS).index(fn.__name__), severity])
    return fn(np.ascontiguousarray(x), severity, rng)
