"""Plain-text tables for the terminal, aligned by display width.

A CJK character or an emoji takes two terminal columns and a combining accent none, so padding by
``len()`` misaligns every row that holds one (channel names are arbitrary text).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence


def display_width(text: str) -> int:
    """The terminal columns ``text`` takes: 2 for wide characters, 0 for combining ones."""
    width = 0
    for char in text:
        if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def aligned(rows: Sequence[Sequence[str]], *, last_free: bool = False) -> list[str]:
    """``rows`` as lines whose columns line up, two spaces apart, trailing spaces stripped.

    ``last_free``: the last column is not padded nor counted (a long free-text column).
    """
    if not rows:
        return []
    columns = len(rows[0]) - (1 if last_free else 0)
    widths = [max(display_width(row[i]) for row in rows) for i in range(columns)]
    lines = []
    for row in rows:
        cells = [cell + " " * (width - display_width(cell)) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, *row[columns:]]).rstrip())
    return lines
