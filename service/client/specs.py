"""Experiment specs as the client sends them: a pydantic model, a mapping, or a JSON/YAML
file. The API validates them (and names every bad field); nothing here does."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from service.client.errors import SpecError

# An ExperimentSpec (service.spec) is a pydantic model: the client never imports it.
SpecLike = BaseModel | Mapping[str, Any] | str | os.PathLike[str]


def load_spec(source: SpecLike) -> dict[str, Any]:
    """A spec as the JSON object to POST, from an ``ExperimentSpec`` (or any pydantic
    model: the fields it was given), a mapping, or a JSON/YAML file path (``-`` reads
    standard input). Raises :class:`SpecError` for a file that is missing or not a
    mapping. The spec itself is validated by the API, which names every bad field."""
    if isinstance(source, BaseModel):
        return source.model_dump(mode="json", exclude_unset=True)
    if isinstance(source, Mapping):
        return dict(source)
    if not isinstance(source, str | os.PathLike):
        raise SpecError(f"a spec is a model, a mapping or a file path, not "
                        f"{type(source).__name__}")
    path = Path(source)
    try:
        text = sys.stdin.read() if str(source) == "-" else path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{source}: {exc.strerror or exc}") from exc
    import yaml

    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise SpecError(f"{source}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}"
                        f": {exc}") from exc
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a spec is a mapping (models, datasets, ...), "
                        f"not {type(data).__name__}")
    return data
