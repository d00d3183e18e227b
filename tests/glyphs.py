"""Reads rendered Hangul back from a page in headless Chromium: boxes (tofu) instead of glyphs are
the bug a user sees, and document.fonts.check cannot: it said True while "티셔츠" showed as □□□."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

_PLACE_REFERENCE = """(sel) => {
  const el = document.querySelector(sel);
  el.scrollIntoView({block: 'center'});
  const range = document.createRange();
  range.selectNodeContents(el);
  const b = range.getBoundingClientRect();
  const cs = getComputedStyle(el);
  let box = document.getElementById('glyph-reference');
  if (!box) {
    box = document.createElement('div'); box.id = 'glyph-reference';
    box.appendChild(document.createElement('span')); document.body.appendChild(box);
  }
  // a white box in a corner away from the element, with the same text, size and weight in the
  // embedded Hangul font alone
  const top = b.top > window.innerHeight / 2 ? 20 : window.innerHeight - 20 - 3 * b.height;
  box.style.cssText = `position:fixed;z-index:99999;left:${b.left - 10}px;top:${top}px;padding:10px;background:#fff`;
  const ref = box.firstChild;
  ref.textContent = el.textContent.trim();
  ref.style.cssText = `white-space:pre;font-family:NanumGothicSubset;font-size:${cs.fontSize};` +
    `font-weight:${cs.fontWeight};font-style:${cs.fontStyle};color:#000;line-height:normal`;
  const r = ref.getBoundingClientRect();
  return {text: ref.textContent, shown: [b.left, b.top, b.width, b.height], ref: [r.left, r.top, r.width, r.height]};
}"""


def _ink(png: bytes) -> np.ndarray:
    """Where the text is: pixels much darker or more saturated than the background."""
    a = np.asarray(Image.open(io.BytesIO(png)).convert("L"), np.float32)
    return a < 0.5 * float(np.median(a))


def hangul_matches_reference(page, selector: str) -> float:
    """Overlap (intersection over union of the inked pixels) between an element's text as the page
    drew it and the same text drawn afresh in the embedded Hangul font: about 1 for glyphs, low for
    boxes."""
    box = page.evaluate(_PLACE_REFERENCE, selector)
    page.wait_for_timeout(50)

    def crop(rect):
        x, y, w, h = rect
        return _ink(page.screenshot(clip={"x": max(0.0, x - 2), "y": max(0.0, y - 2), "width": w + 4, "height": h + 4}))

    shown, ref = crop(box["shown"]), crop(box["ref"])
    page.evaluate("document.getElementById('glyph-reference').remove()")

    def trimmed(m):  # the ink's bounding box: the two need not sit on the same baseline pixel
        rows, cols = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
        return m[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] if len(rows) else m[:0, :0]

    a, b = trimmed(shown), trimmed(ref)
    if a.shape != b.shape:
        hh, ww = max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1])
        a = np.pad(a, ((0, hh - a.shape[0]), (0, ww - a.shape[1])))
        b = np.pad(b, ((0, hh - b.shape[0]), (0, ww - b.shape[1])))
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 0.0
