"""Weight statistics of a built model: which layers carry weights, their values and histograms.
Training records them at the start (weights_init.json); figures compare against them. Torch, no
plotting."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn


def weighted_layers(model) -> dict[str, Any]:
    """Spec layer name -> its Conv2d or Linear module, in order."""
    out: dict[str, Any] = {}
    for info, block in zip(model.spec.layers, model.blocks):
        for m in block.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                out[info.name] = m
                break
    return out


def weights(model) -> dict[str, np.ndarray]:
    return {name: m.weight.detach().cpu().numpy() for name, m in weighted_layers(model).items()}


def weight_stats(model, bins: int = 50) -> dict[str, dict]:
    """Mean, std, range and a histogram of each layer's weights (recorded at train start)."""
    stats = {}
    for name, w in weights(model).items():
        flat = w.ravel().astype(np.float64)
        counts, edges = np.histogram(flat, bins=bins)
        stats[name] = {"mean": float(flat.mean()), "std": float(flat.std()), "min": float(flat.min()),
                       "max": float(flat.max()), "counts": counts.tolist(), "edges": edges.tolist()}
        if w.ndim == 4 and not any("kernel" in v for v in stats.values()):
            # the first convolution's kernels themselves: `plot kernels --untrained` draws them
            stats[name]["kernel"] = w[:MAX_KERNELS].tolist()
    return stats


MAX_KERNELS = 64  # first-layer kernels recorded and drawn
