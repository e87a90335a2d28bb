"""The study as a reference: its published values beside ours (``reference: "study"``)."""

from __future__ import annotations

import math
from typing import Any

from models.study import study_values
from service.results.columns import REFERENCE_COLUMNS
from service.spec import Tolerance


def reference_cells(model: str, dataset: str, ours: dict[str, float | None],
                    tolerance: Tolerance) -> dict[str, Any]:
    """The study's values beside ``ours`` (a run's measures, or a group's means).

    ``reproduced`` is ``yes`` when every measure the study reported is within tolerance:
    MSE and MAE when |ours − study| ≤ tolerance × study; classifier accuracy when it is at
    most ``accuracy_points`` percentage points below the study's. ``None`` when nothing
    can be compared (the study did not run it, or the run has no measures yet)."""
    study = study_values(model, dataset)
    cells: dict[str, Any] = {c: None for c in REFERENCE_COLUMNS}
    verdicts = []
    notes = []
    for m, ref in study.items():
        cells[f"study_{m}"] = ref.value
        if ref.mark == "corrected":
            printed = "blank" if ref.published is None else f"{ref.published:g}"
            notes.append(f"{m} corrected from the notebooks (report: {printed})")
        value = ours.get(m)
        if value is None or not math.isfinite(value):
            continue
        cells[f"diff_{m}"] = value - ref.value
        if m == "classifier_accuracy":
            verdicts.append((ref.value - value) * 100 <= tolerance.accuracy_points + 1e-9)
        else:
            verdicts.append(abs(value - ref.value) <= getattr(tolerance, m) * ref.value)
    cells["reproduced"] = None if not verdicts else ("yes" if all(verdicts) else "no")
    cells["study_note"] = "; ".join(notes) or None
    return cells
