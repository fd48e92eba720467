"""The futures ``ProcessPoolExecutor`` returns.

``_Future`` is a ``concurrent.futures.Future`` (so ``wait``, ``as_completed``
and ``isinstance`` checks work) with two changes, both for speed:

- ``result()`` and ``exception()`` first try to run a task that is still
  queued themselves, on a parked worker, without the engine thread in between
  (``Engine.run_direct``); whoever claims the task first, the engine or the
  caller, runs it.
- Its ``_condition`` is a ``_FutureCondition``: the same behaviour as the
  ``threading.Condition`` a plain ``Future`` builds, without that object's
  per-instance bound methods and dict. Creating futures was a third of the
  executor's cost in the caller (and much of the garbage collector's work).
  ``Future``, ``wait`` and ``as_completed`` use only ``with``, ``acquire``,
  ``release``, ``wait`` and ``notify_all`` on it. Should a Python version give
  ``Future.__init__`` other attributes, ``_Future`` falls back to it.
"""

from __future__ import annotations

import _thread
from collections import deque
from collections.abc import Generator
from concurrent.futures import Future, InvalidStateError
from typing import Any

from ._engine import Engine, Task

_PENDING = "PENDING"


class _FutureCondition:
    """A condition variable over a re-entrant lock, as small as it can be."""

    __slots__ = ("_lock", "_waiters")

    def __init__(self) -> None:
        self._lock = _thread.RLock()
        self._waiters: deque[Any] | None = None

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, sleep until notified or ``timeout``, take the lock back.

        Raises:
            RuntimeError: the calling thread does not hold the lock.
        """
        lock = self._lock
        if not lock._is_owned():  # type: ignore[attr-defined]
            msg = "cannot wait on un-acquired lock"
            raise RuntimeError(msg)
        waiter = _thread.allocate_lock()
        waiter.acquire()
        if self._waiters is None:
            self._waiters = deque()
        self._waiters.append(waiter)
        saved = lock._release_save()  # type: ignore[attr-defined]
        woken = False
        try:
            if timeout is None:
                woken = waiter.acquire()
            elif timeout > 0:
                woken = waiter.acquire(True, timeout)
            else:
                woken = waiter.acquire(False)
            return woken
        finally:
            lock._acquire_restore(saved)  # type: ignore[attr-defined]
            if not woken and self._waiters is not None:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass  # notified just as the timeout expired

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` threads waiting (the caller holds the lock)."""
        waiters = self._waiters
        while waiters and n > 0:
            waiters.popleft().release()
            n -= 1

    def notify_all(self) -> None:
        """Wake every waiting thread (the caller holds the lock)."""
        waiters = self._waiters
        if waiters:
            self._waiters = None
            for waiter in waiters:
                waiter.release()


_FUTURE_ATTRIBUTES = frozenset(
    {"_condition", "_state", "_result", "_exception", "_waiters", "_done_callbacks"}
)
_SLIM_INIT = set(vars(Future())) == _FUTURE_ATTRIBUTES


class _Future(Future[Any]):
    """The executor's futures (see the module docstring)."""

    _direct: Task | None = None  # the queued task result() may run itself

    if _SLIM_INIT:

        def __init__(self) -> None:
            self._condition = _FutureCondition()  # type: ignore[assignment]
            self._state = _PENDING
            self._result = None
            self._exception = None
            self._waiters: list[Any] = []
            self._done_callbacks: list[Any] = []

    def __await__(self) -> Generator[Any, None, Any]:
        """``await future`` in a coroutine: its result, or its exception raised.

        Cancelling the awaiting coroutine (or ``asyncio.wait_for`` running out)
        cancels this future: a task that has not started never runs.
        """
        import asyncio

        return asyncio.wrap_future(self).__await__()

    def result(self, timeout: float | None = None) -> Any:
        if self._direct is not None:
            self._run_direct()
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._direct is not None:
            self._run_direct()
        return super().exception(timeout)

    def _run_direct(self) -> None:
        task = self._direct
        self._direct = None
        if task is not None and self._state == _PENDING:
            setter: _FutureSetter = task.on_done  # type: ignore[assignment]
            setter.engine.run_direct(task, queued=True)


class _FutureSetter:
    """``on_done`` and ``claim`` for a future's task (no closure cells in the engine)."""

    __slots__ = ("_claim_lock", "engine", "future")

    def __init__(self, future: _Future, engine: Engine) -> None:
        self.future = future
        self.engine = engine
        self._claim_lock = _thread.allocate_lock()  # held once the task is taken

    def claim(self) -> bool:
        """Take the task to run it; False if cancelled or taken already.

        The engine (dispatching) and the future's own ``result()`` (running it
        directly) may both try; the lock makes exactly one of them succeed.
        """
        if not self._claim_lock.acquire(False):
            return False
        future = self.future
        future._direct = None  # break the future <-> task cycle (freed without the GC)
        return future.set_running_or_notify_cancel()

    def __call__(self, ok: bool, value: Any) -> None:
        future = self.future
        future._direct = None
        try:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        except InvalidStateError:
            pass  # cancelled, or already failed by a shutdown
