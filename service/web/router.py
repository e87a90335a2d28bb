"""The web UI's routes and assets, gathered once for the composition root."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.staticfiles import StaticFiles

from service.web import auth, pages
from service.web.render import STATIC, error_page

__all__ = ["error_page", "router", "static_files"]

router = APIRouter()
router.include_router(auth.router)
router.include_router(pages.router)


def static_files() -> StaticFiles:
    """The assets, served at ``/static`` (``render.static_url`` makes their URLs)."""
    return StaticFiles(directory=STATIC)
