"""Data access: keyword-only functions, session first."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.orm import Session, defer, selectinload

from models.catalog import variant_names
from models.datasets import dataset_names
from models.plan import EpochMetrics
from service.errors import Conflict, NotFound
from service.persistence.tables import (
    FINISHED,
    Artifact,
    CodecResult,
    EpochMetric,
    Experiment,
    Measure,
    Run,
    RunAttempt,
    SizeMeasure,
    Status,
    utcnow,
)
from service.persistence.tables import (
    LrTrial as LrTrialRow,
)
from service.spec import ExperimentSpec
from service.webhooks import record_experiment_event, record_run_event
from workers.measures import MEASURES, CodecRow, RunMeasures, SizeMeasures
from workers.store import LrTrial


def create_experiment(session: Session, *, spec: ExperimentSpec,
                      idempotency_key: str | None = None) -> Experiment:
    """One experiment row and one queued run per grid point, each holding its own run
    spec, in the caller's transaction. A search's runs are made as its samples are
    proposed (``service.orchestration.sampling``), none here."""
    experiment = Experiment(name=spec.name, spec=spec.model_dump(mode="json"),
                            status=Status.queued, idempotency_key=idempotency_key)
    grid = spec.run_specs() if spec.search is None else []
    experiment.runs = [Run(model=r.model, dataset=r.dataset, status=Status.queued,
                           epochs_total=r.epochs, latent_dim=r.effective_latent_dim,
                           seed=r.seed,
                           rd_lambda=r.effective_rd_lambda,
                           spec=r.model_dump(mode="json"))
                       for r in grid]
    session.add(experiment)
    session.flush()
    return experiment


def _unknown(session: Session, column: Any, names: Sequence[str], known: Sequence[str]
             ) -> list[str]:
    candidates = [n for n in names if n not in set(known)]
    if not candidates:
        return []
    stored = set(session.scalars(select(column).where(column.in_(candidates)).distinct()))
    return [n for n in candidates if n not in stored]


def unknown_models(session: Session, *, names: Sequence[str]) -> list[str]:
    """Those of ``names`` that are neither a catalog variant nor the variant of a stored
    run (a composed recipe is known by its runs)."""
    return _unknown(session, Run.model, names, variant_names()) if names else []


def unknown_datasets(session: Session, *, names: Sequence[str]) -> list[str]:
    """Those of ``names`` that are neither a dataset here (built-in or an available
    plugin's) nor the dataset of a stored run (an uninstalled plugin's is known by its
    runs)."""
    return _unknown(session, Run.dataset, names, dataset_names()) if names else []


def stored_names(session: Session) -> tuple[list[str], list[str]]:
    """The distinct models and datasets of stored runs, sorted: what filters may name
    besides the catalog's."""
    return (sorted(session.scalars(select(Run.model).distinct())),
            sorted(session.scalars(select(Run.dataset).distinct())))


