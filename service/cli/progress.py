"""Following an experiment from the CLI: one live progress bar per run in a terminal
(phase, epoch/total, elapsed, ETA), plain lines without colour when output goes to a pipe
or a file, and the results table at the end.

Rich only (no server or training imports): ``aelab submit --wait`` runs on the base install.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn
from rich.table import Table
from rich.text import Text

from service.client.schemas import ExperimentOut, ResultsTable, RunSummary
from service.client.states import Status
from workers.measures import BY_NAME, SUMMARY, MeasureInfo

STATUS_STYLE = {Status.queued: "dim", Status.running: "cyan", Status.succeeded: "green",
                Status.failed: "red", Status.cancelled: "yellow", Status.pruned: "magenta"}


def format_duration(seconds: float | str | None) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour on); ``-:--`` when unknown; a non-finite time
    as its token (``Infinity``, ``NaN``), as the API writes it."""
    if seconds is None:
        return "-:--"
    if isinstance(seconds, str) or not math.isfinite(seconds):
        return finite_or_token(seconds)
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def elapsed_s(run: RunSummary, now: datetime | None = None) -> float | None:
    """Seconds since the run started (to its end once finished); None while queued."""
    if run.started_at is None:
        return None
    end = run.finished_at or now or datetime.now(UTC)
    return max(0.0, (end - run.started_at).total_seconds())


@dataclass
class RunClock:
    """Estimates a run's time left from the epochs seen ticking by.

    Two epoch changes seen here give the pace of training alone; before that, the time
    since the run started divided by the epochs done (which counts the data and LR-search
    phases too, so the first estimate is on the long side).
    """

    first: tuple[float, int] | None = None  # (monotonic time, epoch) of the first change
    last: tuple[float, int] | None = None  # and of the latest
    seen_epoch: int | None = None

    def observe(self, epoch: int, now: float) -> None:
        """Note the run's epoch as polled at monotonic time ``now``."""
        if self.seen_epoch is not None and epoch != self.seen_epoch:
            if self.first is None:
                self.first = (now, epoch)
            self.last = (now, epoch)
        self.seen_epoch = epoch

    def eta_s(self, run: RunSummary, now: float, wall_now: datetime | None = None
              ) -> float | None:
        """Seconds left, or None when the run ended or nothing allows a guess yet."""
        if run.status.finished or run.epochs_total <= 0:
            return None
        left = run.epochs_total - run.epoch
        if left <= 0:
            return 0.0
        if self.first is not None and self.last is not None and self.last[1] > self.first[1]:
            per_epoch = (self.last[0] - self.first[0]) / (self.last[1] - self.first[1])
            return max(0.0, per_epoch * left - (now - self.last[0]))
        spent = elapsed_s(run, wall_now)
        if run.epoch <= 0 or spent is None:
            return None
        return spent / run.epoch * left


def best_line(experiment: ExperimentOut) -> str | None:
    """A search's best finished sample so far, as a line: ``best so far: run 7
    factorized_prior/synthetic q_psnr 24.31 (latent_dim=212, lr=0.0031)``; None for a grid
    experiment or before a sample finished."""
    search = experiment.search
    best = search.get("best") if search else None
    if not search or not best:
        return None
    values = ", ".join(f"{k}={format_number(v, '.4g') if isinstance(v, float) else v}"
                       for k, v in best["values"].items() if v is not None)
    made = len(search["samples"])
    return (f"best so far: run {best['run_id']} {best['model']}/{best['dataset']} "
            f"{search['metric']} {format_number(best['metric'], '.4g')} ({values}); "
            f"{made}/{search['planned']} samples made")


def run_label(run: RunSummary) -> str:
    return f"run {run.id} {run.model}/{run.dataset}"


def run_state(run: RunSummary) -> str:
    """``queued``, the phase while running (``lr_search``, ``train`` …), or how it ended."""
    if run.status == Status.running:
        return run.phase or "running"
    return run.status.value


