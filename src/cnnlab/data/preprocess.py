"""Pixel scaling fitted on the training split only, stored with the model.

Every mode reduces to a per-channel ``(x - offset) / scale`` on pixel values 0..255, so the
stored statistics are two short lists whatever the mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .dataset import in_chunks

# 255: x / 255 (the notebooks'); 127.5: (x - 127.5) / 127.5, to [-1, 1] (Keras Applications' "tf"
# mode, which MobileNetV2's ImageNet weights expect); caffe: minus ImageNet's channel means, unscaled
# (Keras Applications' "caffe" mode for VGG16 and ResNet50, kept in RGB order; a grayscale image
# takes their mean); none: raw pixel values
IMAGENET_RGB_MEANS = (123.68, 116.779, 103.939)
SCALE_MODES = ("255", "127.5", "caffe", "minmax", "minmax-per-channel", "standard", "standard-per-channel", "none")


def _histograms(x: np.ndarray) -> np.ndarray:
    """Per-channel counts of each of the 256 pixel values: (C, 256), exact and fast."""
    total = np.zeros((x.shape[-1], 256), np.int64)
    for part in in_chunks(x):
        total += np.stack([np.bincount(part[..., c].ravel(), minlength=256) for c in range(x.shape[-1])])
    return total


@dataclass(frozen=True)
class Preprocessing:
    mode: str
    offset: tuple[float, ...]
    scale: tuple[float, ...]

    @classmethod
    def fit(cls, mode: str, x: np.ndarray) -> Preprocessing:
        """Fit on uint8 (N, H, W, C) training images."""
        mode = str(mode)
        if mode not in SCALE_MODES:
            raise ConfigError(f"unknown scale '{mode}'", "--scale", f"use one of {', '.join(SCALE_MODES)}")
        c = x.shape[-1]
        fixed = {"255": (0.0, 255.0), "127.5": (127.5, 127.5), "none": (0.0, 1.0)}
        if mode in fixed:
            off, s = fixed[mode]
            return cls(mode, (off,) * c, (s,) * c)
        if mode == "caffe":
            means = IMAGENET_RGB_MEANS if c == 3 else (sum(IMAGENET_RGB_MEANS) / 3,) * c
            return cls(mode, tuple(means), (1.0,) * c)
        hist = _histograms(x).astype(np.float64)  # (C, 256)
        if mode.endswith("per-channel"):
            groups = hist
        else:
            groups = np.repeat(hist.sum(0, keepdims=True), c, axis=0)
        values = np.arange(256, dtype=np.float64)
        offs, scales = [], []
        for h in groups:
            if mode.startswith("minmax"):
                nz = np.nonzero(h)[0]
                lo, hi = (float(nz[0]), float(nz[-1])) if len(nz) else (0.0, 255.0)
                offs.append(lo)
                scales.append(hi - lo if hi > lo else 1.0)
            else:
                n = h.sum()
                mean = float((h * values).sum() / n)
                std = float(np.sqrt((h * (values - mean) ** 2).sum() / n))
                offs.append(mean)
                scales.append(std if std > 0 else 1.0)
        return cls(mode, tuple(offs), tuple(scales))

    def apply_numpy(self, x: np.ndarray) -> np.ndarray:
        """uint8 NHWC -> float32 NHWC, for the scikit-learn baselines and tests."""
        off, scale = np.asarray(self.offset, np.float32), np.asarray(self.scale, np.float32)
        return ((x.astype(np.float32) - off) / scale).astype(np.float32)

    def to_dict(self) -> dict:
        return {"mode": self.mode, "offset": list(self.offset), "scale": list(self.scale)}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(str(d["mode"]), tuple(float(v) for v in d["offset"]),
                   tuple(float(v) for v in d["scale"]))

    def tensors(self, device):
        """(offset, 1/scale) as (1, C, 1, 1) float32 tensors on ``device``."""
        import torch

        off = torch.tensor(self.offset, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        inv = 1.0 / torch.tensor(self.scale, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        return off, inv

    def apply_tensor(self, x):
        """uint8 (N, C, H, W) tensor -> the float32 batch a model sees, on x's device."""
        off, inv = self.tensors(x.device)
        return (x.float() - off) * inv
