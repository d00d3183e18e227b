"""The comparison's leaderboard: per-model aggregation and the CSV / Markdown / HTML files."""

from __future__ import annotations

import html
import io
import json
from pathlib import Path

import numpy as np

from .. import atomic

COLUMNS = ["rank", "model", "kind", "size", "size_unit", "accuracy", "accuracy_std", "macro_f1",
           "macro_f1_std", "train_time_s", "predict_s_per_1k", "folds", "n_train", "n_eval", "epochs", "status",
           "note"]
FOLD_COLUMNS = ["model", "fold", "n_train", "n_eval", "eval_digest", "accuracy", "macro_f1", "train_time_s",
                "predict_s", "size", "size_unit", "status", "note", "run"]


def aggregate(rows: list[dict], names: list[str]):
    """(leaderboard, per-fold table) as DataFrames; models that did not finish rank last."""
    import pandas as pd

    folds = pd.DataFrame([{c: r.get(c) for c in FOLD_COLUMNS} for r in rows], columns=FOLD_COLUMNS)
    board = []
    for name in names:
        rs = [r for r in rows if r["model"] == name]
        if not rs:
            board.append({"model": name, "kind": "", "status": "not run", "note": "the comparison was interrupted"})
            continue
        ok = [r for r in rs if "accuracy" in r]
        acc = np.array([r["accuracy"] for r in ok])
        f1 = np.array([r["macro_f1"] for r in ok])
        statuses = {r["status"] for r in rs}
        status = "ok" if statuses == {"ok"} else ", ".join(sorted(s for s in statuses if s != "ok"))
        notes = sorted({r.get("note") or "" for r in rs} - {""})
        entry = {"model": name, "kind": rs[0].get("kind", ""), "status": status, "note": "; ".join(notes),
                 "folds": len(ok), "n_train": int(np.mean([r["n_train"] for r in rs])),
                 "n_eval": int(np.mean([r["n_eval"] for r in rs]))}
        if ok:
            entry.update(
                size=int(np.mean([r["size"] for r in ok])), size_unit=ok[0]["size_unit"],
                accuracy=float(acc.mean()), accuracy_std=float(acc.std()) if len(ok) > 1 else None,
                macro_f1=float(f1.mean()), macro_f1_std=float(f1.std()) if len(ok) > 1 else None,
                train_time_s=float(np.mean([r["train_time_s"] for r in ok])),
                epochs=float(np.mean([r["epochs"] for r in ok])) if all("epochs" in r for r in ok) else None,
                predict_s_per_1k=float(np.mean([1000 * r["predict_s"] / max(r["n_eval"], 1) for r in ok])))
        board.append(entry)
    df = pd.DataFrame(board, columns=COLUMNS[1:])
    df = df.sort_values("accuracy", ascending=False, na_position="last", kind="stable").reset_index(drop=True)
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    return df, folds


def _num(v, fmt):
    return "" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, fmt)


def fmt_seconds(s) -> str:
    if s is None or (isinstance(s, float) and np.isnan(s)):
        return ""
    if s < 1:
        return f"{s * 1000:.1f} ms" if s < 0.01 else f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    m, sec = divmod(int(round(s)), 60)
    return f"{m} min {sec:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def display_rows(board) -> list[list[str]]:
    """The leaderboard as text cells: rank, model, kind, size, accuracy, macro-F1, train time,
    predict time per 1,000 images, status."""
    out = []
    for r in board.to_dict("records"):
        acc = _num(r["accuracy"], ".4f")
        if acc and r["accuracy_std"] is not None and not np.isnan(r["accuracy_std"]):
            acc += f" ± {r['accuracy_std']:.4f}"
        f1 = _num(r["macro_f1"], ".4f")
        if f1 and r["macro_f1_std"] is not None and not np.isnan(r["macro_f1_std"]):
            f1 += f" ± {r['macro_f1_std']:.4f}"
        size = "" if r["size"] is None or np.isnan(r["size"]) else f"{int(r['size']):,} {r['size_unit']}"
        status = r["status"] + (f" ({r['note']})" if r["status"] != "ok" and r["note"] else "")
        n_train = "" if r["n_train"] is None or np.isnan(r["n_train"]) else f"{int(r['n_train']):,}"
        epochs = _num(r.get("epochs"), ".3g")
        out.append([str(r["rank"]), r["model"], r["kind"], size, acc, f1, n_train, epochs,
                    fmt_seconds(r["train_time_s"]), fmt_seconds(r["predict_s_per_1k"]), status])
    return out


