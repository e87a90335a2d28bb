"""Training yields the CPU to the API on a shared machine (the embedded mode)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("aelab.priority")

# The default nice level of what a cluster runs for training (AELAB_TRAINING_NICENESS): the
# embedded head's session, each job driver's, the warm runners and trials.
TRAINING_NICENESS = 10


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
    Where autogroups are off or absent this changes nothing.
    """
    try:
        Path(f"/proc/{pid}/autogroup").write_text(str(niceness))
        return True
    except OSError as exc:  # not Linux, or a kernel without autogroups: nothing to rank
        log.debug("cannot set the autogroup nice level of pid %s: %s", pid, exc)
        return False


def yield_cpu(niceness: int) -> None:
    """This process at ``niceness``, and its session's share (``yield_session_cpu``): for
    a process in a session made for it, such as a Ray job driver (Ray's job supervisor
    starts each entrypoint in a new session)."""
    if niceness <= 0:
        return
    os.nice(niceness)
    yield_session_cpu(os.getpid(), niceness)
