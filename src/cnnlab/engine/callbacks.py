"""Early stopping as a pure function of the monitored history (Lightning's lesson)."""

from __future__ import annotations

import math


def is_improvement(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if value is None or math.isnan(value):
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def early_stopping(values: list[float], mode: str, patience: int | None,
                   min_delta: float = 0.0) -> tuple[bool, int | None, str]:
    """Keras' EarlyStopping rule over a history of monitored values.

    Returns (stop, index of the best epoch, reason). Training stops once ``patience`` epochs
    in a row bring no improvement larger than ``min_delta`` over the best so far.
    """
    best, best_i, wait = None, None, 0
    for i, v in enumerate(values):
        if is_improvement(v, best, mode, min_delta):
            best, best_i, wait = v, i, 0
        else:
            wait += 1
    if patience is not None and best_i is not None and wait >= max(patience, 1):
        return True, best_i, (f"no improvement larger than {min_delta:g} for {wait} epochs "
                              f"(patience {patience})")
    return False, best_i, ""