HEADER = ["#", "model", "kind", "size", "accuracy", "macro-F1", "trained on", "epochs", "train time",
          "predict / 1k images", "status"]


def settings_lines(meta: dict) -> list[str]:
    """What was actually run: the images, the folds, the seed, and per model its subsample and (for
    neural models) its recipe, epochs and batch size. A leaderboard never hides a --subsample or an
    --epochs."""
    lines = [f"{meta['source']}: {meta['n_labeled']:,} labeled images; {meta['split']}; seed {meta['seed']}; "
             f"pixel scaling {meta['scale']}."]
    for name, st in (meta.get("settings") or {}).items():
        parts = [f"trained on {st['train_images']:,} images" +
                 (f" (subsample {st['subsample']:,})" if st.get("subsample") else "")]
        if st.get("recipe"):
            parts.append(f"recipe {st['recipe']}, up to {st['epochs']} epochs, batch {st['batch_size']}, "
                         f"{st['optimizer']}" + (f" lr {st['lr']:g}" if st.get("lr") else "") +
                         (f", patience {st['patience']}" if st.get("patience") is not None else ", no early stopping"))
        if st.get("time_limit"):
            parts.append(f"time limit {st['time_limit']:g} s")
        lines.append(f"{name}: {'; '.join(parts)}.")
    return lines


def markdown(board, meta: dict) -> str:
    settings = settings_lines(meta)
    lines = [f"Leaderboard: {settings[0]}", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in display_rows(board)]
    lines += ["", "Settings:", ""] + [f"- {line}" for line in settings[1:]] + ["", FOOTNOTE]
    return "\n".join(lines) + "\n"


FOOTNOTE = ("Every model is scored on the same evaluation images (the same folds with --cv); accuracy is the "
            "mean ± standard deviation over folds. Neural models pick their best epoch on those images, as a "
            "Keras validation_split does. Times are per fold: training (scaling and features included) and "
            "predicting 1,000 images.")


def short_seconds(s: float) -> str:
    """A tick label: 0.5 s, 20 s, 2 min, 1.5 h."""
    if s < 60:
        return f"{s:g} s"
    if s < 3600:
        return f"{s / 60:g} min"
    return f"{s / 3600:g} h"


def time_ticks(lo: float, hi: float, most: int = 4) -> list[float]:
    """At most ``most`` round durations (1, 2, 5 x 10^k seconds; 1, 2, 5, 10, 20, 30 min; hours)
    spread over [lo, hi] on a log scale; never fewer than two."""
    nice = sorted({m * 10.0 ** e for e in range(-3, 2) for m in (1, 2, 5)} | {60.0, 120.0, 300.0, 600.0, 1200.0,
                                                                              1800.0, 3600.0, 7200.0, 18000.0})
    inside = [t for t in nice if lo <= t <= hi]
    if len(inside) < 2:
        below = [t for t in nice if t < lo] or [nice[0]]
        above = [t for t in nice if t > hi] or [nice[-1]]
        inside = sorted({below[-1], *inside, above[0]})
    if len(inside) > most:
        picks = np.unique(np.round(np.linspace(0, len(inside) - 1, most)).astype(int))
        inside = [inside[i] for i in picks]
    return inside


