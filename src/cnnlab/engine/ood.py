"""Out-of-distribution scores: how much an image looks like the training data, from the logits.

- ``energy``: the negative free energy ``logsumexp(z)`` (Liu et al., "Energy-based out-of-
  distribution detection", NeurIPS 2020); high for images like the training data. It reads the
  logits' size, which the softmax throws away.
- ``max_softmax``: the largest softmax probability (Hendrycks & Gimpel, ICLR 2017), the baseline.

Measured as a detector of in-distribution images (positive) against others: AUROC, the false
positive rate at 95% true positive rate (the threshold that keeps 95% of the in-distribution
images), and the accuracy on the in-distribution images kept.
"""

from __future__ import annotations

import numpy as np

SCORES = ("energy", "max_softmax")


def scores(logits: np.ndarray, binary: bool = False) -> dict[str, np.ndarray]:
    z = logits.astype(np.float64)
    if binary:  # one sigmoid unit: the logits of [not, is] are [0, z]
        z = np.concatenate([np.zeros_like(z[:, :1]), z[:, :1]], 1)
    top = z.max(1, keepdims=True)
    lse = (top + np.log(np.exp(z - top).sum(1, keepdims=True)))[:, 0]
    return {"energy": lse, "max_softmax": np.exp(top[:, 0] - lse)}


def detection(id_scores: np.ndarray, ood_scores: np.ndarray, id_right: np.ndarray | None = None) -> dict:
    """AUROC, FPR at 95% TPR and its threshold, and (with ``id_right``) the accuracy on the kept
    in-distribution images."""
    from sklearn.metrics import roc_auc_score

    labels = np.r_[np.ones(len(id_scores)), np.zeros(len(ood_scores))]
    threshold = float(np.quantile(id_scores, 0.05))  # keeps 95% of the in-distribution images
    out = {"auroc": float(roc_auc_score(labels, np.r_[id_scores, ood_scores])),
           "fpr_at_95_tpr": float((ood_scores >= threshold).mean()), "threshold": threshold}
    if id_right is not None:
        kept = id_scores >= threshold
        out["kept_accuracy"] = float(id_right[kept].mean()) if kept.any() else 0.0
    return out


def fitted(energies: np.ndarray, split: str) -> dict:
    """What ``ood.json`` keeps of the energy scores of held-out images: their percentiles, from which
    any rejection threshold is read (``threshold``)."""
    return {"score": "energy", "fitted_on": split, "n": int(len(energies)),
            "percentiles": np.percentile(energies, np.arange(101)).tolist()}


def threshold(record: dict, keep: float) -> float:
    """The energy below which an image is "unknown", so that ``keep`` of the held-out images pass."""
    return float(np.interp((1.0 - keep) * 100.0, np.arange(101), np.asarray(record["percentiles"])))
