"""Learning-rate schedules as pure functions of the step: lr = base_lr * factor(step).

constant    1 throughout
onecycle    linear warm-up from 1/25 to 1 over the first ``warmup`` fraction, then cosine
            annealing to 1/10,000 (Smith's one-cycle, as torch's OneCycleLR defaults)
triangular  linear from 0.2 up to 1 at ``warmup``, then linearly down to 0 (airbench)
cosine      optional linear warm-up, then cosine from 1 to 0
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "onecycle", "triangular", "cosine")


def lr_factor(schedule: str, step: int, total: int, warmup: float = 0.25) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` of ``total``."""
    if schedule == "constant" or total <= 1:
        return 1.0
    t = min(max(step / (total - 1), 0.0), 1.0)  # progress 0..1
    w = min(max(warmup, 0.0), 1.0)
    if schedule == "onecycle":
        start, end = 1 / 25, 1 / 1e4
        if t < w:
            return start + (1 - start) * t / w
        u = (t - w) / (1 - w) if w < 1 else 1.0
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * u))
    if schedule == "triangular":
        if t < w:
            return 0.2 + 0.8 * t / w
        return max(0.0, (1 - t) / (1 - w)) if w < 1 else 0.0
    if schedule == "cosine":
        if t < w:
            return t / w if w > 0 else 1.0
        u = (t - w) / (1 - w) if w < 1 else 1.0
        return 0.5 * (1 + math.cos(math.pi * u))
    raise ValueError(f"unknown schedule {schedule!r}")
