"""The chaos soak's checks read what the code really prints (bench/chaos.py; the soak
itself is tests/test_chaos_soak.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bench.chaos import TRAINS_ON_CPUS, WAITS_FOR_GPU, check_logs
from service.orchestration.run_job import DRIVER_LINE, gpus_for_run

GPU_NODE = {"Alive": True, "Resources": {"GPU": 1.0, "CPU": 2.0}}


def driver_log(run_id: int, attempt: int, gpus: float, note: str | None = None) -> str:
    """A driver's log as run_job writes it: the gpus_for_run note, then its line."""
    line = DRIVER_LINE % (run_id, "baseline-synthetic", attempt, gpus, 1.0, "fixed", 3, "auto")
    return (f"{note}\n" if note else "") + f"2026-12-03 22:01:57,584 aelab.driver {line}\n"


def checked(tmp_path: Path, run: dict, logs: dict[str, str], others: tuple[str, ...] = ()
            ) -> tuple[Counter[str], list[str]]:
    arts = []
    for name, text in logs.items():
        folder = tmp_path / f"run-{run['id']}" / f"a{run['attempt']}"
        if name.startswith("job-a"):
            folder = folder.parent / f"a{name[5:-4]}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
        arts.append({"name": name, "uri": str(folder / name)})
    arts += [{"name": name, "uri": str(tmp_path / f"run-{run['id']}" / name)}
             for name in others]
    counts: Counter[str] = Counter()
    bad: list[str] = []
    check_logs(run, arts, counts, bad)
    return counts, bad


def test_the_soak_knows_the_notes_gpus_for_run_prints() -> None:
    _, cpu_note = gpus_for_run(0.5, False, [])
    assert cpu_note is not None and TRAINS_ON_CPUS in cpu_note
    gpus, wait_note = gpus_for_run(0.5, True, [{**GPU_NODE, "Alive": False}])
    assert gpus == 0.5 and wait_note is not None and WAITS_FOR_GPU[0] in wait_note


def test_a_gpu_run_that_fell_back_to_cpus_is_a_violation(tmp_path: Path) -> None:
    run = {"id": 7, "status": "succeeded", "attempt": 1,
           "spec": {"resources": {"gpus_per_run": 0.5}}}
    _, cpu_note = gpus_for_run(0.5, None, [])  # no node declared GPUs: the fallback
    _, wait_note = gpus_for_run(0.5, True, [])
    counts, bad = checked(tmp_path, run, {
        "job-a0.log": driver_log(7, 0, 0.5, wait_note), "job.log": driver_log(7, 1, 0.5)})
    assert bad == [] and counts["attempts that waited for a GPU node"] == 1
    _, bad = checked(tmp_path, run, {"job-a0.log": driver_log(7, 0, 0.0, cpu_note),
                                     "job.log": driver_log(7, 1, 0.5)})
    assert len(bad) == 1 and "asked for 0.5 GPU and trained with [0.0] (job-a0.log)" in bad[0]


def test_a_succeeded_runs_log_and_files_must_be_its_final_attempts(tmp_path: Path) -> None:
    run = {"id": 8, "status": "succeeded", "attempt": 2,
           "spec": {"resources": {"gpus_per_run": 1}}}
    _, bad = checked(tmp_path, run, {"job.log": driver_log(8, 1, 1)})
    assert bad == ["run 8: job.log is of attempt(s) [1], not its final attempt 2"]
    _, bad = checked(tmp_path, run, {"job.log": driver_log(8, 2, 1)}, others=("model.pt",))
    assert bad == ["run 8: ['model.pt'] recorded from another attempt than its final one (2)"]
