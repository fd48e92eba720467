"""Locks, semaphores, conditions and events shared between processes.

Built on the C primitive ``_multiprocessing.SemLock`` (a POSIX named
semaphore). They are shared with a child by passing them to it when it starts
(fork: inherited; spawn/forkserver: re-opened by name in the child). Pickling
one at any other time raises ``RuntimeError``, as in the stdlib.

Lifetime: under fork the semaphore's name is unlinked at once (children
inherit the open handle); under spawn and forkserver the name must live until
children have opened it, so it is unlinked when the creating process exits.
(Issue 4 hardens this so that nothing is left in /dev/shm even when processes
are killed.)
"""

from __future__ import annotations

import _multiprocessing
import os
import struct
import threading
import time
from typing import Any, Protocol

from . import _contexts, _spawning, process, resource_tracker, util

__all__ = ("BoundedSemaphore", "Condition", "Event", "Lock", "RLock", "SemLock", "Semaphore")

RECURSIVE_MUTEX, SEMAPHORE = 0, 1
SEM_VALUE_MAX = _multiprocessing.SemLock.SEM_VALUE_MAX


_INT_SIZE = struct.calcsize("i")


class _Acquire(Protocol):
    """The shape of ``acquire``: bound straight to the semaphore's C method."""

    def __call__(self, block: bool = True, timeout: float | None = None) -> bool: ...


class _Release(Protocol):
    def __call__(self) -> None: ...


class SemLock:
    """Base of the semaphore-backed primitives: acquire/release and sharing rules.

    ``acquire(block=True, timeout=None) -> bool`` and ``release()`` are the C
    semaphore's own methods, bound per instance (no Python call in between).
    """

    acquire: _Acquire
    release: _Release

    def __init__(self, kind: int, value: int, maxvalue: int, *, ctx: Any) -> None:
        ctx = _contexts.as_context(ctx)
        self._is_fork_ctx = ctx.get_start_method() == "fork"
        unlink_now = self._is_fork_ctx
        for _attempt in range(100):
            name = f"/corral-{os.getpid()}-{os.urandom(6).hex()}"
            if not unlink_now:
                # Tracked *before* it exists: a process killed right after
                # creating it (a child terminated as it starts) leaves no name.
                resource_tracker.register(name, "semaphore")
            try:
                self._semlock = _multiprocessing.SemLock(kind, value, maxvalue, name, unlink_now)
            except BaseException as exc:
                if not unlink_now:
                    resource_tracker.unregister(name, "semaphore")
                if isinstance(exc, FileExistsError):
                    continue
                raise
            break
        else:  # pragma: no cover - 100 random 48-bit names all taken
            msg = "cannot find a free name for a semaphore"
            raise FileExistsError(msg)
        util.debug("created semlock with handle %s", self._semlock.handle)
        self._make_methods()
        util.register_after_fork(self, SemLock._after_fork)
        if not unlink_now:
            # The name must exist until every child has opened it: children
            # keep us alive through their Popen (see __getstate__), and the
            # name goes when the last reference here does, or at exit.
            self._unlinker = util.Finalize(self, _unlink_semaphore, (name,), exitpriority=0)

    def _unlink_name(self) -> None:
        """Remove the semaphore's name now; processes that opened it keep using it.

        For a semaphore that every process it was meant for has opened already
        (a pool worker's, once the worker is running). Pickling it later fails.
        """
        unlinker = getattr(self, "_unlinker", None)
        if unlinker is not None:
            unlinker()

    @staticmethod
    def _after_fork(obj: SemLock) -> None:
        obj._semlock._after_fork()

    def _make_methods(self) -> None:
        self.acquire = self._semlock.acquire
        self.release = self._semlock.release

    def __enter__(self) -> bool:
        acquired: bool = self._semlock.__enter__()
        return acquired

    def __exit__(self, *args: object) -> None:
        self._semlock.__exit__(*args)

    def __getstate__(self) -> tuple[Any, ...]:
        _spawning.assert_spawning(self)
        sl = self._semlock
        if self._is_fork_ctx:
            # The message starts as the stdlib's, which programs and tests match.
            msg = (
                "A SemLock created in a fork context cannot be shared with a process "
                "started by spawn or forkserver: create the lock from the same context "
                "as the Process"
            )
            raise RuntimeError(msg)
        keepalive = getattr(_spawning.get_spawning_popen(), "keepalive", None)
        if keepalive is not None:
            keepalive.append(self)
        return (sl.handle, sl.kind, sl.maxvalue, sl.name)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self._semlock = _multiprocessing.SemLock._rebuild(*state)
        self._is_fork_ctx = False
        util.debug("recreated blocker with handle %r", state[0])
        self._make_methods()
        util.register_after_fork(self, SemLock._after_fork)


