from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from service.persistence.artifacts import ArtifactError, ArtifactStore


def test_put_is_atomic_and_checksummed(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    stored = store.put("run-1", "samples.png", b"\x89PNG data")
    assert stored.size == 9 and stored.checksum == hashlib.sha256(b"\x89PNG data").hexdigest()
    assert store.read(stored.uri) == b"\x89PNG data"
    leftovers = [p.name for p in (tmp_path / "artifacts" / "run-1").iterdir()]
    assert leftovers == ["samples.png"]  # no temporary file left behind
    store.put("run-1", "samples.png", b"new")
    assert store.read(stored.uri) == b"new"


@pytest.mark.parametrize("uri", ["/etc/passwd", "{root}/../secret", "{root}/run-1/../../x",
                                 "file:///etc/passwd"])
def test_reads_never_leave_the_store(tmp_path: Path, uri: str) -> None:
    (tmp_path / "secret").write_text("no")
    store = ArtifactStore(str(tmp_path / "artifacts"))
    with pytest.raises(ArtifactError):
        store.read(uri.format(root=tmp_path / "artifacts"))


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden", "x" * 300])
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ArtifactError):
        ArtifactStore(str(tmp_path)).put("run-1", name, b"")


def test_fsspec_urls_work(tmp_path: Path) -> None:
    store = ArtifactStore("memory://aelab-test")
    stored = store.put("run-2", "model.pt", b"weights")
    assert stored.uri.startswith("memory://")
    assert store.read(stored.uri) == b"weights"
    store.delete_prefix("run-2")
    with pytest.raises(FileNotFoundError):
        store.read(stored.uri)
