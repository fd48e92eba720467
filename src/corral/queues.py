"""Queues between processes: ``Queue``, ``JoinableQueue``, ``SimpleQueue``.

All three carry pickled messages through a ``corral._ring.Ring``: a circular
buffer in shared memory that every process holding the queue maps, with a lock
that is taken over when its holder is killed (see ``_ring``'s docstring for
the layout and the recovery rules). ``put`` pickles the object *in the caller*,
so an object that cannot be pickled raises right there (the stdlib loses it in
its feeder thread and only prints a traceback), and then stores the bytes in
the ring itself: no thread hand-off, no system call while the ring has room.

When the ring is full, ``Queue.put`` waits up to ``_GRACE`` (5 ms) for
consumers to free room, then does not block further (as in the stdlib): the
message is accepted (it counts for ``qsize``/``maxsize``) and kept in this
process's buffer, which a feeder thread moves into the ring as room appears.
Later puts of the same process go through that buffer too until it is empty,
so each producer's messages keep their order. ``SimpleQueue.put`` has no
feeder and waits for room instead.
"""

from __future__ import annotations

import collections
import threading
import time
import weakref
from queue import Empty, Full
from typing import Any, Generic

from . import _contexts, _ring, _segment, _spawning, reduction, util
from ._typevars import T as _T  # the type of the items, for a type checker (Queue[int])
from .reduction import dumps_with_buffers
from .synchronize import SEM_VALUE_MAX

__all__ = ("JoinableQueue", "Queue", "SimpleQueue")


_loads = reduction._loads
_Loaded = _segment.Loaded
_CLOSE = object()  # tells the feeder thread to finish
_STORED, _FULL, _NO_ROOM = _ring.STORED, _ring.FULL, _ring.NO_ROOM


def _deadline(block: bool, timeout: float | None) -> float | None:
    return time.monotonic() + timeout if block and timeout is not None else None


def _closed_error(queue: object) -> ValueError:
    return ValueError(f"Queue {queue!r} is closed")


_EMPTY_LOOKS = 64  # looks at an empty ring before sleeping (a wake-up costs more)
# How long Queue.put waits for room in a full ring before handing the message
# to the feeder thread (whose hand-offs cost the producer a GIL switch each).
_GRACE = 0.005


def _get(ring: _ring.Ring, block: bool, deadline: float | None) -> bytes | _segment.Loaded:
    """The next message's bytes, sleeping on the ring until one comes or the deadline."""
    empty = ring.empty
    while True:
        data = ring.take()
        if data is not None:
            return data
        if block:
            for _ in range(_EMPTY_LOOKS):
                if not empty():
                    break
            else:
                if ring.wait_readable(deadline):
                    continue
                block = False
        if not block:
            data = ring.take()
            if data is None:
                raise Empty
            return data


