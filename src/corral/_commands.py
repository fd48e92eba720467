"""Commands in parallel: ``corral.run_commands`` and the runner under ``corral run``.

A command needs no Python worker: each is a child process (``subprocess.Popen``)
in a session of its own, so that its process group, grandchildren included, can
be signalled as one (``os.killpg``). One thread does everything::

    commands (iterable, read lazily)
        │  at most `jobs` running
        ▼
    Popen(stdin=/dev/null, stdout/stderr=unnamed temp files, start_new_session)
        │  pidfd per command, in one selector; the wait's timeout is the
        │  nearest deadline (timeout, then timeout + kill_after)
        ▼
    exited (a zombie: its pid, hence its group id, cannot be reused yet)
        │  timed out: SIGKILL what is left of the group; reap; read the files
        ▼
    Finished(index, args, returncode, stdout, stderr, duration, timed_out)

The output goes to temp files rather than pipes: nothing has to drain a pipe
while the command runs (so a big output cannot block it), and a background
process that keeps the command's stdout open cannot hold the result back after
the command itself has ended.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

__all__ = ("CommandFailedError", "CompletedCommand", "Finished", "Runner", "run_commands")

Command = str | Sequence[str]  # a shell command line, or a program and its arguments

_POLL_WITHOUT_PIDFD = 0.02  # seconds between polls where pidfd_open is missing


class CompletedCommand(subprocess.CompletedProcess[str]):
    """One command's outcome: a ``subprocess.CompletedProcess`` with two more attributes.

    ``returncode`` is the exit status, or minus the signal number that ended the
    command (``-15`` for SIGTERM), as ``subprocess`` reports it. ``stdout`` and
    ``stderr`` are the command's output decoded as UTF-8 with
    ``errors="surrogateescape"`` (``.encode("utf-8", "surrogateescape")`` gives the
    bytes back), or None when not captured.

    Attributes:
        duration: seconds from the start of the command to its end.
        timed_out: the command ran past ``timeout`` and was stopped.
    """

    def __init__(
        self,
        args: Command,
        returncode: int,
        stdout: str | None,
        stderr: str | None,
        *,
        duration: float,
        timed_out: bool,
    ) -> None:
        super().__init__(args, returncode, stdout, stderr)
        self.duration = duration
        self.timed_out = timed_out

    def __repr__(self) -> str:
        return (
            f"CompletedCommand(args={self.args!r}, returncode={self.returncode}, "
            f"timed_out={self.timed_out}, duration={self.duration:.3f})"
        )


class CommandFailedError(subprocess.CalledProcessError):
    """``run_commands(check=True)``: a command failed (non-zero status, signal or timeout).

    A ``subprocess.CalledProcessError`` (code that catches that keeps working)
    about the first failed command in input order: ``returncode``, ``cmd``,
    ``stdout`` and ``stderr`` are its. Every command ran to its end first;
    ``results`` holds them all, in input order, and ``failed`` the failed ones.
    """

    def __init__(self, results: list[CompletedCommand]) -> None:
        self.results = results
        self.failed = [result for result in results if _failed(result)]
        first = self.failed[0]
        super().__init__(first.returncode, first.args, first.stdout, first.stderr)

    def __str__(self) -> str:
        first = self.failed[0]
        if first.timed_out:
            what = f"timed out after {first.duration:.1f} s (status {first.returncode})"
        else:
            what = f"exited with status {first.returncode}"
        others = len(self.failed) - 1
        more = f"; {others} more of the {len(self.results)} failed" if others else ""
        return (
            f"command {_as_text(first.args)!r} {what}{more}. Every command ran to its end: "
            f"see .results (all, in input order) and .failed"
        )

    def __reduce__(self) -> tuple[type[CommandFailedError], tuple[list[CompletedCommand]]]:
        return type(self), (self.results,)


def _failed(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode != 0 or bool(getattr(result, "timed_out", False))


def _as_text(args: Command) -> str:
    if isinstance(args, str):
        return args
    import shlex

    return shlex.join(args)


@dataclass
class Finished:
    """A command that ended, as the runner yields it (bytes, not yet decoded)."""

    index: int
    args: Command
    returncode: int
    stdout: bytes
    stderr: bytes
    duration: float
    timed_out: bool


@dataclass
class _Running:
    index: int
    args: Command
    proc: subprocess.Popen[bytes]
    out: IO[bytes] | None
    err: IO[bytes] | None
    started: float
    pidfd: int | None
    deadline: float | None
    term_sent: float | None = None  # when the group got SIGTERM (timeout or stop)
    killed: bool = False  # the group got SIGKILL
    timed_out: bool = False


def _kill_group(pgid: int, sig: int) -> None:
    """Signal a command's process group; one that is already gone is fine."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def default_jobs() -> int:
    """The CPUs this process may run on (its affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_NOTHING_YET: Any = object()  # no command ready now (the feed is still reading)


class _Feed:
    """Commands from an iterable that may block (stdin, a generator), read in a thread.

    Reading in the runner's thread would stop everything while the input waits
    (``tail -f log | corral run ...``): no result printed, no timeout enforced.
    At most ``window`` commands are read ahead; a byte on a pipe tells the
    runner's selector that one arrived or that the input ended. The thread owns
    the pipe's write end (it may still be blocked reading when the runner is
    done: it is a daemon and closes its end when it returns).
    """

    def __init__(self, commands: Iterable[Command], window: int) -> None:
        self._items: deque[Command] = deque()
        self._window = window
        self._space = threading.Condition()
        self._closed = False
        self.done = False  # the iterable is exhausted (or raised: see error)
        self.error: BaseException | None = None
        self.wakeup, self._wakeup_w = os.pipe()
        os.set_blocking(self.wakeup, False)
        os.set_blocking(self._wakeup_w, False)
        self._thread = threading.Thread(
            target=self._read, args=(iter(commands),), name="corral-run-input", daemon=True
        )
        self._thread.start()

    def _read(self, commands: Iterator[Command]) -> None:
        try:
            for command in commands:
                with self._space:
                    while len(self._items) >= self._window and not self._closed:
                        self._space.wait()
                    if self._closed:
                        return
                    self._items.append(command)
                self._wake()
        except BaseException as exc:  # handed to the runner's thread
            self.error = exc
        finally:
            self.done = True
            self._wake()
            os.close(self._wakeup_w)

    def _wake(self) -> None:
        try:
            os.write(self._wakeup_w, b"!")
        except OSError:  # full (a wake-up is pending anyway), or the runner has closed
            pass

    def take(self) -> Command:
        """The next command, ``_NOTHING_YET``, or raises StopIteration at the end."""
        done = self.done  # read before looking: an item added after it is not missed
        with self._space:
            if self._items:
                self._space.notify()
                return self._items.popleft()
        if not done:
            return _NOTHING_YET
        if self.error is not None:
            raise self.error
        raise StopIteration

    def drain(self) -> None:
        try:
            os.read(self.wakeup, 4096)
        except BlockingIOError:
            pass

    def close(self) -> None:
        """No more commands are wanted: the thread stops at its next one.

        It is joined if it has read the end of the input (it is returning); one
        still blocked reading is left to end on its own (a daemon).
        """
        with self._space:
            self._closed = True
            self._space.notify_all()
        os.close(self.wakeup)
        if self.done:
            self._thread.join()


class Runner:
    """Runs commands, at most ``jobs`` at a time; iterating yields them as they end.

    Iterate in one thread. After an exception out of the iteration (Ctrl-C),
    call ``stop()``: it stops and reaps every command still running.
    """

    def __init__(
        self,
        commands: Iterable[Command],
        *,
        jobs: int | None = None,
        timeout: float | None = None,
        kill_after: float = 2.0,
        capture: bool = True,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        before_wait: Callable[[], object] | None = None,
    ) -> None:
        self._before_wait = before_wait  # called before each wait (to redraw a progress line)
        self.jobs = default_jobs() if jobs is None else jobs
        self.timeout = timeout
        self.kill_after = kill_after
        self.capture = capture
        self.cwd = cwd
        self.env = env
        self.started = 0
        self.exhausted = False  # every command has been read
        self._running: dict[int, _Running] = {}  # by pid
        self._selector = selectors.DefaultSelector()
        # A list or tuple is read here; any other iterable may block: a thread reads it.
        self._commands: Iterator[Command] | None = None
        self._feed: _Feed | None = None
        if isinstance(commands, (list, tuple)):
            self._commands = iter(commands)
        else:
            self._feed = _Feed(commands, window=self.jobs)
            self._selector.register(self._feed.wakeup, selectors.EVENT_READ, None)

    @property
    def running(self) -> int:
        """How many commands are running now."""
        return len(self._running)

    def __iter__(self) -> Iterator[Finished]:
        while True:
            while len(self._running) < self.jobs and not self.exhausted:
                command = self._next_command()
                if command is _NOTHING_YET:
                    break
                finished = self._start(command)
                if finished is not None:
                    yield finished
            if not self._running and self.exhausted:
                self._close()
                return
            if self._before_wait is not None:
                self._before_wait()
            yield from self._wait()

    def _next_command(self) -> Command:
        """The next command, or ``_NOTHING_YET`` (none ready, or the end: see exhausted)."""
        try:
            if self._feed is not None:
                return self._feed.take()
            assert self._commands is not None
            return next(self._commands)
        except StopIteration:
            self.exhausted = True
            return _NOTHING_YET

    def _close(self) -> None:
        if self._feed is not None:
            self._feed.close()
            self._feed = None
        self._selector.close()

    def _start(self, args: Command) -> Finished | None:
        index = self.started
        self.started += 1
        out = tempfile.TemporaryFile() if self.capture else None  # noqa: SIM115
        err = tempfile.TemporaryFile() if self.capture else None  # noqa: SIM115
        began = time.monotonic()
        try:
            proc = subprocess.Popen(
                args,
                shell=isinstance(args, str),  # a string is shell code: the user's, by design
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
            )
        except OSError as exc:  # the program is missing or cannot be executed
            for file in (out, err):
                if file is not None:
                    file.close()
            status = 127 if isinstance(exc, FileNotFoundError) else 126
            message = f"corral: cannot run {_as_text(args)!r}: {exc.strerror}\n"
            return Finished(index, args, status, b"", message.encode(), 0.0, False)
        # Recorded first, so that an interrupt from here on finds it for stop().
        deadline = None if self.timeout is None else began + self.timeout
        running = self._running[proc.pid] = _Running(
            index, args, proc, out, err, began, None, deadline
        )
        try:
            running.pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):  # no pidfds here: the command is polled
            return None
        self._selector.register(running.pidfd, selectors.EVENT_READ, running)
        return None

    def _next_deadline(self) -> float | None:
        times = []
        for running in self._running.values():
            if running.term_sent is not None:
                if not running.killed:
                    times.append(running.term_sent + self.kill_after)
            elif running.deadline is not None:
                times.append(running.deadline)
        return min(times, default=None)

    def _wait(self) -> Iterator[Finished]:
        """Wait for a command to end or a deadline to pass; yield what ended."""
        deadline = self._next_deadline()
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        if any(r.pidfd is None for r in self._running.values()):
            wait = _POLL_WITHOUT_PIDFD if wait is None else min(wait, _POLL_WITHOUT_PIDFD)
        ready = self._selector.select(wait) if self._selector.get_map() else []
        ended = [key.data for key, _ in ready if key.data is not None]
        if self._feed is not None and len(ended) < len(ready):
            self._feed.drain()  # new input: the caller starts it
        ended += [r for r in self._running.values() if r.pidfd is None and _has_exited(r)]
        for running in ended:
            yield self._finish(running)
        now = time.monotonic()
        for running in list(self._running.values()):
            if running.term_sent is None:
                if running.deadline is not None and now >= running.deadline:
                    _kill_group(running.proc.pid, signal.SIGTERM)
                    running.term_sent = now
                    running.timed_out = True
            elif not running.killed and now >= running.term_sent + self.kill_after:
                _kill_group(running.proc.pid, signal.SIGKILL)
                running.killed = True

    def _finish(self, running: _Running) -> Finished:
        """The command's main process has exited (not yet reaped): collect it."""
        if running.term_sent is not None:
            # Stopped: what is left of its group goes too. The group id cannot
            # name another group yet, because the unreaped leader holds its pid.
            _kill_group(running.proc.pid, signal.SIGKILL)
        returncode = running.proc.wait()
        duration = time.monotonic() - running.started
        del self._running[running.proc.pid]
        if running.pidfd is not None:
            self._selector.unregister(running.pidfd)
            os.close(running.pidfd)
        return Finished(
            running.index,
            running.args,
            returncode,
            _read_and_close(running.out),
            _read_and_close(running.err),
            duration,
            running.timed_out,
        )

    def stop(self) -> list[Finished]:
        """Stop every running command: SIGTERM to its group, SIGKILL after ``kill_after``.

        Returns the stopped commands (``timed_out`` only if their timeout had
        passed already). No more commands are started after it.
        """
        self.exhausted = True
        now = time.monotonic()
        for running in self._running.values():
            if running.term_sent is None:
                _kill_group(running.proc.pid, signal.SIGTERM)
                running.term_sent = now
        stopped: list[Finished] = []
        grace_end = now + self.kill_after
        while self._running:
            remaining: float | None = grace_end - time.monotonic()
            if remaining is not None and remaining <= 0:
                for running in self._running.values():
                    _kill_group(running.proc.pid, signal.SIGKILL)
                remaining = None  # a SIGKILLed process ends: wait for it
            ended = _wait_any(list(self._running.values()), remaining)
            stopped.extend(self._finish(running) for running in ended)
        self._close()
        return stopped


