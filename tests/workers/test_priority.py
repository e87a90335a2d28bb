"""Training's sessions yield the CPU to the API's (Linux autogroups; workers.priority)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.utils import REPO

ROOT = REPO
PROBE = ("import sys; sys.path.insert(0, {root!r}); "
         "from workers.priority import session_made_for_me; print(session_made_for_me())")


def _probe(cmd: str | list[str], *, shell: bool, new_session: bool) -> str:
    out = subprocess.run(cmd, shell=shell, start_new_session=new_session, check=True,
                         capture_output=True, text=True)
    return out.stdout.strip()


def test_only_a_session_made_for_the_process_counts_as_its_own() -> None:
    code = PROBE.format(root=str(ROOT))
    # Ray's job supervisor: `sh -c "<entrypoint>"` in a new session.
    assert _probe(f'{sys.executable} -c "{code}" --run-id 5', shell=True,
                  new_session=True) == "True"
    assert _probe([sys.executable, "-c", code], shell=False, new_session=True) == "True"
    # Started from someone else's session (a terminal, a test runner): left alone.
    assert _probe(f'{sys.executable} -c "{code}"', shell=True, new_session=False) == "False"
    assert _probe([sys.executable, "-c", code], shell=False, new_session=False) == "False"


BURST = """
import subprocess, sys
sys.path.insert(0, {root!r})
from workers.priority import yield_session_cpu
procs = [subprocess.Popen(["sleep", "30"], start_new_session=True) for _ in range(3)]
try:
    ok = [yield_session_cpu(p.pid, 10) for p in procs]
    print(ok, [open(f"/proc/{{p.pid}}/autogroup").read().split()[-1] for p in procs])
finally:
    for p in procs:
        p.kill()
"""


@pytest.mark.skipif(not Path("/proc/self/autogroup").exists(), reason="no autogroups here")
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run the burst unprivileged")
def test_sessions_started_together_all_yield_without_privileges() -> None:
    """Without CAP_SYS_ADMIN the kernel takes one autogroup change per 100 ms and refuses
    the rest (EAGAIN): drivers submitted in one tick start together, and each must still
    get its level."""
    out = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
         "-c", BURST.format(root=str(ROOT))], capture_output=True, text=True, cwd="/")
    if out.returncode != 0 and "Permission denied" in out.stderr:
        pytest.skip(f"the checkout is not readable by nobody: {out.stderr.strip()[-200:]}")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[True, True, True] ['10', '10', '10']"


@pytest.mark.parametrize(("start", "expected"), [(0, 10), (3, 10), (15, 15)])
def test_a_process_yields_to_the_level_not_by_it(start: int, expected: int) -> None:
    """AELAB_TRAINING_NICENESS is a level: a Ray worker (started at 15) is not pushed to
    19, a driver at 0 or 3 goes to 10."""
    code = (f"import os, sys; sys.path.insert(0, {str(ROOT)!r}); os.nice({start}); "
            "from workers.priority import yield_cpu; yield_cpu(10); "
            "print(os.getpriority(os.PRIO_PROCESS, 0))")
    assert _probe([sys.executable, "-c", code], shell=False, new_session=False) \
        == str(expected)
