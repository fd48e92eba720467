"""Noticing that a process died: the parent (for children that must not outlive it), or any pid.

Pool workers and manager processes call ``on_parent_death`` at start. A
watcher thread waits on a pidfd of the parent (Linux 5.3+), which also works
when the child is not the parent's own child (forkserver); elsewhere it polls.
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable

__all__ = ("is_dead", "on_parent_death")

_POLL_INTERVAL = 0.5


def on_parent_death(parent_pid: int, callback: Callable[[], object]) -> None:
    """Call ``callback()`` (in a daemon thread) once process ``parent_pid`` has died.

    If it is already gone, ``callback`` runs at once in the caller's thread.
    """
    try:
        pidfd = os.pidfd_open(parent_pid)  # type: ignore[attr-defined,unused-ignore]
    except ProcessLookupError:
        callback()
        return
    except (AttributeError, OSError):
        pidfd = None
    threading.Thread(
        target=_watch, args=(parent_pid, pidfd, callback), name="corral-parent-watch", daemon=True
    ).start()


def _watch(parent_pid: int, pidfd: int | None, callback: Callable[[], object]) -> None:
    if pidfd is not None:
        select.select([pidfd], [], [])
        os.close(pidfd)
    else:  # no pidfd (macOS, old kernels): poll
        while os.getppid() == parent_pid or not is_dead(parent_pid):
            threading.Event().wait(_POLL_INTERVAL)
    callback()


def is_dead(pid: int) -> bool:
    """Whether pid has ended (a zombie counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return False  # no /proc (macOS): alive as far as kill() can tell
    return state in (b"Z", b"X")
