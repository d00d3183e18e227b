"""Loss, accuracy, classification report and confusion matrix."""

from __future__ import annotations

import numpy as np


def evaluate_probs(probs: np.ndarray, y: np.ndarray, class_names: list[str]) -> dict:
    """Metrics from probabilities (N, K) and true labels (N,), as scikit-learn reports them."""
    from sklearn.metrics import classification_report, confusion_matrix

    k = len(class_names)
    labels = list(range(k))
    pred = probs.argmax(1)
    p_true = np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0)
    report = classification_report(y, pred, labels=labels, target_names=class_names,
                                   output_dict=True, zero_division=0)
    text = classification_report(y, pred, labels=labels, target_names=class_names, digits=4,
                                 zero_division=0)
    return {"loss": float(-np.log(p_true).mean()), "accuracy": float((pred == y).mean()),
            "n": int(len(y)), "classification_report": report, "report_text": text,
            "confusion_matrix": confusion_matrix(y, pred, labels=labels).tolist(),
            "class_names": list(class_names)}


def format_confusion(cm: list[list[int]], class_names: list[str]) -> str:
    w = max(6, *(len(str(v)) for row in cm for v in row)) + 1
    short = [n[:w - 1] for n in class_names]
    head = " " * 14 + "".join(f"{s:>{w}}" for s in short)
    lines = ["confusion matrix (rows: true, columns: predicted)", head]
    for name, row in zip(class_names, cm):
        lines.append(f"{name[:13]:<14}" + "".join(f"{v:>{w}}" for v in row))
    return "\n".join(lines)


def format_evaluation(ev: dict, split: str = "test") -> str:
    return (f"{split}: loss {ev['loss']:.4f} - accuracy {ev['accuracy']:.4f} ({ev['n']:,} images)\n\n"
            f"{ev['report_text']}\n{format_confusion(ev['confusion_matrix'], ev['class_names'])}")
