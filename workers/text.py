"""Text for a person from what processes print: colour codes dropped, one line kept.

The one definition of both, for a run's error (``workers.context``), a Ray job's log
(``service.orchestration``) and the CLI's output. Standard library only.
"""

from __future__ import annotations

import re

# Terminal colour and cursor codes (CSI sequences: ESC [ parameters final-letter).
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour and cursor codes."""
    return ANSI.sub("", text)


def first_line(text: str, limit: int = 500) -> str:
    """The first non-empty line of ``text``, colour codes dropped, stripped, at most
    ``limit`` characters ("" when there is none)."""
    line = next((ln.strip() for ln in strip_ansi(text).splitlines() if ln.strip()), "")
    return line[:limit]
