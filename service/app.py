"""The composition root: the one place that builds the service from its parts.

It makes the service context (settings, database, artifact store, caches; the dispatcher
once the app starts), mounts the two wings side by side — the REST API
(``service.api.router``) and the web UI (``service.web.router``, its assets at
``/static``) — installs the one error mapping (``service.http_errors``) and puts the front
door (``service.api.boundary``) before everything. The wings know the context, never this
module nor each other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from models.datasets.folder import use_root, use_urls
from service.access import reads_protected
from service.api import router as api
from service.api.boundary import WRITE_METHODS, Boundary
from service.caches import EndedCache, TileCache
from service.context import ServiceContext
from service.http_errors import ErrorMapping
from service.http_semantics import HttpSemantics
from service.observe import RequestIds
from service.orchestration.dispatcher import Dispatcher, Executor
from service.persistence.artifacts import ArtifactStore
from service.persistence.db import make_engine, make_sessionmaker
from service.persistence.migrate import upgrade
from service.settings import Settings
from service.web import router as web
from service.webhooks import Deliverer

ExecutorFactory = Callable[[Settings], Executor]


def build_context(settings: Settings) -> ServiceContext:
    """The context of a service with these settings (no dispatcher yet). Folder datasets
    are read from the settings' datasets root and registered URLs from here on (specs
    name them)."""
    use_root(settings.datasets_path)
    use_urls(settings.dataset_urls)
    engine = make_engine(settings.sqlalchemy_url)
    return ServiceContext(settings=settings, engine=engine,
                          sessions=make_sessionmaker(
                              engine, webhook_events=bool(settings.webhook_events)),
                          artifacts=ArtifactStore(
                              settings.artifact_root,
                              min_free_bytes=settings.artifact_min_free_bytes),
                          ended=EndedCache(), tiles=TileCache())


def make_dispatcher(ctx: ServiceContext, executor: Executor) -> Dispatcher:
    """The dispatcher of ``ctx``'s runs on ``executor``, paced by the settings."""
    settings = ctx.settings
    return Dispatcher(ctx.sessions, executor, artifacts=ctx.artifacts,
                      max_attempts=settings.max_run_attempts,
                      max_cluster_retries=settings.max_cluster_retries,
                      max_in_flight=settings.max_in_flight,
                      max_starting=settings.max_starting,
                      interval_s=settings.dispatch_interval_s,
                      reconcile_every=max(1, round(settings.reconcile_interval_s
                                                   / settings.dispatch_interval_s)))


def make_deliverer(ctx: ServiceContext) -> Deliverer | None:
    """The webhook deliverer of ``ctx``'s outbox, or None without ``webhook_urls``."""
    settings = ctx.settings
    if not settings.webhook_url_list or settings.webhook_secret is None:
        return None
    metrics = ctx.metrics
    return Deliverer(ctx.sessions, settings.webhook_url_list,
                     settings.webhook_secret.get_secret_value(),
                     public_url=settings.public_url, retry_s=settings.webhook_retry_s,
                     on_result=lambda event, ok: (
                         metrics.webhook_deliveries if ok else metrics.webhook_failures
                     ).labels(event).inc())


def create_app(settings: Settings | None = None,
               executor_factory: ExecutorFactory | None = None) -> FastAPI:
    """Build the app. Without an ``executor_factory`` runs stay queued (API only)."""
    settings = settings or Settings()
    ctx = build_context(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            upgrade(settings.sqlalchemy_url)
        if executor_factory is not None:
            ctx.dispatcher = make_dispatcher(ctx, executor_factory(settings))
            if settings.start_dispatcher:
                ctx.dispatcher.start()
        deliverer = make_deliverer(ctx)
        if deliverer is not None:
            deliverer.start()
        try:
            yield
        finally:
            if deliverer is not None:
                deliverer.stop(timeout_s=1.0)
            if (dispatcher := ctx.dispatcher) is not None:
                dispatcher.stop(timeout_s=1.0)
                try:
                    in_flight: int | None = dispatcher.in_flight()
                except Exception:  # the database is away: keep whatever may be running
                    in_flight = None
                close = getattr(dispatcher.executor, "close", None)
                if close is not None:
                    close(in_flight=in_flight)
            ctx.engine.dispose()

    app = FastAPI(title="aelab", version="0.1.0", lifespan=lifespan,
                  description="Autoencoder-compression experiments on Ray.")
    app.state.context = ctx  # read through service.context.context_of only
    errors = ErrorMapping(page=web.error_page)
    errors.install(app)
    # HEAD, conditional GETs and Cache-Control on every route (inside the front door).
    app.add_middleware(HttpSemantics, protected=lambda: reads_protected(settings))
    # Outermost: the token and the body's size are checked before any of it is read.
    app.add_middleware(Boundary, max_body_bytes=settings.max_body_bytes,
                       token=lambda: settings.api_token,
                       needs_token=lambda method, path: method in WRITE_METHODS
                       and path.startswith("/api/"), refuse=errors.refuse)
    # Outermost of all: every request, refused or not, has an id on its log lines.
    ctx.metrics.watch(lambda: ctx)
    app.add_middleware(RequestIds, observe=ctx.metrics.observe,
                       access_log=settings.log_format == "json")
    app.include_router(api.router)
    app.include_router(web.router)
    app.mount("/static", web.static_files(), name="static")
    return app