def _has_exited(running: _Running) -> bool:
    """Without a pidfd: has the command exited? (Looked at without reaping it.)"""
    try:
        info = os.waitid(os.P_PID, running.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _wait_any(running: list[_Running], timeout: float | None) -> list[_Running]:
    """The commands among ``running`` that have exited, waiting up to ``timeout``."""
    with selectors.DefaultSelector() as selector:
        for item in running:
            if item.pidfd is not None:
                selector.register(item.pidfd, selectors.EVENT_READ, item)
        polled = [item for item in running if item.pidfd is None]
        wait = timeout
        if polled:
            wait = _POLL_WITHOUT_PIDFD if wait is None else min(wait, _POLL_WITHOUT_PIDFD)
        ready = selector.select(wait) if selector.get_map() else []
        return [key.data for key, _ in ready] + [item for item in polled if _has_exited(item)]


def _read_and_close(file: IO[bytes] | None) -> bytes:
    if file is None:
        return b""
    with file:
        file.seek(0)
        return file.read()


def run_commands(
    commands: Iterable[Command],
    *,
    jobs: int | None = None,
    timeout: float | None = None,
    kill_after: float = 2.0,
    capture: bool = True,
    check: bool = False,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> list[CompletedCommand]:
    """Run commands in parallel, at most ``jobs`` at a time; return their outcomes in order.

    A command given as a string runs through the shell (``/bin/sh -c``); a
    sequence of strings runs that program with those arguments, without a shell.
    Each runs in a session of its own, with stdin from ``/dev/null``; its stdout
    and stderr are captured (into temp files while it runs) unless ``capture`` is
    False, when they go to this process's stdout and stderr.

    Args:
        commands: the commands. A list or tuple is used as it is; any other
            iterable (a generator, a file's lines) is read in a thread, at most
            ``jobs`` commands ahead, so that an input that waits holds up neither
            the running commands' timeouts nor their results. An exception from
            it stops the running commands and propagates.
        jobs: how many run at once (default: the CPUs this process may use).
        timeout: seconds a command may run; then its whole process group gets
            SIGTERM, and SIGKILL ``kill_after`` seconds later if its main process
            has not exited (when it exits, what is left of the group gets SIGKILL).
            Its result has ``timed_out`` True and the status it ended with
            (``-15`` after SIGTERM, from a shell that did not catch it).
        kill_after: the grace between SIGTERM and SIGKILL (seconds, 0 or more).
        capture: keep stdout and stderr in the results (default), or let them through.
        check: raise ``CommandFailedError`` if any command failed (non-zero status,
            signal or timeout), after all have ended.
        cwd, env: as for ``subprocess.Popen``, for every command.

    Returns:
        One ``CompletedCommand`` per command, in input order. A program that cannot
        be started (no shell involved) gets status 127 (not found) or 126, as a
        shell would report it, and the reason in ``stderr``.

    Raises:
        ValueError: ``jobs`` below 1, ``timeout`` not above 0, ``kill_after`` below 0.
        CommandFailedError: with ``check=True``, some command failed.
        KeyboardInterrupt: as it came; every running command was stopped first
            (SIGTERM to its group, SIGKILL after ``kill_after``).
    """
    if jobs is not None and jobs < 1:
        msg = f"jobs must be at least 1, got {jobs!r}"
        raise ValueError(msg)
    if timeout is not None and not timeout > 0:
        msg = f"timeout must be a number of seconds greater than 0 (or None), got {timeout!r}"
        raise ValueError(msg)
    if not kill_after >= 0:
        msg = f"kill_after must be a number of seconds (0 or more), got {kill_after!r}"
        raise ValueError(msg)
    runner = Runner(
        commands,
        jobs=jobs,
        timeout=timeout,
        kill_after=kill_after,
        capture=capture,
        cwd=cwd,
        env=env,
    )
    finished: list[Finished] = []
    try:
        finished.extend(runner)
    except BaseException:
        runner.stop()
        raise
    finished.sort(key=lambda item: item.index)
    results = [_completed(item, capture) for item in finished]
    if check and any(_failed(result) for result in results):
        raise CommandFailedError(results)
    return results


def _completed(item: Finished, capture: bool) -> CompletedCommand:
    stdout = item.stdout.decode("utf-8", "surrogateescape") if capture else None
    stderr = item.stderr.decode("utf-8", "surrogateescape") if capture else None
    if not capture and item.stderr:  # the reason a program could not start
        stderr = item.stderr.decode("utf-8", "surrogateescape")
    return CompletedCommand(
        item.args,
        item.returncode,
        stdout,
        stderr,
        duration=item.duration,
        timed_out=item.timed_out,
    )
