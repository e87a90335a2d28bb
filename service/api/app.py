"""The FastAPI app: built from settings, with one exception mapping for every route."""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from service.api.boundary import WRITE_METHODS, Boundary
from service.api.cache import EndedCache
from service.api.routes import catalog, experiments, health, runs
from service.errors import Conflict, NotFound, Unavailable
from service.http_errors import errors
from service.orchestration.dispatcher import Dispatcher, Executor
from service.persistence.artifacts import ArtifactError, ArtifactStore
from service.persistence.db import make_engine, make_sessionmaker
from service.persistence.migrate import upgrade
from service.persistence.tables import Run
from service.settings import Settings
from service.web import install as install_web

log = logging.getLogger("aelab.api")
ExecutorFactory = Callable[[Settings], Executor]


def _error(status: int, message: str, request_id: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"detail": message}
    if request_id:
        body["request_id"] = request_id
    return JSONResponse(body, status_code=status, headers=headers)


def _utf8(text: str) -> str:
    """``text`` as UTF-8 can carry it: a lone surrogate (``"\\ud800"`` is valid JSON but no
    character) becomes its ``\\ud800`` escape instead of failing the response's encoding."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON can carry it: non-finite floats as ``"NaN"``/``"Infinity"``/
    ``"-Infinity"`` (aelab's one representation), long strings and lists cut, lone
    surrogates escaped, other objects as text — so a 422 never fails to render whatever a
    client sent."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return _utf8(value if len(value) <= 1000 else value[:1000] + "…")
    if depth >= 5:
        return "…"
    if isinstance(value, dict):
        return {_utf8(str(k)[:200]): json_safe(v, depth + 1)
                for k, v in list(value.items())[:100]}
    if isinstance(value, list | tuple):
        return [json_safe(v, depth + 1) for v in value[:100]]
    return json_safe(str(value), depth + 1)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        """422 naming every invalid field, in pydantic's shape, whatever the input held."""
        errors = [{k: json_safe(v) for k, v in e.items() if k in ("type", "loc", "msg",
                                                                   "input", "ctx")}
                  for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(Conflict)
    async def conflict(_: Request, exc: Conflict) -> JSONResponse:
        return _error(409, str(exc))

    @app.exception_handler(ArtifactError)
    async def bad_artifact(_: Request, exc: ArtifactError) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(Unavailable)
    async def unavailable(_: Request, exc: Exception) -> JSONResponse:
        log.warning("dependency unavailable: %s", exc)
        return _error(503, f"service unavailable: {exc}")

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated:
            log.warning("database unavailable: %s", type(exc.orig).__name__)
            return _error(503, "service unavailable: the database cannot be reached",
                          headers={"Retry-After": "5"})
        return await unexpected(request, exc)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = uuid.uuid4().hex[:12]
        log.exception("unhandled error %s on %s %s", request_id, request.method,
                      request.url.path)
        return _error(500, "internal error", request_id)


def create_app(settings: Settings | None = None,
               executor_factory: ExecutorFactory | None = None) -> FastAPI:
    """Build the app. Without an ``executor_factory`` runs stay queued (API only)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            upgrade(settings.sqlalchemy_url)
        dispatcher: Dispatcher | None = None
        if executor_factory is not None:
            executor = executor_factory(settings)
            dispatcher = Dispatcher(app.state.sessions, executor,
                                    artifacts=app.state.artifacts,
                                    max_attempts=settings.max_run_attempts,
                                    max_in_flight=settings.max_in_flight,
                                    interval_s=settings.dispatch_interval_s,
                                    reconcile_every=max(1, round(settings.reconcile_interval_s
                                                                 / settings.dispatch_interval_s)))
            app.state.dispatcher = dispatcher
            if settings.start_dispatcher:
                dispatcher.start()
        try:
            yield
        finally:
            if dispatcher is not None:
                dispatcher.stop(timeout_s=1.0)
                try:
                    in_flight: int | None = dispatcher.in_flight()
                except Exception:  # the database is away: keep whatever may be running
                    in_flight = None
                close = getattr(dispatcher.executor, "close", None)
                if close is not None:
                    close(in_flight=in_flight)
            app.state.engine.dispose()

    app = FastAPI(title="aelab", version="0.1.0", lifespan=lifespan,
                  description="Autoencoder-compression experiments on Ray.")
    engine = make_engine(settings.sqlalchemy_url)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = make_sessionmaker(engine)
    app.state.artifacts = ArtifactStore(settings.artifact_root)
    app.state.ended = EndedCache()  # answers about ended experiments, computed once
    app.state.dispatcher = None

    def dispatcher() -> Dispatcher | None:
        return app.state.dispatcher

    def wake() -> None:
        if (d := dispatcher()) is not None:
            d.wake()

    def stop_runs(running: list[Run]) -> None:
        if (d := dispatcher()) is not None:
            d.cancel(running)
        else:  # nothing executes them here: they end now
            from service.persistence import repository as repo
            from service.persistence.db import transaction
            from service.persistence.tables import Status

            with transaction(app.state.sessions) as s:
                for run in running:
                    repo.finish_run(s, run_id=run.id, status=Status.cancelled,
                                    error="cancelled by the user")

    def ray_status() -> str:
        """What the dispatcher's last pass found (readiness never blocks on Ray)."""
        d = dispatcher()
        if d is None:
            return "disabled"
        if d.executor_error:
            return f"unreachable: {d.executor_error}"[:500]
        if d.submit_error:
            return f"refusing jobs: {d.submit_error}"[:500]
        return "ok" if d.executor.cluster_id else "not checked yet"

    def job_logs(job_id: str) -> str | None:
        d = dispatcher()
        if d is None:
            return None
        try:
            return d.executor.logs(job_id)
        except Unavailable:
            return None

    def dashboard_url() -> str | None:
        if settings.public_dashboard_url:
            return settings.public_dashboard_url
        d = dispatcher()
        return d.executor.dashboard_url if d is not None else None

    app.state.wake_dispatcher = wake
    app.state.stop_runs = stop_runs
    app.state.ray_status = ray_status
    app.state.dashboard_url = dashboard_url
    app.state.job_logs = job_logs

    _install_error_handlers(app)
    # Outermost: the token and the body's size are checked before any of it is read.
    app.add_middleware(Boundary, max_body_bytes=settings.max_body_bytes,
                       token=lambda: settings.api_token,
                       needs_token=lambda method, path: method in WRITE_METHODS
                       and path.startswith("/api/"))
    api = APIRouter(prefix="/api/v1", responses=errors(401, 403, 503))
    for module in (experiments, runs, catalog):
        api.include_router(module.router)
    app.include_router(api)
    app.include_router(health.router)
    install_web(app)
    return app
