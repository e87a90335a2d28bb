"""The dataset registry: every dataset is an entry (``models.datasets.base.DatasetEntry``)
that owns its facts — native size and channels, classes, split sizes — its file check, its
download and its loader. Nothing outside the entries branches on a dataset's name.

Built-in: ``mnist``, ``cifar10``, ``synthetic``, ``photos``, ``kodak``. Plugins add
entries through the ``aelab.datasets`` entry point group (``models.plugins``): the API
knows a plugin dataset's facts from the plugin probe (:func:`dataset_info`), the workers
load the entry itself (:func:`dataset_entry`). Folders under the datasets root are
entries too (``models.datasets.folder``), named by their folder; a name that is a path is
refused, never read.

Torch-free.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from models import plugins
from models.datasets.base import (
    DatasetCheck,
    DatasetEntry,
    DatasetInfo,
    DatasetUnavailable,
    RawSplit,
    Validation,
    split_sizes,
)
from models.datasets.cifar10 import CIFAR10
from models.datasets.folder import folder_entry, folder_names
from models.datasets.mnist import MNIST
from models.datasets.photos import KODAK, PHOTOS
from models.datasets.synthetic import SYNTHETIC
from models.registry import Registry

__all__ = ["DATASETS", "DatasetCheck", "DatasetEntry", "DatasetInfo", "DatasetUnavailable",
           "RawSplit", "Validation", "check_dataset", "dataset_entry", "dataset_info",
           "dataset_names", "describe_dataset_plugin", "known_dataset_info",
           "plugin_dataset_entries", "split_sizes"]

BUILT_IN: Registry[DatasetEntry] = Registry("dataset")
for _entry in (MNIST, CIFAR10, SYNTHETIC, PHOTOS, KODAK):
    BUILT_IN.register(_entry.info.name, _entry)
# The built-in datasets' facts by name.
DATASETS: dict[str, DatasetInfo] = {name: e.info for name, e in BUILT_IN.items()}


def describe_dataset_plugin(name: str, obj: Any) -> dict[str, Any]:
    """The facts of an ``aelab.datasets`` entry point's object (in the plugin probe):
    a DatasetEntry instance (or a class building one with no arguments) whose info is
    named as its entry point. ValueError saying what is wrong otherwise."""
    entry = obj() if isinstance(obj, type) else obj
    if not isinstance(entry, DatasetEntry) or not isinstance(
            getattr(entry, "info", None), DatasetInfo):
        raise ValueError(f"an aelab.datasets entry point names a models.datasets.DatasetEntry "
                         f"with an info (a DatasetInfo), not {type(entry).__name__}")
    if entry.info.name != name:
        raise ValueError(f"entry point {name!r} names a dataset whose info says "
                         f"{entry.info.name!r}")
    facts = asdict(entry.info)
    facts.pop("source")
    return facts


PluginDataset = tuple[DatasetInfo | None, str | None, plugins.Described]


def plugin_datasets(found: dict[str, list[plugins.Described]] | None = None
                    ) -> dict[str, PluginDataset]:
    """Installed dataset plugins (as ``found`` by the probe; default: described now):
    name → (facts, None, described) or (None, why it is unavailable, described); a name
    given by two distributions is the first's, unavailable (both:
    :func:`plugin_dataset_entries`)."""
    out: dict[str, PluginDataset] = {}
    for entry in plugin_dataset_entries(found):
        out.setdefault(entry[2].entry.name, entry)
    return out


def plugin_dataset_entries(found: dict[str, list[plugins.Described]] | None = None
                           ) -> list[PluginDataset]:
    """Every installed ``aelab.datasets`` entry point as (facts, None, described) or
    (None, why it is unavailable, described), two of one name included (each
    unavailable, naming the other)."""
    found = plugins.described() if found is None else found
    out: list[PluginDataset] = []
    for d in found[plugins.DATASETS_GROUP]:
        problem = plugins.problem(d, found[plugins.DATASETS_GROUP], BUILT_IN, "dataset")
        info = None
        if problem is None:
            facts = {**d.facts, **{k: tuple(d.facts[k]) if d.facts.get(k) else None
                                   for k in ("native_size", "min_size", "max_size")},
                     "classes": tuple(d.facts.get("classes") or ())}
            info = DatasetInfo(**facts, source=d.entry.source)
        out.append((info, problem, d))
    return out


def dataset_names() -> list[str]:
    """Every dataset a spec may name here: the built-ins, available plugins, then the
    folder datasets (a folder that a built-in or plugin name shadows is not one)."""
    named = [*BUILT_IN, *(n for n, (info, _, _) in plugin_datasets().items() if info)]
    return named + [n for n in folder_names() if n not in named]


def _unknown(name: str) -> KeyError:
    """The KeyError for a name that is no dataset here: a path is said to be one."""
    if any(c in name for c in "/\\:") or name.startswith((".", "~")):
        return KeyError(f"dataset {name!r} is a path: datasets are named, never given by "
                        f"path (a folder dataset is named by its folder under the datasets "
                        f"root); valid: {', '.join(dataset_names())}")
    return KeyError(f"unknown dataset {name!r}; valid: {', '.join(dataset_names())}")


def dataset_info(name: str) -> DatasetInfo:
    """The facts of ``name`` (a plugin's from the plugin probe). KeyError listing the
    valid names when unknown; PluginUnavailable saying why for a broken plugin."""
    if name in BUILT_IN:
        return BUILT_IN[name].info
    found = plugin_datasets()
    if name in found:
        info, problem, _ = found[name]
        if info is None:
            raise plugins.PluginUnavailable(f"dataset {name!r} is unavailable: {problem}")
        return info
    folder = folder_entry(name)
    if folder is not None:
        return folder.info
    raise _unknown(name)


def known_dataset_info(name: str) -> DatasetInfo | None:
    """The facts of ``name`` when known without probing plugins now: a built-in's, or a
    plugin's this process has already described (the API's); else None."""
    if name in BUILT_IN:
        return BUILT_IN[name].info
    cached = plugins.cached()
    found = plugin_datasets(cached).get(name) if cached is not None else None
    if found:
        return found[0]
    folder = folder_entry(name) if plugins.find(plugins.DATASETS_GROUP, name) is None \
        else None
    return folder.info if folder is not None else None


def dataset_entry(name: str) -> DatasetEntry:
    """The entry of ``name``, a plugin's loaded in this process (workers). KeyError
    listing the valid names when unknown; PluginUnavailable when it fails to load."""
    if name in BUILT_IN:
        return BUILT_IN[name]
    entry = plugins.find(plugins.DATASETS_GROUP, name)
    if entry is None:
        folder = folder_entry(name)
        if folder is not None:
            return folder
        raise _unknown(name)
    obj = plugins.load(entry)
    try:
        describe_dataset_plugin(name, obj)
    except ValueError as exc:
        raise plugins.PluginUnavailable(f"plugin {entry.describe()}: {exc}") from exc
    return obj() if isinstance(obj, type) else obj  # type: ignore[no-any-return]


def check_dataset(name: str, root: Path) -> DatasetCheck:
    """Whether ``name`` can be loaded from ``root`` without a network, file by file."""
    return dataset_entry(name).check(root)


def is_available(name: str, root: Path) -> bool:
    """Whether ``name`` can be loaded here without a network (files present and whole)."""
    return check_dataset(name, root).status == "available"
