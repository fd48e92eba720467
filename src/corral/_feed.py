"""Lazy input for ``imap``, ``imap_unordered`` and ``Executor.map``.

A ``Feed`` pulls the caller's iterable in its own thread, cuts it into chunks,
has the engine encode each one (``Engine.new_task``) and submits it, keeping at
most ``window`` chunks, and about 32 MiB of pickled input, outstanding (submitted but not yet
taken by the consumer), so an endless generator never fills memory. The
consumer takes chunk outcomes in input order (``ordered``) or as they complete.

Hand-offs between the three threads go through C-level ``queue.SimpleQueue``s,
never a Python ``Condition``: the engine puts the outcomes of each of its steps
on ``_outcomes`` as one list (``Engine.after_delivery``); the consumer reorders them
itself; it returns window credits to the feed thread every few chunks, so no
side wakes another once per item.

``lift_window()`` (on ``Pool.close()`` / ``Executor.shutdown()``) lets the feed
submit the rest without waiting for the consumer, so that closing and joining a
pool still runs all of the work, as with the stdlib. ``stop()`` (terminate, or
the consumer dropped the iterator) stops it. The feed holds the engine open
(``Engine.hold``) until its input is exhausted.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Iterable
from functools import partial
from itertools import islice
from typing import Any

from ._engine import Engine
from ._progress import CallProgress

# The window: at most this much pickled input in flight (estimated from the
# average chunk so far), and at least _MIN_WINDOW chunks. The consumer returns
# credits every `_credit_batch` chunks taken, and always before it blocks, so
# the feed never waits for credits the consumer holds.
_WINDOW_BYTES = 32 << 20
_MIN_WINDOW = 4
_CREDIT_BATCH_MAX = 64
# Messages on the credit queue besides a number of chunks taken.
_LIFT = -1
_STOP = -2
# The feed thread's message on the outcome queue once the input is exhausted.
_END = object()


class FeedTimeout(Exception):
    """``Feed.take`` ran out of time (front ends raise their own TimeoutError)."""


class Feed:
    """Feeds ``iterable`` to ``engine`` in chunks; collects the chunks' outcomes."""

    def __init__(
        self,
        engine: Engine,
        func: Any,
        iterable: Iterable[Any],
        chunksize: int,
        kind: int,
        task_timeout: float | None,
        window: int,
        ordered: bool,
        progress: CallProgress | None = None,
    ) -> None:
        self._engine = engine
        self._progress = progress  # counts finished items (progress=), or None
        self._func = func
        self._iterable = iterable
        self._chunksize = chunksize
        self._kind = kind
        self._task_timeout = task_timeout
        self._window = window
        self._ordered = ordered
        self._stopped = False
        self._credits: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._outcomes: queue.SimpleQueue[Any] = queue.SimpleQueue()  # lists of outcomes
        self._batch: list[tuple[int, tuple[bool, Any]]] = []  # engine thread only
        # Consumer side (under _take_lock): outcomes received but not yet taken.
        self._take_lock = threading.Lock()
        self._by_index: dict[int, tuple[bool, Any]] = {}
        self._done: deque[tuple[bool, Any]] = deque()
        self._next_index = 0  # ordered: the index to hand out next
        self._taken = 0
        self._uncredited = 0  # taken but not yet returned to the feed as credit
        self._credit_batch = _CREDIT_BATCH_MAX  # set by the feed thread as its window moves
        self._length: int | None = None  # chunks in all, once the input is exhausted
        self.thread = threading.Thread(target=self._run, name="corral-feed", daemon=True)

    def start(self) -> None:
        self._engine.hold()
        self.thread.start()

    def lift_window(self) -> None:
        self._credits.put(_LIFT)

    def stop(self) -> None:
        self._stopped = True
        self._credits.put(_STOP)

    # ----------------------------------------------------------- feed thread

    def _run(self) -> None:
        index = 0
        try:
            try:
                iterator = iter(self._iterable)
            except BaseException as exc:
                self._put(index, False, exc)
                index += 1
                return
            del self._iterable
            window: int | None = self._window
            outstanding = 0
            sent_bytes = 0
            credits = self._credits
            while not self._stopped:
                if window is not None and index:
                    # At most `window` chunks, and about _WINDOW_BYTES of input.
                    limit = min(window, max(_MIN_WINDOW, _WINDOW_BYTES * index // sent_bytes))
                    self._credit_batch = min(_CREDIT_BATCH_MAX, limit // 2)
                    while window is not None and outstanding >= limit:
                        credit = credits.get()
                        if credit == _STOP:
                            return
                        if credit == _LIFT:
                            window = None
                        else:
                            outstanding -= credit
                try:
                    chunk = list(islice(iterator, self._chunksize))
                    if not chunk:
                        return
                    timeout = (
                        None if self._task_timeout is None else self._task_timeout * len(chunk)
                    )
                    on_done = partial(self._put, index)
                    if self._progress is None:
                        task = self._engine.new_task(
                            self._kind, self._func, chunk, None, on_done, timeout=timeout
                        )
                    else:
                        task = self._new_task_with_progress(index, chunk, on_done, timeout)
                except BaseException as exc:  # the input raised, or a chunk cannot be pickled
                    self._put(index, False, exc)
                    index += 1
                    return
                self._engine.submit(task)
                index += 1
                outstanding += 1
                sent_bytes += task.size
                del chunk, task
        except BaseException as exc:  # a bug here must show, never shorten the results
            self._put(index, False, exc)
            index += 1
        finally:
            self._outcomes.put([(_END, index)])
            self._engine.release()

    def _new_task_with_progress(
        self, index: int, chunk: list[Any], on_done: Any, timeout: float | None
    ) -> Any:
        """The chunk's task, counted by the call's progress (``_progress.CallProgress``)."""
        bar = self._progress
        assert bar is not None
        return self._engine.new_task(
            self._kind,
            self._func,
            chunk,
            None,
            bar.wrap(index, on_done),
            timeout=timeout,
            progress=partial(bar.partial, index),
        )

    def _put(self, index: int, ok: bool, value: Any) -> None:
        if self._engine.delivering():
            batch = self._batch  # handed on once the engine's batch is over
            batch.append((index, (ok, value)))
            if len(batch) == 1:
                self._engine.after_delivery(self._flush)
        else:  # reported outside a batch (a failure after the engine stopped)
            self._outcomes.put([(index, (ok, value))])

    def _flush(self) -> None:
        batch = self._batch
        self._batch = []
        self._outcomes.put(batch)

    # ----------------------------------------------------------- consumer

    def take(self, deadline: float | None) -> tuple[bool, Any]:
        """The next chunk's (ok, value); StopIteration at the end, FeedTimeout past ``deadline``."""
        if not self._take_lock.acquire(timeout=_remaining(deadline)):
            raise FeedTimeout
        try:
            while True:
                entry = self._pop_ready()
                if entry is not None:
                    self._credit()
                    return entry
                if self._length is not None and self._taken >= self._length:
                    raise StopIteration
                self._receive(self._next_outcome(deadline))
                outcomes = self._outcomes
                while not outcomes.empty():  # everything that is here already, in one go
                    self._receive(outcomes.get_nowait())
        finally:
            self._take_lock.release()

    def _pop_ready(self) -> tuple[bool, Any] | None:
        if self._ordered:
            entry = self._by_index.pop(self._next_index, None)
            if entry is not None:
                self._next_index += 1
            return entry
        return self._done.popleft() if self._done else None

    def _next_outcome(self, deadline: float | None) -> Any:
        if self._uncredited and self._outcomes.empty():  # about to block: credit first
            self._credits.put(self._uncredited)
            self._uncredited = 0
        try:
            if deadline is None:
                return self._outcomes.get()
            return self._outcomes.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise FeedTimeout from None

    def _receive(self, messages: list[tuple[Any, Any]]) -> None:
        for index, entry in messages:
            if index is _END:
                self._length = entry
            elif self._ordered:
                self._by_index[index] = entry
            else:
                self._done.append(entry)

    def _credit(self) -> None:
        self._taken += 1
        self._uncredited += 1
        if self._uncredited >= self._credit_batch:
            self._credits.put(self._uncredited)
            self._uncredited = 0


def default_window(workers: int) -> int:
    """Chunks a feed keeps in flight at most (the byte budget may allow fewer)."""
    return max(1024, 64 * workers)


def _remaining(deadline: float | None) -> float:
    return -1 if deadline is None else max(0.0, deadline - time.monotonic())
