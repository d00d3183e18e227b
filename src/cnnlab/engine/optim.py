"""Optimizers with Keras' default hyper-parameters."""

from __future__ import annotations

import torch

DEFAULT_LR = {"adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3, "sgd": 1e-2}


def make_optimizer(name: str, params, lr: float | None, momentum: float = 0.0,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    lr = lr or DEFAULT_LR[name]
    params = list(params)
    # One fused kernel per step instead of a dozen foreach ops: a step of the `fast` preset at
    # batch 64 took 0.91x the time (docs/performance.md). Fused needs floating-point parameters.
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params) or None
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, eps=1e-7, weight_decay=weight_decay, fused=fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, eps=1e-7, weight_decay=weight_decay or 0.004, fused=fused)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-7, momentum=momentum,
                                   weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
