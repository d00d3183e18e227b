"""The playground page of ``cnnlab serve``: page.html with the runs and a Hangul font subset
filled in (one document, script and style inline, no network)."""

from __future__ import annotations

import json
from importlib import resources


def page_html(runs: list[dict]) -> str:
    from ..report.html import _font_face

    page = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
    names = " ".join(c for r in runs for c in r["classes"])
    data = json.dumps(runs, ensure_ascii=False).replace("</", "<\\/")
    return page.replace("__FONT__", _font_face(names)).replace("__RUNS__", data)