def chart_svg(board) -> str:
    """A horizontal bar chart of accuracy (with the std over folds) and train time, as inline SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = board[board["accuracy"].notna()].iloc[::-1]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 0.45 * max(len(done), 2) + 1.2), sharey=True,
                                  gridspec_kw={"width_ratios": [2, 1]})
    colors = ["#4c72b0" if str(k).startswith("neural") else "#dd8452" for k in done["kind"]]
    y = np.arange(len(done))
    err = done["accuracy_std"].astype(float).fillna(0).to_numpy()
    ax.barh(y, done["accuracy"], xerr=err, color=colors, capsize=3)
    lo = max(0.0, float(done["accuracy"].min()) - 0.1) if len(done) else 0.0
    ax.set_xlim(lo, 1.0)
    ax.set_yticks(y, done["model"])
    for yi, a, e in zip(y, done["accuracy"], err):
        ax.text(a + e + 0.004, yi, f"{a:.4f}", va="center", fontsize=8)  # beside the error bar, not on it
    ax.set_xlabel("accuracy")
    ax2.barh(y, done["train_time_s"], color=colors)
    ax2.set_xscale("log")
    # at most four short labels (1 s, 5 s, 2 min): log scale's own minor labels ran into each other
    times = done["train_time_s"].astype(float).to_numpy()
    if len(times) and np.all(times > 0):
        ticks = time_ticks(float(times.min()) / 1.3, float(times.max()) * 1.3)
        ax2.set_xlim(ticks[0] / 1.3 if ticks[0] < times.min() else times.min() / 1.3, max(ticks[-1], times.max()) * 1.3)
        ax2.set_xticks(ticks, [short_seconds(t) for t in ticks], fontsize=8)
        ax2.set_xticks([], minor=True)
    ax2.set_xlabel("train time per fold (log scale)")
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.find("<svg"):]


def html_page(board, meta: dict) -> str:
    rows = "\n".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                     for row in display_rows(board))
    env = meta.get("environment", {})
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>cnnlab compare: {html.escape(meta['source'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; width: 100%; font-size: 14px; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; }}
td:nth-child(1), td:nth-child(4), td:nth-child(5), td:nth-child(6), td:nth-child(7), td:nth-child(8),
td:nth-child(9), td:nth-child(10) {{
  text-align: right; font-variant-numeric: tabular-nums; }}
th {{ background: #f3f3f3; }} .note {{ color: #555; font-size: 13px; }}
svg {{ max-width: 100%; height: auto; }}
</style></head><body>
<h1>Leaderboard: {html.escape(meta['source'])}</h1>
<p>{html.escape(settings_lines(meta)[0])} cnnlab {html.escape(str(env.get('cnnlab', '')))}, torch
{html.escape(str(env.get('torch', '')))}, scikit-learn {html.escape(str(env.get('scikit_learn', '')))},
{html.escape(str(env.get('machine', '')))}.</p>
<figure id="chart">{chart_svg(board)}</figure>
<table id="leaderboard"><thead><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in HEADER)}</tr></thead>
<tbody>
{rows}
</tbody></table>
<h2>Settings</h2><ul id="settings">{''.join(f'<li>{html.escape(line)}</li>' for line in settings_lines(meta)[1:])}</ul>
<p class="note">{html.escape(FOOTNOTE)}</p>
</body></html>
"""


def write_leaderboard(out: Path, board, folds, meta: dict, fold_indices: list) -> None:
    atomic.write_text(out / "leaderboard.csv", board.to_csv(index=False))
    atomic.write_text(out / "folds.csv", folds.to_csv(index=False))
    atomic.write_text(out / "leaderboard.md", markdown(board, meta))
    atomic.write_text(out / "leaderboard.html", html_page(board, meta))
    atomic.write_json(out / "compare.json", {**meta, "leaderboard": json.loads(board.to_json(orient="records"))})
    buf = io.BytesIO()
    np.savez_compressed(buf, **{f"fold{k + 1}_{part}": idx for k, (tr, ev) in enumerate(fold_indices)
                                for part, idx in (("train", tr), ("eval", ev))})
    atomic.write_bytes(out / "folds.npz", buf.getvalue())

