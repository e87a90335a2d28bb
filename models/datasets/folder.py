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

A folder may also live at a URL: any fsspec URL (``s3://lab/shapes``, ``gs://…``,
``memory://…``) registered under a name (``Settings.dataset_urls``, the environment's
``AELAB_DATASET_URLS``) is the dataset of that name, read through fsspec by the API and
every worker alike (the registration travels in each run's job environment, so no node
needs a shared mount). A registered name takes precedence over a folder of the same name
under the root; shown in messages, its URL loses any credentials it holds.

Users name datasets; no request names a path or a URL. Which root and URLs a process reads
are set once by :func:`use_root` and :func:`use_urls` (the service's composition root, a
run's steps from its ``RunEnv``). Torch-free; Pillow, numpy and fsspec are imported
inside functions.
"""

from __future__ import annotations

import contextlib
import io
import posixpath
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from models.datasets.base import (
    DatasetCheck,
    DatasetEntry,
    DatasetInfo,
    DatasetUnavailable,
    RawSplit,
)
from models.registry import NAME

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
SPLITS = ("train", "test")
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
# Greyscale modes holding 16-bit values (Pillow opens a 16-bit PNG as "I;16", older
# Pillows as "I"): scaled to 8 bits by :func:`eight_bit`, not clipped at 255.
SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}

_root: Path | None = None
_urls: dict[str, str] = {}


def use_root(path: str | Path | None) -> None:
    """Read folder datasets from ``path`` (None: none) in this process."""
    global _root
    _root = Path(path).expanduser() if path is not None else None


def root() -> Path | None:
    """The datasets root this process reads (see :func:`use_root`)."""
    return _root


def use_urls(urls: Mapping[str, str] | None) -> None:
    """Read the dataset ``name`` from the fsspec URL ``urls[name]`` in this process (each
    a folder with ``train/`` and ``test/`` as under the root)."""
    global _urls
    _urls = dict(urls or {})


def registered_urls() -> dict[str, str]:
    """The datasets registered by URL in this process (see :func:`use_urls`)."""
    return dict(_urls)


def without_credentials(url: str) -> str:
    """``url`` as messages show it: a ``user:password@`` in it dropped."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


@dataclass(frozen=True)
class Place:
    """A file or folder of a folder dataset: ``path`` on the fsspec filesystem ``fs``
    (the local one under the datasets root, any for a registered URL), written in
    messages as ``shown`` (the local path, or the URL without credentials)."""

    fs: Any  # fsspec.AbstractFileSystem
    path: str
    shown: str

    def __truediv__(self, name: str) -> Place:
        return Place(self.fs, posixpath.join(self.path, name), f"{self.shown}/{name}")

    def __str__(self) -> str:
        return self.shown

    def __lt__(self, other: Place) -> bool:
        return self.path < other.path

    @property
    def name(self) -> str:
        return posixpath.basename(self.path.rstrip("/"))

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    def is_dir(self) -> bool:
        return bool(self.fs.isdir(self.path))

    def entries(self) -> list[tuple[Place, bool]]:
        """What the folder holds, sorted by name: (each entry, whether it is a folder)."""
        found = [(posixpath.basename(e["name"].rstrip("/")), e["type"] == "directory")
                 for e in self.fs.ls(self.path, detail=True)]
        return [(self / n, is_dir) for n, is_dir in sorted(found)]

    def relative_to(self, folder: Place) -> str:
        """Its path under ``folder`` (``train/cats/a.png``), as messages name a file of
        a dataset."""
        return posixpath.relpath(self.path, folder.path)

    def key(self) -> str:
        """Changes when the file does (fsspec's ``ukey``: size, modification time …)."""
        return str(self.fs.ukey(self.path))

    def read(self) -> bytes:
        return bytes(self.fs.cat_file(self.path))


def local_place(path: Path) -> Place:
    from fsspec.implementations.local import LocalFileSystem

    return Place(LocalFileSystem(), str(path), str(path))


def url_place(url: str) -> Place:
    """The folder at the fsspec ``url``; ImportError when its filesystem's package is
    not installed, ValueError for a protocol fsspec does not know."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    return Place(fs, path.rstrip("/") or "/", without_credentials(url).rstrip("/"))


@contextlib.contextmanager
def bomb_guard() -> Iterator[None]:
    """Pillow's decompression-bomb warning raised as an error: an image over
    ``MAX_IMAGE_PIXELS`` is refused, not decoded (Pillow itself raises only at twice it)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


_REPR = re.compile(r"<[^<>]*? object at 0x[0-9a-fA-F]+>|\b\w*Path\((['\"]).*?\1\)")


def reason(exc: BaseException) -> str:
    """Why a file could not be read, in plain words: Pillow's message without the
    Python reprs it embeds (``PosixPath('…')``, ``<_io.BytesIO object at 0x…>``), an
    OSError's ``strerror`` without its quoted file name."""
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "Pillow cannot identify it as an image"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = " ".join(_REPR.sub("", str(exc)).split())
    return text or type(exc).__name__


def open_image(path: Path | Place, name: str | None = None) -> Image.Image:
    """``path`` opened (a local file: header only; a :class:`Place`: its bytes read)
    under :func:`bomb_guard`; ``ValueError`` saying what is wrong with it (unreadable, not
    an image, a decompression bomb), naming the file as ``name`` (default: ``path``)
    in plain text."""
    from PIL import Image, UnidentifiedImageError

    shown = str(path) if name is None else name
    try:
        with bomb_guard():
            if isinstance(path, Place):
                return Image.open(io.BytesIO(path.read()))
            return Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"{shown} is refused as a decompression bomb ({reason(exc)})"
                         ) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{shown} is not a readable image ({reason(exc)})") from None


