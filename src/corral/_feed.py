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

With a ``ChunkSizer`` (``chunksize="auto"``, ``_chunking.py``) the feed asks it
for each chunk's size, and keeps at most ``sizer.in_flight`` chunks submitted
but not finished, so that each size is chosen with fresh measurements: every
task's ``claim`` notes when the engine handed it to a worker, its ``on_done``
puts (items, seconds) on the credit queue, and the feed thread hands that to
the sizer. With a ``sink`` (``map_async``), outcomes go straight to the sink
with the position of the chunk's first item, and nothing is taken by a
consumer (no window of chunks not yet taken).

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
from typing import TYPE_CHECKING, Any

from ._engine import Engine
from ._progress import CallProgress

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._chunking import ChunkSizer

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
        chunksize: int | ChunkSizer,
        kind: int,
        task_timeout: float | None,
        window: int | None,
        ordered: bool,
        *,
        claim: Callable[[], bool] | None = None,
        sink: Callable[[int, bool, Any], None] | None = None,
        on_end: Callable[[int], None] | None = None,
        progress: CallProgress | None = None,
    ) -> None:
        """``chunksize``: a fixed size, or a ``ChunkSizer`` that picks each size.

        ``claim``: each task's claim (``Engine.new_task``). ``sink(start, ok,
        value)``: takes each chunk's outcome instead of ``take()`` (``start``:
        the position of its first item); ``on_end(chunks)``: called once, from
        the feed thread, when all chunks are submitted (or the feed stopped).
        """
        self._engine = engine
        self._progress = progress  # counts finished items (progress=), or None
        self._func = func
        self._iterable = iterable
        self._sizer: ChunkSizer | None = None if isinstance(chunksize, int) else chunksize
        self._chunksize = chunksize if isinstance(chunksize, int) else 0
        self._claim = claim
        self._sink = sink
        self._on_end = on_end
        self._started: dict[int, float] = {}  # auto: chunk index -> when a worker got it
        self._outstanding = 0  # (feed thread) submitted, not yet taken by the consumer
        self._running = 0  # (feed thread, with a sizer) submitted, not yet finished
        self._kind = kind
        self._task_timeout = task_timeout
        self._window = window
        self._ordered = ordered
        self._stopped = False
        # Chunks taken by the consumer (int), _LIFT, _STOP, and with a sizer
        # (items, seconds or None) for each finished chunk.
        self._credits: queue.SimpleQueue[Any] = queue.SimpleQueue()
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
        self._first: tuple[list[Any], Any] | None = None  # (start(first_here)) chunk 0, encoded
        self.thread = threading.Thread(target=self._run, name="corral-feed", daemon=True)

    def start(self, *, first_here: bool = False) -> None:
        """Start the feed thread.

        ``first_here``: cut and encode the first chunk in the calling thread,
        so that a function (or first item) that cannot be pickled raises here,
        with nothing started (``map_async`` with ``chunksize="auto"``).

        Raises:
            SerializationError: (``first_here``) the first chunk cannot be encoded.
        """
        if first_here:
            iterator = iter(self._iterable)  # a list: map lists its input
            size = self._chunksize if self._sizer is None else self._sizer.next_size()
            chunk = list(islice(iterator, size))
            self._first = (chunk, self._new_task(0, 0, chunk))
            self._iterable = iterator
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
        position = 0  # of the next chunk's first item
        try:
            try:
                iterator = iter(self._iterable)
            except BaseException as exc:
                self._put(index, False, exc)
                index += 1
                return
            del self._iterable
            sent_bytes = 0
            sizer = self._sizer
            while not self._stopped:
                if self._window is not None and index:
                    # At most `window` chunks, and about _WINDOW_BYTES of input.
                    limit = min(self._window, max(_MIN_WINDOW, _WINDOW_BYTES * index // sent_bytes))
                    self._credit_batch = min(_CREDIT_BATCH_MAX, limit // 2)
                    while self._window is not None and self._outstanding >= limit:
                        if not self._handle_credit(self._credits.get()):
                            return
                if sizer is not None:
                    while self._running >= sizer.in_flight:
                        if not self._handle_credit(self._credits.get()):
                            return
                    while not self._credits.empty():  # size with every measurement so far
                        if not self._handle_credit(self._credits.get_nowait()):
                            return
                try:
                    if self._first is not None:
                        chunk, task = self._first
                        self._first = None
                    else:
                        size = self._chunksize if sizer is None else sizer.next_size()
                        chunk = list(islice(iterator, size))
                        if not chunk:
                            return
                        task = self._new_task(index, position, chunk)
                except BaseException as exc:  # the input raised, or a chunk cannot be pickled
                    self._put(index, False, exc)
                    index += 1
                    return
                if sizer is not None:
                    self._running += 1
                    self._started[index] = time.monotonic()  # until a worker gets it
                self._engine.submit(task)
                index += 1
                position += len(chunk)
                self._outstanding += 1
                sent_bytes += task.size
                del chunk, task
        except BaseException as exc:  # a bug here must show, never shorten the results
            self._put(index, False, exc)
            index += 1
        finally:
            self._outcomes.put([(_END, index)])
            self._engine.release()
            if self._on_end is not None:
                self._on_end(index)

    def _new_task(self, index: int, position: int, chunk: list[Any]) -> Any:
        timeout = None if self._task_timeout is None else self._task_timeout * len(chunk)
        if self._sink is not None:
            on_done: Any = partial(self._sink_chunk, index, position, len(chunk))
        elif self._sizer is not None:
            on_done = partial(self._done_chunk, index, len(chunk))
        else:
            on_done = partial(self._put, index)
        claim = self._claim
        if self._sizer is not None:
            claim = partial(self._claimed, index)
        progress = None
        if self._progress is not None:  # progress=: the call's bar counts this chunk's items
            on_done = self._progress.wrap(index, on_done)
            progress = partial(self._progress.partial, index)
        return self._engine.new_task(
            self._kind,
            self._func,
            chunk,
            None,
            on_done,
            timeout=timeout,
            claim=claim,
            progress=progress,
        )

    def _handle_credit(self, credit: Any) -> bool:
        """(Feed thread) Apply one message of the credit queue; False on _STOP."""
        if type(credit) is tuple:  # a chunk finished: (items, seconds or None)
            self._running -= 1
            items, seconds = credit
            if seconds is not None and self._sizer is not None:
                self._sizer.observe(items, seconds)
        elif credit == _STOP:
            return False
        elif credit == _LIFT:
            self._window = None
        else:
            self._outstanding -= credit
        return True

    # ----------------------------------------------------------- auto sizes

    def _claimed(self, index: int) -> bool:
        """(Engine) The chunk goes to a worker now: its clock starts (and the caller's claim)."""
        if self._claim is not None and not self._claim():
            # Dropped (its awaiting coroutine was cancelled): no outcome comes.
            self._started.pop(index, None)
            self._credits.put((0, None))
            self.stop()
            return False
        self._started[index] = time.monotonic()
        return True

    def _measure(self, index: int, items: int) -> None:
        started = self._started.pop(index, None)
        seconds = None if started is None else time.monotonic() - started
        self._credits.put((items, seconds))

    def _done_chunk(self, index: int, items: int, ok: bool, value: Any) -> None:
        self._measure(index, items)
        self._put(index, ok, value)

    def _sink_chunk(self, index: int, position: int, items: int, ok: bool, value: Any) -> None:
        if self._sizer is not None:
            self._measure(index, items)
        sink = self._sink
        assert sink is not None  # this is the on_done of a feed with a sink
        sink(position, ok, value)

    def _put(self, index: int, ok: bool, value: Any) -> None:
        if self._sink is not None:  # a failure of the feed itself (its input, pickling)
            self._sink(-1, ok, value)
            return
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
