"""Terminal columns for text with wide characters: a Hangul syllable takes two columns, so tables
of Korean class names line up only when padded by display width, not by ``len``.
Foundation layer: standard library only."""

from __future__ import annotations

import unicodedata


def width(text: str) -> int:
    """Columns ``text`` takes in a terminal: East Asian wide and full-width characters count 2,
    combining marks 0."""
    return sum(0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
               for ch in text)


def clip(text: str, columns: int) -> str:
    """``text`` cut to at most ``columns`` columns."""
    out, used = [], 0
    for ch in text:
        w = width(ch)
        if used + w > columns:
            break
        out.append(ch)
        used += w
    return "".join(out)


def ljust(text: str, columns: int) -> str:
    return text + " " * max(0, columns - width(text))


def rjust(text: str, columns: int) -> str:
    return " " * max(0, columns - width(text)) + text
