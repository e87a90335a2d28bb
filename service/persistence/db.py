"""Engine and sessions. SQLite gets WAL and foreign keys; PostgreSQL is used as is."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, **kwargs: Any) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        if "poolclass" not in kwargs:
            kwargs.setdefault("pool_size", 20)  # the API thread pool, without overflow churn
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        # WAL is a property of the database file: set it once, not on every connection
        # (switching modes needs an exclusive lock, which fails under concurrent load).
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        return engine
    if parsed.get_backend_name() == "postgresql":
        # Never hang on a database that went away: fail the connect, report 503, retry.
        kwargs.setdefault("connect_args", {"connect_timeout": 5})
    return create_engine(url, pool_pre_ping=True, **kwargs)


# ``Session.info`` key: whether this process's status changes record webhook events
# (``service.webhooks``; the ``webhook_events`` setting).
WEBHOOK_EVENTS = "aelab.webhook_events"


def make_sessionmaker(engine: Engine, *, webhook_events: bool = False
                      ) -> sessionmaker[Session]:
    """Sessions on ``engine``; with ``webhook_events``, a run's or an experiment's end
    written through them also writes its webhook event (``service.webhooks``)."""
    return sessionmaker(engine, expire_on_commit=False,
                        info={WEBHOOK_EVENTS: webhook_events})


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work commits together or not at all."""
    with factory() as session, session.begin():
        yield session
