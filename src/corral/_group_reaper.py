"""Stop the commands of ``run_commands`` / ``corral run`` when the program running them dies.

Each command runs in a process group of its own, so the runner can stop it
and everything it started. That works while the runner lives; a runner
SIGKILLed (or dying any other way that runs no Python) would leave its
commands running. So the runner starts this small watcher before its first
command: a separate process, in a session of its own (Ctrl-C on the terminal
does not reach it), that reads the runner's messages on a pipe::

    "+PGID\\n"   a command's group started
    "-PGID\\n"   that command's leader has been reaped: forget the group
    "bye\\n"     the runner is done (every command reaped): stop nothing

If the pipe ends without "bye", the runner died: the watcher SIGTERMs the
groups it knows, and those of every process whose environment holds the
runner's id (``CORRAL_RUN_ID``, set for each command: it covers a command
started just before the runner died, before its "+PGID" was written, and what
commands started in groups of their own), then SIGKILLs what is left of them
``KILL_AFTER`` seconds later. A group is forgotten only once its leader is
reaped, and an unreaped leader keeps its pid (hence the group id) from being
reused, so the watcher does not signal a stranger through a stale group id.

The runner's side is ``_command_runner.GroupReaper``. The watcher runs this
file as a script, ``python -I -S .../_group_reaper.py KILL_AFTER RUN_ID``: it
imports nothing but ``os``, ``signal``, ``sys`` and ``time``, so it starts in
~10 ms instead of the ~60 ms of ``-m`` with the site and ``corral`` packages.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Collection

__all__ = ("RUN_ID_VARIABLE", "main")

RUN_ID_VARIABLE = "CORRAL_RUN_ID"


def _signal_groups(groups: set[int], sig: int) -> set[int]:
    """Send ``sig`` to each group; return those that still exist."""
    alive = set()
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            continue
        except PermissionError:  # not ours any more
            continue
        alive.add(pgid)
    return alive


def marked_groups(marks: Collection[bytes], *, prefix: bool = False) -> set[int]:
    """The process groups of the processes whose environment holds one of ``marks``.

    A mark is a whole entry (``b"CORRAL_RUN_ID=..."``), or with ``prefix`` the
    start of one. Linux only (``/proc``): elsewhere, the empty set.
    """
    wanted = set(marks)
    starts = tuple(wanted)
    groups: set[int] = set()
    try:
        names = os.listdir("/proc")
    except OSError:
        return groups
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                entries = f.read().split(b"\0")
        except OSError:  # gone, or not ours
            continue
        if prefix:
            found = any(entry.startswith(starts) for entry in entries)
        else:
            found = not wanted.isdisjoint(entries)
        if found:
            try:
                groups.add(os.getpgid(int(name)))
            except OSError:
                continue
    return groups


def command_mark(run_id: str, index: int) -> str:
    """The value of ``CORRAL_RUN_ID`` in the environment of a run's command ``index``."""
    return f"{run_id}:{index}"


def main(kill_after: float, run_id: str) -> None:
    """The watcher: read the runner's messages to the end, then stop what is left."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    groups: set[int] = set()
    for raw in sys.stdin.buffer:
        line = raw.strip()
        if line[:1] == b"+":
            groups.add(int(line[1:]))
        elif line[:1] == b"-":
            groups.discard(int(line[1:]))
        elif line == b"bye":
            return
    groups |= marked_groups([f"{RUN_ID_VARIABLE}={run_id}:".encode()], prefix=True)
    groups = _signal_groups(groups, signal.SIGTERM)
    deadline = time.monotonic() + kill_after
    while groups and time.monotonic() < deadline:
        time.sleep(0.05)  # polling a group's existence: there is no event to wait on
        groups = _signal_groups(groups, 0)
    _signal_groups(groups, signal.SIGKILL)


if __name__ == "__main__":
    main(float(sys.argv[1]), sys.argv[2])
