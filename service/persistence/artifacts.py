"""Artifact store: a local folder by default, any fsspec URL (s3://…) on a cluster.

Writes are atomic (a temporary name, then a rename, where the filesystem has one) and
content-addressed by (run, name); reads only resolve URIs under the store's root.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass

from fsspec.core import url_to_fs

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class ArtifactError(ValueError):
    pass


@dataclass(frozen=True)
class StoredArtifact:
    uri: str
    size: int
    checksum: str


class ArtifactStore:
    def __init__(self, root: str) -> None:
        self.fs, path = url_to_fs(root)
        self.root = path.rstrip("/")
        self.protocol = self.fs.protocol if isinstance(self.fs.protocol, str) \
            else self.fs.protocol[0]
        self.fs.makedirs(self.root, exist_ok=True)

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
        """Store ``data`` as ``key/name``; ``key`` may have several ``/``-separated parts."""
        if not SAFE_NAME.match(name) or not all(SAFE_NAME.match(k) for k in key.split("/")):
            raise ArtifactError(f"bad artifact name {key!r}/{name!r}")
        folder = f"{self.root}/{key}"
        final = f"{folder}/{name}"
        tmp = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
        self.fs.makedirs(folder, exist_ok=True)
        with self.fs.open(tmp, "wb") as f:
            f.write(data)
        self.fs.mv(tmp, final)
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
