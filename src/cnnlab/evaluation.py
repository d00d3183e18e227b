"""Loss, accuracy, classification report and confusion matrix."""

from __future__ import annotations

import numpy as np

from .textwidth import clip, ljust, rjust, width


def evaluate_probs(probs: np.ndarray, y: np.ndarray, class_names: list[str]) -> dict:
    """Metrics from probabilities (N, K) and true labels (N,), as scikit-learn reports them."""
    from sklearn.metrics import classification_report, confusion_matrix

    k = len(class_names)
    labels = list(range(k))
    pred = probs.argmax(1)
    p_true = np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0)
    report = classification_report(y, pred, labels=labels, target_names=class_names,
                                   output_dict=True, zero_division=0)
    text = report_text(report, class_names)
    cm = confusion_matrix(y, pred, labels=labels).tolist()
    return {"loss": float(-np.log(p_true).mean()), "accuracy": float((pred == y).mean()),
            "n": int(len(y)), "classification_report": report, "report_text": text,
            "confusion_matrix": cm, "most_confused": most_confused(cm, class_names),
            "class_names": list(class_names)}


def most_confused(cm: list[list[int]], class_names: list[str], min_count: int = 1) -> list[dict]:
    """The off-diagonal cells of the confusion matrix with at least ``min_count`` images, most
    first (fastai's ``most_confused``): which class is taken for which, and how often."""
    pairs = [{"actual": class_names[i], "predicted": class_names[j], "count": int(v)}
             for i, row in enumerate(cm) for j, v in enumerate(row) if i != j and v >= min_count]
    return sorted(pairs, key=lambda p: -p["count"])


def report_text(report: dict, class_names: list[str], digits: int = 4) -> str:
    """scikit-learn's classification report as text, laid out as scikit-learn lays it out but padded
    by display width, so that Korean class names (two columns a character) line up."""
    first = max(width(n) for n in [*class_names, "weighted avg"])
    cols = ("precision", "recall", "f1-score", "support")

    def line(name: str, values) -> str:
        return rjust(name, first) + " " + "".join(" " + rjust(v, 9) for v in values)

    def row(name: str, r: dict) -> str:
        return line(name, [f"{r[c]:.{digits}f}" for c in cols[:3]] + [str(int(r["support"]))])

    lines = [line("", cols), ""] + [row(n, report[n]) for n in class_names] + [""]
    if "accuracy" in report:
        total = str(int(report["macro avg"]["support"]))
        lines.append(line("accuracy", ["", "", f"{report['accuracy']:.{digits}f}", total]))
    lines += [row(k, report[k]) for k in ("macro avg", "weighted avg") if k in report]
    return "\n".join(lines) + "\n"


def format_confusion(cm: list[list[int]], class_names: list[str]) -> str:
    w = max(6, *(len(str(v)) for row in cm for v in row)) + 1
    short = [clip(n, w - 1) for n in class_names]
    head = " " * 14 + "".join(rjust(s, w) for s in short)
    lines = ["confusion matrix (rows: true, columns: predicted)", head]
    for name, row in zip(class_names, cm):
        lines.append(ljust(clip(name, 13), 14) + "".join(f"{v:>{w}}" for v in row))
    return "\n".join(lines)


def format_most_confused(pairs: list[dict], n: int = 10) -> str:
    if not pairs:
        return "most confused: no mistakes"
    a = max(6, *(width(p["actual"]) for p in pairs[:n]))
    lines = [f"most confused (actual -> predicted, images){'' if len(pairs) <= n else f'; top {n} of {len(pairs)}'}"]
    lines += [f"  {ljust(p['actual'], a)} -> {ljust(p['predicted'], a)} {p['count']:>6,}" for p in pairs[:n]]
    return "\n".join(lines)


def format_evaluation(ev: dict, split: str = "test") -> str:
    pairs = ev.get("most_confused") or most_confused(ev["confusion_matrix"], ev["class_names"])  # older runs
    return (f"{split}: loss {ev['loss']:.4f} - accuracy {ev['accuracy']:.4f} ({ev['n']:,} images)\n\n"
            f"{ev['report_text']}\n{format_confusion(ev['confusion_matrix'], ev['class_names'])}\n\n"
            f"{format_most_confused(pairs)}")


def format_corruptions(t: dict) -> str:
    """The robustness table: accuracy per corruption (rows) and severity (columns)."""
    levels = [str(s) for s in t["severities"]]
    w = max(16, *(len(n) for n in t["table"])) + 2
    lines = [f"accuracy under corruptions, {t['split']} split ({t['n']:,} images, seed {t['seed']}): clean "
             f"{t['clean']:.4f}", ljust("corruption", w) + "".join(f"{'severity ' + s:>12}" for s in levels)]
    for name, row in t["table"].items():
        lines.append(ljust(name, w) + "".join(f"{row[s]:>12.4f}" for s in levels))
    lines.append(f"mean corruption accuracy {t['mean']:.4f}; relative drop {t['relative_drop']:.1%} "
                 f"({t['seconds']:.0f} s)")
    return "\n".join(lines)
