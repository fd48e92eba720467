"""The runner under ``corral.run_commands`` and ``corral run``: commands in parallel.

A command needs no Python worker: each is a child process (``subprocess.Popen``)
in a session of its own, so that its process group, grandchildren included, can
be signalled as one (``os.killpg``). One thread (the caller's) runs the loop;
helper threads only start commands and read input that may block::

    commands: a list, or any iterable read by the feed thread (<= jobs ahead)
        │  at most `jobs` started or running
        ▼
    starter threads (<= 4): temp files, Popen(stdin=/dev/null, stdout/stderr=
        │  the temp files, start_new_session), pidfd; a byte on a pipe says "done"
        ▼
    the loop: one selector over the pidfds and the two wake-up pipes; the
        │  wait's timeout is the nearest deadline (timeout, then + kill_after)
        ▼
    exited (a zombie: its pid, hence its group id, cannot be reused yet)
        │  timed out or stopped: SIGKILL what is left of the group; reap; read
        ▼
    Finished(index, args, returncode, stdout, stderr, duration, timed_out)

The output goes to temp files rather than pipes: nothing has to drain a pipe
while the command runs (so a big output cannot block it), and a background
process that keeps the command's stdout open cannot hold the result back after
the command itself has ended. A runner that dies without running any Python
(SIGKILL) leaves the stopping of its commands' groups to a watcher process
(``_group_reaper``), told of each group as it starts and as its leader is reaped.
Starting happens in threads because ``Popen``
returns only once the child has exec'd: one thread starting every command caps
the rate well below what a few short commands at once need.
"""

from __future__ import annotations

import os
import queue
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from . import _group_reaper
from ._group_reaper import RUN_ID_VARIABLE, command_mark, marked_groups

__all__ = ("Command", "Finished", "GroupReaper", "Runner", "as_text", "default_jobs")

Command = str | Sequence[str]  # a shell command line, or a program and its arguments

_POLL_WITHOUT_PIDFD = 0.02  # seconds between polls where pidfd_open is missing


def as_text(args: Command) -> str:
    """A command as one line: itself, or its words quoted for the shell."""
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


_STARTERS = 4  # threads starting commands at once (at most jobs)
_STARTER_DEADLINE = 30.0  # seconds stop() waits for a start under way (a Popen)
_FEED_READY: Any = object()  # selector data: the feed has new input
_STARTED: Any = object()  # selector data: a starter has a result


