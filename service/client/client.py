"""The client proper: one typed method per API call, with retries and checked downloads.

Retries: a request that never reached the server (connection refused, connect timeout) is
sent again whatever its method; one that may have reached it (read errors, a dropped
connection) and a ``503`` are retried only when repeating it is harmless: ``GET``, and
``POST /experiments`` with its ``Idempotency-Key`` (one is generated per call unless given,
and every retry of the call reuses it). Waits grow exponentially with jitter and honour
``Retry-After``. Errors raise :class:`~service.client.errors.AelabError` subclasses; a
refused spec raises :class:`~service.client.errors.InvalidRequest` whose ``errors`` are the
API's field errors (``loc``, ``msg``, ``type``), exactly as the API named them.
"""

from __future__ import annotations

import builtins
import email.utils
import hashlib
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import httpx
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.client.errors import (
    ChecksumMismatch,
    NotFoundError,
    ServiceUnavailable,
    Unreachable,
    UnsafeArtifactName,
    WaitTimeout,
    api_error,
)
from service.client.schemas import (
    API_PREFIX,
    ArtifactOut,
    Catalog,
    DryRun,
    ExperimentItem,
    ExperimentOut,
    ExperimentPage,
    LogOut,
    RateDistortion,
    Readiness,
    ResultFormat,
    ResultsTable,
    RunDetail,
)
from service.client.specs import SpecLike, load_spec
from service.client.states import Status

if TYPE_CHECKING:
    import pandas

DEFAULT_URL = "http://127.0.0.1:8000"


class ClientSettings(BaseSettings):
    """Where the server is and how to authenticate: ``AELAB_URL`` and ``AELAB_API_TOKEN``
    (the same token variable the server reads), from the environment or ``.env``."""

    model_config = SettingsConfigDict(env_prefix="AELAB_", env_file=".env", extra="ignore")

    url: str = DEFAULT_URL
    api_token: SecretStr | None = None


def _change_key(experiment: ExperimentOut) -> tuple[Any, ...]:
    """What a watcher sees change: the experiment's status and each run's progress."""
    return (experiment.status, experiment.error,
            tuple((r.id, r.status, r.phase, r.epoch, r.epochs_total, r.attempt, r.lr, r.error)
                  for r in experiment.runs))


# --- the client -----------------------------------------------------------------------


