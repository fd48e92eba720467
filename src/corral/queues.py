"""Queues between processes: ``Queue``, ``JoinableQueue``, ``SimpleQueue``.

A queue is a one-way pipe plus locks: readers take ``_rlock`` to receive one
whole message; writers take ``_wlock`` to send one. ``Queue.put`` pickles the
object *in the caller*, so an object that cannot be pickled raises right there
(the stdlib loses it in the feeder thread and only prints a traceback); a
background feeder thread then writes the bytes, so ``put`` never blocks on a
full pipe. A bounded semaphore counts the items for ``maxsize``/``qsize``.
"""

from __future__ import annotations

import collections
import errno
import os
import threading
import time
import types
import weakref
from queue import Empty, Full
from typing import Any

from . import connection, context, reduction, util
from .reduction import _dumps
from .synchronize import SEM_VALUE_MAX

__all__ = ("JoinableQueue", "Queue", "SimpleQueue")

_loads = reduction._loads
_CLOSE = object()  # tells the feeder thread to finish


class Queue:
    """A FIFO queue shared between processes (pass it to children at start).

    ``put`` raises ``queue.Full`` and ``get`` raises ``queue.Empty`` as the
    stdlib's; both raise ``ValueError`` after ``close()``.
    """

    _notempty: threading.Condition

    def __init__(self, maxsize: int = 0, *, ctx: Any) -> None:
        if maxsize <= 0:
            maxsize = SEM_VALUE_MAX
        self._maxsize = maxsize
        self._reader, self._writer = connection.Pipe(duplex=False)
        self._rlock = ctx.Lock()
        self._opid = os.getpid()
        self._wlock = ctx.Lock()
        self._sem = ctx.BoundedSemaphore(maxsize)
        self._ignore_epipe = False
        self._reset()
        util.register_after_fork(self, Queue._after_fork)

    # What a child gets when the queue is passed to it at start.
    _PICKLED = (
        "_ignore_epipe",
        "_maxsize",
        "_reader",
        "_writer",
        "_rlock",
        "_wlock",
        "_sem",
        "_opid",
    )

    def __getstate__(self) -> tuple[Any, ...]:
        context.assert_spawning(self)
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
        self._buffer: collections.deque[Any] = collections.deque()
        self._thread: threading.Thread | None = None
        self._jointhread: util.Finalize | None = None
        self._joincancelled = False
        self._closed = False
        self._close: util.Finalize | None = None
        self._send_bytes = self._writer.send_bytes
        self._recv_bytes = self._reader.recv_bytes
        self._poll = self._reader.poll

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put obj on the queue, waiting for room up to timeout seconds if block.

        Raises:
            queue.Full: no room in time.
            ValueError: the queue is closed.
            corral.SerializationError: obj cannot be pickled (nothing is queued).
        """
        if self._closed:
            msg = f"Queue {self!r} is closed"
            raise ValueError(msg)
        data = _dumps(obj)
        if not self._sem.acquire(block, timeout):
            raise Full
        with self._notempty:
            if self._thread is None:
                self._start_thread()
            self._enqueue(data)
            self._notempty.notify()

    def _enqueue(self, data: bytes) -> None:
        """Hand pickled data to the feeder (called with ``_notempty`` held)."""
        self._buffer.append(data)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return an item, waiting up to timeout seconds if block.

        Raises:
            queue.Empty: nothing arrived in time.
            ValueError: the queue is closed.
        """
        if self._closed:
            msg = f"Queue {self!r} is closed"
            raise ValueError(msg)
        if block and timeout is None:
            with self._rlock:
                data = self._recv_bytes()
            self._sem.release()
            return _loads(data)
        deadline = time.monotonic() + timeout if block and timeout is not None else None
        if not self._rlock.acquire(block, timeout):
            raise Empty
        try:
            remaining = max(0.0, deadline - time.monotonic()) if deadline is not None else 0.0
            if not self._poll(remaining):
                raise Empty
            data = self._recv_bytes()
            self._sem.release()
        finally:
            self._rlock.release()
        return _loads(data)

    def qsize(self) -> int:
        """The approximate number of items in the queue."""
        return self._maxsize - self._sem._semlock._get_value()

    def empty(self) -> bool:
        return not self._poll()

    def full(self) -> bool:
        return self._sem._semlock._is_zero()

    def get_nowait(self) -> Any:
        return self.get(False)

    def put_nowait(self, obj: Any) -> None:
        return self.put(obj, False)

    def close(self) -> None:
        """No more puts from this process; the feeder flushes what it holds and stops."""
        self._closed = True
        close, self._close = self._close, None
        if close is not None:
            close()

    def join_thread(self) -> None:
        """Wait for the feeder thread to flush everything (after ``close()``)."""
        util.debug("Queue.join_thread()")
        if not self._closed:
            msg = f"Queue {self!r} not closed"
            raise AssertionError(msg)
        if self._jointhread is not None:
            self._jointhread()

    def cancel_join_thread(self) -> None:
        """Do not wait for the feeder at exit (queued data may then be lost)."""
        util.debug("Queue.cancel_join_thread()")
        self._joincancelled = True
        if self._jointhread is not None:
            self._jointhread.cancel()

    def _start_thread(self) -> None:
        util.debug("Queue._start_thread()")
        thread = threading.Thread(
            target=Queue._feed,
            args=(
                self._buffer,
                self._notempty,
                self._send_bytes,
                self._wlock,
                self._reader.close,
                self._writer.close,
                self._ignore_epipe,
                self._on_queue_feeder_error,
                self._sem,
            ),
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
        send_bytes: Any,
        writelock: Any,
        reader_close: Any,
        writer_close: Any,
        ignore_epipe: bool,
        onerror: Any,
        queue_sem: Any,
    ) -> None:
        while True:
            with notempty:
                while not buffer:
                    notempty.wait()
            try:
                while True:
                    data = buffer.popleft()
                    if data is _CLOSE:
                        reader_close()
                        writer_close()
                        return
                    with writelock:
                        send_bytes(data)
            except IndexError:
                pass
            except Exception as exc:
                if ignore_epipe and getattr(exc, "errno", 0) == errno.EPIPE:
                    return
                if util.is_exiting():
                    util.info("error in queue thread: %s", exc)
                    return
                queue_sem.release()
                onerror(exc, data)

    @staticmethod
    def _on_queue_feeder_error(exc: BaseException, obj: Any) -> None:
        """Called in the feeder thread when writing an item failed; prints the traceback."""
        import traceback

        traceback.print_exc()

    __class_getitem__: Any = classmethod(types.GenericAlias)


