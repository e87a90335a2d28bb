"""The results formats: a registry of media type and renderer by name."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass

from service.results.cells import csv_cell, finite_or_token
from service.results.markdown import to_markdown
from service.results.table import Table
from workers.measures import ResultsTable


def to_csv(table: Table) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=table.columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in table.rows)
    return buffer.getvalue()


def to_json(table: Table, title: str = "", experiment_id: int = 0) -> str:
    safe = [{k: finite_or_token(v) for k, v in row.items()} for row in table.rows]
    return json.dumps(ResultsTable(
        experiment_id=experiment_id, columns=list(table.columns), rows=safe,
        aggregate=table.aggregate, reference=table.reference, expect=table.expect,
        notes=table.notes,
    ).model_dump(mode="json"), allow_nan=False)


@dataclass(frozen=True)
class Format:
    """A results format: its media type and how a table becomes its text."""

    media_type: str
    render: Callable[[Table, str, int], str]


FORMATS: dict[str, Format] = {
    "json": Format("application/json", to_json),
    "csv": Format("text/csv; charset=utf-8", lambda table, title, _id: to_csv(table)),
    "markdown": Format("text/markdown; charset=utf-8",
                       lambda table, title, _id: to_markdown(table, title)),
}