def stored_recipes(session: Session, *, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The recipe (as its run spec stores it) of the earliest stored run of each of
    ``names`` that has one: what a composed name already means here."""
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(names):
        spec = session.scalars(select(Run.spec).where(Run.model == name).order_by(Run.id)
                               .limit(1)).first()
        if isinstance(spec, dict) and isinstance(spec.get("recipe"), dict):
            out[name] = spec["recipe"]
    return out


def get_by_idempotency_key(session: Session, *, key: str) -> Experiment | None:
    return session.scalars(select(Experiment).where(Experiment.idempotency_key == key)
                           .options(selectinload(Experiment.runs))).one_or_none()


MAX_ID = 2**31 - 1  # ids are INTEGER: PostgreSQL's int4 (SQLite's would go to 2**63 - 1)


def _in_range(what: str, ident: int) -> None:
    """Ids outside what a database stores name no row: 404, never a driver's overflow."""
    if not 1 <= ident <= MAX_ID:
        raise NotFound(what, ident)


def get_experiment(session: Session, *, experiment_id: int, with_runs: bool = True
                   ) -> Experiment:
    _in_range("experiment", experiment_id)
    query = select(Experiment).where(Experiment.id == experiment_id)
    if with_runs:
        query = query.options(selectinload(Experiment.runs))
    experiment = session.scalars(query).one_or_none()
    if experiment is None:
        raise NotFound("experiment", experiment_id)
    return experiment


# What an experiment's and a run's summaries show (the API's list and detail, which clients
# poll): read as Core rows, which cost a fraction of ORM objects with their specs.
EXPERIMENT_SUMMARY = (Experiment.id, Experiment.name, Experiment.status, Experiment.error,
                      Experiment.created_at, Experiment.started_at, Experiment.finished_at)
RUN_SUMMARY = (Run.id, Run.experiment_id, Run.model, Run.dataset, Run.rd_lambda, Run.status,
               Run.phase, Run.epoch, Run.epochs_total, Run.lr, Run.attempt, Run.error,
               Run.ray_job_id, Run.created_at, Run.started_at, Run.finished_at)


def experiment_summary(session: Session, *, experiment_id: int) -> Any:
    """One experiment's ``EXPERIMENT_SUMMARY`` columns; NotFound when there is none."""
    _in_range("experiment", experiment_id)
    row = session.execute(select(*EXPERIMENT_SUMMARY)
                          .where(Experiment.id == experiment_id)).one_or_none()
    if row is None:
        raise NotFound("experiment", experiment_id)
    return row


def experiment_spec(session: Session, *, experiment_id: int) -> dict[str, Any]:
    """The experiment's stored spec alone (``{}`` when there is no such experiment)."""
    return session.scalar(select(Experiment.spec).where(Experiment.id == experiment_id)) or {}


def run_summaries(session: Session, *, experiment_id: int) -> Sequence[Any]:
    """An experiment's runs' ``RUN_SUMMARY`` columns, in grid order."""
    return session.execute(select(*RUN_SUMMARY).where(Run.experiment_id == experiment_id)
                           .order_by(Run.id)).all()


def _contains(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, its own ``%``/``_`` taken literally."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def list_experiments(session: Session, *, status: Status | None = None, limit: int = 20,
                     before_id: int | None = None, name: str | None = None,
                     model: str | None = None, dataset: str | None = None
                     ) -> tuple[Sequence[Any], int | None]:
    """Newest first; returns the page (rows of ``EXPERIMENT_SUMMARY``) and the cursor of
    the next page (or None). ``name`` matches a part of the name (any case);
    ``model``/``dataset`` keep the experiments with a run of that variant/dataset."""
    query = select(*EXPERIMENT_SUMMARY).order_by(Experiment.id.desc()).limit(limit + 1)
    if status is not None:
        query = query.where(Experiment.status == status)
    if name:
        query = query.where(Experiment.name.ilike(_contains(name), escape="\\"))
    for column, value in ((Run.model, model), (Run.dataset, dataset)):
        if value:
            query = query.where(select(Run.id).where(Run.experiment_id == Experiment.id,
                                                     column == value).exists())
    if before_id is not None and before_id <= MAX_ID:  # a larger cursor bounds nothing
        query = query.where(Experiment.id < before_id)
    rows = session.execute(query).all()
    page = rows[:limit]
    return page, (page[-1].id if len(rows) > limit else None)


def run_counts(session: Session, *, experiment_ids: Sequence[int]
               ) -> dict[int, dict[str, int]]:
    """Per experiment: how many runs are in each status, and the total."""
    counts: dict[int, dict[str, int]] = {i: {"total": 0} for i in experiment_ids}
    query = select(Run.experiment_id, Run.status, func.count()) \
        .where(Run.experiment_id.in_(experiment_ids)).group_by(Run.experiment_id, Run.status)
    for experiment_id, status, n in session.execute(query).all():
        counts[experiment_id][Status(status).value] = n
        counts[experiment_id]["total"] += n
    return counts


def runs_of(session: Session, *, experiment_ids: Sequence[int]) -> dict[int, list[Run]]:
    """The runs of each experiment (grid order), without their specs: what a list of
    experiments shows of its runs' progress."""
    out: dict[int, list[Run]] = {i: [] for i in experiment_ids}
    query = select(Run).options(defer(Run.spec)).where(Run.experiment_id.in_(experiment_ids)) \
        .order_by(Run.id)
    for run in session.scalars(query):
        out[run.experiment_id].append(run)
    return out


# Orders of GET /runs: a run column or an orderable measure (the measures table),
# ascending; "-name" descending.
RUN_ORDERS: dict[str, Any] = {
    "id": Run.id, "lr": Run.lr, "latent_dim": Run.latent_dim,
    **{m.name: getattr(Measure, m.name) for m in MEASURES if m.orderable},
}


class BadCursor(ValueError):
    """A runs cursor that this order did not issue."""


# A cursor's sort value that JSON cannot carry as a number: its token (a run's PSNR may be
# Infinity, a diverged run's MSE NaN; the cursor must stand on such a run too).
_CURSOR_TOKENS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def encode_run_cursor(order_by: str, value: Any, run_id: int) -> str:
    """``[order_by, the last row's sort value (None, a number or a non-finite token), its
    run id]`` as URL-safe base64 JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        value = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    raw = json.dumps([order_by, value, run_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _refuse_constant(token: str) -> None:
    raise ValueError(f"bare {token} in a cursor")


def decode_run_cursor(order_by: str, cursor: str) -> tuple[Any, int]:
    """The (sort value, run id) of a cursor :func:`encode_run_cursor` wrote for this
    ``order_by``. Raises :class:`BadCursor` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        order, value, run_id = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, TypeError) as exc:
        raise BadCursor("not a cursor of GET /runs") from exc
    if order != order_by:
        raise BadCursor(f"this cursor pages order_by={order}, not {order_by}")
    if isinstance(value, str) and value in _CURSOR_TOKENS:
        value = _CURSOR_TOKENS[value]
    if not isinstance(run_id, int) or isinstance(run_id, bool) or isinstance(value, bool) \
            or not (value is None or isinstance(value, int | float)):
        raise BadCursor("not a cursor of GET /runs")
    if not 0 <= run_id <= MAX_ID or (isinstance(value, int) and abs(value) > 2**53):
        raise BadCursor("not a cursor of GET /runs (out of range)")
    return value, run_id


