"""Run a pool scenario in a fresh interpreter and check that nothing survives it."""

from __future__ import annotations

import codecs
import os
import selectors
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

PRELUDE = """
import os, sys, signal, time, ctypes, threading
import corral
from corral.futures import ProcessPoolExecutor

def square(x):
    return x * x

def suicide(sig):
    os.kill(os.getpid(), sig)

def segfault():
    ctypes.string_at(0)

def hard_exit(code):
    os._exit(code)

def soft_exit(code):
    sys.exit(code)

def hang(seconds=60):
    threading.Event().wait(seconds)
    return "woke"

def pid_of_worker(_=None):
    return os.getpid()

def say(*words):
    # One write() per line: print() makes one per piece when stdout is unbuffered
    # (PYTHONUNBUFFERED), and lines printed by several workers then interleave.
    os.write(1, (" ".join(map(str, words)) + "\\n").encode())
"""


def session_members(sid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getsid(proc.pid) == sid:
                found.append(proc)
        except (ProcessLookupError, PermissionError):
            continue
    return found


def assert_no_survivors(sid: int, within: float = 3.0) -> None:
    """Every process of the scenario's session is gone within ``within`` seconds."""
    members = session_members(sid)
    _gone, alive = psutil.wait_procs(members, timeout=within)
    if alive:
        for proc in alive:
            proc.kill()
        pytest.fail(f"processes left behind: {[p.pid for p in alive]}")


class Scenario:
    """A script started in its own session (so its whole process tree can be found)."""

    def __init__(self, tmp_path: Path, body: str, *args: str) -> None:
        script = tmp_path / "scenario.py"
        script.write_text(PRELUDE + textwrap.dedent(body))
        self.proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.sid = self.proc.pid
        self._unread = ""  # read from stdout by wait_for_line, not yet handed out
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    def wait_for_line(self, expected: str, timeout: float = 30) -> str:
        """Read stdout lines until one starts with ``expected`` (hard deadline).

        Reads the pipe itself, not through ``proc.stdout``: a buffered readline may
        take two lines from the pipe at once, and select() then sees nothing left
        to read although the second line is waiting in the buffer.
        """
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        skipped = []
        try:
            while True:
                line, newline, rest = self._unread.partition("\n")
                if newline:
                    self._unread = rest
                    if line.startswith(expected):
                        return line.strip()
                    skipped.append(line)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    self.kill()
                    pytest.fail(
                        f"no line starting with {expected!r} within {timeout}s "
                        f"(other lines: {skipped}, partial line: {self._unread!r})"
                    )
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.kill()
                    err = self.proc.stderr.read()  # type: ignore[union-attr]
                    pytest.fail(f"script ended before printing {expected!r}: {err}")
                self._unread += self._decoder.decode(chunk)
        finally:
            sel.close()

    def wait_until_blocked(self, timeout: float = 30) -> None:
        """Wait until the scenario's main thread sleeps in a system call (hard deadline).

        Call it after the line the script prints just before the blocking call under
        test: a signal sent then lands in that call, not in the Python code before it
        (CPython checks for signals between bytecodes, and a signal that arrives just
        before a blocking C call is only seen when the call returns). A main thread
        that shares the GIL with other threads may also sleep waiting for the GIL, so
        scripts with threads announce readiness from the far side (a worker running
        the task) as well.
        """
        proc = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + timeout
        # No event tells another process that a thread went to sleep: poll its state.
        while proc.status() != psutil.STATUS_SLEEPING:
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"the script's main thread never blocked within {timeout}s")
            threading.Event().wait(0.002)

    def send_signal_when_blocked(self, sig: int, group: bool = False) -> float:
        """Deliver sig once the main thread is blocked; return the monotonic time sent."""
        self.wait_until_blocked()
        sent = time.monotonic()
        if group:
            os.killpg(self.sid, sig)
        else:
            self.proc.send_signal(sig)
        return sent

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            out, err = self.proc.communicate()
            pytest.fail(f"scenario timed out after {timeout}s\nstdout:\n{out}\nstderr:\n{err}")
        assert_no_survivors(self.sid)
        return self.proc.returncode, self._unread + out, err

    def kill(self) -> None:
        for proc in session_members(self.sid):
            try:
                proc.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                continue


def run(tmp_path: Path, body: str, *args: str, timeout: float = 60) -> tuple[int, str, str]:
    """Run the scenario to the end; return (exit status, stdout, stderr)."""
    return Scenario(tmp_path, body, *args).finish(timeout)
