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

Run as ``python -m corral._group_reaper KILL_AFTER RUN_ID``.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time

__all__ = ("RUN_ID_VARIABLE", "GroupReaper")

RUN_ID_VARIABLE = "CORRAL_RUN_ID"


class GroupReaper:
    """The runner's side: starts the watcher on first use; thread-safe."""

    def __init__(self, kill_after: float) -> None:
        self._kill_after = kill_after
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._closed = False
        self.run_id = f"{os.getpid()}-{secrets.token_hex(8)}"  # in each command's environment

    def start(self) -> None:
        """Start the watcher, if it is not running yet (before the first command starts)."""
        with self._lock:
            if self._process is None and not self._closed:
                self._process = _start(self._kill_after, self.run_id)

    def started(self, pgid: int) -> None:
        """A command's group exists: stop it if this program dies."""
        self._tell(f"+{pgid}\n")

    def reaped(self, pgid: int) -> None:
        """The group's leader is reaped: leave its group alone from now on."""
        self._tell(f"-{pgid}\n")

    def _tell(self, line: str) -> None:
        with self._lock:
            if self._closed:
                return
            if self._process is None:
                return
            assert self._process.stdin is not None
            try:
                self._process.stdin.write(line.encode())
                self._process.stdin.flush()
            except OSError:  # the watcher is gone: nothing more to do
                pass

    def close(self) -> None:
        """End the watcher (call once every command is reaped); idempotent."""
        with self._lock:
            self._closed = True
            process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None
        try:
            process.stdin.write(b"bye\n")
            process.stdin.close()
        except OSError:
            pass
        try:
            process.wait(10.0)
        except subprocess.TimeoutExpired:  # cannot happen unless it hangs: do not wait on it
            process.kill()
            process.wait()


def _start(kill_after: float, run_id: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", __name__, repr(kill_after), run_id],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,  # never hold the runner's output open
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


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


def _marked_groups(run_id: str) -> set[int]:
    """The groups of the processes whose environment holds ``run_id`` (Linux: ``/proc``)."""
    mark = f"{RUN_ID_VARIABLE}={run_id}".encode()
    groups = set()
    try:
        names = os.listdir("/proc")
    except OSError:
        return groups
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read()
            if mark in environ.split(b"\0"):
                groups.add(os.getpgid(int(name)))
        except OSError:  # gone, or not ours
            continue
    return groups


def _watch(kill_after: float, run_id: str) -> None:
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
    groups |= _marked_groups(run_id)
    groups = _signal_groups(groups, signal.SIGTERM)
    deadline = time.monotonic() + kill_after
    while groups and time.monotonic() < deadline:
        time.sleep(0.05)  # polling a group's existence: there is no event to wait on
        groups = _signal_groups(groups, 0)
    _signal_groups(groups, signal.SIGKILL)


if __name__ == "__main__":
    _watch(float(sys.argv[1]), sys.argv[2])