class JoinableQueue(Queue):
    """A ``Queue`` whose consumers mark items done, so producers can ``join()``."""

    def __init__(self, maxsize: int = 0, *, ctx: Any) -> None:
        super().__init__(maxsize, ctx=ctx)
        self._unfinished_tasks = ctx.Semaphore(0)
        self._cond = ctx.Condition()

    def __getstate__(self) -> tuple[Any, ...]:
        return (*super().__getstate__(), self._cond, self._unfinished_tasks)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        super().__setstate__(state[:-2])
        self._cond, self._unfinished_tasks = state[-2:]

    def _enqueue(self, data: bytes) -> None:
        # Counted under _cond, so join() never sees an item queued but not counted.
        with self._cond:
            super()._enqueue(data)
            self._unfinished_tasks.release()

    def task_done(self) -> None:
        """Mark one item as processed.

        Raises:
            ValueError: called more times than items were put.
        """
        with self._cond:
            if not self._unfinished_tasks.acquire(False):
                msg = "task_done() called too many times"
                raise ValueError(msg)
            if self._unfinished_tasks._semlock._is_zero():
                self._cond.notify_all()

    def join(self) -> None:
        """Wait until every item put has been marked with ``task_done()``."""
        with self._cond:
            if not self._unfinished_tasks._semlock._is_zero():
                self._cond.wait()


class SimpleQueue:
    """A queue with no feeder thread: ``put`` writes directly (and may block)."""

    def __init__(self, *, ctx: Any) -> None:
        self._reader, self._writer = connection.Pipe(duplex=False)
        self._rlock = ctx.Lock()
        self._wlock = ctx.Lock()
        self._poll = self._reader.poll

    def close(self) -> None:
        self._reader.close()
        self._writer.close()

    def empty(self) -> bool:
        return not self._poll()

    def __getstate__(self) -> tuple[Any, ...]:
        context.assert_spawning(self)
        return (self._reader, self._writer, self._rlock, self._wlock)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self._reader, self._writer, self._rlock, self._wlock = state
        self._poll = self._reader.poll

    def get(self) -> Any:
        """Remove and return an item, waiting for one."""
        with self._rlock:
            data = self._reader.recv_bytes()
        return _loads(data)

    def put(self, obj: Any) -> None:
        """Put obj on the queue.

        Raises:
            corral.SerializationError: obj cannot be pickled.
        """
        data = _dumps(obj)
        with self._wlock:
            self._writer.send_bytes(data)

    __class_getitem__: Any = classmethod(types.GenericAlias)
