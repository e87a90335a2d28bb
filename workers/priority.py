"""Training yields the CPU to the API on a shared machine (the embedded mode)."""

from __future__ import annotations

import errno
import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger("aelab.priority")

# The default nice level of what a cluster runs for training (AELAB_TRAINING_NICENESS): the
# embedded head's session, each job driver's, the warm runners and trials.
TRAINING_NICENESS = 10

# The kernel takes one autogroup nice change per 100 ms machine-wide from a process without
# CAP_SYS_ADMIN (EAGAIN otherwise); drivers submitted in one tick start together.
RETRY_FOR_S = 3.0
RETRY_EVERY_S = 0.11


def yield_session_cpu(pid: int, niceness: int) -> bool:
    """Rank the CPU share of ``pid``'s whole session at ``niceness`` (0–19) against other
    sessions; True if the kernel took it.

    Linux's autogroup scheduling (on by default in Debian's and Ubuntu's kernels) shares the
    CPU between sessions before it looks at nice levels, so a process's own nice level only
    ranks it inside its session: the embedded Ray head (a session of its own, since it
    outlives the service) and each Ray job driver (Ray starts each in a new session) would
    otherwise compete with the API's session as equals. Measured on 2 cores with two runs
    training: the API's /healthz p99 0.9 s, 18 ms with the head's session at nice 10. The
    autogroup's nice level is what ranks sessions (sched(7), "The autogroup feature").
    Where autogroups are absent this changes nothing; a refusal is logged as a warning.
    """
    path = Path(f"/proc/{pid}/autogroup")
    deadline = time.monotonic() + RETRY_FOR_S
    while True:
        try:
            path.write_text(str(niceness))
            return True
        except OSError as exc:
            if exc.errno == errno.EAGAIN and time.monotonic() < deadline:
                time.sleep(RETRY_EVERY_S)  # another session's change took this 100 ms
                continue
            if exc.errno == errno.ENOENT:  # not Linux, or no autogroups: nothing to rank
                log.debug("no autogroup for pid %s: %s", pid, exc)
            else:
                log.warning("could not lower the CPU share of pid %s's session to nice %s "
                            "(%s): the API may answer slowly while it trains", pid,
                            niceness, exc)
            return False


def session_made_for_me() -> bool:
    """Whether this process's session exists for it alone: it leads it, or its leader is
    the ``sh -c "<this command>"`` that started it (how Ray's job supervisor runs an
    entrypoint, in a new session). False for a command typed in a terminal, whose session
    is the terminal's."""
    sid = os.getsid(0)
    if sid == os.getpid():
        return True
    if sid != os.getppid():
        return False
    try:
        leader = Path(f"/proc/{sid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except OSError:
        return False
    mine = " ".join(sys.argv[1:]).encode()
    return len(leader) == 3 and leader[1] == b"-c" and leader[2].endswith(mine)


def yield_cpu(niceness: int) -> None:
    """This process at nice level ``niceness`` at least (a level, not an increment: Ray
    starts its workers at 15 already, which stays), and its session's share
    (``yield_session_cpu``) when the session was made for it (``session_made_for_me``), as
    for each Ray job driver."""
    if niceness <= 0:
        return
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if current < niceness:
        os.nice(niceness - current)
    if session_made_for_me():
        yield_session_cpu(os.getpid(), niceness)
