"""Tie a child process's life to its parent's (Linux `prctl(PR_SET_PDEATHSIG)`).

A process killed with SIGKILL (the OOM killer, a lost Airflow worker slot) cannot stop its
children. An Airflow Spark task runs `task runner -> spark-submit JVM -> stage driver`:
without this, a killed task runner leaves the JVM and the driver running as orphans beside
the task's retry, both writing ART/work/<date>/<stage>/ (seen in the task-kill drill,
docs/airflow.md). With it the kernel sends SIGKILL down the chain as each parent dies.

No-op where prctl does not exist (macOS): the orphan problem stays there.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send `sig` to this process when its parent (the thread that forked
    it) dies. Survives exec, so it also holds for what the caller execs. True when set."""
    prctl = _prctl()
    return prctl is not None and prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


def die_with_parent_preexec() -> Callable[[], None] | None:
    """A `subprocess.Popen(preexec_fn=...)` that sets the parent-death signal in the child.

    libc is loaded here, in the parent: the function run between fork and exec only calls it,
    as little as possible happening in a forked child of a multi-threaded process."""
    prctl = _prctl()
    if prctl is None:
        return None

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)

    return preexec
