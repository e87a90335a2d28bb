"""Webhooks: run and experiment events POSTed to ``AELAB_WEBHOOK_URLS``, signed.

Events: ``run.succeeded``, ``run.failed``, ``run.cancelled``, ``run.pruned`` (a search's
sample its pruner stopped; ``error`` says at which epoch and why) and
``experiment.finished`` (whatever its final status). Each is a JSON object::

    {"event": "run.failed", "delivery_id": "…", "created_at": "…",
     "run": {"id", "experiment_id", "model", "dataset", "seed", "attempt", "status",
             "error"},            # error: its first line, or null
     "measures": {"mse", "psnr", "ssim", "bpp", "q_psnr", "classifier_accuracy", …},
     "url": "https://aelab.example/runs/12"}
    {"event": "experiment.finished", …, "experiment": {"id", "name", "status", "error",
     "runs": {"succeeded": 3, "failed": 1, …}}, "url": "…/experiments/4"}

Headers: ``X-Aelab-Event``, ``X-Aelab-Delivery`` (a UUID per event: the same on every
retry and to every receiver, so a receiver can drop a repeat) and
``X-Aelab-Signature: sha256=<hex HMAC-SHA256 of the exact body with
AELAB_WEBHOOK_SECRET>`` (GitHub's scheme; compare it in constant time).

**An outbox.** The event row (``tables.WebhookEvent``) is written by the repository in
the same transaction as the status change (``record_run_event``,
``record_experiment_event``): a change is never without its event, nor an event without
its change. Only where webhooks are configured (:func:`recording`): the API records them
when ``AELAB_WEBHOOK_URLS`` is set and tells its job drivers to (``webhook_events``,
which travels in their environment while the URLs do not); without URLs nothing is
recorded, so URLs set later never receive old events.

:class:`Deliverer`, a thread of the API, sends pending events; a receiver that does not
answer 2xx within ``TIMEOUT_S`` is retried with exponential backoff (1 s, 2 s, 4 s
… capped at ``MAX_BACKOFF_S``) until ``AELAB_WEBHOOK_RETRY_S`` after the event, then the
event is given up (``failed``, logged). It never blocks the dispatcher (its own thread,
its own short transactions). An event is marked delivered for a receiver as soon as that
receiver accepted it, so an API killed and restarted delivers what was pending then — once;
only a kill between a receiver's 2xx and that mark can repeat it (same delivery id).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from service.persistence.db import WEBHOOK_EVENTS
from service.persistence.tables import Experiment, Measure, Run, WebhookEvent, utcnow
from workers.text import first_line

log = logging.getLogger("aelab.webhooks")
TIMEOUT_S = 5.0  # one POST, connect to last byte
MAX_BACKOFF_S = 300.0
BATCH = 50
HEADLINE = ("mse", "psnr", "ssim", "ms_ssim", "bpp", "q_psnr", "q_ssim",
            "classifier_accuracy", "q_accuracy", "compression_ratio", "training_time_s")
SIGNATURE_HEADER = "X-Aelab-Signature"
DELIVERY_HEADER = "X-Aelab-Delivery"
EVENT_HEADER = "X-Aelab-Event"
STATES = ("pending", "delivered", "failed")


def sign(body: bytes, secret: str) -> str:
    """The ``X-Aelab-Signature`` value of ``body``: ``sha256=`` + hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- events: written by the repository, in the transaction of the change ----------------


def recording(session: Session) -> bool:
    """Whether ``session`` records events: only where webhooks are configured (the
    ``webhook_events`` setting, on by default with ``webhook_urls``; see
    ``persistence.db.make_sessionmaker``), so URLs set later never receive old events."""
    return bool(session.info.get(WEBHOOK_EVENTS))


def record_run_event(session: Session, run: Run) -> None:
    """Queue ``run.<status>`` for a run that has just ended (succeeded, failed, cancelled,
    pruned), when ``session`` records events."""
    if not recording(session):
        return
    measures = session.get(Measure, run.id)
    headline = {name: getattr(measures, name) for name in HEADLINE} if measures else {}
    payload = {"event": f"run.{run.status.value}",
               "run": {"id": run.id, "experiment_id": run.experiment_id, "model": run.model,
                       "dataset": run.dataset, "seed": run.spec.get("seed"),
                       "attempt": run.attempt, "status": run.status.value,
                       "error": first_line(run.error) if run.error else None},
               "measures": {k: v for k, v in headline.items() if v is not None},
               "url": f"/runs/{run.id}"}
    _add(session, payload, experiment_id=run.experiment_id, run_id=run.id)


def record_experiment_event(session: Session, experiment: Experiment) -> None:
    """Queue ``experiment.finished`` for an experiment that has just ended, when
    ``session`` records events."""
    if not recording(session):
        return
    counts = dict(session.execute(
        select(Run.status, func.count()).where(Run.experiment_id == experiment.id)
        .group_by(Run.status)).all())
    payload = {"event": "experiment.finished",
               "experiment": {"id": experiment.id, "name": experiment.name,
                              "status": experiment.status.value,
                              "error": first_line(experiment.error) if experiment.error
                              else None,
                              "runs": {s.value: n for s, n in counts.items()}},
               "url": f"/experiments/{experiment.id}"}
    _add(session, payload, experiment_id=experiment.id, run_id=None)