class Queue(Generic[_T]):
    """A FIFO queue shared between processes (pass it to children at start).

    ``put`` raises ``queue.Full`` and ``get`` raises ``queue.Empty`` as the
    stdlib's; both raise ``ValueError`` after ``close()``. ``ctx`` is the
    context whose locks it uses, by default the default context's (the stdlib
    requires it; ``corral.Queue()`` passes it). ``Queue[int]`` tells a type
    checker what the queue carries.
    """

    _joinable = False
    _notempty: threading.Condition

    def __init__(self, maxsize: int = 0, *, ctx: _contexts.BaseContext | None = None) -> None:
        if maxsize <= 0:
            maxsize = SEM_VALUE_MAX
        self._maxsize = maxsize
        self._ring = _ring.Ring(_contexts.as_context(ctx), maxsize, joinable=self._joinable)
        self._ignore_epipe = False
        self._reset()
        util.register_after_fork(self, Queue._after_fork)

    # What a child gets when the queue is passed to it at start.
    _PICKLED = ("_ignore_epipe", "_maxsize", "_ring")

    def __getstate__(self) -> tuple[Any, ...]:
        _spawning.assert_spawning(self)
        return tuple(getattr(self, name) for name in self._PICKLED)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for name, value in zip(self._PICKLED, state, strict=True):
            setattr(self, name, value)
        self._reset()

    def _after_fork(self) -> None:
        util.debug("Queue._after_fork()")
        self._reset(after_fork=True)

    def _reset(self, after_fork: bool = False) -> None:
        if after_fork:
            self._notempty._at_fork_reinit()  # type: ignore[attr-defined,unused-ignore]
        else:
            self._notempty = threading.Condition(threading.Lock())
        # Messages this process accepted and has not stored yet: in _buffer, or
        # in the feeder's hands while _storing.
        self._buffer: collections.deque[Any] = collections.deque()
        self._storing = False
        self._feeder_idle = False
        # Bounded and joinable queues count a message when it is accepted, as
        # the stdlib does; others when it reaches the ring (plus the buffer, in qsize).
        self._counted = self._maxsize < SEM_VALUE_MAX or self._joinable
        self._thread: threading.Thread | None = None
        self._jointhread: util.Finalize | None = None
        self._joincancelled = False
        self._closed = False
        self._close: util.Finalize | None = None
        self._offer = self._ring.offer_fast
        self._take = self._ring.take
        self._oob_min = self._ring._inband_max

    def put(self, obj: _T, block: bool = True, timeout: float | None = None) -> None:
        """Put obj on the queue, waiting for room up to timeout seconds if block.

        Raises:
            queue.Full: ``maxsize`` messages are in the queue and none left in time.
            ValueError: the queue is closed.
            corral.SerializationError: obj cannot be pickled (nothing is queued).
        """
        if self._closed:
            raise _closed_error(self)
        data, buffers = dumps_with_buffers(obj, self._oob_min)
        if buffers or self._buffer or self._storing or self._offer(data) is not _STORED:
            self._put_slow(data, buffers, block, timeout)

    def _put_slow(
        self, data: bytes, buffers: list[memoryview], block: bool, timeout: float | None
    ) -> None:
        """Store data with wrapping or out of band; or, the ring being full, wait up
        to ``_GRACE`` for room, then accept it into this process's buffer (the
        feeder stores it later); or wait for a slot under maxsize."""
        ring = self._ring
        data = ring.frame(data, buffers)
        del buffers  # written to the segment: the objects are the caller's again
        deadline = _deadline(block, timeout)
        counted = self._counted
        grace: float | None = None
        while True:
            if self._buffer or self._storing:
                accepted = ring.reserve() if counted else True
            else:
                result = ring.offer(data)
                if result is _STORED:
                    return
                if result is _NO_ROOM and block:
                    # Consumers free room in bulk within a millisecond or so
                    # while they keep up; the feeder is for when they do not.
                    now = time.monotonic()
                    if grace is None:
                        grace = now + _GRACE
                    if now < grace:
                        ring.wait_writable(grace if deadline is None else min(grace, deadline))
                        continue
                accepted = result is _NO_ROOM and (ring.reserve() if counted else True)
            if accepted:
                self._buffer.append(data)
                if self._thread is None:
                    with self._notempty:
                        if self._thread is None:
                            self._start_thread()
                if self._feeder_idle:
                    with self._notempty:
                        self._notempty.notify()
                return
            if not block or not ring.wait_writable(deadline):
                if isinstance(data, _ring.SegmentName):
                    _ring.discard(data, ring._tracker_fd)
                raise Full

    def get(self, block: bool = True, timeout: float | None = None) -> _T:
        """Remove and return an item, waiting up to timeout seconds if block.

        Raises:
            queue.Empty: nothing arrived in time.
            ValueError: the queue is closed.
        """
        if self._closed:
            raise _closed_error(self)
        data = self._take()
        if data is None:
            data = _get(self._ring, block, _deadline(block, timeout))
        if isinstance(data, _Loaded):  # came through a segment: already unpickled
            loaded: _T = data.obj
            return loaded
        item: _T = _loads(data)
        return item

    def qsize(self) -> int:
        """The number of items put and not yet taken.

        Counts the messages in other processes' buffers too for bounded and
        joinable queues; for others, only this process's buffer.
        """
        if self._counted:
            return self._ring.count()
        return self._ring.count() + len(self._buffer) + self._storing

    def empty(self) -> bool:
        """Whether no item is waiting in the queue now."""
        return self._ring.empty()

    def full(self) -> bool:
        """Whether ``maxsize`` items are in the queue."""
        return self._ring.full()

    def get_nowait(self) -> _T:
        return self.get(False)

    def put_nowait(self, obj: _T) -> None:
        return self.put(obj, False)

    def close(self) -> None:
        """No more puts or gets from this process; the feeder stores what it holds and stops."""
        self._closed = True
        close, self._close = self._close, None
        if close is not None:
            close()

    def join_thread(self) -> None:
        """Wait for the feeder thread to store everything (after ``close()``)."""
        util.debug("Queue.join_thread()")
        if not self._closed:
            msg = f"Queue {self!r} not closed"
            raise AssertionError(msg)
        if self._jointhread is not None:
            self._jointhread()

    def cancel_join_thread(self) -> None:
        """Do not wait for the feeder at exit (messages still buffered are then lost)."""
        util.debug("Queue.cancel_join_thread()")
        self._joincancelled = True
        if self._jointhread is not None:
            self._jointhread.cancel()

    def _start_thread(self) -> None:
        util.debug("Queue._start_thread()")
        thread = threading.Thread(
            target=Queue._feed,
            args=(self._buffer, self._notempty, self._ring, self),
            name="QueueFeederThread",
            daemon=True,
        )
        self._thread = thread
        thread.start()
        if not self._joincancelled:
            self._jointhread = util.Finalize(
                thread, Queue._finalize_join, [weakref.ref(thread)], exitpriority=-5
            )
        self._close = util.Finalize(
            self, Queue._finalize_close, [self._buffer, self._notempty], exitpriority=10
        )

    @staticmethod
    def _finalize_join(thread_ref: weakref.ref[threading.Thread]) -> None:
        thread = thread_ref()
        if thread is not None:
            thread.join()

    @staticmethod
    def _finalize_close(buffer: collections.deque[Any], notempty: threading.Condition) -> None:
        with notempty:
            buffer.append(_CLOSE)
            notempty.notify()

    @staticmethod
    def _feed(
        buffer: collections.deque[Any],
        notempty: threading.Condition,
        ring: _ring.Ring,
        queue: Queue[Any],
    ) -> None:
        """The feeder thread: store buffered messages, in batches, as room appears.

        ``queue._storing`` is set while messages may be between the buffer and
        the ring, so ``put`` sees pending work at every instant; ``put`` only
        notifies the feeder when it sleeps (``_feeder_idle``).
        """
        counted = queue._counted
        while True:
            queue._storing = True
            if buffer:
                if buffer[0] is _CLOSE:
                    queue._storing = False
                    return
                if not ring.offer_batch(buffer, counted) and buffer and buffer[0] is not _CLOSE:
                    ring.wait_writable(None)
                continue
            queue._storing = False
            with notempty:
                queue._feeder_idle = True
                while not buffer:
                    notempty.wait()
                queue._feeder_idle = False

    @staticmethod
    def _on_queue_feeder_error(exc: BaseException, obj: Any) -> None:
        """Kept for subclasses written for the stdlib; corral's feeder only moves bytes.

        An object that cannot be pickled raises in ``put`` instead.
        """
        import traceback

        traceback.print_exception(exc)