class _Starters:
    """Threads that start commands: ``Popen`` waits for the child's exec, so starts overlap.

    One thread starting every command caps the rate at one exec at a time
    (about 0.7 ms each here, several under load), below what ``jobs`` short
    commands need. Results go to ``results`` in the order they come, and a byte
    on a pipe wakes the runner's selector. Only the runner's thread calls the
    methods; the threads run ``spawn``.
    """

    def __init__(self, count: int, spawn: Callable[[int, Command], _Running | Finished]) -> None:
        self._spawn = spawn
        self._requests: queue.SimpleQueue[tuple[int, Command] | None] = queue.SimpleQueue()
        self.results: deque[_Running | Finished | BaseException] = deque()
        self.pending = 0  # requested and not yet taken from results
        self._arrived = threading.Condition()
        self.wakeup, self._wakeup_w = os.pipe()
        os.set_blocking(self.wakeup, False)
        os.set_blocking(self._wakeup_w, False)
        self._threads = [
            threading.Thread(target=self._serve, name="corral-run-start", daemon=True)
            for _ in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def request(self, index: int, args: Command) -> None:
        self.pending += 1
        self._requests.put((index, args))

    def _serve(self) -> None:
        while True:
            request = self._requests.get()
            if request is None:
                return
            result: _Running | Finished | BaseException
            try:
                result = self._spawn(*request)
            except BaseException as exc:  # raised in the runner's thread
                result = exc
            with self._arrived:
                self.results.append(result)
                self._arrived.notify_all()
            try:
                os.write(self._wakeup_w, b"!")
            except OSError:  # full: a wake-up is pending anyway
                pass

    def drain(self) -> None:
        try:
            os.read(self.wakeup, 4096)
        except BlockingIOError:
            pass

    def cancel_queued(self) -> None:
        """Forget the requests no thread has taken yet."""
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            if request is not None:
                self.pending -= 1

    def wait_all(self, timeout: float) -> None:
        """Wait until every request taken by a thread has its result (or the time is up)."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.results) < self.pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._arrived.wait(remaining)

    def close(self) -> None:
        for _ in self._threads:
            self._requests.put(None)
        for thread in self._threads:
            thread.join(_STARTER_DEADLINE)
        os.close(self.wakeup)
        os.close(self._wakeup_w)


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
        # Stops the commands if this program dies (_group_reaper).
        self._reaper = GroupReaper(kill_after)
        self._base_env = dict(os.environ if env is None else env)
        self._selector = selectors.DefaultSelector()
        self._closed = False
        self._starters = _Starters(min(self.jobs, _STARTERS), self._spawn)
        self._selector.register(self._starters.wakeup, selectors.EVENT_READ, _STARTED)
        # A list or tuple is read here; any other iterable may block: a thread reads it.
        self._commands: Iterator[Command] | None = None
        self._feed: _Feed | None = None
        if isinstance(commands, (list, tuple)):
            self._commands = iter(commands)
        else:
            self._feed = _Feed(commands, window=self.jobs)
            self._selector.register(self._feed.wakeup, selectors.EVENT_READ, _FEED_READY)

    @property
    def running(self) -> int:
        """How many commands are running now (started, not yet ended)."""
        return len(self._running)

    def __iter__(self) -> Iterator[Finished]:
        try:
            while True:
                while len(self._running) + self._starters.pending < self.jobs:
                    if self.exhausted:
                        break
                    command = self._next_command()
                    if command is _NOTHING_YET:
                        break
                    self._starters.request(self.started, command)
                    self.started += 1
                yield from self._take_started()
                if not self._running and not self._starters.pending and self.exhausted:
                    return
                if self._before_wait is not None:
                    self._before_wait()
                yield from self._wait()
        finally:
            if not self._running and not self._starters.pending:
                self._close()

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
        if self._closed:
            return
        self._closed = True
        if self._feed is not None:
            self._feed.close()
        self._starters.close()
        self._selector.close()
        self._reaper.close()

    def _spawn(self, index: int, args: Command) -> _Running | Finished:
        """Start one command (in a starter thread): its temp files, Popen, pidfd."""
        out = tempfile.TemporaryFile() if self.capture else None  # noqa: SIM115
        err = tempfile.TemporaryFile() if self.capture else None  # noqa: SIM115
        self._reaper.start()
        began = time.monotonic()
        try:
            proc = subprocess.Popen(
                args,
                shell=isinstance(args, str),  # a string is shell code: the user's, by design
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=self.cwd,
                env={**self._base_env, RUN_ID_VARIABLE: self._mark(index)},
                start_new_session=True,
            )
        except (OSError, ValueError) as exc:  # no such program, not executable, a NUL byte
            for file in (out, err):
                if file is not None:
                    file.close()
            status = 127 if isinstance(exc, FileNotFoundError) else 126
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            message = f"corral: cannot run {as_text(args)!r}: {reason}\n"
            return Finished(index, args, status, b"", message.encode(), 0.0, False)
        self._reaper.started(proc.pid)
        deadline = None if self.timeout is None else began + self.timeout
        running = _Running(index, args, proc, out, err, began, None, deadline)
        try:
            running.pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):  # no pidfds here: the command is polled
            pass
        return running

    def _take_started(self) -> Iterator[Finished]:
        """Take the starters' results: register the commands, yield those that failed to start.

        Each result is registered before it leaves ``results``, so an interrupt
        in between leaves it where ``stop()`` finds it (registering is idempotent).
        """
        results = self._starters.results
        while results:
            item = results[0]
            if isinstance(item, BaseException):
                results.popleft()
                self._starters.pending -= 1
                raise item
            if isinstance(item, _Running):
                self._register(item)
                results.popleft()
                self._starters.pending -= 1
            else:
                results.popleft()
                self._starters.pending -= 1
                yield item

    def _register(self, running: _Running) -> None:
        """Track a started command; idempotent (an interrupt may cut it short: stop() redoes it)."""
        self._running[running.proc.pid] = running
        if running.pidfd is not None and running.pidfd not in self._selector.get_map():
            self._selector.register(running.pidfd, selectors.EVENT_READ, running)

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
        """Wait for a command to end, a start, new input or a deadline; yield what ended."""
        deadline = self._next_deadline()
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        if any(r.pidfd is None for r in self._running.values()):
            wait = _POLL_WITHOUT_PIDFD if wait is None else min(wait, _POLL_WITHOUT_PIDFD)
        ended = []
        for key, _ in self._selector.select(wait):
            if key.data is _STARTED:
                self._starters.drain()
            elif key.data is _FEED_READY:
                assert self._feed is not None
                self._feed.drain()
            else:
                ended.append(key.data)
        ended += [r for r in self._running.values() if r.pidfd is None and _has_exited(r)]
        for running in ended:
            yield self._finish(running)
        now = time.monotonic()
        for running in list(self._running.values()):
            if running.term_sent is None:
                if running.deadline is not None and now >= running.deadline:
                    self._signal([running], signal.SIGTERM)
                    running.term_sent = now
                    running.timed_out = True
            elif not running.killed and now >= running.term_sent + self.kill_after:
                self._signal([running], signal.SIGKILL)
                running.killed = True

    def _mark(self, index: int) -> str:
        return command_mark(self._reaper.run_id, index)

    def _signal(self, stopping: list[_Running], sig: int) -> None:
        """Signal the commands' process groups, and the groups that their processes
        started elsewhere (``setsid``), found by each command's ``CORRAL_RUN_ID``.

        A group is signalled while its leader is unreaped, so its id is not reused.
        """
        if not stopping:
            return
        for running in stopping:
            _kill_group(running.proc.pid, sig)
        marks = {f"{RUN_ID_VARIABLE}={self._mark(r.index)}".encode() for r in stopping}
        leaders = {running.proc.pid for running in stopping}
        for pgid in marked_groups(marks) - leaders:
            _kill_group(pgid, sig)

    def _finish(self, running: _Running) -> Finished:
        """The command's main process has exited (not yet reaped): collect it."""
        if running.term_sent is not None:
            # Stopped: what is left of its group goes too. The group id cannot
            # name another group yet, because the unreaped leader holds its pid.
            self._signal([running], signal.SIGKILL)
        returncode = running.proc.wait()
        self._reaper.reaped(running.proc.pid)
        duration = time.monotonic() - running.started
        del self._running[running.proc.pid]
        if running.pidfd is not None:
            if running.pidfd in self._selector.get_map():
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

        Commands not started yet are not started; those being started are
        waited for (a Popen returns quickly), then stopped with the rest.
        Returns the stopped commands (``timed_out`` only if their timeout had
        passed already).
        """
        self.exhausted = True
        self._starters.cancel_queued()
        self._starters.wait_all(_STARTER_DEADLINE)
        for item in self._starters.results:
            if isinstance(item, _Running):
                self._register(item)
        self._starters.results.clear()
        self._starters.pending = 0
        now = time.monotonic()
        fresh = [running for running in self._running.values() if running.term_sent is None]
        self._signal(fresh, signal.SIGTERM)
        for running in fresh:
            running.term_sent = now
        stopped: list[Finished] = []
        grace_end = now + self.kill_after
        while self._running:
            remaining: float | None = grace_end - time.monotonic()
            if remaining is not None and remaining <= 0:
                self._signal(list(self._running.values()), signal.SIGKILL)
                remaining = None  # a SIGKILLed process ends: wait for it
            ended = _wait_any(list(self._running.values()), remaining)
            stopped.extend(self._finish(running) for running in ended)
        self._close()
        return stopped


class GroupReaper:
    """The runner's side of the watcher that stops its commands if it dies (``_group_reaper``).

    ``start()`` before the first command; ``started``/``reaped`` as commands
    start and are reaped; ``close()`` at the end. Thread-safe.
    """

    def __init__(self, kill_after: float) -> None:
        self._kill_after = kill_after
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._closed = False
        self.run_id = f"{os.getpid()}-{os.urandom(8).hex()}"  # in each command's environment

    def start(self) -> None:
        """Start the watcher, if it is not running yet (before the first command starts)."""
        with self._lock:
            if self._process is None and not self._closed:
                self._process = _start_watcher(self._kill_after, self.run_id)

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


def _start_watcher(kill_after: float, run_id: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-I", "-S", _group_reaper.__file__, repr(kill_after), run_id],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,  # never hold the runner's output open
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


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
