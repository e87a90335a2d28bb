"""Folder datasets: a folder placed at ``<datasets root>/<name>/`` with ``train/`` and
``test/`` is a dataset named ``<name>`` (the datasets root is ``$AELAB_HOME/datasets`` by
default: ``Settings.datasets_root``).

Two layouts, as torchvision's ``ImageFolder`` reads them:

- **ImageFolder**: ``train/<class>/*.png|jpg|jpeg|webp`` (and ``test/<class>/…``); the
  classes are the sorted class folder names of ``train/``.
- **flat**: ``train/*.png`` …; no labels, so runs on it measure no classifier accuracy.

Images may have any size and differ in size (``DatasetInfo.native_size`` is None then,
``min_size``/``max_size`` give the range). Every image is decoded by the file check
(:meth:`FolderDataset.check`), so a corrupt or unreadable file is named before a run
loads anything; one above Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``,
the warning as well as the error) is refused and never decoded. Surveys are cached per
file list (path, size, modification time).

Users name datasets; no request names a path. Which root a process reads is set once by
:func:`use_root` (the service's composition root, a run's steps from its ``RunEnv``).
Torch-free; Pillow and numpy are imported inside functions.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from models.datasets.base import DatasetCheck, DatasetEntry, DatasetInfo, RawSplit
from models.registry import NAME

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
SPLITS = ("train", "test")
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}

_root: Path | None = None


def use_root(path: str | Path | None) -> None:
    """Read folder datasets from ``path`` (None: none) in this process."""
    global _root
    _root = Path(path).expanduser() if path is not None else None


def root() -> Path | None:
    """The datasets root this process reads (see :func:`use_root`)."""
    return _root


@contextlib.contextmanager
def bomb_guard() -> Iterator[None]:
    """Pillow's decompression-bomb warning raised as an error: an image over
    ``MAX_IMAGE_PIXELS`` is refused, not decoded (Pillow itself raises only at twice it)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def open_image(path: Path) -> Image.Image:
    """``path`` opened (header only) under :func:`bomb_guard`; ``ValueError`` saying what
    is wrong with it (unreadable, not an image, a decompression bomb)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with bomb_guard():
            return Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"{path} is refused as a decompression bomb ({exc})") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path} is not a readable image ({exc})") from None


def decode(path: Path, channels: int) -> tuple[np.ndarray, tuple[int, int]]:
    """``path`` decoded as uint8 (C, H, W) with ``channels`` (1 grey, 3 RGB) and its
    (H, W); ``ValueError`` naming the file when it cannot be."""
    import numpy as np

    im = open_image(path)
    try:
        with bomb_guard():
            im.load()
        im = im.convert("L" if channels == 1 else "RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"{path} is corrupt ({exc})") from None
    array = np.asarray(im, dtype=np.uint8)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return array, (array.shape[1], array.shape[2])


def pad_stack(arrays: list[np.ndarray], channels: int) -> RawSplit:
    """Images of any sizes as one split: uint8 (N, C, Hmax, Wmax), each image at the top
    left and zeros beyond it, with ``sizes`` (N, 2) its real (H, W)."""
    import numpy as np

    sizes = np.array([a.shape[1:] for a in arrays], dtype=np.int64).reshape(-1, 2)
    h, w = (int(sizes[:, 0].max()), int(sizes[:, 1].max())) if len(arrays) else (1, 1)
    images = np.zeros((len(arrays), channels, h, w), dtype=np.uint8)
    for i, a in enumerate(arrays):
        images[i, :, : a.shape[1], : a.shape[2]] = a
    return RawSplit(images, None, sizes)


@dataclass(frozen=True)
class Survey:
    """What a folder holds: each split's files with their class index (None: flat), the
    classes, every readable image's (H, W) and mode, and each problem by file."""

    files: dict[str, list[tuple[Path, int | None]]]
    classes: tuple[str, ...]
    sizes: list[tuple[int, int]] = field(default_factory=list)
    modes: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)