def list_runs(session: Session, *, experiment_ids: Sequence[int] = (),
              models: Sequence[str] = (), datasets: Sequence[str] = (),
              statuses: Sequence[Status] = (), latent_dims: Sequence[int] = (),
              order_by: str = "-id", limit: int = 50, cursor: str | None = None,
              ids: Sequence[int] = ()
              ) -> tuple[list[tuple[Run, Measure | None, str]], str | None]:
    """Runs across experiments as (run, its measures, its experiment's name), filtered,
    ordered by ``order_by`` (a key of :data:`RUN_ORDERS`, ``-`` for descending; runs
    without the value come last either way, ties by id in the same direction) and paged
    by keyset: returns the page and the cursor of the next one (or None). Each filter
    keeps the runs with any of its values (all runs when it is empty)."""
    descending = order_by.startswith("-")
    key = order_by.removeprefix("-")
    column = RUN_ORDERS[key]  # KeyError: the route validates the name
    query = select(Run, Measure, Experiment.name).options(defer(Run.spec)) \
        .join(Experiment, Experiment.id == Run.experiment_id) \
        .outerjoin(Measure, Measure.run_id == Run.id)
    filters = [(Run.experiment_id, experiment_ids), (Run.model, models),
               (Run.dataset, datasets), (Run.status, statuses),
               (Run.latent_dim, latent_dims), (Run.id, ids)]
    for col, values in filters:
        if values:
            # An integer beyond INTEGER names no row (and must not overflow the driver).
            kept = [v for v in values if not isinstance(v, int) or -MAX_ID <= v <= MAX_ID]
            query = query.where(col.in_(kept))
    if cursor is not None:
        value, after = decode_run_cursor(order_by, cursor)
        next_id = (Run.id < after) if descending else (Run.id > after)
        if key == "id":
            query = query.where(next_id)
        elif value is None:  # among the runs without the value, last in either order
            query = query.where(column.is_(None), next_id)
        else:
            # NaN compares above every number on both databases (PostgreSQL's rule; SQLite
            # keeps it as the text 'NaN', and text sorts after numbers), so it pages too.
            beyond = (column < value) if descending else (column > value)
            query = query.where(or_(beyond, and_(column == value, next_id), column.is_(None)))
    nulls_last = case((column.is_(None), 1), else_=0)
    direction = (lambda c: c.desc()) if descending else (lambda c: c.asc())
    query = query.order_by(nulls_last, direction(column), direction(Run.id)).limit(limit + 1)
    rows: list[tuple[Run, Measure | None, str]] = [
        (r, m, name) for r, m, name in session.execute(query).all()]
    page = rows[:limit]
    if len(rows) <= limit:
        return page, None
    run, measure, _ = page[-1]
    source = measure if column.class_ is Measure else run
    last = getattr(source, key) if source is not None else None
    return page, encode_run_cursor(order_by, last, run.id)


