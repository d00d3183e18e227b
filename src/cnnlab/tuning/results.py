"""A study's leaderboard: leaderboard.csv / .md / .html in the study folder, with Optuna's
optimisation-history and parameter-importance plots (PNG, inside the HTML)."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import warnings
from pathlib import Path
from typing import Any

from .. import atomic

FIXED = ["rank", "trial", "state", "value", "epochs", "best_epoch", "time_s", "run", "reason"]


def trial_rows(study, metric: str) -> tuple[list[dict], list[str]]:
    """One row per trial, best first (finished ones by value, then pruned, failed, running); and the
    parameter names, in the order they first appear."""
    from optuna.trial import TrialState

    params: list[str] = []
    rows = []
    for t in study.get_trials(deepcopy=False):
        for p in t.params:
            if p not in params:
                params.append(p)
        value = t.value if t.state == TrialState.COMPLETE else (
            t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None)
        ua = t.user_attrs
        reason = ua.get("error") or ("interrupted (Ctrl-C): retried when the study continues" if ua.get("interrupted")
                                     else "pruned by the median rule" if t.state == TrialState.PRUNED
                                     else "the worker stopped answering: retried" if t.state == TrialState.FAIL
                                     else "")
        if ua.get("retry_of") is not None:
            reason = (reason + "; " if reason else "") + f"retry of trial {ua['retry_of']}"
        rows.append({"trial": t.number, "state": t.state.name.lower(), "value": value, **t.params,
                     "epochs": ua.get("epochs"), "best_epoch": ua.get("best_epoch"), "time_s": ua.get("time_s"),
                     "run": ua.get("run", ""), "reason": reason})
    order = {"complete": 0, "pruned": 1, "running": 2, "waiting": 3, "fail": 4}
    sign = -1 if metric.endswith("accuracy") else 1

    def key(r):
        v = r["value"]
        return (order.get(r["state"], 5), sign * v if v is not None and not math.isnan(v) else math.inf, r["trial"])

    rows.sort(key=key)
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return rows, params


def _cell(v, col: str = "") -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if col == "time_s":
            return f"{v:.1f}"
        return f"{v:.4f}" if col == "value" else f"{v:.4g}"
    return str(v)


def markdown(rows: list[dict], params: list[str], meta: dict) -> str:
    cols = FIXED[:4] + params + FIXED[4:]
    head = [c if c != "value" else meta["metric"] for c in cols]
    lines = [f"# Study {meta['study']}: {meta['source']}", "",
             f"{meta['counts']}; {meta['metric']} on the validation split (the test split is never read by a "
             "trial).", *([f"Settings: {meta['settings']}."] if meta.get("settings") else []), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c), c).replace("|", "/") for c in cols) + " |" for r in rows]
    if meta.get("refit"):
        rf = meta["refit"]
        lines += ["", f"Refit of trial {rf['trial']} on training + validation data: test accuracy "
                      f"{rf['test_accuracy']:.4f} (read once), run {rf['run']}."]
    return "\n".join(lines) + "\n"


def plots(study) -> dict[str, str]:
    """Optuna's plots as base64 PNGs (or the reason one could not be drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    out = {}
    for key, draw in (("history", ovm.plot_optimization_history), ("importance", ovm.plot_param_importances)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
                ax = draw(study)
            drawn: Any = ax
            fig = (drawn if hasattr(drawn, "savefig") else drawn.figure if hasattr(drawn, "figure")
                   else drawn[0].figure)
            fig.set_size_inches(7, 4)
            fig.tight_layout()
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=100)
            plt.close(fig)
            out[key] = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        except Exception as e:  # too few finished trials, or one value for every parameter
            plt.close("all")
            out[key] = "not drawn: " + (str(e).splitlines()[0] if str(e) else type(e).__name__)
    return out