class JoinableQueue(Queue[_T]):
    """A ``Queue`` whose consumers mark items done, so producers can ``join()``."""

    _joinable = True

    def task_done(self) -> None:
        """Mark one item as processed.

        Raises:
            ValueError: called more times than items were put.
        """
        self._ring.task_done()

    def join(self) -> None:
        """Wait until every item put has been marked with ``task_done()``."""
        self._ring.join()


class SimpleQueue(Generic[_T]):
    """A queue with no feeder thread: ``put`` stores directly (waiting for room if full).

    ``ctx`` as for ``Queue``.
    """

    def __init__(self, *, ctx: _contexts.BaseContext | None = None) -> None:
        self._ring = _ring.Ring(_contexts.as_context(ctx))
        self._closed = False
        self._reset()

    def _reset(self) -> None:
        self._offer = self._ring.offer_fast
        self._take = self._ring.take
        self._oob_min = self._ring._inband_max

    def close(self) -> None:
        """No more puts or gets from this process (closing twice is allowed)."""
        self._closed = True

    def empty(self) -> bool:
        """Whether no item is waiting in the queue now."""
        return self._ring.empty()

    def __getstate__(self) -> _ring.Ring:
        _spawning.assert_spawning(self)
        return self._ring

    def __setstate__(self, state: _ring.Ring) -> None:
        self._ring = state
        self._closed = False
        self._reset()

    def get(self) -> _T:
        """Remove and return an item, waiting for one.

        Raises:
            ValueError: the queue is closed.
        """
        if self._closed:
            raise _closed_error(self)
        data = self._take()
        if data is None:
            data = _get(self._ring, True, None)
        if isinstance(data, _Loaded):  # came through a segment: already unpickled
            loaded: _T = data.obj
            return loaded
        item: _T = _loads(data)
        return item

    def put(self, obj: _T) -> None:
        """Put obj on the queue, waiting for room if it is full.

        Raises:
            ValueError: the queue is closed.
            corral.SerializationError: obj cannot be pickled.
        """
        if self._closed:
            raise _closed_error(self)
        data, buffers = dumps_with_buffers(obj, self._oob_min)
        if buffers or self._offer(data) is not _STORED:
            ring = self._ring
            data = ring.frame(data, buffers)
            while ring.offer(data) is not _STORED:
                ring.wait_writable(None)
