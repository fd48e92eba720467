"""Running the ``corral`` command in tests: plain, in its own session, or with a pseudo-terminal."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.robustness.scenario import assert_no_survivors


def corral(
    *args: str, stdin: str = "", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m corral ARGS`` to the end (hard timeout)."""
    return subprocess.run(
        [sys.executable, "-m", "corral", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=100,
        check=False,
    )


def wait_for_fifo_lines(path: Path, count: int = 1, timeout: float = 30) -> list[str]:
    """Read ``count`` lines that writers put in the FIFO at ``path`` (hard deadline)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    deadline = time.monotonic() + timeout
    data = b""
    try:
        while data.count(b"\n") < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"{count} lines not written to {path} within {timeout}s: {data!r}")
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 4096)
                if not chunk:
                    # Every writer so far has closed it: poll for the next one (no
                    # event says that a process opened the FIFO).
                    threading.Event().wait(0.01)
                data += chunk
    finally:
        os.close(fd)
    return data.decode().splitlines()


def wait_for_fifo_line(path: Path, timeout: float = 30) -> str:
    """The first line a writer puts in the FIFO at ``path`` (hard deadline)."""
    return wait_for_fifo_lines(path, 1, timeout)[0]


def assert_group_gone(pgid: int, within: float = 10) -> None:
    """No process of group ``pgid`` is left, within ``within`` seconds.

    Killed members that were orphaned are reaped by init, at its own pace: no
    event says when, so the group is polled.
    """
    deadline = time.monotonic() + within
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            alive = [pid for pid in psutil.pids() if _pgid(pid) == pgid and not _zombie(pid)]
            if alive:
                for pid in alive:
                    os.kill(pid, signal.SIGKILL)
                pytest.fail(f"processes of group {pgid} left behind: {alive}")
            return  # only zombies, waiting for init to reap them
        threading.Event().wait(0.02)


def kill_groups(groups: list[int]) -> None:
    """SIGKILL each process group (after a failed test: commands have sessions of their own)."""
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


class Session:
    """``python -m corral ARGS`` started in its own session, to be interrupted by a test."""

    def __init__(self, *args: str, cwd: Path, stdin: str | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "corral", *args],
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            start_new_session=True,
        )
        if stdin is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(stdin)
            self.proc.stdin.close()
            self.proc.stdin = None  # communicate() would flush it

    def interrupt(self, sig: int = signal.SIGINT) -> None:
        self.proc.send_signal(sig)

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for member in psutil.Process(self.proc.pid).children(recursive=True):
                member.kill()
            self.proc.kill()
            out, err = self.proc.communicate()
            pytest.fail(f"corral did not end within {timeout}s\nstdout:\n{out}\nstderr:\n{err}")
        assert_no_survivors(self.proc.pid)
        return self.proc.returncode, out, err


def corral_in_pty(*args: str, stdin: str, cwd: Path, timeout: float = 60) -> tuple[int, str, str]:
    """Run ``python -m corral ARGS`` with stderr on a pseudo-terminal; return (status, out, tty).

    stdout is a pipe and stdin is fed ``stdin``; the third item is what the command
    wrote to the terminal.
    """
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=slave,
        cwd=cwd,
        start_new_session=True,
    )
    os.close(slave)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(stdin.encode())
    proc.stdin.close()
    out_fd = proc.stdout.fileno()
    received = {out_fd: b"", master: b""}
    still_open = {out_fd, master}
    deadline = time.monotonic() + timeout
    try:
        while still_open:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                proc.kill()
                proc.wait(timeout=10)
                pytest.fail(f"corral did not end within {timeout}s: {received}")
            readable, _, _ = select.select(list(still_open), [], [], remaining)
            for fd in readable:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the terminal's last writer is gone
                    chunk = b""
                received[fd] += chunk
                if not chunk:
                    still_open.discard(fd)
    finally:
        os.close(master)
        proc.stdout.close()
    status = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    assert_no_survivors(proc.pid)
    return status, received[out_fd].decode(), received[master].decode()


class OnTerminal:
    """``python -m corral ARGS`` on a pseudo-terminal of its own, as a user's shell runs it.

    The command leads the terminal's foreground process group, so a Ctrl-C
    typed there (``type(b"\\x03")``) is a SIGINT to it alone.
    """

    def __init__(self, *args: str, cwd: Path) -> None:
        argv = [sys.executable, "-m", "corral", *args]
        self.pid, self.master = pty.fork()
        if self.pid == 0:  # the child: exec at once (the test process has threads)
            try:
                os.chdir(cwd)
                os.execv(argv[0], argv)
            finally:
                os._exit(127)
        self.output = b""

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def read_until(self, text: bytes, timeout: float = 30) -> None:
        """Read the terminal until ``text`` has appeared (hard deadline)."""
        deadline = time.monotonic() + timeout
        while text not in self.output:
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([self.master], [], [], max(0.0, remaining))
            if not readable:
                self.kill()
                pytest.fail(f"{text!r} not on the terminal within {timeout}s: {self.output!r}")
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the command is gone
                chunk = b""
            if not chunk:
                self.kill()
                pytest.fail(f"the command ended before {text!r}: {self.output!r}")
            self.output += chunk

    def finish(self, timeout: float = 60) -> int:
        """Read the terminal to its end; return the exit status (128 + signal if killed)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([self.master], [], [], max(0.0, remaining))
            if not readable:
                self.kill()
                pytest.fail(f"the command did not end within {timeout}s: {self.output!r}")
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            self.output += chunk
        os.close(self.master)
        _, status = os.waitpid(self.pid, 0)  # the terminal closed: it has exited
        assert_no_survivors(self.pid)
        return os.waitstatus_to_exitcode(status)

    def kill(self) -> None:
        """Kill the command's session and close the terminal (a test failed)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.close(self.master)
        os.waitpid(self.pid, 0)