def _unlink_semaphore(name: str) -> None:
    resource_tracker.unregister(name, "semaphore")
    try:
        _multiprocessing.sem_unlink(name)
    except OSError:
        pass


class Semaphore(SemLock):
    """A counting semaphore shared between processes."""

    def __init__(self, value: int = 1, *, ctx: Any) -> None:
        super().__init__(SEMAPHORE, value, SEM_VALUE_MAX, ctx=ctx)

    def get_value(self) -> int:
        """The current count (not available on macOS, where it raises NotImplementedError)."""
        value: int = self._semlock._get_value()
        return value

    def _value_text(self) -> str:
        try:
            return str(self._semlock._get_value())
        except Exception:  # NotImplementedError on macOS
            return "unknown"

    def __repr__(self) -> str:
        return f"<{type(self).__name__}(value={self._value_text()})>"


class BoundedSemaphore(Semaphore):
    """A semaphore whose count cannot exceed its initial value (ValueError on over-release)."""

    def __init__(self, value: int = 1, *, ctx: Any) -> None:
        SemLock.__init__(self, SEMAPHORE, value, value, ctx=ctx)

    def __repr__(self) -> str:
        maxvalue = self._semlock.maxvalue
        return f"<{type(self).__name__}(value={self._value_text()}, maxvalue={maxvalue})>"


def _owner_name() -> str:
    name = process.current_process().name
    if threading.current_thread().name != "MainThread":
        name += "|" + threading.current_thread().name
    return name


def _owner_and_count(semlock: Any) -> tuple[str, Any]:
    """Who holds a lock, as the stdlib's reprs show it, and its recursion count."""
    try:
        if semlock._is_mine():
            return _owner_name(), semlock._count()
        if semlock._get_value() == 1:
            return "None", 0
        if semlock._count() > 0:
            return "SomeOtherThread", "nonzero"
        return "SomeOtherProcess", "nonzero"
    except Exception:
        return "unknown", "unknown"


class Lock(SemLock):
    """A non-recursive lock shared between processes."""

    def __init__(self, *, ctx: Any) -> None:
        super().__init__(SEMAPHORE, 1, 1, ctx=ctx)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}(owner={_owner_and_count(self._semlock)[0]})>"


class RLock(SemLock):
    """A recursive lock: the owner may acquire it again; release() by others raises."""

    def __init__(self, *, ctx: Any) -> None:
        super().__init__(RECURSIVE_MUTEX, 1, 1, ctx=ctx)

    def __repr__(self) -> str:
        owner, count = _owner_and_count(self._semlock)
        return f"<{type(self).__name__}({owner}, {count})>"


