"""Training-batch augmentation as batched tensor ops (no per-image Python loop).

Names follow Keras' ImageDataGenerator: rotation_range (degrees), width_shift_range and
height_shift_range (fraction of the size if < 1, else pixels), shear_range (degrees),
zoom_range (z -> [1 - z, 1 + z], or a [lo, hi] pair), horizontal_flip, vertical_flip,
fill_mode (nearest | constant | reflect | wrap) with cval. Plus random_crop (pad by p pixels,
crop back at a random offset) and random_erasing (probability of erasing one rectangle).
Works on float pixel values 0..255 in (N, C, H, W), on any device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .augment_options import FILL_MODES, AugmentOptions  # noqa: F401 (the settings live beside, torch-free)


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def _shift(r: float, size: int) -> float:
    return r * size if r < 1 else r


def affine_thetas(o: AugmentOptions, n: int, h: int, w: int, g, device) -> torch.Tensor:
    """(N, 2, 3) matrices for ``F.affine_grid`` mapping output to input coordinates,
    composed as Keras does: rotation @ shift @ shear @ zoom about the image centre."""
    rot = torch.deg2rad(_uniform(n, -o.rotation_range, o.rotation_range, g, device))
    tx = _uniform(n, -1, 1, g, device) * _shift(o.width_shift_range, w)
    ty = _uniform(n, -1, 1, g, device) * _shift(o.height_shift_range, h)
    shear = torch.deg2rad(_uniform(n, -o.shear_range, o.shear_range, g, device))
    lo, hi = o.zoom_bounds()
    zx, zy = _uniform(n, lo, hi, g, device), _uniform(n, lo, hi, g, device)
    # 2x2 linear part in pixel units (x right, y down), then translation.
    cos, sin = torch.cos(rot), torch.sin(rot)
    r = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    s = torch.stack([torch.stack([torch.ones_like(shear), -torch.sin(shear)], -1),
                     torch.stack([torch.zeros_like(shear), torch.cos(shear)], -1)], -2)
    z = torch.diag_embed(torch.stack([zx, zy], -1))
    a = r @ s @ z
    t = (r @ torch.stack([tx, ty], -1).unsqueeze(-1)).squeeze(-1)
    # Pixel units -> normalised [-1, 1] units: scale by D^-1 A D with D = diag(w/2, h/2).
    d = torch.tensor([w / 2.0, h / 2.0], device=device)
    a = a * d.view(1, 1, 2) / d.view(1, 2, 1)
    t = t / d
    return torch.cat([a, t.unsqueeze(-1)], -1)


def apply_affine(x: torch.Tensor, o: AugmentOptions, g) -> torch.Tensor:
    n, _, h, w = x.shape
    theta = affine_thetas(o, n, h, w, g, x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    pad = {"nearest": "border", "reflect": "reflection", "constant": "zeros", "wrap": "border"}
    if o.fill_mode == "wrap":
        grid = torch.remainder(grid + 1.0, 2.0) - 1.0
    if o.fill_mode == "constant" and o.cval:
        return F.grid_sample(x - o.cval, grid, "bilinear", "zeros", align_corners=False) + o.cval
    return F.grid_sample(x, grid, "bilinear", pad[o.fill_mode], align_corners=False)


def random_crop(x: torch.Tensor, pad: int, g) -> torch.Tensor:
    """Zero-pad by ``pad`` pixels and crop back to size at a random offset per image."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))  # (N, C, H + 2p, W + 2p)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g, device=x.device)
    rows = (dy.view(n, 1, 1, 1) + torch.arange(h, device=x.device).view(1, 1, h, 1))
    cols = (dx.view(n, 1, 1, 1) + torch.arange(w, device=x.device).view(1, 1, 1, w))
    picked = padded.gather(2, rows.expand(n, c, h, w + 2 * pad))  # (N, C, H, W + 2p)
    return picked.gather(3, cols.expand(n, c, h, w))


def random_erase(x: torch.Tensor, p: float, g, scale=(0.02, 0.33), ratio=(0.3, 3.3)) -> torch.Tensor:
    """Erase (set to 0) one random rectangle per image with probability ``p``."""
    n, _, h, w = x.shape
    dev = x.device
    area = _uniform(n, scale[0], scale[1], g, dev) * h * w
    logr = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), g, dev)
    ar = torch.exp(logr)
    eh = torch.sqrt(area * ar).round().clamp(1, h)
    ew = torch.sqrt(area / ar).round().clamp(1, w)
    top = (torch.rand(n, generator=g, device=dev) * (h - eh + 1)).floor()
    left = (torch.rand(n, generator=g, device=dev) * (w - ew + 1)).floor()
    on = torch.rand(n, generator=g, device=dev) < p
    ys = torch.arange(h, device=dev).view(1, h, 1)
    xs = torch.arange(w, device=dev).view(1, 1, w)
    mask = ((ys >= top.view(n, 1, 1)) & (ys < (top + eh).view(n, 1, 1)) &
            (xs >= left.view(n, 1, 1)) & (xs < (left + ew).view(n, 1, 1)) & on.view(n, 1, 1))
    return x.masked_fill(mask.unsqueeze(1), 0.0)


def augment(x: torch.Tensor, o: AugmentOptions, g: torch.Generator) -> torch.Tensor:
    """Augment a float batch (N, C, H, W) of pixel values 0..255."""
    n = x.shape[0]
    if o.affine:
        x = apply_affine(x, o, g)
    if o.horizontal_flip:
        flip = (torch.rand(n, generator=g, device=x.device) < 0.5).view(n, 1, 1, 1)
        x = torch.where(flip, x.flip(3), x)
    if o.vertical_flip:
        flip = (torch.rand(n, generator=g, device=x.device) < 0.5).view(n, 1, 1, 1)
        x = torch.where(flip, x.flip(2), x)
    if o.random_crop > 0:
        x = random_crop(x, o.random_crop, g)
    if o.random_erasing > 0:
        x = random_erase(x, o.random_erasing, g)
    return x