class Follower(Protocol):
    """What ``aelab … --wait`` drives: ``update`` with each change, a context manager."""

    def update(self, experiment: ExperimentOut) -> None: ...

    def __enter__(self) -> Follower: ...

    def __exit__(self, *exc: object) -> None: ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Clocks:
    """Each run's :class:`RunClock`, and the clocks they read (replaceable in tests)."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], datetime] = _utcnow
    by_run: dict[int, RunClock] = field(default_factory=dict)

    def observe(self, experiment: ExperimentOut) -> None:
        now = self.monotonic()
        for run in experiment.runs:
            self.by_run.setdefault(run.id, RunClock()).observe(run.epoch, now)

    def elapsed(self, run: RunSummary) -> str:
        return format_duration(elapsed_s(run, self.wall()))

    def eta(self, run: RunSummary) -> str:
        clock = self.by_run.setdefault(run.id, RunClock())
        return format_duration(clock.eta_s(run, self.monotonic(), self.wall()))


class PlainFollower:
    """A line per change of a run (state or epoch), no colour, no cursor movement: for
    pipes, files and CI logs."""

    def __init__(self, write: Callable[[str], None],
                 monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = _utcnow) -> None:
        self.write = write
        self.clocks = _Clocks(monotonic, wall)
        self._seen: dict[int, tuple[Any, ...]] = {}
        self._best: str | None = None

    def __enter__(self) -> PlainFollower:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, experiment: ExperimentOut) -> None:
        self.clocks.observe(experiment)
        for run in experiment.runs:
            key = (run.status, run.phase, run.epoch, run.epochs_total)
            if self._seen.get(run.id) == key:
                continue
            self._seen[run.id] = key
            self.write(self.line(run))
        best = best_line(experiment)
        if best is not None and best != self._best:
            self._best = best
            self.write(best)

    def line(self, run: RunSummary) -> str:
        """One run as a line: ``run 3 baseline/synthetic: train, epoch 1/2, elapsed 0:04,
        ETA 0:04``; its error when it failed."""
        text = f"{run_label(run)}: {run_state(run)}"
        if run.status == Status.queued:
            return text
        text += f", epoch {run.epoch}/{run.epochs_total}, elapsed {self.clocks.elapsed(run)}"
        if not run.status.finished:
            text += f", ETA {self.clocks.eta(run)}"
        if run.error and run.status != Status.succeeded:
            text += f": {run.error}"
        return text


class _RunColumn(ProgressColumn):
    """A column computed from the task's run at every refresh (so times keep ticking)."""

    def __init__(self, render: Callable[[RunSummary, Task], Text]) -> None:
        super().__init__()
        self._render = render

    def render(self, task: Task) -> Text:
        return self._render(task.fields["run"], task)


class LiveFollower:
    """One live bar per run, redrawn in place: state (phase), epoch/total, elapsed, ETA."""

    def __init__(self, console: Console, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = _utcnow, refresh_per_second: float = 4) -> None:
        self.clocks = _Clocks(monotonic, wall)
        # The label, state, epoch, elapsed and ETA take about 80 columns: the bar gets what
        # is left (at least 5) so that a run stays on one line of an 80-column terminal.
        bar = max(5, min(28, console.width - 88))
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),  # run labels are literal
            BarColumn(bar_width=bar),
            _RunColumn(lambda run, _: Text(run_state(run), style=STATUS_STYLE[run.status])),
            _RunColumn(lambda run, _: Text(f"epoch {run.epoch}/{run.epochs_total}")),
            _RunColumn(lambda run, _: Text(f"elapsed {self.clocks.elapsed(run)}")),
            _RunColumn(lambda run, _: Text(
                "" if run.status.finished else f"ETA {self.clocks.eta(run)}", style="dim")),
            console=console, refresh_per_second=refresh_per_second, transient=False)
        self._tasks: dict[int, Any] = {}
        self._best: str | None = None

    def __enter__(self) -> LiveFollower:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, experiment: ExperimentOut) -> None:
        self.clocks.observe(experiment)
        for run in experiment.runs:
            total = max(run.epochs_total, 1)
            if run.id not in self._tasks:
                self._tasks[run.id] = self.progress.add_task(run_label(run), total=total,
                                                             completed=run.epoch, run=run)
            self.progress.update(self._tasks[run.id], total=total, completed=run.epoch,
                                 run=run)
        best = best_line(experiment)
        if best is not None and best != self._best:
            self._best = best
            self.progress.console.print(best, markup=False, highlight=False)
        self.progress.refresh()


NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def finite_or_token(value: float | str) -> str:
    """A non-finite number as the API writes it (``NaN``, ``Infinity``, ``-Infinity``; a
    string, already a token, as it is); a finite one as ``str`` has it."""
    if isinstance(value, float) and not math.isfinite(value):
        return NON_FINITE[str(value)]
    return str(value)


def format_number(value: Any, spec: str) -> str:
    """``value`` formatted with ``spec``; ``n/a`` when missing, a non-finite one (a float
    or the API's string token) as its token."""
    if value is None:
        return "n/a"
    if isinstance(value, str) or not math.isfinite(value):
        return finite_or_token(value)
    return format(value, spec)


def _cell(value: Any, measure: MeasureInfo) -> str:
    """A measure as the terminal writes it: to its format's decimals, a time as ``m:ss``,
    a non-finite value as the answer has it (``Infinity``), ``n/a`` when not measured."""
    if value is None:
        return "n/a"
    if isinstance(value, str) or not math.isfinite(value):  # NaN, Infinity, -Infinity
        return finite_or_token(value)
    if measure.format == "duration":
        return format_duration(value)
    digits = measure.digits
    return f"{value:.{digits}f}" if digits is not None else f"{value:.6g}"


def _measure_column(name: str, label: str
                    ) -> tuple[str, str, Callable[[dict[str, Any]], Any]]:
    """The terminal's column ``label`` of measure ``name``."""
    measure = BY_NAME[name]
    return label, "right", lambda r: _cell(r.get(measure.head), measure)


WIDE = 120


def _literal(cell: str | Text) -> Text:
    """A table cell as text shown exactly as written (never parsed as rich markup)."""
    return cell if isinstance(cell, Text) else Text(str(cell))


def results_table(results: ResultsTable, title: str = "", width: int = WIDE) -> Table:
    """The study's table for a terminal ``width`` columns wide: one row per run, the
    measures of a one-line summary (``workers.measures.SUMMARY``). Below 120 columns it
    leaves out the status and the measures a narrow summary drops (MAE, SSIM and train
    time; ``aelab results --format markdown`` has them all) rather than cut every value."""
    narrow = width < WIDE
    # Every cell and the title are Text: names and values from the server are never read
    # as rich markup, whichever console prints the table.
    table = Table(title=Text(title) if title else None, box=box.SIMPLE_HEAD, title_justify="left",
                  collapse_padding=narrow, pad_edge=not narrow)
    columns: list[tuple[str, str, Callable[[dict[str, Any]], Any]]] = [
        ("run", "right", lambda r: str(r["run_id"])),
        ("model", "left", lambda r: r["model"]),
        ("dataset", "left", lambda r: r["dataset"]),
        *([] if narrow else [("status", "left", lambda r: Text(
            r["status"], style=STATUS_STYLE[Status(r["status"])]))]),
        *(_measure_column(name, label) for name, label, narrow_too in SUMMARY
          if narrow_too or not narrow),
        ("LR", "right", lambda r: format_number(r.get("lr"), ".3g")),
    ]
    for name, justify, _ in columns:
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for row in results.rows:
        table.add_row(*(_literal(cell(row)) for _, _, cell in columns))
    return table