class Client:
    """A typed client of one aelab server.

    ``url`` and ``token`` default to ``AELAB_URL`` (else ``http://127.0.0.1:8000``) and
    ``AELAB_API_TOKEN``. ``retries`` is how many times a retryable request is sent again
    (waits of ``backoff_s``, doubling, at most ``max_backoff_s``). ``transport`` replaces
    the network (tests). Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, url: str | None = None, *, token: str | None = None,
                 timeout_s: float = 30.0, retries: int = 3, backoff_s: float = 0.5,
                 max_backoff_s: float = 8.0, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        settings = ClientSettings() if url is None or token is None else None
        url = url or (settings.url if settings else DEFAULT_URL)
        if token is None and settings is not None and settings.api_token is not None:
            token = settings.api_token.get_secret_value()
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the server URL must start with http:// or https://: {url!r}")
        self.url = url.rstrip("/")
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep
        headers = {"User-Agent": "aelab-client/0.1"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.url, headers=headers, transport=transport,
                                  timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)))

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # --- transport ---------------------------------------------------------------------

    def _delay(self, attempt: int, response: httpx.Response | None = None) -> float:
        """Seconds to wait before sending again: the answer's ``Retry-After`` when it is
        one (see :func:`retry_after_s`), else exponential backoff with jitter; always
        within 0 … ``max_backoff_s``."""
        if response is not None:
            told = retry_after_s(response.headers.get("Retry-After"))
            if told is not None:
                return min(told, self.max_backoff_s)
        base = min(self.backoff_s * 2 ** attempt, self.max_backoff_s)
        return base * (0.5 + random.random() / 2)

    def _send(self, method: str, path: str, *, idempotent: bool, stream: bool = False,
              allow: tuple[int, ...] = (), **kwargs: Any) -> httpx.Response:
        """Send with retries (see the module's docstring). Statuses in ``allow`` are
        answers, returned as they come; other error statuses raise :class:`ApiError`, and
        :class:`Unreachable` is raised when no answer came."""
        error: Exception | None = None
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            request = self._http.build_request(method, path, **kwargs)
            try:
                response = self._http.send(request, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                error = exc  # never reached the server: sending again is always safe
            except httpx.TransportError as exc:
                if not idempotent:
                    raise Unreachable(f"{self.url}: {_describe(exc)} (not retried: "
                                      f"{method} {path} may have been applied)") from exc
                error = exc
            else:
                if response.status_code in allow:
                    return response
                if response.status_code == 503 and idempotent and not last:
                    delay = self._delay(attempt, response)
                    response.close()
                    self._sleep(delay)
                    continue
                if response.is_error:
                    try:
                        raise api_error(response)
                    finally:
                        response.close()
                return response
            if not last:
                self._sleep(self._delay(attempt))
        raise Unreachable(f"cannot reach {self.url}: {_describe(error or OSError())}") \
            from error

    def _get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self._send("GET", path, idempotent=True, **kwargs)

    # --- experiments ---------------------------------------------------------------------

    @overload
    def submit(self, spec: SpecLike, *, dry_run: Literal[False] = False,
               idempotency_key: str | None = None) -> ExperimentOut: ...

    @overload
    def submit(self, spec: SpecLike, *, dry_run: Literal[True],
               idempotency_key: str | None = None) -> DryRun: ...

    def submit(self, spec: SpecLike, *, dry_run: bool = False,
               idempotency_key: str | None = None) -> ExperimentOut | DryRun:
        """Create an experiment from ``spec`` (an ``ExperimentSpec``, a mapping, or a
        JSON/YAML file path); ``dry_run`` validates and estimates without storing. Every
        call carries an ``Idempotency-Key`` (a new one unless given), so its retries
        never create a second experiment. Raises :class:`InvalidRequest` naming each
        refused field."""
        body = load_spec(spec)
        key = idempotency_key or str(uuid.uuid4())
        response = self._send("POST", f"{API_PREFIX}/experiments", idempotent=True, json=body,
                              params={"dry_run": "true"} if dry_run else None,
                              headers={"Idempotency-Key": key})
        if dry_run:
            return DryRun.model_validate_json(response.content)
        return ExperimentOut.model_validate_json(response.content)

    def get(self, experiment_id: int) -> ExperimentOut:
        """One experiment with its runs (status, phase, epoch, progress, errors)."""
        return ExperimentOut.model_validate_json(
            self._get(f"{API_PREFIX}/experiments/{experiment_id}").content)

    def page(self, *, status: Status | str | None = None, limit: int = 50,
             cursor: str | None = None) -> ExperimentPage:
        """One page of experiments, newest first; ``next`` is the cursor of the next."""
        params: dict[str, Any] = {"limit": limit}
        if status is not None:
            params["status"] = str(status)
        if cursor is not None:
            params["cursor"] = cursor
        return ExperimentPage.model_validate_json(
            self._get(f"{API_PREFIX}/experiments", params=params).content)

    def wait(self, experiment_id: int, *, timeout: float | None = None, poll_s: float = 2.0,
             on_change: Callable[[ExperimentOut], None] | None = None,
             patience_s: float = 60.0) -> ExperimentOut:
        """Poll until the experiment has ended (succeeded, failed or cancelled) and return
        it. ``on_change`` is called with the experiment first and then whenever its status
        or a run's status, phase, epoch, LR or error changes. Raises :class:`WaitTimeout`
        after ``timeout`` seconds (None: no limit); the experiment keeps running. A server
        that stops answering (restarting, its database away) is polled on for
        ``patience_s`` seconds before :class:`Unreachable` or :class:`ServiceUnavailable`
        is raised."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: tuple[Any, ...] | None = None
        silent_since: float | None = None
        while True:
            try:
                experiment = self.get(experiment_id)
            except (Unreachable, ServiceUnavailable):
                now = time.monotonic()
                silent_since = now if silent_since is None else silent_since
                if now - silent_since >= patience_s or \
                        (deadline is not None and now >= deadline):
                    raise
                self._sleep(poll_s)
                continue
            silent_since = None
            key = _change_key(experiment)
            if key != seen:
                seen = key
                if on_change is not None:
                    on_change(experiment)
            if experiment.status.finished:
                return experiment
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(experiment, timeout or 0.0)
                self._sleep(min(poll_s, left))
            else:
                self._sleep(poll_s)

    def results_table(self, experiment_id: int) -> ResultsTable:
        """The study's table: ``columns`` and one row (a dict) per run."""
        return ResultsTable.model_validate_json(
            self._get(f"{API_PREFIX}/experiments/{experiment_id}/results",
                      params={"format": "json"}).content)

    def rate_distortion(self, experiment_id: int, anchor: str | None = None
                        ) -> RateDistortion:
        """Per model and dataset its measured (bpp, PSNR, SSIM, accuracy) points and each
        codec's curve (``GET /experiments/{id}/rate_distortion``); with ``anchor`` (a
        codec), each model series' BD-rate and BD-PSNR against it (``bd``)."""
        params = {} if anchor is None else {"anchor": anchor}
        return RateDistortion.model_validate_json(
            self._get(f"{API_PREFIX}/experiments/{experiment_id}/rate_distortion",
                      params=params).content)

    def results(self, experiment_id: int) -> builtins.list[dict[str, Any]]:
        """The study's table as rows: one dict per run (see :meth:`results_table`)."""
        return self.results_table(experiment_id).rows

    def results_frame(self, experiment_id: int) -> pandas.DataFrame:
        """The study's table as a pandas DataFrame (``pip install 'aelab[pandas]'``)."""
        try:
            import pandas
        except ImportError as exc:
            raise ImportError("results_frame needs pandas: pip install 'aelab[pandas]' "
                              "(or use results() for plain rows)") from exc
        table = self.results_table(experiment_id)
        return pandas.DataFrame(table.rows, columns=table.columns)

    def results_text(self, experiment_id: int, format: ResultFormat = "csv",
                     aggregate: Literal["seed"] | None = None) -> str:
        """The table exactly as the API renders it in ``format`` (json, csv, markdown);
        ``aggregate="seed"``: one row per (model, dataset, latent size) over its seeds."""
        params = {"format": format, **({"aggregate": aggregate} if aggregate else {})}
        return self._get(f"{API_PREFIX}/experiments/{experiment_id}/results",
                         params=params).content.decode("utf-8")

    def cancel(self, experiment_id: int) -> ExperimentOut:
        """Cancel a queued or running experiment: its Ray jobs are stopped. Raises
        :class:`ConflictError` when it has already ended."""
        return ExperimentOut.model_validate_json(
            self._send("POST", f"{API_PREFIX}/experiments/{experiment_id}/cancel",
                       idempotent=False).content)

    def delete(self, experiment_id: int) -> None:
        """Delete a finished experiment with its runs' artifacts and checkpoints."""
        self._send("DELETE", f"{API_PREFIX}/experiments/{experiment_id}", idempotent=False)

    # --- runs ------------------------------------------------------------------------------

    def run(self, run_id: int) -> RunDetail:
        """One run: its spec, attempts, LR trials, epochs, measures and artifacts."""
        return RunDetail.model_validate_json(self._get(f"{API_PREFIX}/runs/{run_id}").content)

    def logs(self, run_id: int, offset: int = 0) -> LogOut:
        """The run's driver log from character ``offset`` on (``next_offset`` continues)."""
        return LogOut.model_validate_json(
            self._get(f"{API_PREFIX}/runs/{run_id}/logs", params={"offset": offset}).content)

    def follow_logs(self, run_id: int, *, offset: int = 0, poll_s: float = 1.0
                    ) -> Iterator[LogOut]:
        """Each new piece of the run's log until it is complete: the run ended and its
        saved log was read to the end, or it ended without one (never started, or the log
        was lost with its cluster)."""
        while True:
            chunk = self.logs(run_id, offset)
            if chunk.text:
                yield chunk
            offset = chunk.next_offset
            if chunk.complete or (chunk.status.finished and chunk.source != "saved"):
                if not chunk.text:
                    yield chunk  # the last word: complete, with its status
                return
            self._sleep(poll_s)

    def download(self, run_id: int, name: str, dest: str | os.PathLike[str] = ".") -> Path:
        """Stream the run's artifact ``name`` to disk and return its path: ``dest`` is a
        folder (the file keeps its name) or a file path. The bytes go to a temporary file
        beside it, are checked against the sha256 the API lists, then renamed into place;
        on a mismatch nothing is left behind and :class:`ChecksumMismatch` is raised."""
        artifacts = self.run(run_id).artifacts
        artifact = next((a for a in artifacts if a.name == name), None)
        if artifact is None:
            names = ", ".join(a.name for a in artifacts) or "none yet"
            raise NotFoundError(404, f"run {run_id} has no artifact {name!r} (it has: "
                                     f"{names})", [])
        return self.download_artifact(artifact, dest)

    def download_all(self, run_id: int, dest: str | os.PathLike[str] = "."
                     ) -> builtins.list[Path]:
        """Every artifact of the run into the folder ``dest`` (see :meth:`download`)."""
        Path(dest).mkdir(parents=True, exist_ok=True)
        return [self.download_artifact(a, dest) for a in self.run(run_id).artifacts]

    def download_artifact(self, artifact: ArtifactOut, dest: str | os.PathLike[str] = "."
                          ) -> Path:
        """Stream one listed artifact to disk, checked against its sha256.

        Raises :class:`UnsafeArtifactName` (nothing written) when the server lists a name
        that is not a plain file name (``../x``, ``/etc/x``, ``a/b``): a server never
        chooses where outside ``dest`` a file lands."""
        if not _plain_file_name(artifact.name):
            raise UnsafeArtifactName(f"the server listed an artifact named {artifact.name!r},"
                                     " which is not a plain file name; nothing was written")
        target = Path(dest)
        if target.is_dir() or str(dest).endswith(os.sep):
            target = target / artifact.name
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
        digest = hashlib.sha256()
        response = self._get(artifact.url, stream=True)
        try:
            with partial.open("wb") as out:
                for chunk in response.iter_bytes(1 << 16):
                    out.write(chunk)
                    digest.update(chunk)
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise Unreachable(f"downloading {artifact.url}: {_describe(exc)}") from exc
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        finally:
            response.close()
        if digest.hexdigest() != artifact.checksum:
            partial.unlink(missing_ok=True)
            raise ChecksumMismatch(f"{artifact.url}: sha256 {digest.hexdigest()} differs "
                                   f"from the listed {artifact.checksum}; nothing was kept")
        os.replace(partial, target)
        return target

    # --- the service -------------------------------------------------------------------------

    def catalog(self) -> Catalog:
        """Variants, datasets and pretrained weights, and what this deployment holds."""
        return Catalog.model_validate_json(self._get(f"{API_PREFIX}/catalog").content)

    def ready(self) -> Readiness:
        """``/readyz``: whether the database and Ray answer (a 503 is an answer here)."""
        response = self._send("GET", "/readyz", idempotent=True, allow=(503,))
        return Readiness.model_validate_json(response.content)

    def ui_url(self, experiment_id: int) -> str:
        """The experiment's page in the web UI served by the same server."""
        return f"{self.url}/experiments/{experiment_id}"

    def list(self, *, status: Status | str | None = None, page_size: int = 50,
             limit: int | None = None) -> Iterator[ExperimentItem]:
        """Experiments, newest first, fetched a page at a time as the iterator is read;
        ``status`` filters, ``limit`` stops after that many."""
        cursor: str | None = None
        count = 0
        while True:
            page = self.page(status=status, limit=page_size, cursor=cursor)
            for item in page.items:
                if limit is not None and count >= limit:
                    return
                count += 1
                yield item
            if page.next is None:
                return
            cursor = page.next


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (RFC 9110 §10.2.3): delta-seconds
    (digits only) or an HTTP-date (a past one is 0). None when absent or anything
    else (``-1``, ``nan``, ``soon``): the caller then uses its own backoff. Never
    negative; may be huge (the caller bounds it)."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" dates: RFC 9110 reads them as UTC
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _plain_file_name(name: str) -> bool:
    """Whether ``name`` names a file in a folder and nothing else: no separator (either
    OS's), not ``.``/``..``, no NUL, not empty."""
    return (bool(name) and name not in (".", "..") and "\0" not in name
            and not any(sep in name for sep in ("/", "\\")))


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