def decode(path: Path | Place, channels: int, name: str | None = None
           ) -> tuple[np.ndarray, tuple[int, int]]:
    """``path`` decoded as uint8 (C, H, W) with ``channels`` (1 grey, 3 RGB) and its
    (H, W); ``ValueError`` naming the file (as ``name``, default ``path``) when it cannot
    be."""
    import numpy as np

    im = open_image(path, name)
    try:
        with bomb_guard():
            im.load()
        im = eight_bit(im).convert("L" if channels == 1 else "RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"{path if name is None else name} is corrupt ({reason(exc)})"
                         ) from None
    array = np.asarray(im, dtype=np.uint8)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return array, (array.shape[1], array.shape[2])


def eight_bit(im: Image.Image) -> Image.Image:
    """A 16-bit greyscale image (:data:`SIXTEEN_BIT_MODES`) as 8-bit "L": each value
    v in 0..65535 becomes round(v / 257) in 0..255 (values outside 0..65535, possible in
    mode "I", are clipped to it first). Pillow's own conversion clips at 255 instead,
    which turns nearly every pixel of a 16-bit image white. Other modes are returned
    as they are."""
    import numpy as np
    from PIL import Image

    if im.mode not in SIXTEEN_BIT_MODES:
        return im
    values = np.asarray(im).astype(np.int64).clip(0, 65535)
    return Image.fromarray(((values + 128) // 257).astype(np.uint8))  # (H, W): "L"


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


PADDED_LIMIT_BYTES = 2 << 30  # the largest padded split tensor a run may load: 2 GiB
PADDED_WASTE = 4  # the most padded pixels a split may hold per real pixel


def _binary(n: float) -> str:
    """Bytes in binary units: ``512 B``, ``2.0 GiB``."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def padding_problems(name: str, splits: Mapping[str, list[tuple[str, tuple[int, int]]]],
                     channels: int) -> list[str]:
    """Why the dataset ``name`` cannot be loaded as its splits' images are: one message
    per split whose padded tensor is too big or too wasteful, else none.

    A split of images of differing sizes loads as one uint8 tensor (N, C, Hmax, Wmax)
    (:func:`pad_stack`): every image padded to the split's largest height and largest
    width, whatever ``data.crop`` (crops and tiles are cut from it afterwards). A split
    is refused when that tensor exceeds :data:`PADDED_LIMIT_BYTES` (N·C·Hmax·Wmax bytes),
    or when its N·Hmax·Wmax pixels exceed :data:`PADDED_WASTE` times the Σ H·W real ones
    (a few large or oddly shaped images make every slot that large).

    ``splits``: per split, each image's (name in the dataset, (H, W)); ``channels``: C
    (1 or 3)."""
    problems = []
    for split, images in splits.items():
        if not images:
            continue
        hmax = max(h for _, (h, _w) in images)
        wmax = max(w for _, (_h, w) in images)
        n = len(images)
        padded = n * hmax * wmax
        real = sum(h * w for _, (h, w) in images)
        nbytes = padded * channels
        if nbytes <= PADDED_LIMIT_BYTES and padded <= PADDED_WASTE * real:
            continue
        largest, (lh, lw) = max(images, key=lambda image: image[1][0] * image[1][1])
        lo = (min(h for _, (h, _w) in images), min(w for _, (_h, w) in images))
        why = (f"{_binary(nbytes)}, over the {_binary(PADDED_LIMIT_BYTES)} limit"
               if nbytes > PADDED_LIMIT_BYTES else
               f"{padded / real:.1f}× its real pixels, over the {PADDED_WASTE}× limit")
        problems.append(
            f"dataset {name}: its {split} split of {n} images from {lo[0]}×{lo[1]} to "
            f"{hmax}×{wmax} (H×W) loads as one tensor padded to the largest, "
            f"{n}×{channels}×{hmax}×{wmax} ({why}), whatever data.crop; cut the large "
            f"images into tiles about the size of the others (or resize them) before "
            f"placing them, or move them out (the largest: {largest}, {lh}×{lw})")
    return problems


@dataclass(frozen=True)
class Survey:
    """What a folder holds: each split's files with their class index (None: flat), the
    classes, every readable image's (H, W) and mode, and each problem by file."""

    files: dict[str, list[tuple[Place, int | None]]]
    classes: tuple[str, ...]
    sizes: list[tuple[int, int]] = field(default_factory=list)
    modes: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    missing: bool = False  # train/ or test/ is not there, or the folder cannot be listed
    # Each split's readable images: (path in the dataset, (H, W)), in file order.
    by_split: dict[str, list[tuple[str, tuple[int, int]]]] = field(default_factory=dict)


def _images(folder: Place) -> list[Place]:
    return [p for p, is_dir in folder.entries()
            if not is_dir and p.suffix.lower() in IMAGE_SUFFIXES]


def list_files(folder: Place) -> tuple[dict[str, list[tuple[Place, int | None]]],
                                       tuple[str, ...], list[str]]:
    """Each split's image files (sorted) with their class index, the classes (the class
    folders of ``train/``; empty when flat) and layout problems."""
    train = folder / "train"
    classes = tuple(d.name for d, is_dir in train.entries() if is_dir
                    and not d.name.startswith(".")) if train.is_dir() else ()
    files: dict[str, list[tuple[Place, int | None]]] = {}
    problems = []
    for split in SPLITS:
        base = folder / split
        if not base.is_dir():
            problems.append(f"{base} is missing")
            files[split] = []
            continue
        found: list[tuple[Place, int | None]] = []
        if classes:
            for d, is_dir in base.entries():
                if not is_dir or d.name.startswith("."):
                    continue
                if d.name not in classes:
                    problems.append(f"{d} is a class that train/ does not have")
                    continue
                found += [(p, classes.index(d.name)) for p in _images(d)]
        else:
            found = [(p, None) for p in _images(base)]
        if not found:
            problems.append(f"{base} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        files[split] = found
    return files, classes, problems


_surveys: dict[tuple[object, ...], Survey] = {}
MAX_SURVEYS = 64  # folders' surveys kept (the oldest dropped first)


def survey(folder: Place) -> Survey:
    """Decode every image of ``folder`` once per file list (cached by path and each
    file's fsspec ``ukey``: size, modification time …): sizes, modes and each corrupt,
    unreadable or bomb file. A folder that cannot be listed (a URL unreachable, its
    filesystem's package missing) is one problem, saying why."""
    try:
        files, classes, problems = list_files(folder)
        paths = [p for split in SPLITS for p, _ in files[split]]
        key = (folder.shown, classes, tuple((p.path, p.key()) for p in paths))
    except (OSError, ValueError) as exc:
        return Survey({split: [] for split in SPLITS}, (),
                      problems=[f"{folder} cannot be listed ({exc})"], missing=True)
    if key in _surveys:
        return _surveys[key]
    sizes, modes = [], set()
    by_split: dict[str, list[tuple[str, tuple[int, int]]]] = {split: [] for split in SPLITS}
    problems = list(problems)
    for p, split in [(p, s) for s in SPLITS for p, _ in files[s]]:
        name = p.relative_to(folder)  # messages name a file by its path in the dataset
        try:
            im = open_image(p, name)
            with bomb_guard():
                im.load()
        except ValueError as exc:
            problems.append(str(exc))
            continue
        except (OSError, SyntaxError) as exc:
            problems.append(f"{name} is corrupt ({reason(exc)})")
            continue
        sizes.append((im.height, im.width))
        by_split[split].append((name, (im.height, im.width)))
        modes.add(im.mode)
    missing = any(not (folder / split).is_dir() for split in SPLITS)
    found = Survey(files, classes, sizes, modes, problems, missing, by_split)
    while len(_surveys) >= MAX_SURVEYS:
        _surveys.pop(next(iter(_surveys)))
    _surveys[key] = found
    return found


class FolderDataset(DatasetEntry):
    """The dataset of one folder (see the module's docstring)."""

    def __init__(self, name: str, place: Place, url: bool = False) -> None:
        self.place = place
        s = survey(place)
        layout = (f"ImageFolder layout, classes {', '.join(s.classes)}" if s.classes
                  else "flat layout: unlabelled, so no classifier accuracy")
        where = f"at the registered URL {place}" if url else f"of the folder {name}/"
        sizes = s.sizes or [(0, 0)]
        lo = (min(h for h, _ in sizes), min(w for _, w in sizes))
        hi = (max(h for h, _ in sizes), max(w for _, w in sizes))
        self.info = DatasetInfo(
            name, name, f"Images {where} ({layout}).",
            num_classes=len(s.classes) or None,
            channels=1 if s.modes and s.modes <= GREY_MODES else 3,
            native_size=lo if lo == hi and s.sizes else None,
            train_size=len(s.files["train"]), test_size=len(s.files["test"]),
            min_size=lo, max_size=hi, classes=s.classes,
            split="the folder's own train/ and test/")

    def folder(self, root: Path) -> Path:
        return Path(self.place.shown)

    def location(self, root: Path) -> str:
        return self.place.shown

    def files(self) -> tuple[str, ...]:
        return ("train/", "test/")

    def expected(self, root: Path) -> str:
        return (f"{self.place}/train/ and test/ (ImageFolder: <split>/<class>/*.png; flat: "
                f"<split>/*.png; {', '.join(IMAGE_SUFFIXES)})")

    def check(self, root: Path) -> DatasetCheck:
        s = survey(self.place)
        if s.problems:
            return DatasetCheck("missing" if s.missing else "corrupt", tuple(s.problems))
        padding = padding_problems(self.info.name, s.by_split, self.info.channels)
        if padding:
            return DatasetCheck("unusable", tuple(padding))
        return DatasetCheck("available")

    def load(self, root: Path, download: bool) -> tuple[RawSplit, RawSplit]:
        import numpy as np

        s = survey(self.place)
        splits = []
        for split in SPLITS:
            arrays = [decode(p, self.info.channels, p.relative_to(self.place))[0]
                      for p, _ in s.files[split]]
            raw = pad_stack(arrays, self.info.channels)
            labels = np.array([c for _, c in s.files[split]], dtype=np.int64) \
                if s.classes else None
            splits.append(RawSplit(raw.images, labels, raw.sizes))
        return splits[0], splits[1]


def local_names(base: Path | None = None) -> list[str]:
    """The folders under the datasets root that are datasets: a registry-style name
    (lowercase, digits, ``_``) holding ``train/`` and ``test/``."""
    base = root() if base is None else base
    if base is None or not base.is_dir():
        return []
    return sorted(d.name for d in base.iterdir() if d.is_dir() and NAME.match(d.name)
                  and (d / "train").is_dir() and (d / "test").is_dir())


def folder_names(base: Path | None = None) -> list[str]:
    """The folder datasets here: those under the datasets root (:func:`local_names`) and
    those registered by URL (:func:`use_urls`; listed without being reached)."""
    return sorted({*local_names(base), *_urls})


def folder_entry(name: str) -> FolderDataset | None:
    """The folder dataset ``name``: registered by URL, else under the datasets root; or
    None."""
    if name in _urls:
        url = _urls[name]
        try:
            place = url_place(url)
        except (ImportError, ValueError) as exc:  # the filesystem's package is missing
            place = Place(None, "", without_credentials(url))
            return UnreachableFolder(name, place, f"{place} cannot be read here ({exc})")
        return FolderDataset(name, place, url=True)
    base = root()
    if base is None or not NAME.match(name) or name not in local_names(base):
        return None
    return FolderDataset(name, local_place(base / name))


class UnreachableFolder(FolderDataset):
    """A dataset registered by a URL this process cannot read at all: named, with why."""

    def __init__(self, name: str, place: Place, problem: str) -> None:
        self.place = place
        self.problem = problem
        self.info = DatasetInfo(name, name, f"Images at the registered URL {place} "
                                f"(unreadable here: {problem}).", num_classes=None,
                                channels=3, native_size=None, train_size=0, test_size=0,
                                split="the folder's own train/ and test/")

    def check(self, root: Path) -> DatasetCheck:
        return DatasetCheck("missing", (self.problem,))

    def load(self, root: Path, download: bool) -> tuple[RawSplit, RawSplit]:
        raise DatasetUnavailable(f"dataset {self.info.name!r}: {self.problem}")