def list_files(folder: Path) -> tuple[dict[str, list[tuple[Path, int | None]]],
                                      tuple[str, ...], list[str]]:
    """Each split's image files (sorted) with their class index, the classes (the class
    folders of ``train/``; empty when flat) and layout problems."""
    train = folder / "train"
    classes = tuple(sorted(d.name for d in train.iterdir() if d.is_dir()
                           and not d.name.startswith("."))) if train.is_dir() else ()
    files: dict[str, list[tuple[Path, int | None]]] = {}
    problems = []
    for split in SPLITS:
        base = folder / split
        if not base.is_dir():
            problems.append(f"{base} is missing")
            files[split] = []
            continue
        if classes:
            found = []
            for d in sorted(x for x in base.iterdir() if x.is_dir()
                            and not x.name.startswith(".")):
                if d.name not in classes:
                    problems.append(f"{d} is a class that train/ does not have")
                    continue
                found += [(p, classes.index(d.name)) for p in sorted(d.iterdir())
                          if p.suffix.lower() in IMAGE_SUFFIXES]
        else:
            found = [(p, None) for p in sorted(base.iterdir())
                     if p.suffix.lower() in IMAGE_SUFFIXES]
        if not found:
            problems.append(f"{base} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        files[split] = found
    return files, classes, problems


_surveys: dict[tuple[object, ...], Survey] = {}
MAX_SURVEYS = 64  # folders' surveys kept (the oldest dropped first)


def survey(folder: Path) -> Survey:
    """Decode every image of ``folder`` once per file list (cached by path, size and
    modification time): sizes, modes and each corrupt, unreadable or bomb file."""
    files, classes, problems = list_files(folder)
    paths = [p for split in SPLITS for p, _ in files[split]]
    key = (str(folder), classes, tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns)
                                       for p in paths))
    if key in _surveys:
        return _surveys[key]
    sizes, modes = [], set()
    problems = list(problems)
    for p in paths:
        try:
            im = open_image(p)
            with bomb_guard():
                im.load()
        except ValueError as exc:
            problems.append(str(exc))
            continue
        except (OSError, SyntaxError) as exc:
            problems.append(f"{p} is corrupt ({exc})")
            continue
        sizes.append((im.height, im.width))
        modes.add(im.mode)
    found = Survey(files, classes, sizes, modes, problems)
    while len(_surveys) >= MAX_SURVEYS:
        _surveys.pop(next(iter(_surveys)))
    _surveys[key] = found
    return found


class FolderDataset(DatasetEntry):
    """The dataset of one folder (see the module's docstring)."""

    def __init__(self, name: str, path: Path) -> None:
        self.path = path
        s = survey(path)
        layout = (f"ImageFolder layout, classes {', '.join(s.classes)}" if s.classes
                  else "flat layout: unlabelled, so no classifier accuracy")
        sizes = s.sizes or [(0, 0)]
        lo = (min(h for h, _ in sizes), min(w for _, w in sizes))
        hi = (max(h for h, _ in sizes), max(w for _, w in sizes))
        self.info = DatasetInfo(
            name, name, f"Images of the folder {name}/ ({layout}).",
            num_classes=len(s.classes) or None,
            channels=1 if s.modes and s.modes <= GREY_MODES else 3,
            native_size=lo if lo == hi and s.sizes else None,
            train_size=len(s.files["train"]), test_size=len(s.files["test"]),
            min_size=lo, max_size=hi, classes=s.classes,
            split="the folder's own train/ and test/")

    def folder(self, root: Path) -> Path:
        return self.path

    def files(self) -> tuple[str, ...]:
        return ("train/", "test/")

    def expected(self, root: Path) -> str:
        return (f"{self.path}/train/ and test/ (ImageFolder: <split>/<class>/*.png; flat: "
                f"<split>/*.png; {', '.join(IMAGE_SUFFIXES)})")

    def check(self, root: Path) -> DatasetCheck:
        problems = survey(self.path).problems
        return DatasetCheck("corrupt", tuple(problems)) if problems \
            else DatasetCheck("available")

    def load(self, root: Path, download: bool) -> tuple[RawSplit, RawSplit]:
        import numpy as np

        s = survey(self.path)
        splits = []
        for split in SPLITS:
            arrays = [decode(p, self.info.channels)[0] for p, _ in s.files[split]]
            raw = pad_stack(arrays, self.info.channels)
            labels = np.array([c for _, c in s.files[split]], dtype=np.int64) \
                if s.classes else None
            splits.append(RawSplit(raw.images, labels, raw.sizes))
        return splits[0], splits[1]


def folder_names(base: Path | None = None) -> list[str]:
    """The folders under the datasets root that are datasets: a registry-style name
    (lowercase, digits, ``_``) holding ``train/`` and ``test/``."""
    base = root() if base is None else base
    if base is None or not base.is_dir():
        return []
    return sorted(d.name for d in base.iterdir() if d.is_dir() and NAME.match(d.name)
                  and (d / "train").is_dir() and (d / "test").is_dir())


def folder_entry(name: str) -> FolderDataset | None:
    """The folder dataset ``name`` under the datasets root, or None."""
    base = root()
    if base is None or not NAME.match(name) or name not in folder_names(base):
        return None
    return FolderDataset(name, base / name)
