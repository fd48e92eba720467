"""Stop the processes of a local cluster session when the program that started it dies.

A Ray session that ``ray.init`` starts shares fate with its driver only in
part: when the driver is SIGKILLed, Ray's GCS, raylet and workers exit at once,
but its dashboard and runtime-env agents first try to report the raylet's
death to the GCS, which is gone, and exit about 60 s later. corral promises
that a cluster it started goes away with its program, so for a session it
starts it also starts this small watcher (``start``): a separate process, in
a session of its own, that waits for the program's death and then SIGKILLs the
session's processes that are still there, checked by start time so that a
reused pid is never hit. A session shut down normally stops its watcher
(``Watcher.stop``). Linux only (``/proc``); elsewhere ``start`` returns None.

Run as ``python -m corral._engine.session_reaper PID PID:START ...``.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys

__all__ = ("Watcher", "descendants", "start")


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat``), None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return fields[19].decode()  # field 22: starttime


def _children() -> dict[int, list[int]]:
    """pid -> its children's pids, for every process this user can see."""
    tree: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(name))
    return tree


def descendants(pid: int) -> list[int]:
    """The processes under ``pid`` now (children, theirs, ...); empty without ``/proc``."""
    if not os.path.isdir("/proc/self"):
        return []
    tree = _children()
    found: list[int] = []
    todo = list(tree.get(pid, ()))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(tree.get(child, ()))
    return found


class Watcher:
    """The watcher process of one session: ``stop()`` it when the session ends normally."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process

    def stop(self) -> None:
        """Stop the watcher (the session's processes are left to their own shutdown)."""
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()


def start(before: list[int]) -> Watcher | None:
    """Start a watcher for the processes under this one that are not in ``before``.

    Call ``descendants(os.getpid())`` before starting the session and pass it
    here after: only the session's processes are watched, never the program's
    other children. Returns None where ``/proc`` is missing (not Linux) or
    nothing new was started.
    """
    earlier = set(before)
    targets = []
    for pid in descendants(os.getpid()):
        if pid in earlier:
            continue
        started = _start_time(pid)
        if started is not None:
            targets.append(f"{pid}:{started}")
    if not targets:
        return None
    process = subprocess.Popen(
        [sys.executable, "-m", __name__, str(os.getpid()), *targets],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C of the program's terminal is not the program's death
        close_fds=True,
    )
    return Watcher(process)


def _wait_for_death(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd: poll
        while _start_time(pid) is not None:
            select.select([], [], [], 0.5)
        return
    select.select([fd], [], [])
    os.close(fd)


def main(argv: list[str]) -> None:
    """The watcher: wait for the program ``argv[0]``, then SIGKILL the listed processes left."""
    _wait_for_death(int(argv[0]))
    for target in argv[1:]:
        pid_text, started = target.split(":")
        pid = int(pid_text)
        if _start_time(pid) == started:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


if __name__ == "__main__":
    main(sys.argv[1:])
