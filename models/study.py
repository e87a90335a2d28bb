"""The study's published numbers, as data (``study_reference.json``), read without torch.

Each value is marked ``published`` (as the report printed it, the notebooks agree) or
``corrected`` (the report's is wrong or blank: the notebook's saved output, with what the
report printed beside it). Source and corrections: seed-experiment.md §6.1 and §6.2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Any, Literal

Mark = Literal["published", "corrected"]
STUDY_MEASURES = ("mae", "mse", "classifier_accuracy")  # what the study's tables report


@dataclass(frozen=True)
class StudyValue:
    value: float
    mark: Mark
    published: float | None = None  # the report's own value where it was corrected


@lru_cache(maxsize=1)
def _data() -> dict[str, Any]:
    return json.loads(files("models").joinpath("study_reference.json").read_text())  # type: ignore[no-any-return]


def source() -> str:
    """Where the numbers come from, in words."""
    return str(_data()["source"])


def _value(raw: dict[str, Any]) -> StudyValue:
    return StudyValue(float(raw["value"]), raw["mark"], raw.get("published"))


def study_values(model: str, dataset: str) -> dict[str, StudyValue]:
    """The study's MAE, MSE and classifier accuracy of ``model`` on ``dataset`` (empty
    when the study did not run it, e.g. on ``synthetic``)."""
    row = _data()["datasets"].get(dataset, {}).get("rows", {}).get(model, {})
    return {m: _value(row[m]) for m in STUDY_MEASURES if m in row}


def study_original_accuracy(dataset: str) -> StudyValue | None:
    """The reference classifier's accuracy on the original test images, in the study."""
    raw = _data()["datasets"].get(dataset, {}).get("original_accuracy")
    return _value(raw) if raw else None
