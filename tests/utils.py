"""Builders and doubles shared by tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from service.context import context_of

API = "/api/v1"
REPO = Path(__file__).resolve().parents[1]  # the repository's root


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str,
             interval_s: float = 1.0, explain: Callable[[], str] | None = None) -> Any:
    """``predicate()`` once it is truthy; on timeout an AssertionError naming ``what``,
    followed by ``explain()`` (what the test saw, for the reader of a failed CI run)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    detail = ""
    if explain is not None:
        try:
            detail = "\n" + explain()
        except Exception as exc:  # the explanation must not hide the timeout
            detail = f"\n(explaining failed: {exc!r})"
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}{detail}")


def experiment(client: TestClient, exp_id: int) -> dict[str, Any]:
    return client.get(f"{API}/experiments/{exp_id}").json()


def execute_runs(client: TestClient, experiment: dict[str, Any],
                 lr: dict[str, float] | None = None, data_root: str = "/unused"
                 ) -> list[bool]:
    """Run an experiment's runs one by one in this process, through the one pipeline and
    the database run store (no Ray): the outcomes in run order. ``lr`` overrides the
    fixed LR per model; ``data_root`` is where real datasets are (MNIST: installed there
    from the offline copy)."""
    from service.orchestration.run_store import DbRunStore
    from service.persistence import repository as repo
    from workers.context import RunEnv
    from workers.pipeline import LocalSteps, run_pipeline
    from workers.spec import RunSpec

    app = client.app
    outcomes = []
    for run in experiment["runs"]:
        with context_of(app).sessions() as s:
            spec = RunSpec.model_validate(repo.get_run(s, run_id=run["id"]).spec)
        if lr and run["model"] in lr:
            spec = spec.model_copy(update={
                "lr_search": spec.lr_search.model_copy(update={"lr": lr[run["model"]]})})
        with context_of(app).sessions.begin() as s:
            repo.set_run(s, run_id=run["id"], status=repo.Status.running)
        store = DbRunStore(context_of(app).sessions, context_of(app).artifacts, run["id"])
        env = RunEnv(data_root=data_root, weights_dir="/unused", allow_download=False)
        outcomes.append(run_pipeline(spec, store, LocalSteps(env)))
    return outcomes
