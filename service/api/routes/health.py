"""/healthz (the process answers) and /readyz (its dependencies answer)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from service.client.schemas import Readiness
from service.context import ContextDep

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
