"""Galleries composed from stored artifacts: nothing is re-run and torch is never loaded.

Every run saved, at evaluation, its dataset's fixed sample set and its reconstructions of
exactly those images as PNG strips (``workers.store.GALLERY_*``). A gallery is the inputs
of one run as its first row and each run's reconstructions below, one row per run: tiles
are cut from the strips with Pillow and sent inline as lossless PNG data URIs, so a
gallery is one request and each tile is, byte for byte, the pixels the model produced.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.caches import TileCache
from service.persistence.artifacts import ArtifactError, ArtifactStore
from service.persistence.tables import Artifact, Run
from service.web.format import run_details, run_label
from workers.store import GALLERY_INPUTS, GALLERY_META, GALLERY_RECONSTRUCTIONS

TILE = 32  # px: the study's crop; tiles of whole images (data evaluated whole) are larger
MAX_TILE = 256  # px: the largest tile a run stores (models.samples.FIT, whole images)
UNREADABLE = "its reconstruction files cannot be read"


@dataclass(frozen=True)
class Tile:
    src: str  # a data:image/png URI of the tile (square: Gallery.tile px, or fitted)
    index: int  # its test image: the index-th image of the test split
    psnr: float | None = None  # dB, from gallery.json (None: exact, or the inputs row)
    # A whole image's own (H, W) scaled to fit Gallery.tile (its aspect kept); None: square
    fitted: tuple[int, int] | None = None

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) in px of a fitted tile; None for a square one."""
        return None if self.fitted is None else (self.fitted[1], self.fitted[0])


@dataclass
class GalleryRow:
    run: Run
    experiment_name: str
    tiles: list[Tile | None] = field(default_factory=list)  # None: no such sample
    note: str | None = None  # why a row has no tiles, or a warning
    # What tells it from the gallery's other rows (λ, latent size, seed, sample:
    # service.web.format.run_details); "" when nothing does
    detail: str = ""

    @property
    def label(self) -> str:
        """The row's run as its tiles' labels name it: ``Factorized prior λ=0.01 #12``."""
        return run_label(self.run, self.detail)


@dataclass
class Gallery:
    dataset: str
    inputs: list[Tile]
    rows: list[GalleryRow]
    tile: int = TILE  # px side of every tile: the crop, or whole images scaled to fit

    @property
    def count(self) -> int:
        return len(self.inputs)

    @property
    def unreadable(self) -> int:
        """How many runs' stored strips cannot be read (damaged, truncated, not a
        strip): the page says so rather than that none are stored."""
        return sum(row.note == UNREADABLE for row in self.rows)


def png_rgb(pixels: np.ndarray, level: int = 6) -> bytes:
    """A minimal lossless PNG (8-bit RGB, every row "Up"-filtered) of an (H, W, 3) uint8
    array.

    Pillow spends ~0.25 ms per 32×32 tile on encoder set-up; this writes the three chunks
    a PNG needs directly in a fifth of that (tiles ~15 % larger than Pillow's adaptive
    filtering), so cutting a cold gallery's 56 tiles costs ~3 ms."""
    h, w, _ = pixels.shape
    rows = pixels.reshape(h, 3 * w)
    raw = np.empty((h, 1 + 3 * w), dtype=np.uint8)
    raw[:, 0] = 2  # filter "Up": each byte minus the one above it (mod 256)
    raw[0, 1:] = rows[0]
    raw[1:, 1:] = rows[1:] - rows[:-1]  # uint8 arithmetic wraps: exactly mod 256

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), level)) + chunk(b"IEND", b""))


MAX_TILES = 1024  # a strip longer than this is not one a run stored


def cut_tiles(png: bytes, tile: int | None = None,
              fitted: Sequence[tuple[int, int]] | None = None) -> tuple[str, ...]:
    """A strip (tile ``i`` at ``x = tile·i``; ``tile`` None: square tiles as high as the
    strip — 32 px at the study's crop, whole images scaled to fit when evaluated whole)
    → one PNG data URI per tile, lossless. With ``fitted`` (gallery.json's, for whole
    images: each one's (H, W) scaled to fit, at its tile's top left) each tile is cut to
    that, so an image keeps its own aspect ratio and no black margin.

    The header's size is checked before a pixel is decoded: a strip is at most
    ``MAX_TILE`` high and ``MAX_TILES`` tiles long, so a file declaring a huge image (a
    decompression bomb) is refused unread. Raises ValueError for anything that is not such
    a strip, a damaged or truncated file included."""
    try:
        image = Image.open(io.BytesIO(png), formats=["PNG"])
        width, height = image.size
        side = tile or height
        if height != side or not 0 < side <= MAX_TILE or width % side \
                or not 0 < width <= side * MAX_TILES:
            raise ValueError(f"not a gallery strip: {width}×{height}")
        strip = np.asarray(image.convert("RGB"))
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a readable PNG: {exc}") from exc
    tile = side
    if strip.shape[0] != tile or strip.shape[1] % tile:
        raise ValueError(f"not a gallery strip: {strip.shape[1]}×{strip.shape[0]}")
    count = strip.shape[1] // tile
    sizes = list(fitted) if fitted is not None else [(tile, tile)] * count
    if len(sizes) != count or any(not (0 < h <= tile and 0 < w <= tile) for h, w in sizes):
        raise ValueError(f"fitted sizes {sizes} do not fit {count} tiles of {tile} px")
    return tuple("data:image/png;base64," + base64.b64encode(
        png_rgb(strip[:h, i * tile:i * tile + w])).decode()
        for i, (h, w) in enumerate(sizes))


