"""A registry by name, as timm's and torchvision's model registries are: registering a
name twice is refused, a miss names every valid name, and names list with wildcards.

Torch-free: the catalog of recipes, architectures, losses and datasets is built from it,
and the API validates specs against that catalog.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fnmatch import fnmatch
from typing import Generic, Literal, TypeVar

T = TypeVar("T")
# Names of variants, architectures and datasets: they appear in job names, URLs, files.
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,47}$"
NAME = re.compile(NAME_PATTERN)


@dataclass(frozen=True)
class Source:
    """Where a catalog entry comes from: aelab itself, or a plugin's distribution (its
    ``aelab.variants`` / ``aelab.datasets`` entry point)."""

    kind: Literal["built-in", "plugin"] = "built-in"
    distribution: str | None = None
    version: str | None = None
    entry_point: str | None = None  # "tiny_ae = tiny_ae:build"

    def describe(self) -> str:
        """``built-in``, or ``tiny-ae 0.1.0``."""
        return self.kind if self.kind == "built-in" else f"{self.distribution} {self.version}"


AELAB = Source()  # a built-in entry


class Registry(Mapping[str, T], Generic[T]):
    """Entries of one ``kind`` ("architecture", "dataset", …) by name, in registration
    order. ``registry[name]`` raises a KeyError listing the valid names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` as ``name``; ValueError when the name is taken. Returns it."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; valid: "
                           f"{', '.join(self._entries)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style ``pattern`` (``*conv``), sorted."""
        return sorted(n for n in self._entries if fnmatch(n, pattern))
