"""The API wing: every route of the REST API, gathered once for the composition root.

The resources (``routes/<resource>.py``, one router each) live under ``/api/v1``; the
health checks at the root, where probes look for them.
"""

from __future__ import annotations

from fastapi import APIRouter

from service.api.routes import catalog, experiments, health, runs
from service.client.schemas import API_PREFIX
from service.http_errors import errors

router = APIRouter()
_resources = APIRouter(prefix=API_PREFIX, responses=errors(401, 403, 503))
for _module in (experiments, runs, catalog):
    _resources.include_router(_module.router)
router.include_router(_resources)
router.include_router(health.router)
