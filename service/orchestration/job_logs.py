"""Why a Ray job ended, in one line a person can act on, from its log and Ray's message."""

from __future__ import annotations

import re
import signal

from workers.text import first_line, strip_ansi

_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Failed)\b.*)$")


def exit_reason(message: str) -> str | None:
    """"the driver exited with code 137 (SIGKILL: …)" from Ray's job message, if it has
    an exit code."""
    match = re.search(r"exit code (-?\d+)", message)
    if match is None:
        return None
    code = int(match.group(1))
    signum = code - 128 if code > 128 else -code if code < 0 else 0
    why = ""
    if signum:
        try:
            why = f" ({signal.Signals(signum).name}"
        except ValueError:
            why = f" (signal {signum}"
        why += ": killed, e.g. out of memory)" if signum == signal.SIGKILL else ")"
    return f"the driver exited with code {code}{why}"


def last_error_line(log: str) -> str | None:
    """The last ``SomeError: message`` line of a log (ANSI codes dropped), if any."""
    for line in reversed(strip_ansi(log).splitlines()):
        match = _ERROR_LINE.match(line.strip())
        if match:
            return match.group(1)[:500]
    return None


def failure_line(log: str, message: str) -> str:
    """Why a job ended: the last error its log shows, else the exit code in Ray's
    ``message`` (with its signal), else the message's first line."""
    return last_error_line(log) or exit_reason(message) or \
        first_line(message or "the job failed")
