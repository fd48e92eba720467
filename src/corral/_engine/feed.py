"""Lazy input for ``imap``, ``imap_unordered`` and ``Executor.map``.

A ``Feed`` pulls the caller's iterable in its own thread, cuts it into chunks,
pickles each chunk and submits it to the engine, keeping at most ``window``
chunks outstanding (submitted but not yet taken by the consumer), so an endless
generator never fills memory. The consumer takes chunk outcomes in input order
(``ordered``) or as they complete.

``lift_window()`` (on ``Pool.close()`` / ``Executor.shutdown()``) lets the feed
submit the rest without waiting for the consumer, so that closing and joining a
pool still runs all of the work, as with the stdlib. ``stop()`` (terminate, or
the consumer dropped the iterator) stops it. The feed holds the engine open
(``Engine.hold``) until its input is exhausted.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from functools import partial
from itertools import islice
from typing import Any

from .engine import Engine, Task


class FeedTimeout(Exception):
    """``Feed.take`` ran out of time (front ends raise their own TimeoutError)."""


class Feed:
    """Feeds ``iterable`` to ``engine`` in chunks; collects the chunks' outcomes."""

    def __init__(
        self,
        engine: Engine,
        encode: Callable[[Any, Any, Any], Any],
        func: Any,
        iterable: Iterable[Any],
        chunksize: int,
        kind: int,
        task_timeout: float | None,
        window: int,
        ordered: bool,
    ) -> None:
        self._engine = engine
        self._encode = encode
        self._func = func
        self._iterable = iterable
        self._chunksize = chunksize
        self._kind = kind
        self._task_timeout = task_timeout
        self._window: int | None = window
        self._ordered = ordered
        self._cond = threading.Condition(threading.Lock())
        self._by_index: dict[int, tuple[bool, Any]] = {}
        self._done: deque[tuple[bool, Any]] = deque()
        self._next_index = 0
        self._submitted = 0
        self._taken = 0
        self._length: int | None = None  # chunks in all, once the input is exhausted
        self._stopped = False
        self.thread = threading.Thread(target=self._run, name="corral-feed", daemon=True)

    def start(self) -> None:
        self._engine.hold()
        self.thread.start()

    def lift_window(self) -> None:
        with self._cond:
            self._window = None
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

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
            cond = self._cond
            while True:
                with cond:
                    while (
                        not self._stopped
                        and self._window
                        and self._submitted - self._taken >= self._window
                    ):
                        cond.wait()
                    if self._stopped:
                        return
                try:
                    chunk = list(islice(iterator, self._chunksize))
                    if not chunk:
                        return
                    payload = self._encode(self._func, chunk, None)
                except BaseException as exc:  # the input raised, or a chunk cannot be pickled
                    self._put(index, False, exc)
                    index += 1
                    return
                timeout = None if self._task_timeout is None else self._task_timeout * len(chunk)
                with cond:
                    self._submitted += 1
                self._engine.submit(Task(self._kind, payload, partial(self._put, index), timeout))
                index += 1
                del chunk, payload
        finally:
            with self._cond:
                self._length = index
                self._cond.notify_all()
            self._engine.release()

    def _put(self, index: int, ok: bool, value: Any) -> None:
        with self._cond:
            if self._ordered:
                self._by_index[index] = (ok, value)
            else:
                self._done.append((ok, value))
            self._cond.notify_all()

    def take(self, deadline: float | None) -> tuple[bool, Any]:
        """The next chunk's (ok, value); StopIteration at the end, FeedTimeout past ``deadline``."""
        with self._cond:
            while True:
                if self._ordered:
                    entry = self._by_index.pop(self._next_index, None)
                else:
                    entry = self._done.popleft() if self._done else None
                if entry is not None:
                    self._next_index += 1
                    self._taken += 1
                    self._cond.notify_all()
                    return entry
                if self._length is not None and self._next_index >= self._length:
                    raise StopIteration
                if deadline is None:
                    self._cond.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise FeedTimeout
                    self._cond.wait(remaining)
