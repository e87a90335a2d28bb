"""The study's results table, as JSON rows, CSV or Markdown, and the rate–distortion series.

One job per module, every list of measures derived from the measures table
(``workers.measures``):

- ``columns``: the results' columns (per run, aggregated, reference, expectations);
- ``rows``: one row per run and its matched codec rows; the Method label;
- ``reference``: the study's values beside ours (``reference: "study"``);
- ``expect``: each run's measures against the spec's bounds;
- ``aggregate``: seeds aggregated, tied-best by Welch's t-test;
- ``table``: the table of an experiment (per run or aggregated);
- ``cells``: how a value is written in a cell (non-finite tokens, CSV and Markdown escapes);
- ``markdown``, ``formats``: the Markdown layout and the registry of formats;
- ``rate_distortion``: the RD series of models and codecs.

The names below are what the API, the web pages and the tests use.
"""

from service.results.aggregate import aggregate
from service.results.cells import FORMULA_START, csv_cell, finite_or_token, md_text
from service.results.formats import FORMATS, Format
from service.results.rate_distortion import (
    RD_DEFINITIONS,
    compressai_export,
    rate_distortion,
    with_bd,
)
from service.results.rows import row_label
from service.results.table import Table, build, parse_spec

__all__ = [
    "FORMATS",
    "FORMULA_START",
    "RD_DEFINITIONS",
    "Format",
    "Table",
    "aggregate",
    "build",
    "compressai_export",
    "csv_cell",
    "finite_or_token",
    "md_text",
    "parse_spec",
    "rate_distortion",
    "row_label",
    "with_bd",
]
