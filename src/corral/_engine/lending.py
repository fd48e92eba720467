"""Lending: idle workers a caller thread may borrow for one direct call.

The engine thread owns its workers, with one exception made for latency: when
nothing is queued it *parks* its idle process workers. A parked worker's
channel is not watched by the engine (its death still is), and it sits in
``_parked``, guarded by ``_lend_lock``, the one piece of engine state other
threads touch. A caller blocked on one task borrows a parked worker, runs the
task over its channel (``direct.py``) and gives it back, or hands it back with
whatever went wrong for the engine to handle as its own.

Flags a worker carries (read by the engine without the lock, so each change
sets the new flag before clearing the old one): ``parked`` (idle, free to
borrow), ``lent`` (a caller is using its channel), ``death_seen`` (the engine
saw it die while lent and left it to the borrower).
"""

from __future__ import annotations

import selectors
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import BrokenProcessPool
from .handles import WorkerHandle
from .states import _CHANNEL, _DEATH, RUNNING, STOPPING

if TYPE_CHECKING:
    from .engine import Task


class LendingMixin:
    """The lending half of ``Engine`` (see the module docstring)."""

    # Engine state this half uses (set in Engine.__init__).
    _lend_lock: threading.Lock
    _parked: list[WorkerHandle]
    _lent: int
    _want_back: bool
    _selector: selectors.BaseSelector
    _workers: dict[int, WorkerHandle]
    _queue: Any
    _task_ids: Any
    _stop_error: BaseException | None
    state: str
    stopped: threading.Event

    if TYPE_CHECKING:  # Engine's own methods, used here

        def _wake(self) -> None: ...
        def _call_soon(self, fn: Callable[[], None]) -> None: ...
        def _absorb_incoming(self) -> None: ...
        def _send(self, worker: WorkerHandle, message: Any) -> None: ...
        def _send_pending(self, worker: WorkerHandle) -> None: ...
        def _on_records(self, worker: WorkerHandle, records: list[Any]) -> None: ...
        def settle(self, task: Task, ok: bool, value: Any) -> None: ...

    def _park_idle(self) -> None:
        for worker in self._workers.values():
            if (
                not worker.held
                and worker.ready
                and not worker.revoking
                and not worker.stopping
                and not worker.parked
                and not worker.lent
                and worker.flush()
            ):
                self._selector.unregister(worker.channel_fd)
                with self._lend_lock:
                    worker.parked = True
                    self._parked.append(worker)

    def _unpark_all(self) -> None:
        with self._lend_lock:
            parked = self._parked
            self._parked = []
            self._want_back = False
            for worker in parked:
                worker.parked = False
        for worker in parked:
            self._selector.register(worker.channel_fd, selectors.EVENT_READ, (_CHANNEL, worker))

    def borrow(self) -> WorkerHandle | None:
        """(Caller thread) Take a parked worker for one direct call, or None."""
        if not self._parked:
            return None
        with self._lend_lock:
            if not self._parked or self.state != RUNNING or self._want_back:
                return None
            worker = self._parked.pop()
            # Set before clearing: the engine reads these flags without the lock
            # and must never see a worker changing hands as its own.
            worker.lent = True
            worker.parked = False
            self._lent += 1
            return worker

    def give_back(self, worker: WorkerHandle) -> None:
        """(Caller thread) Return a borrowed worker after a clean call."""
        with self._lend_lock:
            if not worker.death_seen:
                worker.parked = True  # before lent = False (see borrow)
                worker.lent = False
                self._lent -= 1
                self._parked.append(worker)
                if self._want_back or self.state != RUNNING:
                    self._wake()
                return
        self.hand_back(worker, None, 0, [], closed=False)  # it died: the engine sees to it

    def hand_back(
        self,
        worker: WorkerHandle,
        task: Task | None,
        task_id: int,
        records: list[Any],
        *,
        closed: bool,
        retire: bool = False,
        sent: bool = True,
        since: float | None = None,
    ) -> None:
        """(Caller thread) Give a borrowed worker and its unfinished call to the engine.

        ``retire``: the caller was interrupted and cannot tell what the worker
        got; the worker is told to finish what it has and exit. ``since``: when
        the call was sent (the task's start, for insights).
        """
        self._call_soon(
            lambda: self._take_back(worker, task, task_id, records, closed, retire, sent, since)
        )
        if self.stopped.is_set() and task is not None:  # too late: nobody will answer
            self.settle(task, False, BrokenProcessPool("the pool has shut down"))

    def new_task_id(self) -> int:
        return next(self._task_ids)

    def _take_back(
        self,
        worker: WorkerHandle,
        task: Task | None,
        task_id: int,
        records: list[Any],
        closed: bool,
        retire: bool,
        sent: bool,
        since: float | None = None,
    ) -> None:
        with self._lend_lock:
            worker.lent = False
            self._lent -= 1
        if task is not None:
            if task.taken:  # a future's task: it may be in the queue as well
                self._absorb_incoming()
                try:
                    self._queue.remove(task)
                except ValueError:
                    pass  # never queued, or dispatch skipped it (its claim failed)
                task.claim = None  # from now on it is an ordinary task
                task.taken = False
            task.task_id = task_id
            if self.state == STOPPING and self._stop_error is not None:
                self.settle(task, False, self._stop_error)
            elif not sent:
                self._queue.appendleft(task)
            else:
                worker.held.appendleft(task)
                worker.running_since = since if since is not None else time.monotonic()
                task.seq = worker.sent_count  # the last task sent on its channel
        if not closed:
            self._selector.register(worker.channel_fd, selectors.EVENT_READ, (_CHANNEL, worker))
            if retire and not worker.stopping:
                worker.stopping = True
                self._send(worker, None)
            elif not worker.flush():
                self._send_pending(worker)
        if worker.death_seen:
            self._selector.register(worker.death_fd, selectors.EVENT_READ, (_DEATH, worker))
        self._on_records(worker, records)
