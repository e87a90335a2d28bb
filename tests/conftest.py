from __future__ import annotations

import os
from pathlib import Path

import pytest

# Never let a test reach the network for data or weights.
os.environ.setdefault("AELAB_OFFLINE", "1")


@pytest.fixture(scope="session")
def synthetic_splits():
    from models.data import load_dataset

    return load_dataset("synthetic", "/nonexistent-not-needed", train_limit=256,
                        test_limit=128, seed=0)


@pytest.fixture(scope="session")
def tiny_splits():
    """64 train images: enough for ResNet variants to take a few steps on the CPU."""
    from models.data import load_dataset

    return load_dataset("synthetic", "/nonexistent-not-needed", train_limit=64,
                        test_limit=32, seed=0)


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AELAB_HOME", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path
