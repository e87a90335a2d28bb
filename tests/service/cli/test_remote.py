"""The remote CLI and the Python client against a real `aelab serve` (embedded mode: its
own Ray head, token auth on, offline `synthetic` data), driven as a user drives them: the
`aelab` command in a subprocess, in a pipe or in a pseudo-terminal.

One server for the module; one tiny experiment submitted with `submit --wait` serves the
read commands, and one long one is followed in a terminal, interrupted with Ctrl-C and
then cancelled."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from service.orchestration.ray_head import LocalRayHead, free_port
from tests.procs import Served
from tests.utils import API, CPU, tiny_spec, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TINY = tiny_spec(name="tiny", data={"train_limit": 256, "test_limit": 32}, resources=CPU)
# Long enough to be interrupted and cancelled mid-training (it never gets to the end).
LONG = {**TINY, "name": "long", "epochs": 150, "data": {"train_limit": 1024, "test_limit": 32}}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def aelab(*args: str, timeout: float = 300, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    """The `aelab` command as a user runs it, its output going to pipes."""
    env = {k: v for k, v in os.environ.items() if k not in ("AELAB_URL", "AELAB_API_TOKEN")}
    return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True,
                          timeout=timeout, env=env, **kw)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("cli") / "home"
    served = Served(home)
    try:
        yield served
    finally:
        served.close()
        record = LocalRayHead.load(home / "ray")
        if record is not None:  # killed, not stopped: take its head down too
            LocalRayHead(state_dir=home / "ray", record=record).stop()


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("specs")
    (folder / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    (folder / "long.json").write_text(json.dumps(LONG))
    (folder / "regressed.yaml").write_text(yaml.safe_dump(
        {**TINY, "name": "regressed", "expect": {"baseline/synthetic": {"mse": "<= 0"}}}))
    (folder / "bad.yaml").write_text(yaml.safe_dump(
        {**TINY, "epochs": 0, "lr_search": {"method": "bogus"}}))
    return folder


@dataclass
class Submitted:
    result: subprocess.CompletedProcess[bytes]
    seconds: float
    experiment: dict[str, Any]

    @property
    def run(self) -> dict[str, Any]:
        return self.experiment["runs"][0]


@pytest.fixture(scope="module")
def tiny(server: Served, specs: Path) -> Submitted:
    """`aelab submit tiny.yaml --wait`, output to pipes, and the experiment it made."""
    started = time.monotonic()
    result = aelab("submit", str(specs / "tiny.yaml"), "--wait", "--url", server.base)
    took = time.monotonic() - started
    page = server.get(f"{API}/experiments")
    assert page and page["items"], result.stderr.decode()
    return Submitted(result, took, server.experiment(page["items"][0]["id"]))


def test_submit_wait_exits_0_and_prints_the_results_table(server: Served,
                                                          tiny: Submitted) -> None:
    assert tiny.result.returncode == 0, tiny.result.stderr.decode()
    exp = tiny.experiment
    assert exp["status"] == "succeeded" and exp["name"] == "tiny"
    # In a pipe, standard output is the API's table alone, byte for byte, no colour.
    markdown = httpx.get(f"{server.base}{API}/experiments/{exp['id']}/results",
                         params={"format": "markdown"}).content
    assert tiny.result.stdout == markdown
    assert b"| Baseline | 0." in markdown and b"| succeeded |" in markdown
    # Progress went to stderr as plain lines, ending with the run's end and a summary.
    err = tiny.result.stderr.decode()
    assert "\x1b[" not in err and "━" not in err
    lines = err.splitlines()
    assert lines[0] == (f"experiment {exp['id']} \"tiny\": 1 run(s) on {server.base} "
                        "(Ctrl-C stops following; the experiment keeps running)")
    assert re.fullmatch(rf"run {tiny.run['id']} baseline/synthetic: succeeded, epoch 2/2, "
                        r"elapsed \d+:\d\d", lines[-2]), lines
    assert re.fullmatch(rf"experiment {exp['id']} succeeded: 1/1 run\(s\) succeeded in "
                        r"\d+:\d\d", lines[-1]), lines


def test_a_refused_spec_exits_2_naming_each_field_as_the_api_does(server: Served,
                                                                   specs: Path) -> None:
    before = server.get(f"{API}/experiments")["items"]
    api = httpx.post(f"{server.base}{API}/experiments",
                     json=yaml.safe_load((specs / "bad.yaml").read_text()))
    assert api.status_code == 422
    expected = ["error: the spec was refused (HTTP 422):"] + [
        f"  {'.'.join(map(str, e['loc']))}: {e['msg']} [{e['type']}]"
        for e in api.json()["detail"]]
    assert expected[1:] == [
        "  body.epochs: Input should be greater than or equal to 1 [greater_than_equal]",
        "  body.lr_search.method: Input should be 'tune', 'range_test' or 'fixed' "
        "[literal_error]"]
    for extra in ([], ["--dry-run"], ["--wait"]):
        result = aelab("submit", str(specs / "bad.yaml"), *extra, "--url", server.base)
        assert result.returncode == 2, extra
        assert result.stderr.decode().splitlines() == expected
        assert result.stdout == b""
    assert server.get(f"{API}/experiments")["items"] == before  # nothing was stored
    # --json: the same refusal as one JSON object on stdout, for scripts.
    as_json = aelab("submit", str(specs / "bad.yaml"), "--dry-run", "--json",
                    "--url", server.base)
    assert as_json.returncode == 2
    error = json.loads(as_json.stdout)["error"]
    assert (error["exit_code"], error["status"]) == (2, 422)
    assert [f["field"] for f in error["fields"]] == ["body.epochs", "body.lr_search.method"]
    missing = aelab("submit", str(specs / "nope.yaml"), "--url", server.base)
    assert missing.returncode == 2
    assert missing.stderr.decode() == f"error: {specs / 'nope.yaml'}: No such file or " \
                                      "directory\n"


def test_download_writes_the_bytes_the_api_checksummed(server: Served, tiny: Submitted,
                                                       tmp_path: Path) -> None:
    run = server.get(f"{API}/runs/{tiny.run['id']}")
    listed = {a["name"]: a for a in run["artifacts"]}
    assert {"samples.png", "model.pt", "job.log"} <= set(listed)
    result = aelab("download", str(run["id"]), "model.pt", "-o", str(tmp_path / "out"),
                   "--url", server.base)
    assert result.returncode == 0, result.stderr.decode()
    path = tmp_path / "out" / "model.pt"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == listed["model.pt"]["checksum"]
    assert path.stat().st_size == listed["model.pt"]["size"] > 1_000_000
    assert result.stdout.decode() == (f"{path}  {listed['model.pt']['size']} bytes  sha256 "
                                      f"{listed['model.pt']['checksum']}\n")
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]  # no part file

    every = aelab("download", str(run["id"]), "-o", str(tmp_path / "all"), "--json",
                  "--url", server.base)
    assert every.returncode == 0, every.stderr.decode()
    written = json.loads(every.stdout)
    assert {w["name"]: w["sha256"] for w in written} == \
        {name: a["checksum"] for name, a in listed.items()}
    for w in written:
        assert hashlib.sha256(Path(w["path"]).read_bytes()).hexdigest() == w["sha256"]

    unknown = aelab("download", str(run["id"]), "nope.bin", "--url", server.base)
    assert unknown.returncode == 1
    assert unknown.stderr.decode() == (
        f"error: run {run['id']} (succeeded) has no artifact 'nope.bin'; it has: "
        f"{', '.join(a['name'] for a in run['artifacts'])} (HTTP 404)\n")


def test_logs_prints_the_drivers_lines(server: Served, tiny: Submitted) -> None:
    run_id = tiny.run["id"]
    api = server.get(f"{API}/runs/{run_id}/logs")
    assert api["source"] == "saved" and api["complete"]
    assert f"aelab run {run_id} (baseline-synthetic), attempt 0: " in api["text"]
    assert "epoch   2/2 phase2" in api["text"]
    for follow in ([], ["--follow"]):
        result = aelab("logs", str(run_id), *follow, "--url", server.base)
        assert result.returncode == 0, result.stderr.decode()
        # The driver's log as saved, less the colour codes Ray puts in (not a terminal).
        assert result.stdout.decode() == ANSI.sub("", api["text"])
    tail = aelab("logs", str(run_id), "--offset", str(api["next_offset"] - 30), "--json",
                 "--url", server.base)
    assert json.loads(tail.stdout)["text"] == api["text"][-30:]


def test_results_csv_equals_the_apis_byte_for_byte(server: Served, tiny: Submitted) -> None:
    exp_id = tiny.experiment["id"]
    for fmt in ("csv", "markdown"):
        api = httpx.get(f"{server.base}{API}/experiments/{exp_id}/results",
                        params={"format": fmt}).content
        result = aelab("results", str(exp_id), "--format", fmt, "--url", server.base)
        assert result.returncode == 0 and result.stdout == api, fmt
    assert api.decode().count("\n") > 3
    as_json = aelab("results", str(exp_id), "--json", "--url", server.base)
    assert json.loads(as_json.stdout) == server.get(
        f"{API}/experiments/{exp_id}/results?format=json")


def test_read_commands_print_the_apis_json(server: Served, tiny: Submitted) -> None:
    exp_id, run_id = tiny.experiment["id"], tiny.run["id"]
    status = aelab("status", str(exp_id), "--json", "--url", server.base)
    assert json.loads(status.stdout) == server.experiment(exp_id)
    listed = aelab("ls", "--status", "succeeded", "--json", "--url", server.base)
    api_items = server.get(f"{API}/experiments?status=succeeded")["items"]
    assert json.loads(listed.stdout) == api_items and api_items
    run = aelab("run", str(run_id), "--json", "--url", server.base)
    assert json.loads(run.stdout) == server.get(f"{API}/runs/{run_id}")
    ready = aelab("ready", "--json", "--url", server.base)
    assert ready.returncode == 0 and json.loads(ready.stdout) == server.get("/readyz")
    # The human forms carry no terminal codes in a pipe.
    for args in (["status", str(exp_id)], ["ls"], ["run", str(run_id)]):
        human = aelab(*args, "--url", server.base)
        assert human.returncode == 0 and b"\x1b[" not in human.stdout, args
    text = aelab("status", str(exp_id), "--url", server.base).stdout.decode()
    assert text.splitlines()[0] == f'experiment {exp_id} "tiny": succeeded'
    assert re.search(rf"^\s+{run_id}\s+baseline\s+synthetic\s+succeeded\s+2/2\s", text, re.M)


def test_open_prints_the_experiments_page_in_the_web_ui(server: Served,
                                                         tiny: Submitted) -> None:
    exp_id = tiny.experiment["id"]
    result = aelab("open", str(exp_id), "--url", server.base)
    assert result.returncode == 0
    assert result.stdout.decode() == f"{server.base}/experiments/{exp_id}\n"
    missing = aelab("open", "999999", "--url", server.base)
    assert missing.returncode == 1 and missing.stdout == b""
    assert missing.stderr.decode() == "error: experiment 999999 not found (HTTP 404)\n"


def test_an_unreachable_server_exits_3() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for args in (["ls"], ["status", "1", "--wait"], ["results", "1", "--format", "csv"]):
        started = time.monotonic()
        result = aelab(*args, "--url", url, timeout=60)
        assert result.returncode == 3, args
        assert result.stderr.decode() == (f"error: cannot reach {url}: ConnectError: "
                                          "[Errno 111] Connection refused\n")
        assert result.stdout == b""
        assert time.monotonic() - started < 20  # 3 retries, backing off from 0.5 s
    as_json = aelab("ls", "--json", "--url", url, timeout=60)
    assert as_json.returncode == 3
    assert json.loads(as_json.stdout)["error"]["exit_code"] == 3


def test_the_client_works_without_torch_ray_sqlalchemy_or_fastapi(
        server: Served, tiny: Submitted, tmp_path: Path) -> None:
    """What `pip install aelab` (no extras) gives: those imports fail, as if absent."""
    code = f"""
