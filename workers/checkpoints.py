"""A run attempt's checkpoints on shared storage: the pipeline's steps write them each
epoch, an LR-search trial reads the end of phase 1 from them, a runner on another node
resumes from them."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING, Any

from workers.context import RunEnv
from workers.space import write_atomic
from workers.store import RunCancelled, RunPruned

if TYPE_CHECKING:
    from models.plan import EpochMetrics

log = logging.getLogger("aelab.run")
WRITER_THREAD = "aelab-checkpoint"


class CheckpointStorage:
    """Checkpoints of one run attempt under ``env.tune_storage / env.storage_key`` (any
    fsspec URL, shared by the cluster's nodes): written each epoch through a temporary
    name and a rename, so a step resumed on another node finds the last whole one."""

    def __init__(self, env: RunEnv) -> None:
        from fsspec.core import url_to_fs

        self.fs, root = url_to_fs(env.tune_storage)
        self.folder = f"{root.rstrip('/')}/{env.storage_key}"

    def path(self, key: str) -> str:
        return f"{self.folder}/{key}.pt"

    def read(self, key: str) -> bytes | None:
        try:
            with self.fs.open(self.path(key), "rb") as f:
                return f.read()  # type: ignore[no-any-return]
        except FileNotFoundError:
            return None

    def read_step(self, step: str) -> bytes | None:
        """The checkpoint at the end of the finished step ``step``: its own file, else its
        last ``{step}-progress`` checkpoint (what a step that trained epochs leaves: its
        last epoch's, already durable, is not written a second time); None if neither."""
        return self.read(step) or self.read(f"{step}-progress")

    def write(self, key: str, data: bytes) -> None:
        """Raises :class:`workers.space.StorageFull` when it fails for space (leaving no
        temporary file)."""
        write_atomic(self.fs, self.folder, f"{key}.pt", data,
                     where=f"the checkpoint storage {self.folder}")

    def remove(self) -> None:
        try:
            if self.fs.exists(self.folder):
                self.fs.rm(self.folder, recursive=True)
        except OSError as exc:
            log.warning("could not remove the checkpoints in %s: %s", self.folder, exc)


class CheckpointWriter:
    """A step's per-epoch checkpoints, written off the training thread.

    Each epoch's job — run on one thread (named ``aelab-checkpoint``) in the log context of
    the caller that submitted it — serialises the epoch's snapshot (``serialise``: a
    checkpoint that training no longer changes, e.g.
    ``models.training.snapshot_checkpoint``'s), writes it to ``storage`` as ``key``
    durably (a temporary name, then a rename), *then* records the epoch (``record``), so
    a recorded epoch always has its checkpoint and is never redone. Meanwhile the next
    epoch trains. At most one job is in flight: :meth:`submit` first awaits the previous
    one, and :meth:`wait` re-raises a job's error in the calling thread with its type
    (``RunPruned``, ``StaleAttempt``, ``StorageFull``…). A process killed meanwhile
    resumes from the epoch being written or the one before.

    Use as a context manager: leaving it awaits the pending job — re-raising its error,
    or logging it when another exception is already leaving the block (but a
    ``RunPruned`` replaces a ``RunCancelled``: a run its pruner ended in that epoch reads
    as no longer running, and ended pruned, not cancelled) — and stops the thread;
    nothing is abandoned."""

    def __init__(self, storage: CheckpointStorage, key: str,
                 serialise: Callable[[Any], bytes],
                 record: Callable[[EpochMetrics], None]) -> None:
        self.storage = storage
        self.key = key
        self._serialise = serialise
        self._record = record
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=WRITER_THREAD)
        self._pending: Future[None] | None = None
        self.last: bytes | None = None  # the last checkpoint written, serialised

    def __enter__(self) -> CheckpointWriter:
        return self

    def submit(self, metrics: EpochMetrics, snapshot: Any) -> None:
        """Write ``snapshot`` (the checkpoint after the epoch of ``metrics``; training must
        not change it any more), then record ``metrics``, in the background. Awaits the
        previous job first, raising its error (then nothing is submitted)."""
        self.wait()
        context = contextvars.copy_context()  # the caller's log ids (workers.logs.bound)
        self._pending = self._pool.submit(context.run, self._job, metrics, snapshot)

    def wait(self) -> None:
        """Await the job in flight, if any; raises its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _job(self, metrics: EpochMetrics, snapshot: Any) -> None:
        blob = self._serialise(snapshot)
        self.storage.write(self.key, blob)  # durable first: a recorded epoch is never redone
        self.last = blob
        self._record(metrics)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc is None:
                self.wait()
            else:
                try:
                    self.wait()
                except RunPruned as pruned:
                    if isinstance(exc, RunCancelled):  # it ended pruned: not a cancel
                        raise pruned from None
                    self._log_failed(pruned, exc)
                except BaseException as failed:  # the error already leaving wins
                    self._log_failed(failed, exc)
        finally:
            self._pool.shutdown(wait=True)

    def _log_failed(self, failed: BaseException, leaving: BaseException) -> None:
        log.warning("the background checkpoint of %s failed too (%s: %s), while the step "
                    "stopped for %s", self.key, type(failed).__name__, failed,
                    type(leaving).__name__, exc_info=failed)
