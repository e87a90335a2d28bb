"""Structured logs: one JSON object per line (``AELAB_LOG_FORMAT=json``).

Every line carries ``time`` (ISO 8601, UTC), ``level``, ``logger`` and ``message``, and —
where known — ``request_id`` (the API request being served), ``experiment_id`` and
``run_id``. Those ids come, in this order of precedence, from the record itself
(``log.info(..., extra={"run_id": 3})``), from :data:`log_context` (a context variable: a
request's id, set by the API's middleware, stays with that request's task and threads),
and from :func:`bind_process` (a job driver or runner that serves one run at a time).
A traceback goes in ``exc_info`` as text, so the line stays one line.

Plain :mod:`logging` (a :class:`logging.Formatter` subclass), so every library's records
come out the same way; ``configure`` installs it on the root logger.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(name)s %(message)s"
ID_FIELDS = ("request_id", "experiment_id", "run_id", "attempt")

log_context: ContextVar[dict[str, Any] | None] = ContextVar("aelab_log_context", default=None)
_process: dict[str, Any] = {}


def bind_process(**ids: Any) -> None:
    """Ids every record of this process carries from now on (a job driver's run); a value
    of None removes one."""
    for key, value in ids.items():
        if value is None:
            _process.pop(key, None)
        else:
            _process[key] = value


@contextlib.contextmanager
def bound(**ids: Any) -> Iterator[None]:
    """Ids the records logged inside this block carry (this task or thread only)."""
    token = log_context.set({**(log_context.get() or {}), **ids})
    try:
        yield
    finally:
        log_context.reset(token)


def current_ids() -> dict[str, Any]:
    """The ids a record logged here now would carry (process, then context)."""
    return {**_process, **(log_context.get() or {})}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the known ids, then any
    other ``extra`` fields that JSON can hold; ``exc_info`` as the formatted traceback."""

    # Attributes every LogRecord has: not ``extra`` fields.
    _STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
        "message", "asctime", "taskName"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(current_ids())
        for key, value in vars(record).items():
            if key not in self._STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def formatter(fmt: LogFormat) -> logging.Formatter:
    """The formatter of ``fmt``: :class:`JsonFormatter`, or aelab's text lines."""
    return JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)


def configure(fmt: LogFormat, level: int | str = logging.INFO) -> None:
    """Log every record of this process to standard error in ``fmt`` (replacing the root
    logger's handlers); httpx's per-request lines are kept to warnings."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    logging.basicConfig(level=level if isinstance(level, int) else level.upper(),
                        handlers=[handler], force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def uvicorn_log_config(fmt: LogFormat) -> dict[str, Any] | None:
    """uvicorn's ``log_config`` for ``fmt``: its error and access loggers through the
    root handler (one format for every line), or None to keep uvicorn's own text."""
    if fmt != "json":
        return None
    return {"version": 1, "disable_existing_loggers": False,
            "loggers": {name: {"handlers": [], "propagate": True}
                        for name in ("uvicorn", "uvicorn.error", "uvicorn.access")}}
