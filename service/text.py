"""User text that may be shown anywhere: which characters a name may not hold, and how
text stored before that rule is shown.

Refused in names (a 422 naming the field): control characters (Unicode category Cc: NUL,
newline, tab …), lone surrogates (Cs), line and paragraph separators (Zl, Zp), and format
controls (Cf) — the bidi overrides and isolates (U+202A–U+202E, U+2066–U+2069) that make
``exe.txt\u202egnp`` read as ``exe.png.txt``, invisible marks (U+200B, U+2060, U+FEFF),
the soft hyphen and the like (Unicode TR #36 §2.4, "Bidirectional Text Spoofing"). The
zero-width non-joiner and joiner (U+200C, U+200D) stay allowed: Persian and Indic
scripts and emoji sequences need them, and they move nothing.

Shown (pages, CSV, Markdown): format controls of stored text as U+FFFD. Control
characters are each format's own business (CSV quotes a newline, Markdown makes it a
space, a page's ``<pre>`` log keeps it).
"""

from __future__ import annotations

import unicodedata

REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp", "Cf"})
JOINERS = frozenset({"\u200c", "\u200d"})
REPLACEMENT = "\ufffd"  # what a refused character of stored text is shown as


def refused(c: str) -> bool:
    """Whether the character ``c`` may not stand in a name."""
    return c not in JOINERS and unicodedata.category(c) in REFUSED_CATEGORIES


def refused_in(text: str) -> list[str]:
    """The refused characters of ``text`` as ``U+XXXX``, sorted, each once."""
    return sorted({f"U+{ord(c):04X}" for c in text if refused(c)})


def format_control(c: str) -> bool:
    """Whether ``c`` is a format control that names may not hold (Cf but the joiners)."""
    return c not in JOINERS and unicodedata.category(c) == "Cf"


def neutral(text: str) -> str:
    """``text`` with each format control replaced by U+FFFD (visible, and moving
    nothing), for showing text stored before names refused them; other text comes back
    as it is."""
    if text.isascii():
        return text
    return "".join(REPLACEMENT if format_control(c) else c for c in text)