def get_run(session: Session, *, run_id: int, detail: bool = False) -> Run:
    _in_range("run", run_id)
    query = select(Run).where(Run.id == run_id)
    if detail:
        query = query.options(selectinload(Run.epochs), selectinload(Run.lr_trials),
                              selectinload(Run.measures), selectinload(Run.size_measures),
                              selectinload(Run.artifacts),
                              selectinload(Run.attempts), selectinload(Run.experiment))
    run = session.scalars(query).one_or_none()
    if run is None:
        raise NotFound("run", run_id)
    return run


def results(session: Session, *, experiment_id: int) -> list[tuple[Run, Measure | None]]:
    get_experiment(session, experiment_id=experiment_id, with_runs=False)
    query = select(Run, Measure).outerjoin(Measure, Measure.run_id == Run.id) \
        .where(Run.experiment_id == experiment_id).order_by(Run.id)
    return [(r, m) for r, m in session.execute(query).all()]


def codec_results(session: Session, *, experiment_id: int, kind: str | None = None
                  ) -> list[tuple[Run, CodecResult]]:
    """The codec rows of an experiment's runs (``kind``: matched or curve; None: both),
    by run then insertion order."""
    query = select(Run, CodecResult).join(CodecResult, CodecResult.run_id == Run.id) \
        .where(Run.experiment_id == experiment_id).order_by(Run.id, CodecResult.id)
    if kind is not None:
        query = query.where(CodecResult.kind == kind)
    return [(r, c) for r, c in session.execute(query).all()]


def size_results(session: Session, *, experiment_id: int
                 ) -> list[tuple[Run, SizeMeasure]]:
    """The measures at other sizes of an experiment's runs, by run then size."""
    query = select(Run, SizeMeasure).join(SizeMeasure, SizeMeasure.run_id == Run.id) \
        .where(Run.experiment_id == experiment_id).order_by(Run.id, SizeMeasure.size)
    return [(r, m) for r, m in session.execute(query).all()]


def find_artifact(session: Session, *, run_id: int, name: str) -> Artifact:
    get_run(session, run_id=run_id)
    artifact = session.scalars(select(Artifact).where(Artifact.run_id == run_id,
                                                      Artifact.name == name)).one_or_none()
    if artifact is None:
        raise NotFound("artifact", f"{name!r} of run {run_id}")
    return artifact


def has_artifact(session: Session, *, run_id: int, name: str) -> bool:
    return session.scalar(select(func.count()).select_from(Artifact).where(
        Artifact.run_id == run_id, Artifact.name == name)) > 0


def request_cancel(session: Session, *, experiment_id: int) -> tuple[Experiment, list[Run]]:
    """Cancel queued runs now; returns the experiment and its running runs, which the
    dispatcher must stop on Ray. Finished experiments cannot be cancelled (409).

    The experiment is ``cancelled`` at once; it has *finished* (``finished_at``, its
    ``experiment.finished`` event) once no run of it is left running: now when none runs,
    else when the last one ends (:func:`refresh_experiment_status`)."""
    experiment = get_experiment(session, experiment_id=experiment_id)
    if experiment.status in FINISHED:
        raise Conflict(f"experiment {experiment_id} is already {experiment.status.value}")
    now = utcnow()
    running = []
    for run in experiment.runs:
        if run.status == Status.queued:
            run.status, run.finished_at, run.updated_at = Status.cancelled, now, now
            record_run_event(session, run)
        elif run.status == Status.running:
            running.append(run)
    experiment.status = Status.cancelled
    if not running:
        experiment.finished_at = now
        record_experiment_event(session, experiment)
    return experiment, running


def delete_experiment(session: Session, *, experiment_id: int) -> list[tuple[int, str]]:
    """Delete a finished experiment with its rows; returns each run's (id, uid), which
    name its artifact and trial-storage folders."""
    experiment = get_experiment(session, experiment_id=experiment_id)
    if experiment.status not in FINISHED:
        raise Conflict(f"experiment {experiment_id} is {experiment.status.value}: "
                       "cancel it first")
    runs = [(r.id, r.uid) for r in experiment.runs]
    session.delete(experiment)
    return runs


