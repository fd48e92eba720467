"""Start a child by ``os.fork()``; the base of the other Popen classes.

A Popen owns one child: its pid, its exit sentinel and its return code. The
exit sentinel is a pidfd where the OS has one (readable exactly when the child
exits, immune to grandchildren holding fds), else the read end of a pipe whose
write end only the child holds.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import warnings
from typing import Any

from . import resource_tracker, util


def _pidfd_works() -> bool:
    """True if this kernel gives pidfds (Linux >= 5.3 and not blocked by seccomp)."""
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return False
    return True


HAVE_PIDFD = _pidfd_works()


class Popen:
    """A child started by fork."""

    method = "fork"

    def __init__(self, process_obj: Any) -> None:
        util._flush_std_streams()
        self.returncode: int | None = None
        self.finalizer: util.Finalize | None = None
        self.pid: int = 0
        self.sentinel: int = -1
        # Objects pickled for the child that must outlive its start-up
        # (named semaphores it opens by name); released once it exits.
        self.keepalive: list[Any] = []
        self.released = False  # the fds are closed; returncode is kept
        self._release_when_reaped = False
        # Held while a non-blocking waitpid() and the returncode it yields are
        # published: a pool's engine thread reaps its workers while user code
        # may join the same Process object (pool._pool) from another thread.
        self._reap_lock = threading.Lock()
        self._launch(process_obj)

    def duplicate_for_child(self, fd: int) -> int:
        return fd

    def _launch(self, process_obj: Any) -> None:
        # Without pidfds, two pipes: the child holds exit_w until it exits (our
        # sentinel) and we hold parent_w until we exit (the child's view of us).
        pipes = None if HAVE_PIDFD else (os.pipe(), os.pipe())
        # A tracker the child inherits: a big message it sends and does not see
        # read must outlive it (started once per program, as for spawn).
        resource_tracker.message_tracker()
        _warn_if_threaded()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                util._after_fork_in_child()
                parent_sentinel = None
                if pipes is not None:
                    (exit_r, _exit_w), (parent_r, parent_w) = pipes
                    os.close(exit_r)
                    os.close(parent_w)
                    parent_sentinel = parent_r
                code = process_obj._bootstrap(parent_sentinel=parent_sentinel)
            finally:
                os._exit(code)
        self.pid = pid
        if pipes is None:
            self.sentinel = os.pidfd_open(pid)
            fds = [self.sentinel]
        else:
            (exit_r, exit_w), (parent_r, parent_w) = pipes
            os.close(exit_w)
            os.close(parent_r)
            self.sentinel = exit_r
            fds = [exit_r, parent_w]
        self.finalizer = util.Finalize(self, util.close_fds, fds)

    def poll(self, flag: int = os.WNOHANG) -> int | None:
        """Return the exit code (-N for signal N), or None if still running."""
        if self.returncode is not None:
            return self.returncode
        if flag != os.WNOHANG:
            if not HAVE_PIDFD:
                return self._blocking_waitpid(flag)
            # Wait on the pidfd, then reap without blocking under the lock, so
            # that no thread ever reaps the child outside it.
            from .connection import wait

            try:
                wait([self.sentinel], None)
            except (OSError, ValueError):
                pass  # released meanwhile by the thread that reaped it
        with self._reap_lock:
            if self.returncode is None:
                try:
                    pid, status = os.waitpid(self.pid, os.WNOHANG)
                except OSError:
                    return None  # reaped elsewhere (e.g. SIGCHLD ignored)
                if pid == self.pid:
                    self._set_returncode(status)
        return self.returncode

    def _blocking_waitpid(self, flag: int) -> int | None:
        try:
            pid, status = os.waitpid(self.pid, flag)
        except OSError:
            with self._reap_lock:  # reaped by another thread: published under the lock
                return self.returncode
        with self._reap_lock:
            if self.returncode is None and pid == self.pid:
                self._set_returncode(status)
        return self.returncode

    def _set_returncode(self, status: int) -> None:
        self.returncode = os.waitstatus_to_exitcode(status)
        self._reaped()

    def _reaped(self) -> None:
        self.keepalive.clear()
        if self._release_when_reaped:
            self.close()

    def release_when_reaped(self) -> None:
        """Close the fds now if the child is reaped, else as soon as it is."""
        self._release_when_reaped = True
        if self.returncode is not None:
            self.close()

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the child; None if it is still running after timeout seconds."""
        if self.returncode is None:
            if timeout is not None:
                from .connection import wait

                try:
                    if not wait([self.sentinel], timeout):
                        return None
                except (OSError, ValueError):
                    pass  # released meanwhile by the thread that reaped it
            return self.poll(os.WNOHANG if timeout == 0.0 else 0)
        return self.returncode

    def _send_signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            except OSError:
                if self.wait(timeout=0.1) is None:
                    raise

    def terminate(self) -> None:
        self._send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self._send_signal(signal.SIGKILL)

    def close(self) -> None:
        self.keepalive.clear()
        self.released = True
        if self.finalizer is not None:
            self.finalizer()


def _thread_count() -> int:
    """Threads of this process at the OS level (Python and native ones)."""
    try:
        # Linux gives /proc/<pid>/task a link count of 2 + its threads: one
        # stat() instead of listing the directory (five system calls, 3-4x the
        # time), which mattered on every fork.
        links = os.stat("/proc/self/task").st_nlink
    except OSError:
        return threading.active_count()
    return links - 2 if links > 2 else len(os.listdir("/proc/self/task"))


class _PoolThreadMarker(threading.local):
    is_pool_engine = False


# Set in a pool's engine thread: a pool always forks with its engine thread
# running, so a warning on every worker start would say nothing new (the docs
# explain when to prefer forkserver or spawn for pools).
pool_engine_thread = _PoolThreadMarker()


_FORK_WARNS_ITSELF = sys.version_info >= (3, 12)  # os.fork() warns by itself


def _warn_if_threaded() -> None:
    """Python 3.12+ warns in ``os.fork()`` when other threads run; do the same before 3.12.

    The child gets a copy of every lock as it was at the fork, held or not, but
    only the forking thread: a lock another thread held stays held forever in
    the child. spawn and forkserver children start from a fresh interpreter.
    """
    if _FORK_WARNS_ITSELF:
        return
    count = _thread_count()
    if count > 1 and not pool_engine_thread.is_pool_engine:
        warnings.warn(
            f"This process (pid={os.getpid()}) is multi-threaded ({count} threads), use of "
            "fork() may lead to deadlocks in the child. Use the spawn or forkserver start "
            "method when threads are running.",
            DeprecationWarning,
            stacklevel=4,
        )