def fitted_sizes(meta: dict[str, Any]) -> tuple[tuple[int, int], ...] | None:
    """gallery.json's ``fitted`` sizes ((H, W) per tile) of whole images; None for square
    tiles. ValueError when they are not pairs of positive ints."""
    if not meta.get("whole"):
        return None
    fitted = meta.get("fitted")
    if not isinstance(fitted, list) or not all(
            isinstance(f, list) and len(f) == 2 and all(type(v) is int for v in f)
            for f in fitted):
        raise ValueError(f"gallery.json's fitted sizes are not (H, W) pairs: {fitted!r}")
    return tuple((f[0], f[1]) for f in fitted)


class GalleryReader:
    """Reads runs' gallery artifacts through the artifact store, with a tile cache."""

    def __init__(self, artifacts: ArtifactStore, cache: TileCache | None = None) -> None:
        self.artifacts = artifacts
        self.cache = cache or TileCache()

    def tiles(self, artifact: Artifact, fitted: Sequence[tuple[int, int]] | None = None
              ) -> tuple[str, ...]:
        """The data-URI tiles of a stored strip, each cut to its ``fitted`` size when
        given (cut once, then from the cache)."""
        key = (artifact.uri, artifact.checksum, tuple(fitted) if fitted else None)
        cached = self.cache.get(key)
        if cached is None:
            cached = cut_tiles(self.artifacts.read(artifact.uri), fitted=fitted)
            self.cache.put(key, cached)
        return cached

    def meta(self, artifact: Artifact) -> dict[str, Any]:
        """A run's gallery.json."""
        return json.loads(self.artifacts.read(artifact.uri))

    def compose(self, session: Session, runs: Sequence[Run], names: dict[int, str],
                dataset: str) -> Gallery:
        """The gallery of ``runs`` (all of ``dataset``), rows in the given order;
        ``names`` maps experiment ids to names for the row labels."""
        found: dict[int, dict[str, Artifact]] = {r.id: {} for r in runs}
        if runs:
            query = select(Artifact).where(
                Artifact.run_id.in_([r.id for r in runs]),
                Artifact.name.in_([GALLERY_INPUTS, GALLERY_RECONSTRUCTIONS, GALLERY_META]))
            for a in session.scalars(query):
                found[a.run_id][a.name] = a
        rows: list[GalleryRow] = []
        inputs: dict[int, tuple[str, ...]] = {}
        sizes: dict[int, tuple[tuple[int, int], ...] | None] = {}  # fitted, by run
        # Every run stores its dataset's inputs: equal files (by checksum) are cut once.
        inputs_by_checksum: dict[tuple[str, object], tuple[str, ...]] = {}
        details = run_details(runs)
        for run in runs:
            row = GalleryRow(run, names.get(run.experiment_id, ""), detail=details[run.id])
            rows.append(row)
            stored = found[run.id]
            if len(stored) < 3:
                row.note = ("no reconstructions stored" if run.status.value == "succeeded"
                            else f"no reconstructions yet ({run.status.value})")
                continue
            try:
                meta = self.meta(stored[GALLERY_META])
                fitted = fitted_sizes(meta)
                recon = self.tiles(stored[GALLERY_RECONSTRUCTIONS], fitted)
                own = stored[GALLERY_INPUTS]
                key = (own.checksum, fitted)
                if key not in inputs_by_checksum:
                    inputs_by_checksum[key] = self.tiles(own, fitted)
                inputs[run.id], sizes[run.id] = inputs_by_checksum[key], fitted
                psnr = meta.get("psnr_db", [])
            except (ArtifactError, FileNotFoundError, ValueError, OSError):
                row.note = UNREADABLE
                continue
            row.tiles = [Tile(src, i, psnr[i] if i < len(psnr) else None,
                              fitted[i] if fitted else None)
                         for i, src in enumerate(recon)]
        first = max(inputs, key=lambda run_id: len(inputs[run_id]), default=None)
        reference = inputs[first] if first is not None else ()
        reference_sizes = sizes[first] if first is not None else None
        side = TILE
        if reference:
            with Image.open(io.BytesIO(base64.b64decode(reference[0].split(",", 1)[1]))) as im:
                side = MAX_TILE if reference_sizes else im.height
        for row in rows:
            seen = inputs.get(row.run.id)
            if seen is not None and seen != reference[:len(seen)]:
                row.note = "its test images differ from the first row's"
            row.tiles += [None] * (len(reference) - len(row.tiles))
        return Gallery(dataset, [Tile(src, i, None, reference_sizes[i] if reference_sizes
                                      else None) for i, src in enumerate(reference)],
                       rows, side)