# --- what the dispatcher and the run store need ------------------------------------------


def planned_runs(spec: dict[str, Any]) -> int | None:
    """The runs a search experiment will have made once every sample is proposed
    (num_samples × models × datasets), read from its stored spec; None for a grid."""
    search = spec.get("search")
    if not search:
        return None
    return int(search.get("num_samples", 10)) * len(spec["models"]) * len(spec["datasets"])


def refresh_experiment_status(session: Session, *, experiment_id: int) -> None:
    """Derive the experiment's status from its runs (single UPDATE when it changes). A
    search has not ended while samples remain to be proposed; pruned runs ended as
    planned (not failures). A cancelled experiment stays cancelled; it finishes once its
    last run has ended."""
    experiment = session.get(Experiment, experiment_id)
    if experiment is None:
        return
    counts = dict(session.execute(
        select(Run.status, func.count()).where(Run.experiment_id == experiment_id)
        .group_by(Run.status)).all())
    now = utcnow()
    total = sum(counts.values())
    finished = sum(counts.get(s, 0) for s in FINISHED)
    if experiment.status == Status.cancelled:
        if finished == total and experiment.finished_at is None:
            experiment.finished_at = now  # its last running run has stopped
            record_experiment_event(session, experiment)
        return
    planned = planned_runs(experiment.spec)
    if finished == total and (planned is None or total >= planned):
        if counts.get(Status.failed):
            experiment.status = Status.failed
            experiment.error = f"{counts[Status.failed]} of {total} runs failed"
        elif counts.get(Status.cancelled):
            experiment.status = Status.cancelled
        else:
            experiment.status = Status.succeeded
        if experiment.finished_at is None:  # it ends now: its event, in this transaction
            experiment.finished_at = now
            record_experiment_event(session, experiment)
    elif (counts.get(Status.running) or finished) and experiment.status == Status.queued:
        experiment.status = Status.running
        experiment.started_at = experiment.started_at or now


def experiments_left_unsettled(session: Session) -> Sequence[int]:
    """Experiments whose runs have all ended but whose own status has not (still queued or
    running, or cancelled without ``finished_at``). Two runs of one experiment that end
    at the same moment on PostgreSQL (read committed) each derive the experiment's status
    while the other's run still reads as running, and neither ends it;
    :func:`refresh_experiment_status` settles them (a search with samples still to
    propose stays running)."""
    active = select(Run.id).where(Run.experiment_id == Experiment.id,
                                  Run.status.in_((Status.queued, Status.running))).exists()
    has_runs = select(Run.id).where(Run.experiment_id == Experiment.id).exists()
    return session.scalars(select(Experiment.id).where(
        or_(Experiment.status.in_((Status.queued, Status.running)),
            and_(Experiment.status == Status.cancelled, Experiment.finished_at.is_(None))),
        has_runs, ~active).order_by(Experiment.id)).all()


def queued_runs(session: Session, *, limit: int) -> Sequence[Run]:
    """Oldest experiment first, then grid order."""
    return session.scalars(
        select(Run).where(Run.status == Status.queued)
        .order_by(Run.experiment_id, Run.id).limit(limit)).all()


def running_runs(session: Session) -> Sequence[Run]:
    return session.scalars(select(Run).where(Run.status == Status.running)
                           .order_by(Run.id)).all()


def running_runs_of_cancelled(session: Session) -> Sequence[Run]:
    """Runs still running in a cancelled experiment: a cancel was recorded, but whoever
    recorded it died before the runs' jobs were stopped."""
    return session.scalars(
        select(Run).join(Experiment, Experiment.id == Run.experiment_id)
        .where(Run.status == Status.running, Experiment.status == Status.cancelled)
        .order_by(Run.id)).all()


def jobs_outliving_their_runs(session: Session, *, job_ids: Sequence[str]
                              ) -> list[tuple[str, int, bool]]:
    """Of ``job_ids`` (jobs still in flight), those of this database's run attempts that
    must not run any more: their run was cancelled, or has moved on to a later attempt.
    Each as (job id, run id, whether it is the run's current attempt). Jobs no attempt
    here names (another service's; a deleted run's) are not returned."""
    if not job_ids:
        return []
    rows = session.execute(
        select(RunAttempt.job_id, RunAttempt.attempt, Run.id, Run.status, Run.attempt)
        .join(Run, Run.id == RunAttempt.run_id)
        .where(RunAttempt.job_id.in_(list(job_ids)))).all()
    return [(job_id, run_id, attempt == current)
            for job_id, attempt, run_id, status, current in rows
            if status == Status.cancelled or attempt < current]


