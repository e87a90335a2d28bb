"""How a value becomes a cell of a results format.

One representation for numbers that are not finite, in every format: the strings ``NaN``,
``Infinity`` and ``-Infinity`` (a PSNR of a perfect reconstruction is Infinity). A measure
that was not taken is ``null`` in JSON, an empty cell in CSV and ``n/a`` in Markdown —
never confused with an infinite one.

User text is escaped where it lands: a CSV cell never starts a spreadsheet formula
(OWASP's CSV-injection rule: a leading ``=``, ``+``, ``-``, ``@``, tab or CR gets a ``'``
prefix), and Markdown cells and titles cannot break a table or start a line. In both, bidi
and other format controls (which names may no longer hold) show as U+FFFD
(``service.text``).
"""

from __future__ import annotations

import math
import unicodedata
from typing import Any

from service.text import neutral

NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def finite_or_token(value: Any) -> Any:
    """``value``, or its token (``NaN``/``Infinity``/``-Infinity``) when not finite."""
    if isinstance(value, float) and not math.isfinite(value):
        return NON_FINITE[str(value)]
    return value


def csv_cell(value: Any) -> Any:
    """A CSV cell: text that a spreadsheet would run as a formula gets a ``'`` prefix;
    numbers stay numbers (a negative number is not text); None is an empty cell."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = neutral(value)  # a stored bidi override cannot reorder the row
        return "'" + value if value.startswith(FORMULA_START) else value
    return finite_or_token(value)


def md_text(value: str) -> str:
    """Text safe in a Markdown table cell or heading: one line (control characters and
    line separators become spaces, so it cannot add a heading or a row), ``|`` and ``\\``
    escaped (it cannot add a column), the brackets of links and images, code backticks and
    ``*`` emphasis backslash-escaped so they stay text, HTML's ``<``, ``>`` and ``&`` as
    entities."""
    text = neutral("".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c
                           for c in value))  # and bidi/format controls shown as U+FFFD
    text = text.replace("\\", "\\\\")
    for mark in "|[]`*":
        text = text.replace(mark, "\\" + mark)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").strip()
