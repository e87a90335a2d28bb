"""Artifact store: a local folder by default, any fsspec URL (s3://…) on a cluster.

Writes are atomic (a temporary name, then a rename, where the filesystem has one) and
content-addressed by (run, name); reads only resolve URIs under the store's root.

A store that is *full* (:meth:`ArtifactStore.full`) says why: a local folder with less
free space than ``min_free_bytes``, or a write that failed for space (ENOSPC, EDQUOT:
:class:`workers.space.StorageFull`, its temporary file removed) until the space it needed
is free again (a local folder) or for ``FULL_RETRY_S`` (a store whose free space cannot be
read, or a quota). The dispatcher starts no run meanwhile, and ``/readyz`` says so.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import re
import shutil
import time
from dataclasses import dataclass

from fsspec.core import url_to_fs

from workers.space import StorageFull, megabytes, write_atomic

log = logging.getLogger("aelab.artifacts")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
FULL_RETRY_S = 60.0  # after a write failed for space, where free space cannot be read


class ArtifactError(ValueError):
    pass


@dataclass(frozen=True)
class StoredArtifact:
    uri: str
    size: int
    checksum: str


@dataclass(frozen=True)
class SpaceFailure:
    """The last write that failed for space."""

    at: float  # time.monotonic()
    size: int  # bytes that did not fit
    code: int  # ENOSPC or EDQUOT
    message: str


class ArtifactStore:
    def __init__(self, root: str, *, min_free_bytes: int = 0) -> None:
        self.fs, path = url_to_fs(root)
        self.root = path.rstrip("/")
        self.protocol = self.fs.protocol if isinstance(self.fs.protocol, str) \
            else self.fs.protocol[0]
        self.min_free_bytes = min_free_bytes
        self.space_failure: SpaceFailure | None = None
        self.fs.makedirs(self.root, exist_ok=True)

    @property
    def local(self) -> bool:
        return self.protocol in ("file", "local")

    def free_bytes(self) -> int | None:
        """Free space where the store lives, when it can be read (a local folder)."""
        if not self.local:
            return None
        try:
            return shutil.disk_usage(self.root).free
        except OSError:
            return None

    def full(self) -> str | None:
        """Why the store is full (one line), or None: see the module's docstring."""
        failure, free = self.space_failure, self.free_bytes()
        if failure is not None and (free is None or failure.code == errno.EDQUOT):
            if time.monotonic() - failure.at < FULL_RETRY_S:
                return f"full: {failure.message}"
            self.space_failure = None
            return None
        if free is None:
            return None
        need = self.min_free_bytes + (failure.size if failure is not None else 0)
        if free >= need and free > 0:
            self.space_failure = None
            return None
        why = f"full: {megabytes(free)} free at {self.root}, below {megabytes(need)}"
        if failure is not None:
            why += f"; the last write that failed needed {megabytes(failure.size)}"
        return why

    def _uri(self, path: str) -> str:
        return path if self.protocol in ("file", "local") else f"{self.protocol}://{path}"

    def _path(self, uri: str) -> str:
        path = uri.split("://", 1)[1] if "://" in uri else uri
        normalised = "/".join(p for p in path.split("/") if p not in ("", "."))
        root = self.root.lstrip("/")
        if ".." in path.split("/") or not normalised.startswith(root + "/"):
            raise ArtifactError(f"{uri!r} is outside the artifact store")
        return ("/" if self.root.startswith("/") else "") + normalised

    def put(self, key: str, name: str, data: bytes) -> StoredArtifact:
        """Store ``data`` as ``key/name``; ``key`` may have several ``/``-separated parts.
        Raises :class:`workers.space.StorageFull` when it fails for space (the store is
        then :meth:`full`), leaving no temporary file."""
        if not SAFE_NAME.match(name) or not all(SAFE_NAME.match(k) for k in key.split("/")):
            raise ArtifactError(f"bad artifact name {key!r}/{name!r}")
        try:
            final = write_atomic(self.fs, f"{self.root}/{key}", name, data,
                                 where=f"the artifact store {self.root}")
        except StorageFull as exc:
            self.space_failure = SpaceFailure(time.monotonic(), exc.size, exc.errno,
                                              str(exc))
            log.warning("%s", exc)
            raise
        return StoredArtifact(self._uri(final), len(data), hashlib.sha256(data).hexdigest())

    def read(self, uri: str) -> bytes:
        with self.fs.open(self._path(uri), "rb") as f:
            return f.read()

    def remove(self, uri: str) -> None:
        """Remove one stored artifact (e.g. a file whose row could not be recorded because
        its run was deleted meanwhile); nothing happens when it does not exist."""
        path = self._path(uri)
        if self.fs.exists(path):
            self.fs.rm(path)

    def delete_prefix(self, key: str) -> None:
        if not SAFE_NAME.match(key):
            raise ArtifactError(f"bad artifact key {key!r}")
        path = f"{self.root}/{key}"
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)


def remove_tree(url: str, key: str) -> None:
    """Remove the folder ``key`` under the fsspec ``url`` (e.g. a run's Tune trials),
    wherever it lives: local disk, s3://…; nothing happens when it does not exist."""
    if not SAFE_NAME.match(key):
        raise ArtifactError(f"bad folder name {key!r}")
    fs, root = url_to_fs(url)
    path = f"{root.rstrip('/')}/{key}"
    if fs.exists(path):
        fs.rm(path, recursive=True)
