"""How the pages write numbers, times and sizes (Jinja filters)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from models.catalog import VARIANTS
from models.datasets import known_dataset_info
from service.results.cells import finite_or_token


def num(value: float | int | None, digits: int = 4) -> str:
    """A fixed-point number, ``–`` when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def sig(value: float | None, digits: int = 3) -> str:
    """A number to ``digits`` significant figures (learning rates, losses)."""
    return "–" if value is None else f"{value:.{digits}g}"


def duration(seconds: float | None) -> str:
    """``1h 02m``, ``3m 05s`` or ``4.2s``, as the study wrote train times; a non-finite
    time as its token (``Infinity``, ``NaN``)."""
    if seconds is None:
        return "–"
    if not math.isfinite(seconds):
        return finite_or_token(seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def size(n: int | None) -> str:
    """Bytes in binary units; a non-finite count as its token."""
    if n is None:
        return "–"
    if not math.isfinite(n):
        return finite_or_token(n)
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def when(value: datetime | None) -> str:
    """A UTC time to the minute (the ISO value goes in the element's ``datetime``)."""
    if value is None:
        return "–"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def iso(value: datetime | None) -> str:
    """ISO 8601 with the UTC offset, for ``<time datetime>``."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def variant_title(name: str) -> str:
    """A variant's name as the study's tables write it ("Pixel Shuffle")."""
    return VARIANTS[name].title if name in VARIANTS else name


def run_details(runs: Sequence[Any]) -> dict[int, str]:
    """What tells each of ``runs`` (``Run`` rows) apart from the runs of the list that
    share its model and dataset (rows that would otherwise read alike), by run id: its λ
    when set (``λ=0.01``), its latent size where theirs differ or it is not its variant's
    default (``latent 64``), its seed where theirs differ or it is not 0 (``seed 1``) and
    its search sample (``sample 3``), joined by `` · ``; ``""`` when nothing does."""
    latents: dict[tuple[str, str], set[int]] = {}
    seeds: dict[tuple[str, str], set[int]] = {}
    for r in runs:
        latents.setdefault((r.model, r.dataset), set()).add(r.latent_dim)
        seeds.setdefault((r.model, r.dataset), set()).add(r.seed)
    out = {}
    for r in runs:
        parts = []
        if r.rd_lambda is not None:
            parts.append(f"λ={r.rd_lambda:g}")
        default = VARIANTS[r.model].latent_dim if r.model in VARIANTS else None
        if len(latents[r.model, r.dataset]) > 1 or (default is not None
                                                    and r.latent_dim != default):
            parts.append(f"latent {r.latent_dim}")
        if len(seeds[r.model, r.dataset]) > 1 or r.seed:
            parts.append(f"seed {r.seed}")
        if r.sample is not None:
            parts.append(f"sample {r.sample}")
        out[r.id] = " · ".join(parts)
    return out


def run_label(run: Any, detail: str = "") -> str:
    """A run as a row names it: ``Factorized prior λ=0.01 · seed 1 #12``."""
    return f"{variant_title(run.model)}{f' {detail}' if detail else ''} #{run.id}"


def dataset_title(name: str) -> str:
    """A dataset's display name ("CIFAR-10")."""
    info = known_dataset_info(name)  # a plugin's too, once the API has described it
    return info.title if info is not None else name


def exact(value: Any) -> str:
    """The value as JSON writes it (the shortest text that reads back as the same
    float), for ``data-value`` attributes that scripts and tests compare exactly."""
    if value is None:
        return ""
    return repr(float(value)) if isinstance(value, float) else str(value)


def fmt_value(kind: str, value: Any) -> str:
    """A value by a column's format name: ``num<digits>``, ``sig``, ``duration``, ``int``."""
    if kind.startswith("num"):
        return num(value, int(kind[3:]))
    if kind == "duration":
        return duration(value)
    if kind == "sig":
        return sig(value)
    if kind == "int":
        return "–" if value is None else f"{value:,}"
    raise ValueError(f"unknown format {kind!r}")


FILTERS = {"num": num, "sig": sig, "duration": duration, "size": size, "when": when,
           "iso": iso, "variant_title": variant_title, "dataset_title": dataset_title,
           "exact": exact}
