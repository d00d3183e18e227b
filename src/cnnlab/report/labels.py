"""The label-issues page of ``cnnlab check --label-issues`` (label-issues.html, self-contained) and
its grid figure (label-issues.png): the suspects, each with its given label, cleanlab's suggestion
and its label-quality score, worst first."""

from __future__ import annotations

import html
import time
from pathlib import Path

import numpy as np

from .. import atomic
from .html import CSS, _font_face, _png, _table

GRID = 100  # suspects shown on the page
FIGURE = 30  # suspects in label-issues.png


def suspect_titles(rows: list[dict]) -> list[str]:
    return [f"#{r['rank']} {r['path'] or r['split'] + ' ' + str(r['index'])}"[:28]
            + f"\n{r['given']} \u2192 {r['suggested']}\nscore {r['score']:.3f}" for r in rows]


def suspect_grid(found, n: int = FIGURE, cols: int = 10):
    """The ``n`` worst suspects as a figure: each image titled given -> suggested and its score."""
    from ..viz.figures import titled_grid

    rows = found.rows[:n]
    images = [np.asarray(found.images[r["row"]]) for r in rows]
    return titled_grid(images, suspect_titles(rows), cols=min(cols, max(1, len(rows))),
                       empty="no label issues found")


def label_issues_section(found) -> str:
    """The page's body: the summary, the count per class pair, the grid, the table."""
    pairs = _table(["given", "suggested", "images"], [[g, s, f"{n:,}"] for g, s, n in found.pairs], "pairs")
    head = (f"<p><b>{len(found.rows):,}</b> of {found.checked:,} {html.escape(found.split)} images "
            f"({len(found.rows) / max(1, found.checked):.1%}) are probably labelled wrong: cleanlab's confident "
            "learning on out-of-fold probabilities (each image scored by a model that never trained on it). "
            "The score is the out-of-fold probability of the given label (low: suspicious).</p>")
    if not found.rows:
        return head
    grid = f'<img class="fig" src="{_png(suspect_grid(found, GRID), dpi=70)}" alt="the suspects">'
    table = _table(["rank", "split", "index", "path", "given", "suggested", "score", "p(given)"],
                   [[r["rank"], r["split"], r["index"], r["path"], r["given"], r["suggested"], f"{r['score']:.4f}",
                     f"{r['p_given']:.4f}"] for r in found.rows[:GRID]], "issues")
    return (head + f"<h3>Per class pair (given \u2192 suggested)</h3>{pairs}"
            f"<h3>The {min(GRID, len(found.rows))} most suspicious, worst first</h3>{grid}{table}"
            f"<p class=\"note\">All {len(found.rows):,} are in label-issues.csv. Act on it: <code>cnnlab train "
            "SOURCE --exclude label-issues.csv</code> (or <code>--relabel</code> after checking the suggestions)."
            "</p>")


def write_label_page(found, check_text: str = "") -> Path:
    """label-issues.html and label-issues.png in the results folder."""
    from ..atomic import write_with

    t0 = time.perf_counter()
    assert found.out is not None
    fig = suspect_grid(found)
    write_with(found.out / "label-issues.png", lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    names = " ".join(r["given"] + r["suggested"] for r in found.rows[:GRID])
    body = (f"<header><h1>Label issues</h1><div class=\"meta\">{html.escape(str(found.out))}</div></header>"
            f"<section><h2>Label issues</h2>{label_issues_section(found)}</section>"
            + (f"<section><h2>Data check</h2><pre>{html.escape(check_text)}</pre></section>" if check_text else "")
            + f"<p class=\"note\">Written in {time.perf_counter() - t0:.1f} s.</p>")
    page = ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1"><title>cnnlab: label issues</title>'
            f"<style>{_font_face(names)}{CSS}</style></head><body>{body}</body></html>")
    return atomic.write_text(found.out / "label-issues.html", page)
