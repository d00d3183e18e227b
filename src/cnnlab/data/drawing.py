"""Drawings made like the training data: a canvas stroke becomes an image with the dataset's
polarity, size and framing (MNIST digits fill about 20 of 28 pixels; Fashion-MNIST items the
whole frame).

Training records two numbers about its images in data.json, ``background`` (the typical border
pixel, 0..255) and ``extent`` (how much of the frame the object's bounding box typically
spans); a drawing is cropped to its ink, scaled to that extent, centred on its centre of mass
and given that background.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

INK = 40  # a pixel this far from the background is ink


def foreground_stats(x: np.ndarray, sample: int = 2000, seed: int = 0) -> dict:
    """``{"background", "extent"}`` of uint8 (N, H, W, C) images, from up to ``sample`` of them."""
    if len(x) == 0:
        return {"background": 0, "extent": 1.0}
    h, w = x.shape[1:3]
    sample = max(1, min(sample, (64 << 20) // (4 * h * w)))  # at most 64 MB of grayscale floats (large images)
    idx = np.sort(np.random.default_rng(seed).choice(len(x), min(sample, len(x)), replace=False))
    g = np.concatenate([np.asarray(x[idx[i:i + 256]]).astype(np.float32).mean(-1)
                        for i in range(0, len(idx), 256)])  # (n, H, W), converted a chunk at a time
    border = np.concatenate([g[:, 0], g[:, -1], g[:, :, 0], g[:, :, -1]], axis=1)
    background = int(np.median(border))
    ink = np.abs(g - background) > INK
    h, w = g.shape[1:]
    rows, cols = ink.any(2), ink.any(1)
    spans = []
    for r, c in zip(rows, cols):
        if r.any() and c.any():
            rr, cc = np.flatnonzero(r), np.flatnonzero(c)
            spans.append(max((rr[-1] - rr[0] + 1) / h, (cc[-1] - cc[0] + 1) / w))
    extent = float(np.median(spans)) if spans else 1.0
    return {"background": background, "extent": round(min(max(extent, 0.2), 1.0), 3)}


def prepare_drawing(img: Image.Image, size: tuple[int, int], color_mode: str, background: int = 0,
                    extent: float = 1.0) -> np.ndarray:
    """A canvas drawing (light strokes on a dark canvas) as a uint8 (H, W, C) image framed like
    the training data. An empty canvas gives a plain background."""
    if img.mode in ("RGBA", "LA"):
        base = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(base, img.convert("RGBA"))
    g = np.asarray(img.convert("L"), dtype=np.uint8)
    h, w = size
    out = np.zeros((h, w), np.float32)
    ys, xs = np.nonzero(g > INK)
    if len(ys):
        crop = g[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        target = max(1, round(extent * min(h, w)))
        scale = target / max(crop.shape)
        ch, cw = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
        small = np.asarray(Image.fromarray(crop).resize((cw, ch), Image.Resampling.LANCZOS), dtype=np.float32)
        mass = small.sum()
        cy = (small.sum(1) * np.arange(ch)).sum() / mass if mass else ch / 2
        cx = (small.sum(0) * np.arange(cw)).sum() / mass if mass else cw / 2
        top = int(np.clip(round(h / 2 - cy), 0, h - ch)) if ch <= h else 0
        left = int(np.clip(round(w / 2 - cx), 0, w - cw)) if cw <= w else 0
        out[top:top + ch, left:left + cw] = small[:h - top, :w - left]
    if background > 127:  # the data is dark-on-light: invert the light-on-dark drawing
        out = 255.0 - out
    arr = np.clip(np.rint(out), 0, 255).astype(np.uint8)[..., None]
    return np.repeat(arr, 3, axis=-1) if color_mode == "rgb" else arr
