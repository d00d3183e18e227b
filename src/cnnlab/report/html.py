"""``report.html``: one self-contained file per run (images, font and script inline, no network).

Sections: data, model, training, results (with a clickable confusion matrix), mistakes,
inside the network, config and environment.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .. import atomic
from ..evaluation import most_confused

THUMBS_PER_CELL = 48  # thumbnails kept per confusion-matrix cell
THUMB_MAX = 64  # longest side of a thumbnail, pixels


def _png(fig, dpi: int = 80) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _thumb(img: np.ndarray) -> str:
    arr = img[..., 0] if img.shape[-1] == 1 else img
    im = Image.fromarray(arr)
    if max(im.size) > THUMB_MAX:
        im.thumbnail((THUMB_MAX, THUMB_MAX))
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _font_face(text: str) -> str:
    """An @font-face with NanumGothic subset to the Hangul in ``text`` (a few KB), so Korean
    class names render even on machines without CJK fonts."""
    chars = sorted({ch for ch in text if "\uac00" <= ch <= "\ud7a3" or "\u3130" <= ch <= "\u318f"})
    if not chars:
        return ""
    from ..viz.fonts import setup_fonts

    font_file = setup_fonts()
    if not font_file:
        return ""
    from fontTools import subset

    opts = subset.Options()
    opts.flavor = None
    font = subset.load_font(font_file, opts)
    sub = subset.Subsetter(opts)
    sub.populate(text="".join(chars) + " ")
    sub.subset(font)
    buf = io.BytesIO()
    subset.save_font(font, buf, opts)
    data = base64.b64encode(buf.getvalue()).decode()
    # Hangul only (unicode-range), and first in every font-family list: with a local font such as
    # DejaVu Sans ahead of it, Chromium shaped the first Hangul words it met while the embedded font
    # was still loading with a fallback that has no Hangul, and kept those words as boxes (the first
    # row of the report, the first bar of the serve page: "티셔츠" as □□□).
    return ("@font-face{font-family:'NanumGothicSubset';"
            f"src:url(data:font/ttf;base64,{data}) format('truetype');unicode-range:U+AC00-D7A3,U+3130-318F;}}")


def settings_text(run) -> str:
    """What was run, in one sentence: the images trained on, the epochs, recipe and seed."""
    c, splits = run.config, run.data.get("splits") or {}
    if run.metrics.get("status") == "imported":
        return f"Imported from {run.metrics.get('imported', {}).get('file', '?')}; not trained here."
    lr = c.get("lr")
    val = f", validated on {splits['validation']:,}" if splits.get("validation") else ", no validation split"
    return (f"Trained on {splits.get('train', 0):,} images{val}; up to {c.get('epochs')} epochs "
            f"(recipe {c.get('recipe') or 'keras'}), batch {c.get('batch_size')}, {c.get('optimizer')} "
            f"lr {'default' if lr is None else lr}, seed {c.get('seed')}, pixel scaling {c.get('scale')}.")


def _json_script(obj) -> str:
    """JSON safe inside a <script> element."""
    return json.dumps(obj, ensure_ascii=False).replace("</", "<\\/")


def _table(headers: list[str], rows: list[list], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _confusion_html(cm: list[list[int]], names: list[str]) -> str:
    k = len(names)
    top = max(max(r) for r in cm) or 1
    head = "<th>true \\ predicted</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = []
    for i in range(k):
        cells = []
        for j in range(k):
            v = cm[i][j]
            alpha = 0.08 + 0.85 * v / top
            color = ("transparent" if v == 0 else f"rgba(31,119,180,{alpha:.2f})" if i == j
                     else f"rgba(214,39,40,{min(alpha * 2, 0.9):.2f})")
            cells.append(f'<td class="cell" data-cell="{i},{j}" style="background:{color}" '
                         f'title="true {html.escape(names[i])}, predicted {html.escape(names[j])}: {v}">{v}</td>')
        rows.append(f"<tr><th>{html.escape(names[i])}</th>{''.join(cells)}</tr>")
    return f'<table class="confusion"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _cell_thumbnails(x, y, probs, ids, names, rng) -> dict:
    pred = probs.argmax(1)
    cells = {}
    for i in range(len(names)):
        for j in range(len(names)):
            idx = np.nonzero((y == i) & (pred == j))[0]
            if len(idx) == 0:
                continue
            if len(idx) > THUMBS_PER_CELL:  # the most confident first, as mistakes are read
                idx = idx[np.argsort(-probs[idx, j])][:THUMBS_PER_CELL] if i != j else \
                    np.sort(rng.choice(idx, THUMBS_PER_CELL, replace=False))
            cells[f"{i},{j}"] = {"total": int(((y == i) & (pred == j)).sum()), "items": [
                {"id": ids[n] if ids is not None else f"#{n}", "src": _thumb(x[n]),
                 "p": round(float(probs[n, j]), 4)} for n in idx]}
    return cells


CSS = """
body{font-family:NanumGothicSubset,system-ui,-apple-system,'Segoe UI','DejaVu Sans',sans-serif;
margin:0;color:#222;background:#fafafa}
header{background:#1f3b57;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
header .meta{opacity:.85;font-size:14px;margin-top:6px}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:8px 28px;z-index:2}
nav a{margin-right:16px;color:#1f3b57;text-decoration:none;font-size:14px}
section{padding:12px 28px;border-bottom:1px solid #eee;background:#fff;margin:10px 0}
h2{font-size:18px;color:#1f3b57}img.fig{max-width:100%;height:auto;border:1px solid #eee}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f2f4f7}td:first-child,th:first-child{text-align:left}
table.confusion td.cell{cursor:pointer;min-width:34px;text-align:center}
table.confusion td.cell:hover,table.confusion td.selected{outline:2px solid #111}
#thumbs{display:flex;flex-wrap:wrap;gap:8px;margin-top:10px}
#thumbs figure{margin:0;width:92px;font-size:11px;text-align:center}
#thumbs img{width:64px;height:64px;image-rendering:pixelated;border:1px solid #ccc}
figure.pair{display:inline-block;margin:4px 12px 4px 0;font-size:11px}
figure.pair img{width:56px;image-rendering:pixelated;margin-right:2px;border:1px solid #ddd}
.kpi{display:inline-block;margin-right:28px}.kpi b{font-size:22px;display:block}
pre{background:#f6f8fa;padding:10px;overflow:auto;font-size:12px}
.note{color:#666;font-size:13px}
"""

JS = """
const cells = JSON.parse(document.getElementById('cells').textContent);
const names = JSON.parse(document.getElementById('names').textContent);
const box = document.getElementById('thumbs'), title = document.getElementById('thumbs-title');
function esc(s){return String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));}
document.querySelectorAll('td.cell').forEach(td => td.addEventListener('click', () => {
  document.querySelectorAll('td.selected').forEach(e => e.classList.remove('selected'));
  td.classList.add('selected');
  const [i, j] = td.dataset.cell.split(',').map(Number);
  const c = cells[td.dataset.cell] || {total: 0, items: []};
  title.textContent = `true ${names[i]}, predicted ${names[j]}: ${c.total} image(s)` +
    (c.items.length < c.total ? `, ${c.items.length} shown` : '');
  box.innerHTML = c.items.map(t => `<figure class="thumb"><img src="${t.src}" alt="${esc(t.id)}">` +
    `<figcaption>${esc(t.id)}<br>true ${esc(names[i])}<br>pred ${esc(names[j])} ` +
    `(${t.p.toFixed(2)})</figcaption></figure>`).join('');
}));
"""


def _edits_html(data: dict) -> str:
    """What --exclude and --relabel changed in the data, when they were given."""
    e = data.get("label_edits") or {}
    parts = []
    if "excluded" in e:
        parts.append(f"{e['excluded']:,} images excluded (listed in {html.escape(Path(e['exclude_file']).name)})")
    if "relabelled" in e:
        parts.append(f"{e['relabelled']:,} labels changed (listed in {html.escape(Path(e['relabel_file']).name)})")
    return f"<p><b>Label edits</b>: {'; '.join(parts)}.</p>" if parts else ""


def _check_html(run) -> str:
    """The data check made before training (RunDir.CHECK): findings and near-duplicate pairs."""
    from .. import viz
    from ..data.check import findings
    from ..runs import RunDir

    rd = RunDir(run.path)
    if not (rd / rd.CHECK).is_file():
        return '<p class="note">No data check was recorded for this run (trained with --no-check).</p>'
    try:
        report = rd.read_optional(rd.CHECK) or {}
        found = findings(report)
    except (ValueError, KeyError, TypeError):
        return f'<p class="note">{rd.CHECK} is damaged.</p>'
    items = "".join(f"<li><b>{html.escape(level)}</b>: {html.escape(msg)}</li>" for level, msg in found) \
        or "<li>no problems found</li>"
    ex = report["exact_duplicates"]
    text = (f"<p>Exact duplicates within splits: {', '.join(f'{k} {v:,}' for k, v in ex['within'].items())}; "
            f"across splits: {', '.join(f'{k} {v:,}' for k, v in ex['across'].items()) or 'none'}.")
    nd = report.get("near_duplicates") or {}
    if nd:
        text += (" Near duplicates across splits (mean pixel difference &le; "
                 f"{nd.get('max_mad')}): {', '.join(f'{k} {v:,}' for k, v in nd['across'].items())}.")
    pairs = []
    for e in nd.get("examples", [])[:6]:
        try:
            a = viz.run_split(run, e["a"]["split"]).x[e["a"]["index"]]
            b = viz.run_split(run, e["b"]["split"]).x[e["b"]["index"]]
        except Exception:  # the run's data cannot be reloaded: list the findings without pictures
            break
        cap = html.escape(f"{e['a']['split']} #{e['a']['index']} ~ {e['b']['split']} #{e['b']['index']} "
                          f"(difference {e['mean_abs_diff']})")
        pairs.append(f'<figure class="pair"><img src="{_thumb(a)}" alt="{cap}"><img src="{_thumb(b)}" '
                     f'alt="{cap}"><figcaption>{cap}</figcaption></figure>')
    return f"<ul>{items}</ul>{text}</p>" + ("<div>" + "".join(pairs) + "</div>" if pairs else "")


def build_report(run, out: str | Path | None = None, max_mistakes: int = 12, split: str = "test") -> Path:
    """Write ``report.html`` for a run, its results on ``split`` (reloaded from the run's source):
    the test split, or the validation split of a run trained without one."""
    from .. import viz
    from ..runs import RunDir

    t0 = time.perf_counter()
    path = Path(out) if out else run.path / RunDir.REPORT
    names = run.class_names
    split_name = split
    part = viz.run_split(run, split_name)
    probs = run.predict_proba(part.x)
    ev = viz.evaluation(run, split_name)
    rng = np.random.default_rng(0)
    corrupted = RunDir(run.path).read_optional(RunDir.CORRUPTIONS)  # cnnlab evaluate --corruptions' table
    figs, has_conv = _figures(run, part, probs, max_mistakes, rng, corrupted)
    cells = _cell_thumbnails(part.x, part.y, probs, part.ids, names, rng)
    title = f"{run.spec.name} on {run.data.get('source', '?')}"
    body = _body(run, ev, split_name, figs, has_conv, cells, corrupted)
    body = body.replace("{elapsed}", f"{time.perf_counter() - t0:.1f}")
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>cnnlab report: {html.escape(title)}</title>"
            f"<style>{_font_face(' '.join(names) + title)}{CSS}</style></head><body>{body}</body></html>")
    atomic.write_text(path, page)
    return path


def _figures(run, split, probs: np.ndarray, max_mistakes: int, rng, table: dict | None) -> tuple[dict, bool]:
    """The report's figures as data URLs, by key, and whether the model has convolutions."""
    from .. import viz
    from ..viz.inspect import conv_indices

    names = run.class_names
    figs = {}
    figs["counts"] = _png(viz.class_counts(run))
    train = viz.run_split(run, "train")
    figs["samples"] = _png(viz.figures.samples(train.x, train.y, names, n=24, cols=8))
    figs["diagram"] = _png(viz.diagram(run))
    if run.history:
        figs["curves"] = _png(viz.curves(run))
        figs["curves_twin"] = _png(viz.curves(run, twin=True))
    figs["mistakes"] = _png(viz.figures.misclassified(split.x, split.y, probs, names, max_mistakes, split.ids))
    figs["top_losses"] = _png(viz.top_losses(split.x, split.y, probs, names, 16, ids=split.ids))
    figs["calibration"] = _png(viz.reliability_of(run, probs, split.y))
    if table and len(split.x):  # one example per corruption: the same seeded images as the table's
        from ..data.corruptions import corrupt

        level = max(table["severities"])
        shown = [corrupt(np.asarray(split.x[:1]), n, level, table["seed"])[0] for n in table["table"]]
        figs["corruptions"] = _png(viz.figures.titled_grid(shown, [f"{n}\nseverity {level}" for n in table["table"]],
                                                           cols=8))
    has_conv = bool(conv_indices(run.model))
    if has_conv:
        figs["kernels"] = _png(viz.kernels(run))
        if viz.initial_kernels(run) is not None:  # at initialisation, on the same colour scale
            figs["kernels_untrained"] = _png(viz.kernels(run, untrained=True))
        sample = split.x[int(rng.integers(len(split.x)))]
        figs["feature_maps"] = _png(viz.feature_maps(run, sample), dpi=70)
        pick = rng.choice(len(split.x), size=min(8, len(split.x)), replace=False)
        figs["gradcam"] = _png(viz.gradcam(run, split.x[pick],
                                           [f"{names[split.y[i]]}" for i in pick]))
    figs["histograms"] = _png(viz.histograms(run))
    return figs, has_conv


def _corruptions_html(table: dict | None, img) -> str:
    """cnnlab evaluate --corruptions' table, when it was run, with an example of each corruption."""
    if not table:
        return ""
    levels = [str(s) for s in table["severities"]]
    rows = [[name, *(f"{row[s]:.4f}" for s in levels)] for name, row in table["table"].items()]
    return (f"<h3>Robustness</h3><p>Accuracy on the {html.escape(table['split'])} split ({table['n']:,} images) "
            f"under corruptions: clean {table['clean']:.4f}, mean corrupted {table['mean']:.4f}, relative drop "
            f"{table['relative_drop']:.1%} (<code>cnnlab evaluate RUN --corruptions</code>).</p>"
            + _table(["corruption", *(f"severity {s}" for s in levels)], rows, "corruptions")
            + img("corruptions", "one image under each corruption"))


def _results_html(ev: dict, split_name: str, names: list[str], img, corrupted: dict | None = None) -> str:
    """The Results section: the numbers, the classification report, the clickable confusion
    matrix, the most confused pairs and the top losses."""
    report = ev["classification_report"]
    rep_rows = [[n, f"{report[n]['precision']:.4f}", f"{report[n]['recall']:.4f}",
                 f"{report[n]['f1-score']:.4f}", int(report[n]["support"])] for n in [*names, "macro avg",
                                                                                     "weighted avg"]]
    pairs = ev.get("most_confused") or most_confused(ev["confusion_matrix"], names)
    confused = [[p["actual"], p["predicted"], f"{p['count']:,}"] for p in pairs[:10]]
    return f"""<section id="results"><h2>Results</h2>
<div class="kpi"><b>{ev['accuracy']:.4f}</b>{split_name} accuracy</div>
<div class="kpi"><b>{ev['loss']:.4f}</b>{split_name} loss</div>
<div class="kpi"><b>{ev['n']:,}</b>{split_name} images</div>
<h3>Classification report</h3>{_table(['class', 'precision', 'recall', 'f1-score', 'support'], rep_rows, 'report')}
<h3>Confusion matrix</h3><p class="note">Click a cell to see its {split_name} images.</p>
{_confusion_html(ev['confusion_matrix'], names)}
<h3 id="thumbs-title" class="note">No cell selected.</h3><div id="thumbs"></div>
<h3>Most confused</h3><p class="note">Actual class taken for another, most often first.</p>
{_table(['actual', 'predicted', 'images'], confused, 'confused')}
<h3>Top losses</h3>{img('top_losses', 'the images with the highest loss')}
<h3>Calibration</h3><p class="note">Per bin of top probability, how often the prediction is right; the
diagonal is honest. Raw softmax, and after temperature scaling when the run has it (ECE: 15 bins).</p>
{img('calibration', 'reliability diagrams')}{_corruptions_html(corrupted, img)}</section>"""


def _body(run, ev: dict, split_name: str, figs: dict, has_conv: bool, cells, corrupted: dict | None) -> str:
    """The report page's body: its sections, with ``{elapsed}`` left for the time it took."""
    import yaml

    from ..models.spec import Spec

    names = run.class_names
    m = run.metrics
    spec: Spec = run.spec
    summary_rows = [[l.name, l.type, "(None, " + ", ".join(map(str, l.output_shape)) + ")", f"{l.params:,}"]
                    for l in spec.layers]
    summary_rows.append(["total", "", "", f"{spec.total_params:,}"])
    summary_rows.append(["trainable / non-trainable", "", "",
                         f"{spec.trainable_params:,} / {spec.non_trainable_params:,}"])
    acc = ev["accuracy"]
    data = run.data
    split_sizes = ", ".join(f"{k} {v:,}" for k, v in data.get("splits", {}).items())
    stop = m.get("stop_reason", "")
    best = m.get("best_epoch")
    title = f"{spec.name} on {data.get('source', '?')}"
    env = m.get("environment", {})

    def img(key, alt):
        return f'<img class="fig" src="{figs[key]}" alt="{alt}">' if key in figs else ""

    body = f"""
<header><h1>{html.escape(title)}</h1>
<div class="meta">run {html.escape(run.path.name)} · status {html.escape(str(m.get('status', '?')))} ·
{split_name} accuracy {acc:.4f} · {spec.total_params:,} parameters</div></header>
<nav><a href="#data">Data</a><a href="#model">Model</a><a href="#training">Training</a><a href="#results">Results</a>
<a href="#mistakes">Mistakes</a><a href="#inside">Inside the network</a><a href="#config">Config</a></nav>
<section id="data"><h2>Data</h2>
<p>Source <b>{html.escape(str(data.get('source')))}</b>: {split_sizes}; images {data.get('image_size')}
{html.escape(str(data.get('color_mode')))}; {len(names)} classes.</p>
{_edits_html(data)}
{img('counts', 'class counts per split')}
<h3>Data check</h3>{_check_html(run)}
<h3>Random training images with their labels</h3>{img('samples', 'sample images')}</section>
<section id="model"><h2>Model</h2>{_table(['layer', 'type', 'output shape', 'params'], summary_rows, 'summary')}
{img('diagram', 'layer diagram')}</section>
<section id="training"><h2>Training</h2>
<p id="settings">{html.escape(settings_text(run))}</p>
<p>{m.get('epochs_run', '?')} epochs; best epoch {best} ({html.escape(str(m.get('monitor', '')))});
{html.escape(stop)}. Training time {m.get('train_time_s', 0):.1f} s.</p>
{img('curves', 'loss and accuracy curves')}{img('curves_twin', 'loss and accuracy on two axes')}</section>
{_results_html(ev, split_name, names, img, corrupted)}
<section id="mistakes"><h2>Mistakes</h2><p class="note">The most confident misclassifications first.</p>
{img('mistakes', 'most confident misclassifications')}</section>
<section id="inside"><h2>Inside the network</h2>
{'<h3>First-layer kernels: trained and at initialisation, on one colour scale</h3><div class="pair">'
 + img('kernels', 'first-layer kernels, trained') + img('kernels_untrained', 'first-layer kernels, untrained')
 + '</div>' if has_conv else ''}
{'<h3>Feature maps of every convolutional layer</h3>' + img('feature_maps', 'feature maps') if has_conv else ''}
<h3>Weights: trained against initial</h3>{img('histograms', 'weight histograms')}
{'<h3>Grad-CAM</h3>' + img('gradcam', 'Grad-CAM heat-maps') if has_conv else ''}</section>
<section id="config"><h2>Config and environment</h2>
<pre>{html.escape(yaml.safe_dump(run.config, sort_keys=False, allow_unicode=True))}</pre>
<pre>{html.escape(json.dumps(env, indent=2, ensure_ascii=False))}</pre>
<p class="note">Report written in {{elapsed}} s by cnnlab {html.escape(str(env.get('cnnlab', '')))}.</p></section>
<script type="application/json" id="cells">{_json_script(cells)}</script>
<script type="application/json" id="names">{_json_script(names)}</script>
<script>{JS}</script>"""
    return body
