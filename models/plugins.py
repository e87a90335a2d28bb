"""Plugins by entry point, as pytest's and CompressAI users' are: a distribution declares

    [project.entry-points."aelab.variants"]
    tiny_ae = "tiny_ae:build"

(``aelab.datasets`` likewise, naming a ``models.datasets.DatasetEntry``) and aelab finds it
with ``importlib.metadata.entry_points`` — nothing in aelab is edited.

Two ways to look, because loading a plugin may import torch and the API process never does:

- **In-process** (:func:`load`): the workers, which build and train the plugin's model,
  import the entry point itself; preflight does so first, so a node that lacks the plugin
  (or whose copy fails to import) fails the run in seconds, naming it.
- **Described** (:func:`described`): the API and the catalog need each plugin's facts
  (title, default latent size, a dataset's sizes) and whether it loads at all. A child
  process (``python -m models.plugin_probe``) loads every entry point and prints those
  facts, or the one-line error of a plugin that fails; this process keeps the JSON. The
  result is cached per set of installed entry points (the metadata scan is ~10 ms), so it
  runs once per plugin set — at the first request that needs it after a change.

Torch-free.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
import threading
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from models.registry import NAME, Source

VARIANTS_GROUP = "aelab.variants"
DATASETS_GROUP = "aelab.datasets"
GROUPS = (VARIANTS_GROUP, DATASETS_GROUP)
PROBE_TIMEOUT_S = 120.0
PROBE_MARKER = "AELAB-PLUGIN-PROBE "  # starts the line models.plugin_probe prints its report on


class PluginUnavailable(RuntimeError):
    """A plugin is not installed here, or fails to load."""


@dataclass(frozen=True)
class PluginEntry:
    """One installed entry point of an aelab group (metadata only: nothing imported)."""

    group: str
    name: str
    target: str  # "module:attr"
    distribution: str | None
    version: str | None

    @property
    def source(self) -> Source:
        return Source("plugin", self.distribution, self.version, f"{self.name} = {self.target}")

    def describe(self) -> str:
        """``tiny_ae (tiny-ae 0.1.0, entry point aelab.variants: tiny_ae = tiny_ae:build)``"""
        return f"{self.name} ({self.source.describe()}, entry point {self.group}: " \
               f"{self.name} = {self.target})"


def installed(group: str) -> list[PluginEntry]:
    """The ``group`` entry points installed in this environment, by name (a name given by
    two distributions is listed twice: :func:`described` reports the clash)."""
    found = []
    for ep in importlib.metadata.entry_points(group=group):
        dist = getattr(ep, "dist", None)
        found.append(PluginEntry(group, ep.name, ep.value,
                                 dist.metadata["Name"] if dist is not None else None,
                                 dist.version if dist is not None else None))
    return sorted(found, key=lambda e: (e.name, e.distribution or ""))


def find(group: str, name: str) -> PluginEntry | None:
    """The installed entry point ``name`` of ``group``, or None."""
    return next((e for e in installed(group) if e.name == name), None)


def load(entry: PluginEntry) -> Any:
    """Import ``entry``'s object in this process (may import torch). Raises
    PluginUnavailable with a one-line reason when it is gone or fails to import."""
    importlib.invalidate_caches()  # a distribution installed since this process started
    module, _, attr = entry.target.partition(":")
    try:
        obj: Any = importlib.import_module(module.strip())
        for part in filter(None, attr.strip().split(".")):
            obj = getattr(obj, part)
    except Exception as exc:  # ImportError, a plugin's own bug at import, a bad target
        raise PluginUnavailable(f"plugin {entry.describe()} fails to load: "
                                f"{one_line(exc)}") from exc
    return obj


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# ---------------------------------------------------------------------------------------
# Described in a child process


@dataclass(frozen=True)
class Described:
    """What the probe learnt of one entry point: its facts, or why it is unavailable."""

    entry: PluginEntry
    facts: dict[str, Any]
    error: str | None = None


_lock = threading.Lock()
_cache: tuple[tuple[PluginEntry, ...], dict[str, list[Described]]] | None = None


def described() -> dict[str, list[Described]]:
    """Every installed aelab entry point by group, described by a child process (cached
    until the installed set changes). With none installed no process is started."""
    global _cache
    entries = tuple(e for g in GROUPS for e in installed(g))
    with _lock:
        if _cache is None or _cache[0] != entries:
            _cache = (entries, _probe(entries))
        return _cache[1]


def _probe(entries: tuple[PluginEntry, ...]) -> dict[str, list[Described]]:
    out: dict[str, list[Described]] = {g: [] for g in GROUPS}
    if not entries:
        return out
    command = [sys.executable, "-m", "models.plugin_probe"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"}, check=False)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith(PROBE_MARKER)]
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"exit code {done.returncode}: "
                               f"{(done.stderr.strip().splitlines() or [''])[-1][:300]}")
        report = json.loads(lines[-1].removeprefix(PROBE_MARKER))
    except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        reason = f"the plugin probe ({' '.join(command[1:])}) failed: {one_line(exc)}"
        for e in entries:
            out[e.group].append(Described(e, {}, reason))
        return out
    by_key = {(r["group"], r["name"], r["target"]): r for r in report}
    for e in entries:
        r = by_key.get((e.group, e.name, e.target))
        if r is None:  # installed between the scan and the probe
            out[e.group].append(Described(e, {}, "installed while it was being probed"))
        else:
            out[e.group].append(Described(e, r.get("facts") or {}, r.get("error")))
    return out


def problem(d: Described, group: list[Described], taken: Container[str], kind: str
            ) -> str | None:
    """Why the described entry ``d`` of ``group`` cannot serve as a ``kind`` (its load
    error, a malformed name, a name ``taken`` by a built-in, or one given twice), or None."""
    name = d.entry.name
    if d.error:
        return d.error
    if not NAME.match(name):
        return (f"{name!r} is not a {kind} name: lower-case letters, digits and _, "
                "starting with a letter, at most 48")
    if name in taken:
        return f"{name!r} is the name of a built-in {kind}"
    twice = [o for o in group if o.entry.name == name and o.entry != d.entry]
    if twice:
        return f"{name!r} is also given by {twice[0].entry.source.describe()}"
    return None


def cached() -> dict[str, list[Described]] | None:
    """What :func:`described` last found, without scanning again; None before."""
    with _lock:
        return None if _cache is None else _cache[1]


def forget() -> None:
    """Drop what :func:`described` cached (the next call scans and probes again)."""
    global _cache
    with _lock:
        _cache = None