def html_page(rows: list[dict], params: list[str], meta: dict, images: dict[str, str]) -> str:
    cols = FIXED[:4] + params + FIXED[4:]
    head = "".join(f"<th>{html.escape(c if c != 'value' else meta['metric'])}</th>" for c in cols)
    body = "\n".join(f"<tr class=\"{html.escape(r['state'])}\">" + "".join(
        f"<td>{html.escape(_cell(r.get(c), c))}</td>" for c in cols) + "</tr>" for r in rows)
    figs = []
    for key, title in (("history", "Optimisation history"), ("importance", "Parameter importance")):
        img = images.get(key, "")
        figs.append(f'<figure id="{key}"><figcaption>{title}</figcaption>' +
                    (f'<img alt="{title}" src="{img}">' if img.startswith("data:") else
                     f'<p class="note">{html.escape(img)}</p>') + "</figure>")
    refit = ""
    if meta.get("refit"):
        rf = meta["refit"]
        refit = (f"<p id=\"refit\">Refit of trial {rf['trial']} on training + validation data: test accuracy "
                 f"<b>{rf['test_accuracy']:.4f}</b> (read once), run {html.escape(rf['run'])}.</p>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>cnnlab tune: {html.escape(meta['study'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; width: 100%; font-size: 13px; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 3px 6px; text-align: left; }}
th {{ background: #f3f3f3; }} tr.pruned, tr.fail {{ color: #777; }} .note {{ color: #555; font-size: 13px; }}
figure {{ display: inline-block; margin: 1em 1em 0 0; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>Study {html.escape(meta['study'])}: {html.escape(meta['source'])}</h1>
<p>{html.escape(meta['counts'])}; {html.escape(meta['metric'])} on the validation split. The test split is never
read by a trial. Storage {html.escape(meta['storage'])}.</p>
{f'<p id="settings">Settings: {html.escape(meta["settings"])}.</p>' if meta.get("settings") else ""}
{refit}
{''.join(figs)}
<table id="leaderboard"><thead><tr>{head}</tr></thead>
<tbody>
{body}
</tbody></table>
</body></html>
"""


def write_results(study, out: Path, meta: dict) -> list[dict]:
    """leaderboard.csv, .md and .html in ``out`` (each written atomically); returns the rows."""
    rows, params = trial_rows(study, meta["metric"])
    states = [r["state"] for r in rows]
    meta = {**meta, "counts": ", ".join(f"{states.count(s)} {s}" for s in ("complete", "pruned", "fail", "running",
                                                                             "waiting") if states.count(s))
            or "no trials"}
    cols = FIXED[:4] + params + FIXED[4:]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([meta["metric"] if c == "value" else c for c in cols])
    w.writerows([["" if r.get(c) is None else r.get(c) for c in cols] for r in rows])
    atomic.write_text(out / "leaderboard.csv", buf.getvalue())
    atomic.write_text(out / "leaderboard.md", markdown(rows, params, meta))
    atomic.write_text(out / "leaderboard.html", html_page(rows, params, meta, plots(study)))
    return rows


def markdown_summary(result) -> str:
    """What `cnnlab tune` prints: the five best trials, and the refit's test accuracy."""
    if not result.rows:
        return "no trials ran\n"
    params = [k for k in result.rows[0] if k not in FIXED]
    for r in result.rows:
        params += [k for k in r if k not in FIXED and k not in params]
    cols = ["trial", "state", "value", *params, "epochs", "time_s"]
    head = [result.metric if c == "value" else c for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c), c) for c in cols) + " |" for r in result.rows[:5]]
    if len(result.rows) > 5:
        lines.append(f"({len(result.rows) - 5} more in the leaderboard)")
    if result.refit:
        rf = result.refit
        lines.append(f"refit of trial {rf['trial']} on training + validation data: test accuracy "
                     f"{rf['test_accuracy']:.4f} (run {result.out / rf['run']})")
    return "\n".join(lines) + "\n"


def track_study(tracker, result) -> int:
    """Each trial not logged before (by this tracker and place) from its run directory, under the
    study's name; the study's best value beside them. Returns how many trials were logged."""
    marker = result.out / "tracked.json"
    done = json.loads(marker.read_text()) if marker.is_file() else {}
    key = f"{tracker.kind} {tracker.uri}"
    logged = set(done.get(key, []))
    new = 0
    for r in result.rows:
        if r["trial"] in logged or r["state"] not in ("complete", "pruned", "fail") or not r.get("run"):
            continue
        run_dir = result.out / r["run"]
        if not run_dir.is_dir():  # a trial of a worker on another machine
            continue
        params = {k: v for k, v in r.items() if k not in FIXED}
        tags = {"cnnlab.trial": str(r["trial"]), "cnnlab.trial_state": r["state"],
                **{f"search.{k}": str(v) for k, v in params.items()}}
        tracker.log_run(run_dir, experiment=result.study, name=f"{result.study}/{run_dir.name}", tags=tags)
        logged.add(r["trial"])
        new += 1
    if result.refit and result.refit["run"] not in logged:
        tracker.log_run(result.out / result.refit["run"], experiment=result.study,
                        name=f"{result.study}/{Path(result.refit['run']).name}",
                        tags={"cnnlab.refit_of": str(result.refit["trial"])})
        logged.add(result.refit["run"])
    done[key] = sorted(logged, key=str)
    atomic.write_text(marker, json.dumps(done, indent=1))
    return new