class Condition:
    """A condition variable shared between processes.

    Waiters count themselves in ``_sleeping_count``; ``notify(n)`` releases up
    to n of them through ``_wait_semaphore`` and waits (on ``_woken_count``)
    until each has taken its wake-up, so a notification is never given to a
    later waiter. (The names are the stdlib's: its tests inspect them.)
    """

    acquire: _Acquire
    release: _Release

    def __init__(self, lock: Any = None, *, ctx: Any) -> None:
        ctx = _contexts.as_context(ctx)
        self._lock = lock or ctx.RLock()
        self._sleeping_count = ctx.Semaphore(0)
        self._woken_count = ctx.Semaphore(0)
        self._wait_semaphore = ctx.Semaphore(0)
        self._make_methods()

    def __getstate__(self) -> tuple[Any, ...]:
        _spawning.assert_spawning(self)
        return (self._lock, self._sleeping_count, self._woken_count, self._wait_semaphore)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self._lock, self._sleeping_count, self._woken_count, self._wait_semaphore = state
        self._make_methods()

    def __enter__(self) -> bool:
        acquired: bool = self._lock.__enter__()
        return acquired

    def __exit__(self, *args: object) -> None:
        self._lock.__exit__(*args)

    def _make_methods(self) -> None:
        self.acquire = self._lock.acquire
        self.release = self._lock.release

    def __repr__(self) -> str:
        try:
            sleeping = self._sleeping_count._semlock._get_value()
            waiters = sleeping - self._woken_count._semlock._get_value()
        except Exception:
            waiters = "unknown"
        return f"<{type(self).__name__}({self._lock}, {waiters})>"

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, wait for a notification (or timeout), re-acquire.

        Returns:
            False if the timeout expired, True otherwise.

        Raises:
            AssertionError: the lock is not held by the caller.
        """
        if not self._lock._semlock._is_mine():
            msg = "must acquire() condition before using wait()"
            raise AssertionError(msg)
        self._sleeping_count.release()
        # Release the (possibly recursive) lock completely, remembering how deep.
        depth = self._lock._semlock._count()
        for _ in range(depth):
            self._lock.release()
        try:
            woken: bool = self._wait_semaphore.acquire(True, timeout)
            return woken
        finally:
            self._woken_count.release()
            for _ in range(depth):
                self._lock.acquire()

    def notify(self, n: int = 1) -> None:
        """Wake up to n waiters (the lock must be held)."""
        if not self._lock._semlock._is_mine():
            msg = "lock is not owned"
            raise AssertionError(msg)
        if self._wait_semaphore.acquire(False):
            msg = "notify: Maybe wait semaphore was not released"
            raise AssertionError(msg)
        # Forget waiters that timed out: each left a token in _woken and _sleeping.
        while self._woken_count.acquire(False):
            taken = self._sleeping_count.acquire(False)
            if not taken:
                msg = "notify: Bug in sleeping_count.acquire - res should not be False"
                raise AssertionError(msg)
        woken = 0
        while woken < n and self._sleeping_count.acquire(False):
            self._wait_semaphore.release()
            woken += 1
        if woken:
            for _ in range(woken):
                self._woken_count.acquire()
            # Drop wake-ups nobody took (waiters that timed out meanwhile).
            while self._wait_semaphore.acquire(False):
                pass

    def notify_all(self) -> None:
        """Wake every waiter (the lock must be held)."""
        self.notify(n=SEM_VALUE_MAX)

    def wait_for(self, predicate: Any, timeout: float | None = None) -> Any:
        """Wait until predicate() is true or timeout seconds pass; return its last value."""
        result = predicate()
        if result:
            return result
        endtime = None if timeout is None else time.monotonic() + timeout
        waittime = timeout
        while not result:
            if endtime is not None:
                waittime = endtime - time.monotonic()
                if waittime <= 0:
                    break
            self.wait(waittime)
            result = predicate()
        return result


class Event:
    """A flag shared between processes: set/clear/is_set/wait."""

    def __init__(self, *, ctx: Any) -> None:
        ctx = _contexts.as_context(ctx)
        self._cond = ctx.Condition(ctx.Lock())
        self._flag = ctx.Semaphore(0)

    def is_set(self) -> bool:
        with self._cond:
            if self._flag.acquire(False):
                self._flag.release()
                return True
            return False

    def set(self) -> None:
        with self._cond:
            self._flag.acquire(False)
            self._flag.release()
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._flag.acquire(False)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the flag is set or timeout seconds pass; return the flag."""
        with self._cond:
            if self._flag.acquire(False):
                self._flag.release()
            else:
                self._cond.wait(timeout)
            if self._flag.acquire(False):
                self._flag.release()
                return True
            return False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} at {id(self):#x} {'set' if self.is_set() else 'unset'}>"


class Barrier(threading.Barrier):
    """A barrier for processes: ``threading.Barrier`` with its state in shared memory.

    The two counters the algorithm keeps (state and count) live in a block of
    ``corral.heap``; its condition is a process-shared ``Condition``. Passed to
    a child at start like the other primitives; ``action`` must then pickle.
    """

    def __init__(
        self, parties: int, action: Any = None, timeout: float | None = None, *, ctx: Any
    ) -> None:
        from .heap import BufferWrapper

        if parties < 1:
            msg = "parties must be > 0"
            raise ValueError(msg)
        wrapper = BufferWrapper(2 * _INT_SIZE)
        ctx = _contexts.as_context(ctx)
        self.__setstate__((parties, action, timeout, ctx.Condition(), wrapper))
        self._state = 0
        self._count = 0

    def __getstate__(self) -> tuple[Any, ...]:
        _spawning.assert_spawning(self)
        return (self._parties, self._action, self._timeout, self._cond, self._wrapper)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self._parties, self._action, self._timeout, self._cond, self._wrapper = state
        self._shared = self._wrapper.create_memoryview().cast("i")

    @property
    def _state(self) -> int:
        return int(self._shared[0])

    @_state.setter
    def _state(self, value: int) -> None:
        self._shared[0] = value

    @property
    def _count(self) -> int:
        return int(self._shared[1])

    @_count.setter
    def _count(self, value: int) -> None:
        self._shared[1] = value
