"""Hangul-capable fonts for figures: NanumGothic, bundled by the koreanize-matplotlib package
(or Debian's fonts-nanum), registered as a fallback after matplotlib's default font."""

from __future__ import annotations

import glob
import logging
import os
from functools import lru_cache

HANGUL_FAMILY = "NanumGothic"
# fontTools reports tables it drops while subsetting ("TSI0 NOT subset; don't know how to subset;
# dropped") as warnings; they are expected for NanumGothic and are not the user's business.
logging.getLogger("fontTools").setLevel(logging.ERROR)


def _font_files() -> list[str]:
    import importlib.util

    files = []
    spec = importlib.util.find_spec("koreanize_matplotlib")  # its font files only: importing it
    for root in (spec.submodule_search_locations or []) if spec else []:  # would change rcParams
        files += glob.glob(os.path.join(root, "fonts", "NanumGothic*.ttf"))
    files += glob.glob("/usr/share/fonts/truetype/nanum/NanumGothic*.ttf")
    return files


@lru_cache(maxsize=1)
def setup_fonts() -> str | None:
    """Register NanumGothic and put it after DejaVu Sans in the sans-serif fallback list.
    Returns the Hangul font file used, or None when none is installed."""
    import matplotlib
    from matplotlib import font_manager

    files = _font_files()
    for f in files:
        font_manager.fontManager.addfont(f)
    if not files:
        return None
    # Explicit families: matplotlib falls back glyph by glyph along font.family, but expands the
    # generic "sans-serif" to a single font.
    matplotlib.rcParams["font.family"] = ["DejaVu Sans", HANGUL_FAMILY]
    matplotlib.rcParams["axes.unicode_minus"] = False
    return next((f for f in files if f.endswith("NanumGothic.ttf")), files[0])


def has_glyphs(font_file: str, text: str) -> bool:
    """Whether ``font_file`` has a glyph for every non-space character of ``text``."""
    from matplotlib.ft2font import FT2Font

    font = FT2Font(font_file)
    cmap = font.get_charmap()
    return all(ord(ch) in cmap for ch in text if not ch.isspace())