import importlib.abc, json, sys
BLOCKED = {{"torch", "torchvision", "ray", "sqlalchemy", "fastapi", "starlette", "uvicorn",
           "alembic", "fsspec"}}
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}")
        return None
sys.meta_path.insert(0, NotInstalled())

from service.client import Client
from service.spec import ExperimentSpec
from service.cli import app

with Client({server.base!r}) as aelab:
    spec = ExperimentSpec.model_validate({TINY!r})
    plan = aelab.submit(spec, dry_run=True)
    ids = [e.id for e in aelab.list(status="succeeded")]
    exp = aelab.get({tiny.experiment['id']})
    rows = [r for r in aelab.results(exp.id) if r["kind"] == "model"]  # codec rows follow
    path = aelab.download(exp.runs[0].id, "samples.png", {str(tmp_path)!r})
    log = aelab.logs(exp.runs[0].id)
try:
    app(["ls", "--json", "--url", {server.base!r}], standalone_mode=False)
finally:
    print(json.dumps({{"runs": plan.estimate["runs"], "ids": ids, "rows": len(rows),
                      "status": exp.status.value, "png": path.read_bytes()[:8].hex(),
                      "log": log.complete,
                      "loaded": sorted({{m.split(".")[0] for m in sys.modules}} & BLOCKED)}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report == {"runs": 1, "ids": [tiny.experiment["id"]], "rows": 1,
                      "status": "succeeded", "png": "89504e470d0a1a0a", "log": True,
                      "loaded": []}
    listed = json.loads("\n".join(result.stdout.splitlines()[:-1]))
    assert [e["id"] for e in listed] == [tiny.experiment["id"]]


# --- a long experiment, followed in a terminal ------------------------------------------


@dataclass
class Terminal:
    output: str  # everything the terminal showed, escape codes included
    returncode: int
    experiment: dict[str, Any]  # as the API showed it right after the CLI exited


def _in_a_terminal(args: list[str], until: re.Pattern[str], timeout_s: float
                   ) -> tuple[str, int]:
    """Run `aelab` on a pseudo-terminal (120×30, its controlling terminal), type Ctrl-C
    once ``until`` appears on screen, and return what it showed and its exit status."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", *args], stdin=slave, stdout=slave,
        stderr=slave, env=env, start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(slave)
    out, typed = b"", False
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 1 << 16)
                except OSError:  # EIO: the terminal's last process has gone
                    break
                if not chunk:
                    break
                out += chunk
            if not typed and until.search(ANSI.sub("", out.decode(errors="replace"))):
                os.write(master, b"\x03")  # Ctrl-C, as typed: the terminal sends SIGINT
                typed = True
            if proc.poll() is not None and not ready:
                break
        try:
            return out.decode(errors="replace"), proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            screen = ANSI.sub("", out.decode(errors="replace"))
            why = "after Ctrl-C" if typed else f"and never showed {until.pattern!r}"
            raise AssertionError(f"aelab {' '.join(args)} did not exit {why}; its screen "
                                 f"ended:\n{screen[-1500:]}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


@pytest.fixture(scope="module")
def interrupted(server: Served, specs: Path) -> Iterator[Terminal]:
    """`aelab submit long.json --wait` on a terminal, Ctrl-C once the ETA shows."""
    output, code = _in_a_terminal(
        ["submit", str(specs / "long.json"), "--wait", "--url", server.base],
        re.compile(r"epoch [1-9]\d*/150 +elapsed \d+:\d\d +ETA \d+:\d\d"), 300)
    exp_id = int(re.search(r'experiment (\d+) "long"', ANSI.sub("", output))[1])
    yield Terminal(output, code, server.experiment(exp_id))
    if not server.ended(exp_id):
        httpx.post(f"{server.base}{API}/experiments/{exp_id}/cancel", timeout=30)


def test_progress_bars_in_a_terminal(interrupted: Terminal) -> None:
    shown = interrupted.output
    assert "\x1b[" in shown  # colour and redraws: this is a terminal
    screen = ANSI.sub("", shown)
    run_id = interrupted.experiment["runs"][0]["id"]
    # One bar per run: its phase, epoch/total, elapsed time and the time left.
    bar = re.findall(rf"run {run_id} baseline/synthetic ([━╸╺]{{28}}) (\w+) +epoch (\d+)/150 "
                     r"+elapsed (\d+:\d\d) +ETA (\d+:\d\d|-:--)", screen)
    assert bar, screen[-2000:]
    phases = [b[1] for b in bar]
    assert "train" in phases and phases[0] in ("queued", "submitted", "data", "train")
    assert int(bar[-1][2]) >= 1 and bar[-1][4] != "-:--"
    assert [int(b[2]) for b in bar] == sorted(int(b[2]) for b in bar)  # epochs only grow


def test_ctrl_c_exits_130_and_leaves_the_experiment_running(server: Served,
                                                             interrupted: Terminal) -> None:
    assert interrupted.returncode == 130
    exp = interrupted.experiment
    assert exp["status"] == "running" and exp["runs"][0]["status"] == "running"
    screen = ANSI.sub("", interrupted.output).replace("\r\n", "\n")
    assert (f"Stopped following experiment {exp['id']}: it keeps running on the server.\n"
            f"Follow it again: aelab status {exp['id']} --wait --url {server.base}\n"
            f"Cancel it:       aelab cancel {exp['id']} --url {server.base}\n") in screen
    assert "Traceback" not in screen and "Aborted" not in screen


def test_cancel_leaves_the_run_cancelled_and_its_ray_job_stopped(
        server: Served, interrupted: Terminal) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    exp_id = interrupted.experiment["id"]
    job_id = interrupted.experiment["runs"][0]["ray_job_id"]
    jobs = JobSubmissionClient(LocalRayHead.load(server.home / "ray").dashboard)
    assert jobs.get_job_status(job_id) == JobStatus.RUNNING
    result = aelab("cancel", str(exp_id), "--url", server.base)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == f"experiment {exp_id} cancelled: 1 of 1 run(s) " \
                                     "cancelled\n"
    exp = server.experiment(exp_id)
    assert exp["status"] == "cancelled" and exp["runs"][0]["status"] == "cancelled"
    wait_for(lambda: jobs.get_job_status(job_id) == JobStatus.STOPPED, 30,
             "Ray to stop the run's job", 0.5)
    assert server.experiment(exp_id)["runs"][0]["epoch"] < 150
    again = aelab("cancel", str(exp_id), "--url", server.base)
    assert again.returncode == 1
    assert again.stderr.decode() == f"error: experiment {exp_id} is already cancelled " \
                                    "(HTTP 409)\n"


def test_submit_wait_exits_1_when_a_run_breaks_the_specs_expectations(
        server: Served, specs: Path) -> None:
    """The run succeeds, but an MSE is never below 0: the experiment REGRESSED."""
    result = aelab("submit", str(specs / "regressed.yaml"), "--wait", "--url", server.base)
    assert result.returncode == 1, result.stderr.decode()
    err = result.stderr.decode().splitlines()
    assert re.fullmatch(r"experiment \d+ succeeded: 1/1 run\(s\) succeeded in \d+:\d\d",
                        err[-2]), err
    assert re.fullmatch(r"experiment \d+ REGRESSED: a run breaks the spec's expect bounds "
                        r"\(the results' Expect column has the numbers\)", err[-1]), err
    assert b"Expectations: REGRESSED" in result.stdout
    assert re.search(rb"\| REGRESSED: mse 0\.\d+ breaks &lt;= 0 \|", result.stdout)
