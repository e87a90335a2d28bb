"""/healthz (the process answers), /readyz (its dependencies answer) and /metrics (the
service in Prometheus's text format: ``service.metrics``)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from service.api.deps import ReadAccess
from service.client.schemas import Readiness
from service.context import ContextDep
from service.http_errors import errors

router = APIRouter(tags=["health"])


@router.get("/healthz", operation_id="healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", operation_id="readyz", response_model=Readiness,
            responses={503: {"model": Readiness,
                             "description": "a dependency does not answer (which, why)"}})
def readyz(ctx: ContextDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        with ctx.sessions() as s:
            s.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means "not ready"
        reason = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        checks["database"] = f"unreachable: {type(exc).__name__}: {reason}"[:500]
    checks["ray"] = ctx.ray_status()
    checks["artifacts"] = ctx.artifacts.full() or "ok"
    ready = all(v in ("ok", "disabled") for v in checks.values())
    return JSONResponse(Readiness(ready=ready, checks=checks).model_dump(),
                        status_code=200 if ready else 503)


@router.get("/metrics", operation_id="metrics", dependencies=[ReadAccess],
            response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}},
                             "description": "Prometheus text exposition format"},
                       **errors(401, 403)})
def metrics(ctx: ContextDep) -> Response:
    """Request counts and latency by route, runs and experiments by status (read from the
    database now), runs in flight, dispatcher passes, warm runners by resource shape,
    webhook deliveries and failures."""
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
