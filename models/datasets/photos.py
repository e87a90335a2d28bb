"""Real photographs at their real sizes, offline.

- ``photos``: the photographs scikit-image's wheel ships (``skimage/data/``), read from
  the installed package (located without importing it), never downloaded. A fixed split:
  :data:`PHOTOS_TEST` are the test images (evaluated whole), :data:`PHOTOS_TRAIN` the
  training images (trained on as crops). Grey photos are served as RGB. Each image keeps
  its own licence (``skimage/data/README.txt``).
- ``kodak``: the Kodak Lossless True Color Image Suite, which users place themselves as
  ``<data root>/kodak/kodim01.png`` … ``kodim24.png`` (768×512 or 512×768 RGB, checked):
  a test set; its training split is the same 24 images (it is for evaluating models
  trained elsewhere or briefly, as CompressAI reports on it).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from models.datasets.base import DatasetCheck, DatasetEntry, DatasetInfo, RawSplit
from models.datasets.folder import decode, open_image, pad_stack

# (file, (H, W)) in skimage/data/, as scikit-image 0.24–0.26 ship them.
PHOTOS_TRAIN = (
    ("rocket.jpg", (427, 640)), ("motorcycle_left.png", (500, 741)),
    ("motorcycle_right.png", (500, 741)), ("hubble_deep_field.jpg", (872, 1000)),
    ("retina.jpg", (1411, 1411)), ("ihc.png", (512, 512)), ("camera.png", (512, 512)),
    ("brick.png", (512, 512)), ("grass.png", (512, 512)), ("gravel.png", (512, 512)),
)
PHOTOS_TEST = (
    ("astronaut.png", (512, 512)), ("chelsea.png", (300, 451)), ("coffee.png", (400, 600)),
)
KODAK_FILES = tuple(f"kodim{i:02d}.png" for i in range(1, 25))
KODAK_SIZES = {(512, 768), (768, 512)}  # (H, W): landscape or portrait


def skimage_data() -> Path | None:
    """scikit-image's ``data`` folder, if the package is installed (not imported)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _sizes(files: tuple[tuple[str, tuple[int, int]], ...]) -> tuple[tuple[int, int],
                                                                      tuple[int, int]]:
    return ((min(s[0] for _, s in files), min(s[1] for _, s in files)),
            (max(s[0] for _, s in files), max(s[1] for _, s in files)))


def _read(folder: Path, names: list[str], channels: int) -> RawSplit:
    return pad_stack([decode(folder / n, channels)[0] for n in names], channels)


def _checked(folder: Path, expected: dict[str, set[tuple[int, int]]]) -> DatasetCheck:
    """Each of ``expected``'s files present, readable and of one of its (H, W)."""
    missing, corrupt = [], []
    for name, sizes in expected.items():
        path = folder / name
        if not path.is_file():
            missing.append(str(path))
            continue
        try:
            with open_image(path) as im:  # the header only
                size = (im.height, im.width)
        except ValueError as exc:
            corrupt.append(str(exc))
            continue
        if size not in sizes:
            corrupt.append(f"{path} is {size[0]}×{size[1]} (H×W), not "
                           f"{' or '.join(f'{h}×{w}' for h, w in sorted(sizes))}")
    return DatasetCheck.found(missing, corrupt)


class Photos(DatasetEntry):
    info = DatasetInfo(
        "photos", "Photographs (scikit-image)",
        "Real photographs shipped with scikit-image (astronaut, chelsea, coffee, rocket, "
        "motorcycle, hubble deep field, retina, immunohistochemistry, textures), at their "
        "real sizes; trained on as crops, evaluated whole.",
        num_classes=None, channels=3, native_size=None, train_size=len(PHOTOS_TRAIN),
        test_size=len(PHOTOS_TEST),
        min_size=_sizes(PHOTOS_TRAIN + PHOTOS_TEST)[0],
        max_size=_sizes(PHOTOS_TRAIN + PHOTOS_TEST)[1],
        split=f"fixed: test {', '.join(n for n, _ in PHOTOS_TEST)}; train "
              f"{', '.join(n for n, _ in PHOTOS_TRAIN)} (skimage/data)")

    def folder(self, root: Path) -> Path:
        return skimage_data() or Path("skimage/data")

    def expected(self, root: Path) -> str:
        return "the scikit-image package (pip install scikit-image; aelab's train extra)"

    def check(self, root: Path) -> DatasetCheck:
        folder = skimage_data()
        if folder is None:
            return DatasetCheck("missing", ("scikit-image is not installed: pip install "
                                            "scikit-image (aelab's train extra)",))
        return _checked(folder, {n: {s} for n, s in PHOTOS_TRAIN + PHOTOS_TEST})

    def load(self, root: Path, download: bool) -> tuple[RawSplit, RawSplit]:
        folder = self.folder(root)
        return (_read(folder, [n for n, _ in PHOTOS_TRAIN], 3),
                _read(folder, [n for n, _ in PHOTOS_TEST], 3))


class Kodak(DatasetEntry):
    info = DatasetInfo(
        "kodak", "Kodak (user-placed)",
        "The Kodak Lossless True Color Image Suite (24 photos, 768×512 or 512×768), placed "
        "by the user; the compression field's usual test set.",
        num_classes=None, channels=3, native_size=None, train_size=len(KODAK_FILES),
        test_size=len(KODAK_FILES), min_size=(512, 512), max_size=(768, 768),
        split="the same 24 images in both splits: a test set")

    def files(self) -> tuple[str, ...]:
        return KODAK_FILES

    def expected(self, root: Path) -> str:
        return f"{self.folder(root)}/kodim01.png … kodim24.png"

    def check(self, root: Path) -> DatasetCheck:
        return _checked(self.folder(root), dict.fromkeys(KODAK_FILES, KODAK_SIZES))

    def load(self, root: Path, download: bool) -> tuple[RawSplit, RawSplit]:
        split = _read(self.folder(root), list(KODAK_FILES), 3)
        return split, split


PHOTOS = Photos()
KODAK = Kodak()
