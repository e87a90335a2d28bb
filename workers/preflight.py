"""Preflight: every file a run will need, checked before any training.

:func:`requirements` is torch-free: the API lists it in ``dry_run`` and ``/catalog``.
:func:`preflight` runs first in every run (on the node that executes it); where downloads
are allowed it fetches what is missing, then fails naming every file still missing and
the folder to place it in — in seconds, with zero epochs trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.assets import (
    WEIGHTS_PURPOSE,
    WEIGHTS_URLS,
    WeightsName,
    find_weights,
    weights_filename,
    weights_folders,
    weights_problem,
)
from models.catalog import get_dataset_info, get_variant
from models.dataset_files import check_dataset, dataset_files, dataset_folder
from workers.spec import RunSpec


class PreflightFailed(RuntimeError):
    """Files the run needs are missing (or unusable); the message names each one."""


@dataclass(frozen=True)
class Requirement:
    """One thing a run needs: a dataset's files or a weights file."""

    kind: str  # "dataset" | "weights"
    name: str  # dataset name or weights name
    purpose: str
    files: tuple[str, ...]
    folder: str  # where to place them
    present: bool  # present and whole
    problem: str | None = None  # e.g. which file is corrupt

    def describe(self) -> str:
        if self.problem:
            return self.problem
        return f"{', '.join(self.files)} in {self.folder} ({self.purpose})"


def weights_needed(spec: RunSpec, *, classifier_ready: bool = False) -> list[WeightsName]:
    """Pretrained weights ``spec`` loads: its encoder, its loss and its classifier."""
    variant = get_variant(spec.model)
    names: list[WeightsName] = []
    if spec.pretrained and variant.pretrained_encoder:
        names.append("resnet34")
    if spec.pretrained and variant.loss == "feature":
        names.append("vgg16_bn")
    c = spec.classifier
    if c.enabled and c.pretrained and c.arch == "resnet34" and not classifier_ready:
        names.append("resnet34")
    return list(dict.fromkeys(names))


def _random_init_fields(spec: RunSpec) -> list[str]:
    """The spec fields that, set to false, stop this run needing pretrained weights."""
    variant = get_variant(spec.model)
    fields = []
    if spec.pretrained and (variant.pretrained_encoder or variant.loss == "feature"):
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


def dataset_requirement(name: str, data_root: str) -> Requirement:
    root = Path(data_root).expanduser()
    info = get_dataset_info(name)
    check = check_dataset(name, root)
    problem = None
    if check.status == "corrupt":
        problem = "; ".join(check.problems) + ": delete or replace it"
    return Requirement("dataset", name, f"dataset {name} ({info.title})", dataset_files(name),
                       str(dataset_folder(name, root)), check.status == "available", problem)


def requirements(spec: RunSpec, *, data_root: str, weights_dir: str,
                 classifier_ready: bool = False) -> list[Requirement]:
    """What ``spec`` needs on the node that runs it, each marked present or not."""
    needs = []
    if not get_dataset_info(spec.dataset).offline:
        needs.append(dataset_requirement(spec.dataset, data_root))
    needs += [weights_requirement(n, weights_dir)
              for n in weights_needed(spec, classifier_ready=classifier_ready)]
    return needs


def preflight(spec: RunSpec, *, data_root: str, weights_dir: str, allow_download: bool,
              classifier_ready: bool = False) -> list[Requirement]:
    """Make sure every file ``spec`` needs is here (downloading when allowed); raise
    :class:`PreflightFailed` naming every missing one. Returns the requirements."""
    needs = requirements(spec, data_root=data_root, weights_dir=weights_dir,
                         classifier_ready=classifier_ready)
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
