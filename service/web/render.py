"""Templates and static assets of the web UI, shipped inside the package."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from service.access import has_session, reads_protected
from service.context import context_of
from service.orchestration.ray_executor import ray_job_url
from service.text import neutral
from service.web.format import FILTERS, fmt_value

HERE = Path(__file__).parent
STATIC = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters.update(FILTERS)
templates.env.trim_blocks = True
templates.env.lstrip_blocks = True


def _shown(value: Any) -> Any:
    """Every value a template writes: text with its bidi and other format controls shown
    as U+FFFD (``service.text``), so a name stored before names refused them cannot
    reorder a title, a link or a table; markup the templates built stays markup."""
    if isinstance(value, Markup):
        return Markup(neutral(str(value)))
    return neutral(value) if isinstance(value, str) else value


templates.env.finalize = _shown


@lru_cache(maxsize=64)
def static_url(path: str) -> str:
    """``/static/<path>?v=<content hash>``: browsers may cache assets for good, and an
    upgraded package changes the URL."""
    digest = hashlib.sha256((STATIC / path).read_bytes()).hexdigest()[:10]
    return f"/static/{path}?v={digest}"


templates.env.globals.update(static_url=static_url, ray_job_url=ray_job_url,
                             fmt_value=fmt_value)


def render(request: Request, name: str, status_code: int = 200,
           **context: Any) -> HTMLResponse:
    """Render template ``name`` with what every page needs (login state, dashboard)."""
    ctx = context_of(request.app)
    protected = reads_protected(ctx.settings)
    context.update(
        reads_protected=protected,
        logged_in=protected and has_session(request, ctx.settings),
        dashboard=ctx.dashboard_url(),
        path=request.url.path,
    )
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    """A page answering an error (the error mapping's, ``service.http_errors``)."""
    return render(request, "error.html", status_code=status, title=title, message=message)
