"""The engine's side of each worker: how to start it, feed it and hear from it.

A handle owns one worker and its private channel. The engine only ever calls
``send``, ``flush``, ``read_records`` and looks at ``channel_fd`` / ``death_fd``
(both go into its selector), so process and thread workers look the same to it.

Process channel framing is the one ``Connection`` uses (a 4-byte big-endian
length, or -1 and an 8-byte length for messages over 2 GiB), so the worker side
is a plain ``Connection``; the engine side reads and writes the socket without
blocking, so a worker that is slow to read never stalls the engine.
"""

from __future__ import annotations

import array
import os
import pickle
import queue
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .. import synchronize
from .protocol import (
    ANCILLARY_SPACE,
    REVOKE_MARK,
    ObjectCodec,
    PickleCodec,
    attach_record_fds,
    collect_fds,
)
from .worker import process_worker_main, thread_worker_main

_HEADER = struct.Struct("!i")
_BIG_HEADER = struct.Struct("!Q")
_READ_SIZE = 1 << 18


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


class WorkerHandle:
    """State the engine keeps per worker (shared by both kinds)."""

    codec: Any
    process: Any
    channel_fd: int
    death_fd: int

    def __init__(self, worker_id: int) -> None:
        self.worker_id = worker_id
        self.pid: int | None = None
        self.held: deque[Any] = deque()  # tasks sent and not yet reported, in order
        self.running_since = 0.0  # when the first held task started
        self.sent_count = 0  # tasks ever sent on the channel (a task's seq is its number)
        self.received_count = 0  # of those, how many the worker has read (RECEIVED)
        self.tasks_sent = 0  # tasks sent and not taken back, for max_tasks
        self.ready = False  # the worker has said READY (its start-up is over)
        self.revoking = False  # tasks were taken back; waiting for its REVOKED
        self.quota_reached = False  # it was sent its max_tasks: it retires after them
        self.stopping = False  # told to exit, or about to: send it nothing more
        self.exit_status: int | None = None  # a task asked the worker to exit
        # Lending (see Engine.borrow), guarded by the engine's _lend_lock.
        self.parked = False  # idle, channel unwatched, free to borrow
        self.lent = False  # a caller thread is using the channel
        self.death_seen = False  # the engine saw it die while it was lent
        # Insights (insights.py): times from time.monotonic(), the worker's counters.
        self.created_at = time.monotonic()
        self.ready_at: float | None = None
        self.ended_at: float | None = None
        self.end_reason: str | None = None  # set where the engine decides it ends
        # Tasks it never finished (timeout, crash, sys.exit) and the time they ran.
        self.lost = 0
        self.lost_busy = 0.0
        self.counters: tuple[int, ...] | None = None  # the latest from its OK records
        self.result_unpickle_ns = 0  # the engine's time unpickling its results

    permits: Any  # the worker takes one before each task (protocol: "Taking tasks back")

    def post_permits(self, n: int) -> None:
        """Allow the worker to start ``n`` more tasks (called before sending them)."""
        release = self.permits.release
        for _ in range(n):
            release()

    def take_back_permits(self, most: int) -> int:
        """Take up to ``most`` permits the worker has not used; return how many."""
        acquire = self.permits.acquire
        taken = 0
        while taken < most and acquire(False):
            taken += 1
        return taken

    def started(self) -> None:
        """The worker said READY."""

    def send(self, message: Any, fds: list[int] | None = None) -> bool:
        """Queue ``message`` (and descriptors) for the worker; True if nothing is left to write."""
        raise NotImplementedError

    def flush(self) -> bool:
        raise NotImplementedError

    def read_records(self) -> tuple[list[Any], bool]:
        raise NotImplementedError

    def drain(self) -> list[Any]:
        raise NotImplementedError

    def exitcode(self) -> int | None:
        """Reap the worker (it has died) and return its exit code."""
        raise NotImplementedError

    def kill(self, hard: bool) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class ProcessWorkerHandle(WorkerHandle):
    """A worker process and the engine's end of its socket pair.

    Descriptors (big buffers in shared memory: ``_transfer``) go to the
    worker on one byte of their own right after the frame that needs them
    (which holds ``(message,)``); from the worker they come attached to the
    first byte of such a frame. Reads here use ``recvmsg_into``, so
    descriptors are collected, in order, into ``fds_in`` and paired with the
    records that take them when their frame is complete.
    """

    codec = PickleCodec

    def __init__(self, worker_id: int, process: Any, sock: socket.socket, permits: Any) -> None:
        super().__init__(worker_id)
        self.permits = permits
        self.process = process
        self.pid = process.pid
        self._sock = sock
        self.channel_fd = sock.fileno()
        sock.setblocking(False)
        self.death_fd = process.sentinel
        self._inbuf = bytearray()  # the start of a frame not yet complete
        self._rbuf = bytearray(_READ_SIZE)
        self._rview = memoryview(self._rbuf)
        # (bytes to write, descriptors to send with them, whether those are our duplicates)
        self._outbuf: deque[tuple[memoryview, list[int] | None, bool]] = deque()
        self.fds_in: deque[int] = deque()

    def started(self) -> None:
        """The worker said READY: it has opened its permit semaphore, whose name can go."""
        self.permits._unlink_name()

    def send(self, message: Any, fds: list[int] | None = None) -> bool:
        """Queue ``message`` (and ``fds``) for the worker; return True if all of it left at once."""
        data = pickle.dumps(message if not fds else (message,), pickle.HIGHEST_PROTOCOL)
        n = len(data)
        header = _HEADER.pack(n) if n < 0x7FFFFFFF else _HEADER.pack(-1) + _BIG_HEADER.pack(n)
        frame = header + data
        if not fds and not self._outbuf:  # the common case: one write
            try:
                sent = os.write(self.channel_fd, frame)
            except BlockingIOError:
                sent = 0
            except (BrokenPipeError, ConnectionResetError):
                return True  # the worker is gone; its death returns what it held
            if sent == len(frame):
                return True
            self._outbuf.append((memoryview(frame)[sent:], None, False))
            return False
        # The descriptors follow the frame on one byte of their own (the worker
        # reads frames with plain reads, that byte with recvmsg). The handle
        # sends its own duplicates: the frame may wait in _outbuf while their
        # owner closes them (a task settled, a share released).
        was_empty = not self._outbuf
        self._outbuf.append((memoryview(frame), None, False))
        if was_empty and not self.flush():
            was_empty = False  # the frame waits: so does the descriptor byte
        if fds:
            if was_empty and self._send_fds_now(fds):
                return True
            try:
                own = [os.dup(fd) for fd in fds]
            except OSError:  # out of descriptors: the owners keep theirs open till settled
                own = None
            entry = (memoryview(b"\0"), own if own is not None else list(fds), own is not None)
            self._outbuf.append(entry)
            return self.flush() if was_empty else False
        return was_empty

    def _send_fds_now(self, fds: list[int]) -> bool:
        """Send the descriptor byte at once if the socket takes it (no duplicates needed)."""
        try:
            sent = self._sock.sendmsg(
                [b"\0"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
            )
        except BlockingIOError:
            return False
        except (BrokenPipeError, ConnectionResetError):
            return True  # the worker is gone; its death returns what it held
        return sent == 1

    def flush(self) -> bool:
        """Write what is pending; return True when nothing is left."""
        outbuf = self._outbuf
        while outbuf:
            chunk, fds, owned = outbuf[0]
            try:
                if fds:
                    sent = self._sock.sendmsg(
                        [chunk], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                    )
                else:
                    sent = os.write(self.channel_fd, chunk)
            except BlockingIOError:
                return False
            except (BrokenPipeError, ConnectionResetError):
                self._clear_outbuf()
                return True
            if fds and owned:
                _close_all(fds)  # the kernel holds its own copies now
            if sent < len(chunk):
                outbuf[0] = (chunk[sent:], None, False)  # the descriptors left with it
                return False
            outbuf.popleft()
        return True

    def _clear_outbuf(self) -> None:
        while self._outbuf:
            _chunk, fds, owned = self._outbuf.popleft()
            if fds and owned:
                _close_all(fds)

    def read_records(self) -> tuple[list[Any], bool]:
        """Read what has arrived; return (records, channel_closed)."""
        # Read into one reused buffer: a fresh 256 KiB bytes object per read
        # would cost an mmap/munmap pair (it is above malloc's mmap threshold).
        try:
            n, ancdata, _flags, _addr = self._sock.recvmsg_into([self._rbuf], ANCILLARY_SPACE)
        except BlockingIOError:
            return [], False
        except OSError:
            return [], True
        if ancdata:
            collect_fds(ancdata, self.fds_in)
        if not n:
            return [], True
        partial = self._inbuf
        if partial:  # the rest of a frame begun earlier: append (amortized, even for big frames)
            partial += self._rview[:n]
            view: Any = partial
            end = len(partial)
        else:
            view = self._rview
            end = n
        records: list[Any] = []
        pos = 0
        while end - pos >= 4:
            (size,) = _HEADER.unpack_from(view, pos)
            start = pos + 4
            if size == -1:
                if end - start < 8:
                    break
                (size,) = _BIG_HEADER.unpack_from(view, start)
                start += 8
            if end - start < size:
                break
            message = pickle.loads(view[start : start + size])
            if type(message) is tuple:  # it came with descriptors
                message = attach_record_fds(message[0], self.fds_in, self.pid)
            records.extend(message)
            pos = start + size
        if partial:
            del partial[:pos]
        elif pos < end:
            self._inbuf = bytearray(view[pos:end])
        return records, False

    def drain(self) -> list[Any]:
        """Everything the worker wrote before it died."""
        records: list[Any] = []
        while True:
            more, closed = self.read_records()
            records.extend(more)
            if closed or not more:
                return records

    def exitcode(self) -> int | None:
        self.process.join(0)
        code: int | None = self.process.exitcode
        return code

    def kill(self, hard: bool) -> None:
        try:
            if hard:
                self.process.kill()
            else:
                self.process.terminate()
        except (OSError, ValueError):
            pass  # already gone or closed

    def close(self) -> None:
        self.permits._unlink_name()
        self._sock.close()
        self._clear_outbuf()
        while self.fds_in:  # descriptors of records never read
            os.close(self.fds_in.popleft())
        # Not close(): code written for the stdlib joins pool._pool and
        # executor._processes after shutdown. The fds go once it is reaped.
        self.process._release()


class ThreadWorkerHandle(WorkerHandle):
    """A ``ThreadPool`` worker thread; objects travel through in-process queues.

    A thread cannot be killed: ``kill`` asks it to stop and *abandons* it, so
    the engine stops waiting at once (the stdlib's ``ThreadPool.terminate``
    does not wait for busy threads either). The thread may still be running a
    task afterwards, so the pipes are closed by whichever side is last, under
    ``_fd_lock``.
    """

    codec = ObjectCodec

    def __init__(self, worker_id: int, spawner: ThreadSpawner) -> None:
        super().__init__(worker_id)
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.permits = threading.Semaphore(0)
        self._results: deque[list[Any]] = deque()
        self.channel_fd, self._wake_w = os.pipe()
        self.death_fd, self._death_w = os.pipe()
        os.set_blocking(self.channel_fd, False)
        os.set_blocking(self._wake_w, False)
        self._fd_lock = threading.Lock()
        self._finished = False  # the thread has returned
        self._abandoned = False  # kill() was called: the engine no longer waits for it
        self._closed = False  # the engine is done with the handle
        self.process = threading.Thread(
            target=self._run,
            args=(spawner.initializer, spawner.initargs, spawner.max_tasks, spawner.logger_name),
            name=f"{spawner.name_prefix}-{worker_id}",
            daemon=True,
        )

    def _run(self, *args: Any) -> None:
        try:
            thread_worker_main(self._inbox, self.permits, self._post, self._is_abandoned, *args)
        finally:
            with self._fd_lock:
                self._finished = True
                if self._closed:
                    os.close(self._wake_w)
                if not self._abandoned or self._closed:
                    os.close(self._death_w)

    def _is_abandoned(self) -> bool:
        return self._abandoned

    def _post(self, records: list[Any]) -> None:
        self._results.append(records)
        with self._fd_lock:
            if self._closed:
                return  # abandoned: nobody reads this any more
            try:
                os.write(self._wake_w, b"\0")
            except BlockingIOError:
                pass  # the engine has a wake-up pending already

    def post_permits(self, n: int) -> None:
        self.permits.release(n)

    def send(self, message: Any, fds: list[int] | None = None) -> bool:
        if message and message != REVOKE_MARK:
            # An in-process queue cannot lose a batch: it counts as read.
            self.received_count = self.sent_count
        self._inbox.put(message)
        return True

    def flush(self) -> bool:
        return True

    def read_records(self) -> tuple[list[Any], bool]:
        try:
            os.read(self.channel_fd, 4096)
        except BlockingIOError:
            pass
        records: list[Any] = []
        while self._results:
            records.extend(self._results.popleft())
        return records, False

    def drain(self) -> list[Any]:
        return self.read_records()[0]

    def exitcode(self) -> int | None:
        if not self._abandoned:
            self.process.join()  # it has returned (closed its death pipe): a short wait
        return 0 if self.exit_status is None else self.exit_status

    def kill(self, hard: bool) -> None:
        self._inbox.put(None)  # ask it to stop after its current task...
        with self._fd_lock:
            if self._abandoned or self._finished:
                return
            self._abandoned = True
            os.write(self._death_w, b"\0")  # ...and let the engine see it as gone now

    def close(self) -> None:
        with self._fd_lock:
            self._closed = True
            os.close(self.channel_fd)
            os.close(self.death_fd)
            if self._finished:
                os.close(self._wake_w)
                if self._abandoned:
                    os.close(self._death_w)


class ProcessSpawner:
    """Starts worker processes with a context's ``Process``."""

    lendable = True  # a caller thread may use a worker's channel directly (direct.py)
    codec = PickleCodec

    def __init__(
        self,
        ctx: Any,
        initializer: Callable[..., object] | None,
        initargs: tuple[Any, ...],
        max_tasks: int | None,
        max_memory: int | None,
        logger_name: str,
        name_prefix: str,
    ) -> None:
        self.ctx = ctx
        self.start_method = ctx.get_start_method()
        self.initializer = initializer
        self.initargs = initargs
        self.max_tasks = max_tasks
        self.max_memory = max_memory
        self.logger_name = logger_name
        self.name_prefix = name_prefix

    def start(self, worker_id: int) -> tuple[Any, Callable[[], WorkerHandle]]:
        """Start one worker; return its process and a function making its handle.

        The handle is made in a second step so that a pool can start all its
        first workers and clean up cleanly if one start fails.
        """
        parent_end, child_end = socket.socketpair()  # the engine parses a byte stream
        permits = None
        try:
            permits = synchronize.Semaphore(0, ctx=self.ctx)
            proc = self.ctx.Process(
                target=process_worker_main,
                args=(
                    child_end,
                    permits,
                    os.getpid(),
                    self.initializer,
                    self.initargs,
                    self.max_tasks,
                    self.max_memory,
                    self.logger_name,
                ),
                name=f"{self.name_prefix}-{worker_id}",
                daemon=True,
            )
            proc.start()
        except BaseException:
            parent_end.close()
            if permits is not None:
                permits._unlink_name()
            raise
        finally:
            child_end.close()
        return proc, lambda: ProcessWorkerHandle(worker_id, proc, parent_end, permits)


class ThreadSpawner:
    """Starts ``ThreadPool`` worker threads."""

    lendable = False
    codec = ObjectCodec

    def __init__(
        self,
        initializer: Callable[..., object] | None,
        initargs: tuple[Any, ...],
        max_tasks: int | None,
        logger_name: str,
        name_prefix: str,
    ) -> None:
        self.initializer = initializer
        self.initargs = initargs
        self.max_tasks = max_tasks
        self.max_memory = None
        self.start_method = "thread"
        self.logger_name = logger_name
        self.name_prefix = name_prefix

    def start(self, worker_id: int) -> tuple[Any, Callable[[], WorkerHandle]]:
        handle = ThreadWorkerHandle(worker_id, self)
        handle.process.start()
        return handle.process, lambda: handle
