"""The web UI: server-rendered pages, a little JavaScript, charts by uPlot (vendored).

``install(app)`` adds the pages at ``/``, the login, and the static assets (shipped in
this package: no CDN, no Node toolchain). Pages read the database through the same
repository as the API and never import torch.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from service.errors import NotFound
from service.web.auth import LoginRequired, login_redirect
from service.web.gallery import GalleryReader


def install(app: FastAPI) -> None:
    """Mount the UI on ``app`` (after the API's routes, whose paths it never shadows)."""
    from service.web import auth, pages
    from service.web.render import STATIC

    app.state.gallery_reader = GalleryReader(app.state.artifacts)

    @app.exception_handler(LoginRequired)
    async def login_required(_: Request, exc: LoginRequired) -> Response:
        return login_redirect(exc)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> Response:
        # The API answers JSON; a page answers a page.
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": str(exc)}, status_code=404)
        from service.web.render import render

        return render(request, "error.html", status_code=404, title="Not found",
                      message=str(exc))

    api_invalid = app.exception_handlers[RequestValidationError]

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        # The API answers its 422 JSON; a page (``/runs/abc``) answers a page naming the field.
        if request.url.path.startswith("/api/"):
            return await api_invalid(request, exc)
        from service.web.render import render

        fields = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}"
                           for e in exc.errors())
        return render(request, "error.html", status_code=422, title="Bad request",
                      message=fields[:500])

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(auth.router)
    app.include_router(pages.router)
