"""The service context: what every handler may use, built once by the composition root
(``service.app``) and reached through one dependency, :data:`ContextDep`.

It holds the settings, the database's sessions, the artifact store, the dispatcher (None
while the app runs without one, and before its lifespan starts it) and the answers'
caches, and does what handlers ask of the running service: wake the dispatcher, stop runs,
read a job's live log, say where the Ray dashboard is and how Ray answers. Handlers never
read ``app.state``; they declare ``ctx: ContextDep`` (or one of the narrower aliases
below, each read from the context).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.caches import EndedCache, TileCache
from service.errors import Unavailable
from service.logins import LoginGuard
from service.metrics import ServiceMetrics
from service.orchestration.dispatcher import Dispatcher
from service.persistence import repository as repo
from service.persistence.artifacts import ArtifactStore
from service.persistence.db import transaction
from service.persistence.tables import Run, Status
from service.settings import Settings


@dataclass
class ServiceContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    artifacts: ArtifactStore
    ended: EndedCache  # the API's answers about ended experiments, computed once
    tiles: TileCache  # the web UI's gallery tiles, cut once
    dispatcher: Dispatcher | None = None  # set by the lifespan when runs are executed
    logins: LoginGuard = field(default_factory=LoginGuard)  # throttled and ended sessions
    metrics: ServiceMetrics = field(default_factory=ServiceMetrics)  # GET /metrics

    def wake(self) -> None:
        """Tell the dispatcher that runs were queued (no-op without one)."""
        if self.dispatcher is not None:
            self.dispatcher.wake()

    def stop_runs(self, running: list[Run]) -> None:
        """Stop runs whose cancellation was recorded: their jobs are stopped through the
        dispatcher; without one nothing executes them here, so they end now."""
        if self.dispatcher is not None:
            self.dispatcher.cancel(running)
            return
        with transaction(self.sessions) as s:
            for run in running:
                repo.finish_run(s, run_id=run.id, status=Status.cancelled,
                                error="cancelled by the user")

    def ray_status(self) -> str:
        """Ray as the dispatcher's last pass found it (readiness never blocks on Ray):
        ``ok``, ``disabled`` (no dispatcher), ``not checked yet`` or what is wrong."""
        d = self.dispatcher
        if d is None:
            return "disabled"
        if d.executor_error:
            return f"unreachable: {d.executor_error}"[:500]
        if d.submit_error:
            return f"refusing jobs: {d.submit_error}"[:500]
        return "ok" if d.executor.cluster_id else "not checked yet"

    def job_logs(self, job_id: str) -> str | None:
        """A job driver's live log from the executor; None without a dispatcher, when the
        executor does not know the job, or cannot be reached."""
        if self.dispatcher is None:
            return None
        try:
            return self.dispatcher.executor.logs(job_id)
        except Unavailable:
            return None

    def dashboard_url(self) -> str | None:
        """The Ray dashboard users are sent to: ``public_dashboard_url`` when set, else
        the executor's (None while unknown)."""
        if self.settings.public_dashboard_url:
            return self.settings.public_dashboard_url
        return self.dispatcher.executor.dashboard_url if self.dispatcher is not None else None


def context_of(app: FastAPI) -> ServiceContext:
    """The context the composition root built for ``app``."""
    context: ServiceContext = app.state.context
    return context


# Dependencies that do no blocking I/O are `async def`: FastAPI would otherwise run each
# in the thread pool, and those hops cost more than the handlers' own work.


async def get_context(request: Request) -> ServiceContext:
    return context_of(request.app)


ContextDep = Annotated[ServiceContext, Depends(get_context)]


async def get_settings(ctx: ContextDep) -> Settings:
    return ctx.settings


async def get_sessions(ctx: ContextDep) -> sessionmaker[Session]:
    # Handlers open a session around their queries only, so a connection goes back to
    # the pool before the response is serialised and sent.
    return ctx.sessions


async def get_artifacts(ctx: ContextDep) -> ArtifactStore:
    return ctx.artifacts


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionsDep = Annotated[sessionmaker[Session], Depends(get_sessions)]
ArtifactsDep = Annotated[ArtifactStore, Depends(get_artifacts)]
