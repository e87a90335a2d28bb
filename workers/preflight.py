"""Preflight: every file and plugin a run will need, checked before any training.

:func:`requirements` is torch-free: the API lists it in ``dry_run`` and ``/catalog``
(plugins by their installed metadata only). :func:`preflight` runs first in every run (on
the node that executes it): it loads the run's plugins (a node without them, or whose
copy fails to import, fails the run naming the plugin), checks a plugin dataset's files
with its own check, and where downloads are allowed fetches what is missing; then it fails
naming every file still missing and the folder to place it in — in seconds, with zero
epochs trained.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from models import plugins
from models.assets import (
    WEIGHTS_PURPOSE,
    WEIGHTS_URLS,
    WeightsName,
    find_weights,
    weights_filename,
    weights_folders,
    weights_problem,
)
from models.catalog import ARCHITECTURES
from models.datasets import BUILT_IN, DatasetEntry, dataset_entry
from models.datasets.folder import folder_entry
from workers.spec import RunSpec


class PreflightFailed(RuntimeError):
    """Files the run needs are missing (or unusable); the message names each one."""


@dataclass(frozen=True)
class Requirement:
    """One thing a run needs: a dataset's files, a weights file or a plugin."""

    kind: str  # "dataset" | "weights" | "plugin"
    name: str  # dataset, weights or plugin (entry point) name
    purpose: str
    files: tuple[str, ...]
    folder: str  # where to place them
    present: bool  # present and whole
    problem: str | None = None  # e.g. which file is corrupt
    group: str | None = None  # a plugin's entry point group

    def describe(self) -> str:
        if self.problem:
            return self.problem
        return f"{', '.join(self.files)} in {self.folder} ({self.purpose})"


def weights_needed(spec: RunSpec, *, classifier_ready: bool = False) -> list[WeightsName]:
    """Pretrained weights ``spec`` loads: its encoder body, its loss and its classifier."""
    names: list[WeightsName] = list(spec.recipe.pretrained_weights) if spec.pretrained else []
    c = spec.classifier
    if c.enabled and c.pretrained and c.arch == "resnet34" and not classifier_ready:
        names.append("resnet34")
    return list(dict.fromkeys(names))


def _random_init_fields(spec: RunSpec) -> list[str]:
    """The spec fields that, set to false, stop this run needing pretrained weights."""
    fields = []
    if spec.pretrained and spec.recipe.pretrained_weights:
        fields.append("pretrained: false")
    if spec.classifier.enabled and spec.classifier.pretrained \
            and spec.classifier.arch == "resnet34":
        fields.append("classifier.pretrained: false")
    return fields


def weights_requirement(name: WeightsName, weights_dir: str) -> Requirement:
    path = find_weights(name, weights_dir)
    problem = weights_problem(name, path) if path is not None else None
    if problem:
        problem += ": delete or replace it"
    return Requirement("weights", name, WEIGHTS_PURPOSE[name], (weights_filename(name),),
                       str(weights_folders(weights_dir)[0]),
                       path is not None and problem is None, problem)


def dataset_requirement(entry: DatasetEntry, data_root: str) -> Requirement:
    """The files of a dataset entry, checked by the entry itself."""
    root = Path(data_root).expanduser()
    info = entry.info
    check = entry.check(root)
    problem = None
    if check.status == "corrupt":  # each file named as the entry's check names it
        them = "it" if len(check.problems) == 1 else "them"
        problem = (f"dataset {info.name} in {entry.location(root)}: "
                   f"{'; '.join(check.problems)}: delete or replace {them}")
    elif check.status == "unusable":  # whole files: each problem says what to do
        problem = "; ".join(check.problems)
    return Requirement("dataset", info.name, f"dataset {info.name} ({info.title})",
                       entry.files(), entry.location(root), check.status == "available",
                       problem)


INSTALL_HINT = ("install it into the Python environment of every node that trains (README: "
                "Plugins)")


def plugin_requirement(group: str, name: str, planned: str | None = None) -> Requirement:
    """A plugin's entry point, installed here or not (metadata only: nothing imported);
    ``planned``: the distribution and version the run was planned with."""
    entry = plugins.find(group, name)
    what = "architecture" if group == plugins.VARIANTS_GROUP else "dataset"
    purpose = f"{what} plugin {name!r} ({group} entry point)"
    problem = None
    if entry is None:
        problem = (f"{purpose} is not installed on this node"
                   f"{f' (the run was planned with {planned})' if planned else ''}: "
                   f"{INSTALL_HINT}")
    elif planned and planned != entry.source.describe():
        problem = (f"{purpose} is {entry.source.describe()} on this node, but the run was "
                   f"planned with {planned}: {INSTALL_HINT}")
    return Requirement("plugin", name, purpose, (planned or name,),
                       "this node's Python environment", problem is None, problem, group)


