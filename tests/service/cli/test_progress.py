"""The CLI's progress display: durations, the ETA, plain lines and the live bars."""

from __future__ import annotations

import io
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console

from service.cli.progress import (
    LiveFollower,
    PlainFollower,
    RunClock,
    format_duration,
    results_table,
)
from service.client.schemas import ExperimentOut, ResultsTable, RunSummary

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def run(status: str = "running", phase: str | None = "train", epoch: int = 0,
        total: int = 10, started_s_ago: float | None = 20.0, **kw: Any) -> RunSummary:
    now = NOW
    started = None if started_s_ago is None else now - timedelta(seconds=started_s_ago)
    return RunSummary.model_validate({
        "id": 3, "model": "baseline", "dataset": "synthetic", "status": status,
        "phase": phase, "epoch": epoch, "epochs_total": total, "progress": epoch / total,
        "lr": None, "attempt": 0, "error": None, "ray_job_id": None, "created_at": now,
        "started_at": started, "finished_at": None, "links": {}, **kw})


def experiment(*runs: RunSummary, status: str = "running") -> ExperimentOut:
    return ExperimentOut.model_validate({
        "id": 7, "name": "t", "status": status, "error": None,
        "created_at": NOW, "started_at": None, "finished_at": None,
        "links": {}, "runs": [r.model_dump() for r in runs]})


def test_durations() -> None:
    assert [format_duration(s) for s in (None, 0, 4.4, 65, 3599.6, 3600, 7384)] == [
        "-:--", "0:00", "0:04", "1:05", "1:00:00", "1:00:00", "2:03:04"]


def test_eta_from_the_pace_of_epochs_seen_ticking() -> None:
    clock = RunClock()
    clock.observe(0, now=0.0)  # first poll: no change seen yet
    assert clock.eta_s(run(epoch=0), now=0.0, wall_now=NOW) is None
    clock.observe(1, now=10.0)
    # One change only: the time since the run started per epoch done (20 s · 9 left).
    assert clock.eta_s(run(epoch=1), now=10.0, wall_now=NOW) == 180.0
    clock.observe(1, now=20.0)
    clock.observe(3, now=30.0)  # 2 epochs in 20 s: 10 s each, 7 left, 5 s into the next
    assert clock.eta_s(run(epoch=3), now=35.0) == 65.0
    assert clock.eta_s(run(epoch=3), now=200.0) == 0.0  # late: never negative
    assert clock.eta_s(run(status="succeeded", phase=None, epoch=10), now=40.0) is None


def test_plain_lines_one_per_change_without_colour() -> None:
    lines: list[str] = []
    follower = PlainFollower(lines.append, monotonic=lambda: 0.0, wall=lambda: NOW)
    follower.update(experiment(run(status="queued", phase=None, started_s_ago=None)))
    follower.update(experiment(run(status="queued", phase=None, started_s_ago=None)))
    follower.update(experiment(run(epoch=5, started_s_ago=65)))
    follower.update(experiment(run(status="failed", phase="train", epoch=5, started_s_ago=70,
                                   error="RuntimeError: boom",
                                   finished_at=NOW + timedelta(seconds=5))))
    assert lines == ["run 3 baseline/synthetic: queued",
                     "run 3 baseline/synthetic: train, epoch 5/10, elapsed 1:05, ETA 1:05",
                     "run 3 baseline/synthetic: failed, epoch 5/10, elapsed 1:15: "
                     "RuntimeError: boom"]


def test_live_bars_show_phase_epochs_elapsed_and_eta() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system="standard")
    with LiveFollower(console, monotonic=lambda: 0.0, wall=lambda: NOW,
                      refresh_per_second=20) as follower:
        follower.update(experiment(run(epoch=5, started_s_ago=65)))
    text = out.getvalue()
    assert "\x1b[" in text and "━" in text
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    assert "run 3 baseline/synthetic ━━━━━━━━━━━━━━╺━━━━━━━━━━━━━ train epoch 5/10 " \
           "elapsed 1:05 ETA 1:05" in plain
    assert "run 3 baseline/synthetic" in plain
    assert "train" in plain and "epoch 5/10" in plain and "elapsed 1:05" in plain
    assert "ETA 1:05" in plain


