"""A run attempt's checkpoints on shared storage: the pipeline's steps write them each
epoch, an LR-search trial reads the end of phase 1 from them, a runner on another node
resumes from them."""

from __future__ import annotations

import logging

from workers.context import RunEnv
from workers.space import write_atomic

log = logging.getLogger("aelab.run")


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