def plugin_requirements(spec: RunSpec) -> list[Requirement]:
    """The plugins ``spec`` builds or loads: its architecture's and its dataset's."""
    needs = []
    recipe = spec.recipe
    if recipe.architecture not in ARCHITECTURES:
        ref = recipe.plugin
        planned = f"{ref.distribution} {ref.version}" if ref and ref.distribution else None
        needs.append(plugin_requirement(plugins.VARIANTS_GROUP, recipe.architecture, planned))
    if spec.dataset not in BUILT_IN and folder_entry(spec.dataset) is None:
        needs.append(plugin_requirement(plugins.DATASETS_GROUP, spec.dataset))
    return needs


def requirements(spec: RunSpec, *, data_root: str, weights_dir: str,
                 classifier_ready: bool = False) -> list[Requirement]:
    """What ``spec`` needs on the node that runs it, each marked present or not. Torch-
    free: a plugin dataset's files are checked by :func:`preflight`, on the node."""
    needs = plugin_requirements(spec)
    if spec.dataset in BUILT_IN and BUILT_IN[spec.dataset].info.needs_files:
        needs.append(dataset_requirement(BUILT_IN[spec.dataset], data_root))
    elif (folder := folder_entry(spec.dataset)) is not None and spec.dataset not in BUILT_IN:
        needs.append(dataset_requirement(folder, data_root))  # every image decoded
    needs += [weights_requirement(n, weights_dir)
              for n in weights_needed(spec, classifier_ready=classifier_ready)]
    return needs


def _imported(need: Requirement) -> Requirement:
    """A present plugin imported here as the run will (torch, on the node): its failure
    to load becomes its problem."""
    try:
        if need.group == plugins.DATASETS_GROUP:
            dataset_entry(need.name)
        else:
            from models.builders import architecture_builder

            architecture_builder(need.name)
    except (plugins.PluginUnavailable, KeyError) as exc:
        return replace(need, present=False, problem=str(exc.args[0]))
    return need


def preflight(spec: RunSpec, *, data_root: str, weights_dir: str, allow_download: bool,
              classifier_ready: bool = False) -> list[Requirement]:
    """Make sure every plugin and file ``spec`` needs is here (downloading files when
    allowed); raise :class:`PreflightFailed` naming every missing one. Returns the
    requirements."""
    needs = [_imported(n) if n.kind == "plugin" and n.present else n
             for n in requirements(spec, data_root=data_root, weights_dir=weights_dir,
                                   classifier_ready=classifier_ready)]
    plugin_dataset = [n for n in needs if n.group == plugins.DATASETS_GROUP]
    if plugin_dataset and plugin_dataset[0].present:  # its files, by its own check
        entry = dataset_entry(spec.dataset)
        if entry.info.needs_files:
            needs.append(dataset_requirement(entry, data_root))
    problems = []
    for need in needs:
        if need.present:
            continue
        if need.problem:  # corrupt: a download would not replace it, a person must
            problems.append(need.describe())
            continue
        reason = _fetch(need, data_root=data_root, weights_dir=weights_dir) \
            if allow_download else "downloads are off"
        if reason is not None:
            problems.append(f"{need.describe()} ({reason})")
    if problems:
        hint = ""
        if any(n.kind == "weights" and not n.present for n in needs):
            fields = _random_init_fields(spec)
            hint = (" Or train from random initialisation: " + ", ".join(fields)
                    + " (aelab train: --no-pretrained)")
        raise PreflightFailed("missing or unusable on this node: " + "; ".join(problems)
                              + "." + hint)
    return needs


def _fetch(need: Requirement, *, data_root: str, weights_dir: str) -> str | None:
    """Download ``need`` (torch-side code); None on success, else a short reason."""
    try:
        if need.kind == "weights":
            from models.weights import download_weights

            download_weights(need.name, Path(weights_dir))  # type: ignore[arg-type]
            path = find_weights(need.name, weights_dir)  # type: ignore[arg-type]
            if path is None or weights_problem(need.name, path):  # type: ignore[arg-type]
                return f"the download from {WEIGHTS_URLS[need.name]} was not whole"
        else:
            from models.data import ensure_downloaded

            ensure_downloaded(need.name, Path(data_root).expanduser())
    except Exception as exc:  # offline, refused, truncated: say so, try the next file
        cause = exc.__cause__ or exc
        reason = str(getattr(cause, "reason", "") or cause).splitlines()
        return f"download failed: {type(cause).__name__}: {(reason or [''])[0][:120]}"
    return None