def _add(session: Session, payload: dict[str, Any], *, experiment_id: int | None,
         run_id: int | None) -> None:
    now = utcnow()
    session.add(WebhookEvent(event=payload["event"], experiment_id=experiment_id,
                             run_id=run_id, body=json.dumps(payload, default=str),
                             state="pending", attempts=0, delivered_to=[],
                             next_attempt_at=now, created_at=now))


def outbox_counts(session: Session) -> dict[str, int]:
    """Events by state (every state, 0 included)."""
    counts = dict(session.execute(select(WebhookEvent.state, func.count())
                                  .group_by(WebhookEvent.state)).all())
    return {state: counts.get(state, 0) for state in STATES}


# --- delivery ---------------------------------------------------------------------------


def backoff_s(attempts: int) -> float:
    """Seconds before retry number ``attempts`` (1, 2, 4, … ``MAX_BACKOFF_S``)."""
    return float(min(MAX_BACKOFF_S, 2 ** max(0, attempts - 1)))


class Deliverer:
    """Sends the outbox's pending events to ``urls``, in a thread (:meth:`start`).

    ``public_url`` turns each event's page path into a link; ``on_result(event, ok)``
    counts every attempt (``service.metrics``)."""

    def __init__(self, sessions: sessionmaker[Session], urls: Sequence[str], secret: str, *,
                 public_url: str | None = None, retry_s: float = 3600.0,
                 interval_s: float = 1.0,
                 on_result: Callable[[str, bool], None] | None = None) -> None:
        self.sessions = sessions
        self.urls = list(urls)
        self.secret = secret
        self.public_url = (public_url or "").rstrip("/")
        self.retry = timedelta(seconds=retry_s)
        self.interval_s = interval_s
        self.on_result = on_result
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = httpx.Client(timeout=TIMEOUT_S, follow_redirects=False)

    def body(self, event: WebhookEvent) -> bytes:
        """The exact bytes sent for ``event`` (the same on every attempt)."""
        payload = json.loads(event.body)
        payload["delivery_id"] = event.delivery_id
        payload["created_at"] = event.created_at.isoformat()
        if self.public_url and str(payload.get("url", "")).startswith("/"):
            payload["url"] = self.public_url + payload["url"]
        return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()

    def _post(self, url: str, event: WebhookEvent, body: bytes) -> str | None:
        """None when the receiver accepted it, else why not (one line)."""
        try:
            answer = self._client.post(url, content=body, headers={
                "Content-Type": "application/json", EVENT_HEADER: event.event,
                DELIVERY_HEADER: event.delivery_id,
                SIGNATURE_HEADER: sign(body, self.secret)})
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {first_line(str(exc))}"
        return None if answer.is_success else f"HTTP {answer.status_code}"

    def deliver_due(self, now: datetime | None = None) -> int:
        """One pass: try every pending event that is due; returns how many were tried."""
        now = now or utcnow()
        with self.sessions() as s:
            due = s.scalars(select(WebhookEvent).where(
                WebhookEvent.state == "pending", WebhookEvent.next_attempt_at <= now)
                .order_by(WebhookEvent.id).limit(BATCH)).all()
            s.expunge_all()
        for event in due:
            body = self.body(event)
            done = list(event.delivered_to or [])
            errors = []
            for url in self.urls:
                if url in done:
                    continue
                error = self._post(url, event, body)
                if self.on_result is not None:
                    self.on_result(event.event, error is None)
                if error is None:
                    done.append(url)
                    self._save(event.id, delivered_to=done)  # this receiver: never again
                else:
                    errors.append(f"{url}: {error}")
            self._settle(event, done, errors)
        return len(due)

    def _save(self, event_id: int, **values: Any) -> None:
        with self.sessions.begin() as s:
            row = s.get(WebhookEvent, event_id)
            if row is not None:
                for key, value in values.items():
                    setattr(row, key, value)

    def _settle(self, event: WebhookEvent, done: list[str], errors: list[str]) -> None:
        now = utcnow()
        attempts = event.attempts + 1
        if not errors:
            self._save(event.id, state="delivered", attempts=attempts, delivered_at=now,
                       last_error=None)
            log.info("webhook %s %s delivered", event.event, event.delivery_id,
                     extra={"run_id": event.run_id, "experiment_id": event.experiment_id})
            return
        error = "; ".join(errors)[:2000]
        retry_at = now + timedelta(seconds=backoff_s(attempts))
        if retry_at - event.created_at > self.retry:
            self._save(event.id, state="failed", attempts=attempts, last_error=error)
            log.error("webhook %s %s given up after %s attempts: %s", event.event,
                      event.delivery_id, attempts, error)
            return
        self._save(event.id, attempts=attempts, last_error=error, next_attempt_at=retry_at)
        log.warning("webhook %s %s not delivered (%s); retried in %.0fs", event.event,
                    event.delivery_id, error, backoff_s(attempts))

    # --- the background loop ----------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="aelab-webhooks",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 3.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        self._client.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.deliver_due()
            except Exception as exc:  # the loop outlives any one bad pass (DB down…)
                log.warning("webhook pass failed: %s: %s", type(exc).__name__,
                            first_line(str(exc)))
            self._stop.wait(self.interval_s)


def events_of(session: Session, *, state: str | None = None) -> list[WebhookEvent]:
    """The outbox's events (of ``state``), oldest first."""
    query = select(WebhookEvent).order_by(WebhookEvent.id)
    if state is not None:
        query = query.where(WebhookEvent.state == state)
    return list(session.scalars(query).all())