def set_run(session: Session, *, run_id: int, **values: Any) -> None:
    values.setdefault("updated_at", utcnow())
    session.execute(update(Run).where(Run.id == run_id).values(**values))


def finish_run(session: Session, *, run_id: int, status: Status, error: str | None = None,
               only_if: Sequence[Status] = (Status.running,),
               attempt: int | None = None, lost_to: str | None = None) -> bool:
    """Move a run to a final status unless it already left ``only_if`` (or, given
    ``attempt``, moved on to another attempt); True if it did. Its current attempt's row
    ends with it (``lost_to``: what that attempt was lost to, when it was)."""
    now: datetime = utcnow()
    query = update(Run).where(Run.id == run_id, Run.status.in_(only_if))
    if attempt is not None:
        query = query.where(Run.attempt == attempt)
    result = session.execute(query.values(status=status, error=error, finished_at=now,
                                          updated_at=now, phase=None))
    changed = result.rowcount > 0  # type: ignore[attr-defined]
    if changed:
        run = session.get(Run, run_id)
        assert run is not None
        session.refresh(run)
        end_attempt(session, run_id=run_id, attempt=run.attempt, status=status, error=error,
                    lost_to=lost_to)
        if status in FINISHED:  # its webhook event, in this transaction (service.webhooks)
            record_run_event(session, run)
        refresh_experiment_status(session, experiment_id=run.experiment_id)
    return changed


SUBMITTED = "submitted"  # a run's phase from its job's submit until its pipeline starts


def start_attempt(session: Session, *, run_id: int, attempt: int, job_id: str,
                  cluster: str | None) -> bool:
    """The run's attempt goes to ``job_id`` on ``cluster``: recorded before the submit.
    Only a run still queued at that attempt starts (one cancelled or deleted since it was
    read stays as it is); True if it started."""
    now = utcnow()
    result = session.execute(
        update(Run).where(Run.id == run_id, Run.attempt == attempt,
                          Run.status == Status.queued)
        .values(status=Status.running, phase=SUBMITTED, ray_job_id=job_id, cluster=cluster,
                started_at=now, error=None, updated_at=now))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        return False
    session.add(RunAttempt(run_id=run_id, attempt=attempt, job_id=job_id, cluster=cluster,
                           status=Status.running))
    return True


def unsubmit(session: Session, *, run_id: int, attempt: int) -> bool:
    """A submit that failed: the run goes back to the queue as the same attempt, unless its
    driver started after all (a submit can fail after Ray took the job) or the run ended
    or moved on meanwhile; True if it went back."""
    result = session.execute(
        update(Run).where(Run.id == run_id, Run.attempt == attempt,
                          Run.status == Status.running, Run.phase == SUBMITTED)
        .values(status=Status.queued, phase=None, ray_job_id=None, cluster=None,
                started_at=None, updated_at=utcnow()))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        return False
    session.execute(RunAttempt.__table__.delete().where(RunAttempt.run_id == run_id,
                                                        RunAttempt.attempt == attempt))
    return True


def end_attempt(session: Session, *, run_id: int, attempt: int, status: Status,
                error: str | None, lost_to: str | None = None) -> None:
    session.execute(update(RunAttempt).where(
        RunAttempt.run_id == run_id, RunAttempt.attempt == attempt,
        RunAttempt.finished_at.is_(None)).values(status=status, error=error,
                                                 lost_to=lost_to, finished_at=utcnow()))


LOST_TO_CLUSTER = "cluster"  # the attempt's Ray cluster is confirmed gone
LOST_TO_RUN = "run"  # the attempt's driver died


