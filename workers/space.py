"""Writes that fail for space: a full disk (``ENOSPC``) or a quota reached (``EDQUOT``).

Such a write leaves nothing behind (its temporary file is removed) and raises
:class:`StorageFull`, whose one line says where, what and how much, so that the run it
belongs to fails with an error a person can act on.
"""

from __future__ import annotations

import contextlib
import errno
import os
from typing import Any

SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class StorageFull(OSError):
    """A write failed for space. ``errno`` is ENOSPC or EDQUOT; ``size`` the bytes that
    did not fit; ``where`` the storage (a folder or URL)."""

    errno: int

    def __init__(self, message: str, *, code: int, size: int, where: str) -> None:
        super().__init__(message)
        self.errno = code
        self.size = size
        self.where = where

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, ...]:
        # Crosses Ray (a runner's step error, pickled to its driver) whole.
        return _storage_full, (self.args[0], self.errno, self.size, self.where)


def _storage_full(message: str, code: int, size: int, where: str) -> StorageFull:
    return StorageFull(message, code=code, size=size, where=where)


def space_errno(exc: BaseException) -> int | None:
    """ENOSPC or EDQUOT when ``exc`` (or an exception it was raised from) is an OSError
    of that kind, else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in SPACE_ERRNOS:
            return current.errno
        current = current.__cause__ or current.__context__
    return None


def megabytes(n: float) -> str:
    """``n`` bytes as a short size: 812 B, 3.4 MB, 1.2 GB (powers of 1000)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def write_atomic(fs: Any, folder: str, name: str, data: bytes, *, where: str) -> str:
    """Write ``data`` as ``folder/name`` on the fsspec filesystem ``fs`` through a
    temporary name and a rename; returns the final path. A write that fails removes its
    temporary file; one that fails for space raises :class:`StorageFull` (from the
    OSError)."""
    final = f"{folder}/{name}"
    tmp = f"{folder}/.{name}.{os.urandom(8).hex()}.tmp"
    try:
        fs.makedirs(folder, exist_ok=True)
        with fs.open(tmp, "wb") as f:
            f.write(data)
        fs.mv(tmp, final)
    except BaseException as exc:
        with contextlib.suppress(Exception):  # best effort: the original error matters
            if fs.exists(tmp):
                fs.rm(tmp)
        code = space_errno(exc)
        if code is None:
            raise
        raise StorageFull(
            f"{where} is full: writing {name} ({megabytes(len(data))}) failed: "
            f"{os.strerror(code)} ({errno.errorcode[code]}); free space there, then retry "
            "the run", code=code, size=len(data), where=where) from exc
    return final
