"""CIFAR-10: 32×32 colour photos in 10 classes, read through torchvision from
``<data root>/cifar-10-batches-py``, each file verified against torchvision's MD5 sum."""

from __future__ import annotations

from pathlib import Path

from models.datasets.base import (
    DatasetCheck,
    DatasetEntry,
    DatasetInfo,
    RawSplit,
    md5_of,
    torchvision_split,
)

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


class Cifar10(DatasetEntry):
    info = DatasetInfo("cifar10", "CIFAR-10", "Tiny colour photos in 10 classes, 3×32×32.",
                       num_classes=10, channels=3, native_size=(32, 32), train_size=50_000,
                       test_size=10_000,
                       # CIFAR-10's batches.meta label_names, in label order
                       classes=("airplane", "automobile", "bird", "cat", "deer", "dog",
                                "frog", "horse", "ship", "truck"))

    def folder(self, root: Path) -> Path:
        return root / CIFAR_FOLDER

    def files(self) -> tuple[str, ...]:
        return CIFAR_FILES

    def expected(self, root: Path) -> str:
        return f"{self.folder(root)}/ (data_batch_1..5, test_batch, batches.meta)"

    def check(self, root: Path) -> DatasetCheck:
        folder = self.folder(root)
        missing, corrupt = [], []
        for name in CIFAR_FILES:
            path = folder / name
            if not path.is_file():
                missing.append(str(path))
            elif md5_of(path) != CIFAR_MD5[name]:
                corrupt.append(f"{path} is corrupt (MD5 {md5_of(path)} is not "
                               f"{CIFAR_MD5[name]}, size {path.stat().st_size} B)")
        return DatasetCheck.found(missing, corrupt)

    def download(self, root: Path) -> None:
        torchvision_split(self, "CIFAR10", root, True, download=True)

    def load(self, root: Path, download: bool) -> tuple[RawSplit, RawSplit]:
        return (torchvision_split(self, "CIFAR10", root, True, download),
                torchvision_split(self, "CIFAR10", root, False, download))


CIFAR10 = Cifar10()