def lost_attempts(session: Session, *, run_id: int, attempt: int) -> dict[str, int]:
    """How many of the run's attempts before ``attempt`` were lost to each cause
    (``LOST_TO_CLUSTER``, ``LOST_TO_RUN``): every earlier attempt was lost (only a loss
    re-queues a run); one lost before causes were recorded counts as the run's."""
    cluster = session.scalar(select(func.count()).select_from(RunAttempt).where(
        RunAttempt.run_id == run_id, RunAttempt.attempt < attempt,
        RunAttempt.lost_to == LOST_TO_CLUSTER)) or 0
    return {LOST_TO_CLUSTER: cluster, LOST_TO_RUN: attempt - cluster}


def requeue(session: Session, *, run_id: int, attempt: int, reason: str,
            lost_to: str = LOST_TO_RUN) -> bool:
    """Attempt ``attempt`` was lost (to ``lost_to``): the run is queued again as the next
    attempt, from scratch (its epochs and LR trials are cleared; the attempt's error and
    cause stay)."""
    result = session.execute(
        update(Run).where(Run.id == run_id, Run.attempt == attempt,
                          Run.status == Status.running)
        .values(status=Status.queued, attempt=attempt + 1, phase=None, ray_job_id=None,
                cluster=None, epoch=0, lr=None, updated_at=utcnow()))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        return False
    end_attempt(session, run_id=run_id, attempt=attempt, status=Status.failed, error=reason,
                lost_to=lost_to)
    session.execute(EpochMetric.__table__.delete().where(EpochMetric.run_id == run_id))
    session.execute(LrTrialRow.__table__.delete().where(LrTrialRow.run_id == run_id))
    return True


def fence(session: Session, *, run_id: int, attempt: int,
          ended: Sequence[Status] = ()) -> Status | None:
    """Hold the run for a write by its driver of ``attempt``: None when that attempt is
    the run's current one and running — or ended in one of ``ended`` (a pruned run's log,
    written after) — (the row is then locked until the transaction ends), else the status
    that refuses the write (``cancelled``, or ``queued``/… when another attempt owns the
    run; ``running`` when a later attempt runs)."""
    result = session.execute(
        update(Run).where(Run.id == run_id, Run.attempt == attempt,
                          Run.status.in_([Status.running, *ended]))
        .values(updated_at=utcnow()))
    if result.rowcount == 1:  # type: ignore[attr-defined]
        return None
    status = session.scalar(select(Run.status).where(Run.id == run_id))
    return status if status is not None else Status.cancelled


def record_epoch(session: Session, *, run_id: int, metrics: EpochMetrics) -> None:
    # A resumed run reports an epoch again: the newest report wins.
    session.execute(EpochMetric.__table__.delete().where(
        EpochMetric.run_id == run_id, EpochMetric.epoch == metrics.epoch))
    session.add(EpochMetric(run_id=run_id, **asdict(metrics)))
    set_run(session, run_id=run_id, epoch=metrics.epoch)


def record_lr_trials(session: Session, *, run_id: int, trials: Sequence[LrTrial],
                     chosen_lr: float) -> None:
    session.execute(LrTrialRow.__table__.delete().where(LrTrialRow.run_id == run_id))
    for t in trials:
        session.add(LrTrialRow(run_id=run_id, **asdict(t)))
    set_run(session, run_id=run_id, lr=chosen_lr)


def record_measures(session: Session, *, run_id: int, measures: RunMeasures,
                    codecs: Sequence[CodecRow] = (), sizes: Sequence[SizeMeasures] = ()
                    ) -> None:
    """Store a run's measures (one column each), its codec rows and its measures at other
    sizes, replacing what an earlier attempt stored."""
    existing = session.get(Measure, run_id)
    if existing is not None:
        session.delete(existing)
        session.flush()
    session.add(Measure(run_id=run_id, **measures.model_dump()))
    session.execute(CodecResult.__table__.delete().where(CodecResult.run_id == run_id))
    for row in codecs:
        session.add(CodecResult(run_id=run_id, **row.model_dump()))
    session.execute(SizeMeasure.__table__.delete().where(SizeMeasure.run_id == run_id))
    for at in sizes:
        session.add(SizeMeasure(run_id=run_id, **at.model_dump()))


def record_artifact(session: Session, *, run_id: int, name: str, kind: str, uri: str,
                    content_type: str, size: int, checksum: str) -> None:
    session.execute(Artifact.__table__.delete().where(Artifact.run_id == run_id,
                                                      Artifact.name == name))
    session.add(Artifact(run_id=run_id, name=name, kind=kind, uri=uri,
                         content_type=content_type, size=size, checksum=checksum))
