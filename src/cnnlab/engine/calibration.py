"""Honest probabilities: temperature scaling (Guo et al., "On calibration of modern neural
networks", 2017) and how it is measured.

One scalar T divides the logits, ``softmax(z / T)`` (``sigmoid(z / T)`` for a binary head), chosen
to minimise the negative log-likelihood of held-out images (the validation split). T > 1 softens
an overconfident network. The arg-max, and so the accuracy, cannot change. The logits are read
back from probabilities: ``log p`` differs from ``z`` by a constant per image, and softmax ignores
it, so ``softmax(log p / T) == softmax(z / T)``.

Expected calibration error (ECE): the images are put in 15 equal-width bins of their top
probability; ECE is the bin-size-weighted mean gap between a bin's accuracy and its mean
confidence (Naeini et al. 2015; Guo et al. 2017).
"""

from __future__ import annotations

import numpy as np

BINS = 15
T_RANGE = (0.05, 20.0)
MIN_IMAGES = 200  # fewer held-out images fit a temperature to noise (and measure ECE as noise)


def _logits(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(probs.astype(np.float64), 1e-30, 1.0))


def scaled(probs: np.ndarray, t: float) -> np.ndarray:
    """Probabilities (N, K) with temperature ``t`` applied to their logits."""
    z = _logits(probs) / t
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    return float(-np.log(np.clip(probs[np.arange(len(y)), y].astype(np.float64), 1e-12, 1.0)).mean())


def reliability(probs: np.ndarray, y: np.ndarray, bins: int = BINS) -> dict:
    """Per bin of top probability (equal widths on [0, 1]): count, mean confidence, accuracy."""
    conf = probs.max(1).astype(np.float64)
    right = probs.argmax(1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, conf, minlength=bins)
    right_sum = np.bincount(which, right.astype(np.float64), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"edges": edges.tolist(), "count": count.tolist(),
                "confidence": np.where(count > 0, conf_sum / np.maximum(count, 1), np.nan).tolist(),
                "accuracy": np.where(count > 0, right_sum / np.maximum(count, 1), np.nan).tolist()}


def ece(probs: np.ndarray, y: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error over ``bins`` equal-width bins of top probability."""
    r = reliability(probs, y, bins)
    n = max(1, len(y))
    return float(sum(c / n * abs(a - f) for c, a, f in zip(r["count"], r["accuracy"], r["confidence"]) if c))


def fit_temperature(probs: np.ndarray, y: np.ndarray) -> float:
    """The T that minimises the NLL of ``y`` under ``scaled(probs, T)`` (a bounded 1-D search on
    log T; the NLL is convex in 1/T)."""
    from scipy.optimize import minimize_scalar

    z = _logits(probs)
    idx = np.arange(len(y))

    def loss(log_t: float) -> float:
        s = z / np.exp(log_t)
        s = s - s.max(1, keepdims=True)
        return float((np.log(np.exp(s).sum(1)) - s[idx, y]).mean())

    lo, hi = np.log(T_RANGE[0]), np.log(T_RANGE[1])
    res = minimize_scalar(loss, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(res.x))


def unfit_reason(n: int, t: float | None = None) -> str | None:
    """Why a temperature should not be used: too few images to fit it, or a fit that ran to the end
    of the range (e.g. every held-out image right: the NLL falls as T falls, without end)."""
    if n < MIN_IMAGES:
        return f"{n} held-out images; temperature scaling needs at least {MIN_IMAGES}"
    if t is not None and not (T_RANGE[0] * 1.01 < t < T_RANGE[1] / 1.01):
        return f"the fit ran to the end of its range (T = {t:.3g}): the held-out images say too little"
    return None


def raw_of(probs: np.ndarray, t: float) -> np.ndarray:
    """The raw (T = 1) probabilities behind ``probs`` made with temperature ``t``."""
    return scaled(probs, 1.0 / t) if t != 1.0 else probs


def measures(raw: np.ndarray, y: np.ndarray, t: float) -> dict:
    """ECE and NLL of the raw probabilities and with temperature ``t``, as metrics.json and
    calibration.json keep them."""
    cal = scaled(raw, t)
    return {"ece_raw": round(ece(raw, y), 6), "ece": round(ece(cal, y), 6), "nll_raw": round(nll(raw, y), 6),
            "nll": round(nll(cal, y), 6), "n": int(len(y))}
