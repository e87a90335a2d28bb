"""Expectations: each run's measures against the spec's bounds (``expect``)."""

from __future__ import annotations

from typing import Any

from service.spec import Bound


def verdict(bounds: list[Bound], measures: dict[str, Any] | None
            ) -> tuple[str | None, str | None]:
    """(``PASSED``/``REGRESSED``, the numbers) of a run's measures against its bounds;
    (None, None) without bounds or before the run is evaluated."""
    if not bounds or measures is None:
        return None, None
    checks, ok = [], True
    for b in bounds:
        value = measures.get(b.measure)
        holds = value is not None and b.holds(float(value))
        ok = ok and holds
        shown = "n/a" if value is None else f"{value:.6g}"
        checks.append(f"{b.measure} {shown} {'meets' if holds else 'breaks'} "
                      f"{b.op} {b.value:g}")
    return ("PASSED" if ok else "REGRESSED"), "; ".join(checks)


def experiment_verdict(verdicts: list[str | None], expected: int) -> str | None:
    """REGRESSED once any run regressed; PASSED when all ``expected`` runs with bounds
    passed; None while some are pending (or none has bounds)."""
    if "REGRESSED" in verdicts:
        return "REGRESSED"
    if expected and verdicts.count("PASSED") == expected:
        return "PASSED"
    return None