def test_live_bars_fit_an_80_column_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80, color_system="standard")
    with LiveFollower(console, monotonic=lambda: 0.0, wall=lambda: NOW,
                      refresh_per_second=20) as follower:
        follower.update(experiment(run(epoch=5, started_s_ago=65)))
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    # The whole run on one line: nothing wrapped onto the next.
    line = next(ln for ln in plain.splitlines() if "baseline/synthetic" in ln)
    assert "epoch 5/10" in line and "elapsed 1:05" in line and "ETA 1:05" in line, plain


def test_results_table_at_80_columns_keeps_whole_values() -> None:
    table = ResultsTable(experiment_id=7, columns=["run_id"], rows=[{
        "run_id": 12, "model": "progressive_resizing", "dataset": "synthetic",
        "status": "succeeded", "mse": 0.0123456789, "mae": 0.1, "psnr": 19.123, "ssim": 0.5,
        "lr": 0.00123, "classifier_accuracy": 0.8125, "training_time_s": 75.0}])
    out = io.StringIO()
    Console(file=out, width=80).print(results_table(table, width=80))
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    # The split-level PSNR (not a mean over images) says so under its head.
    assert lines[0].split() == ["PSNR", "dB"]
    assert lines[1].split() == ["run", "model", "dataset", "MSE", "(split)", "clf", "acc",
                                "LR"]
    assert lines[3].split() == ["12", "progressive_resizing", "synthetic", "0.012346",
                                "19.12", "0.8125", "0.00123"]
    assert all(len(line) <= 80 for line in lines)


def test_results_table_for_a_terminal() -> None:
    table = ResultsTable(experiment_id=7, columns=["run_id"], rows=[{
        "run_id": 1, "model": "baseline", "dataset": "synthetic", "status": "succeeded",
        "mse": 0.0123456789, "mae": 0.1, "psnr": 19.123, "ssim": 0.5, "lr": 0.00123,
        "classifier_accuracy": None, "training_time_s": 75.0}])
    out = io.StringIO()
    Console(file=out, width=200).print(results_table(table, title="tiny"))
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    assert lines[0].strip() == "tiny"
    assert lines[1].split() == ["PSNR", "dB"]
    assert lines[2].split() == ["run", "model", "dataset", "status", "MSE", "MAE", "(split)",
                                "SSIM", "clf", "acc", "train", "time", "LR"]
    assert lines[3].strip(" ─") == ""
    assert lines[4].split() == ["1", "baseline", "synthetic", "succeeded", "0.012346",
                                "0.100000", "19.12", "0.5000", "n/a", "1:15", "0.00123"]


def test_ctrl_c_while_following_surfaces_between_polls_never_inside_the_display() -> None:
    """A SIGINT that arrives while the live display is drawing (holding its locks) waits
    for the next poll's sleep; a KeyboardInterrupt inside the display could leave its lock
    held and hang the exit."""
    import os
    import signal
    import threading

    from service.cli.remote import _interrupt_between_polls

    class FakeClient:
        def _sleep(self, seconds: float) -> None:
            time.sleep(seconds)

    client, where = FakeClient(), []
    drawing = threading.Lock()
    before = signal.getsignal(signal.SIGINT)
    try:
        with _interrupt_between_polls(client):  # type: ignore[arg-type]
            for _ in range(50):  # polls: draw (SIGINT arrives meanwhile), then sleep
                with drawing:
                    where.append("drawing")
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(0.05)
                    where.append("drawn")
                client._sleep(0.05)
    except KeyboardInterrupt:
        where.append("interrupted")
    assert where == ["drawing", "drawn", "interrupted"]
    assert not drawing.locked()
    assert signal.getsignal(signal.SIGINT) is before  # the handler is given back
