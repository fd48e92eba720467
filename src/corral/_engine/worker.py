"""The loop a pool worker runs: take tasks, run them, report each outcome.

The same loop serves process workers (``process_worker_main``, messages pickled
over the worker's private pipe) and thread workers (``thread_worker_main``,
objects passed through in-process queues for ``ThreadPool``). It runs tasks in
the order the engine sent them and reports every task exactly once, which is
what lets the engine know, from the records alone, which task a worker is
running at any moment.
"""

from __future__ import annotations

import array
import ctypes
import ctypes.util
import logging
import os
import pickle
import signal
import socket
import struct
import sys
from collections import deque
from collections.abc import Callable
from itertools import starmap
from time import perf_counter_ns
from typing import Any

from .. import _transfer, process
from .._lifeline import on_parent_death
from .metering import (
    BUSY_NS,
    BYTES_IN,
    DUE_NS,
    ITEMS,
    NOW,
    SENT_AT,
    SIZED,
    TASKS,
    UNPICKLE_NS,
    new_counters,
    run_reporting,
    size,
    snapshot,
)
from .protocol import (
    ANCILLARY_SPACE,
    CALL,
    EXITING,
    INIT_FAIL,
    MAP,
    OK,
    READY,
    RECEIVED,
    REPORT_PROGRESS,
    RETIRING,
    REVOKE_MARK,
    REVOKED,
    UNREADABLE,
    ObjectCodec,
    PickleCodec,
    attach_task_fds,
    collect_fds,
    format_exception_text,
    short_repr,
)

_HEADER = struct.Struct("!i")
_BIG_HEADER = struct.Struct("!Q")
_MAX_READ = 1 << 30

_PR_SET_PDEATHSIG = 1


def _exit_status(exc: SystemExit) -> int:
    """The process exit status ``sys.exit(code)`` would give."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    return 1


def run_one(
    codec: Any,
    task_id: int,
    kind: int,
    payload: Any,
    counters: list[int] | None = None,
    send: Callable[[list[Any]], None] | None = None,
) -> tuple[tuple[Any, ...], int | None]:
    """Run one task; return its record and, if the task asked to exit, the exit status.

    ``counters`` (``metering.new_counters``) count the task; ``send`` carries the PROGRESS
    records of a chunk whose kind has ``REPORT_PROGRESS``.
    """
    clock = perf_counter_ns
    t0 = clock()
    try:
        fn, args, kwargs = codec.decode_task(payload)
    except BaseException as exc:  # includes SystemExit raised by a __reduce__
        info = (type(exc).__name__, short_repr(exc))
        return (UNREADABLE, task_id, info, format_exception_text(exc)), None
    t1 = clock()
    items = 1
    try:
        if kind == CALL:
            value = fn(*args, **kwargs)
        else:
            items = len(args)
            if kind == MAP:
                value = list(map(fn, args))
            elif kind & REPORT_PROGRESS:
                star = kind & ~REPORT_PROGRESS != MAP
                if send is not None:
                    value = run_reporting(fn, args, star, task_id, send)
                else:
                    value = list(starmap(fn, args) if star else map(fn, args))
            else:
                value = list(starmap(fn, args))
    except SystemExit as exc:
        status = _exit_status(exc)
        return (EXITING, task_id, status, None), status
    except BaseException as exc:
        if counters is not None:
            _count(counters, items, t0, t1, clock(), payload)
        return codec.encode_exception(task_id, exc), None
    finally:
        del fn, args, kwargs  # release the arguments before the next task
    t2 = clock()
    try:
        record = codec.encode_result(task_id, value)
    except SystemExit as exc:  # a result whose __reduce__ calls sys.exit()
        status = _exit_status(exc)
        return (EXITING, task_id, status, None), status
    if counters is not None:
        # Inline, with metering's indices as literals (TASKS=0 ... BYTES_OUT=6,
        # NOW=7, SIZED=9): this runs once per task, always.
        c = counters
        t3 = clock()
        c[0] += 1
        c[1] += items
        c[2] += t1 - t0
        c[3] += t2 - t1
        c[4] += t3 - t2
        c[7] = t3
        if c[9]:
            payload_type = type(payload)
            if payload_type is tuple:  # (function reference, arguments): the usual case
                c[5] += len(payload[0]) + len(payload[1])
            else:
                c[5] += len(payload) if payload_type is bytes else size(payload)
            a = record[2]
            c[6] += len(a) if type(a) is bytes else size(a)
    return record, None


def _count(c: list[int], items: int, t0: int, t1: int, t2: int, payload: Any) -> None:
    """Count a task that raised (its exception is not counted as bytes out)."""
    c[TASKS] += 1
    c[ITEMS] += items
    c[UNPICKLE_NS] += t1 - t0
    c[BUSY_NS] += t2 - t1
    c[NOW] = t2
    if c[SIZED]:
        c[BYTES_IN] += size(payload)


def resident_memory() -> int:
    """This process's resident set size in bytes (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def serve(
    receive: Callable[[], Any],
    send: Callable[[list[Any]], None],
    codec: Any,
    max_tasks: int | None,
    max_memory: int | None,
    take_permit: Callable[[bool], bool],
    acknowledge: bool = True,
    abandoned: Callable[[], bool] | None = None,
) -> int | None:
    """Run tasks until told to stop or recycled; return an exit status a task asked for.

    ``take_permit(False)`` is called before each task; False means the engine
    took the task back (see ``protocol``: "Taking tasks back").
    ``abandoned`` (thread workers): the engine gave up on this worker; what it
    still holds was failed or requeued, so it stops before its next task.
    """
    held: deque[Any] = deque()
    counters = new_counters(sized=codec is not ObjectCodec)
    done = 0
    read = 0  # tasks read from the channel, revoked ones included
    send([(READY, 0, None, None)])
    while True:
        if abandoned is not None and abandoned():
            return None
        if not held:
            batch = receive()
            if batch is None:
                return None
            if batch == REVOKE_MARK:  # nothing of ours was left to drop
                send([(REVOKED, 0, None, None)])
                continue
            held.extend(batch)
            read += len(batch)
            if acknowledge:
                send([(RECEIVED, batch[-1][0], read, None)])
            del batch  # an idle worker keeps no reference to a task's arguments...
            continue
        if not take_permit(False):
            # Taken back: this task and every later one up to the mark.
            held.clear()
            while True:
                message = receive()
                if message is None:
                    return None
                if message == REVOKE_MARK:
                    break
                read += len(message)
            send([(REVOKED, 0, None, None)])
            continue
        task_id, kind, payload = held.popleft()
        record, exit_status = run_one(codec, task_id, kind, payload, counters, send)
        del payload
        if record[0] == OK and (not held or counters[NOW] - counters[SENT_AT] >= DUE_NS):
            # About to wait for work, or a while since the last: the counters ride along.
            record = (OK, task_id, record[2], snapshot(counters))
        send([record])
        del record  # ...nor to its result (the stdlib's bpo-29861)
        if exit_status is not None:
            return exit_status
        done += 1
        if (max_tasks and done >= max_tasks) or (max_memory and resident_memory() > max_memory):
            send([(RETIRING, 0, None, snapshot(counters))])  # its final counters
            return None


def _initialized(
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
    send: Callable[[list[Any]], None],
    logger_name: str,
) -> bool:
    """Run the pool's initializer; on failure report it (INIT_FAIL) and return False."""
    if initializer is None:
        return True
    try:
        initializer(*initargs)
    except BaseException as exc:
        # Logged in the worker as well, like the stdlib's executor, so a logging
        # setup made by the initializer itself (a QueueHandler...) sees it.
        logging.getLogger(logger_name).critical("Exception in initializer:", exc_info=exc)
        info = (type(exc).__name__, short_repr(exc))
        send([(INIT_FAIL, 0, info, format_exception_text(exc))])
        return False
    return True


def _die_with_parent(parent_pid: int) -> None:
    """Exit as soon as the parent dies, even in the middle of a long task.

    Two mechanisms: ``PR_SET_PDEATHSIG`` makes the kernel SIGKILL this worker
    when its parent goes (fork and spawn; it works even while a task holds the
    GIL in C code), and the lifeline's watcher thread (covers forkserver,
    whose workers are the server's children).
    """
    if sys.platform.startswith("linux") and os.getppid() == parent_pid:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    on_parent_death(parent_pid, _exit_now)


def _exit_now() -> None:
    os._exit(1)


class _Channel:
    """A process worker's end of its socket: frames as ``Connection`` makes them, plus descriptors.

    Descriptors (``_transfer``: big buffers in shared memory) of a batch of
    tasks follow its frame, which then holds ``(message,)``, as one byte with
    ``SCM_RIGHTS`` data: frames are read with exact ``os.read`` calls (as
    cheap as a ``Connection``'s), and only that byte with ``recvmsg``. The
    descriptors are paired with the tasks that take them. Results that hold
    big buffers go the other way with their descriptors on the frame's first
    byte (the engine reads everything with ``recvmsg_into``).
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self.sock = sock
        self.fd = sock.fileno()
        self.fds: deque[int] = deque()

    def send(self, records: list[Any]) -> None:
        fds: list[int] | None = None
        transfers = []
        for i, record in enumerate(records):
            a = record[2]
            if type(a) is _transfer.Sending:
                if fds is None:
                    fds = []
                fds.extend(a.outgoing.fds())
                transfers.append(a.outgoing)
                records[i] = (record[0], record[1], a.message, record[3])
        data = pickle.dumps(records if fds is None else (records,), pickle.HIGHEST_PROTOCOL)
        n = len(data)
        header = _HEADER.pack(n) if n < 0x7FFFFFFF else _HEADER.pack(-1) + _BIG_HEADER.pack(n)
        frame = header + data
        if fds is None:
            sent = os.write(self.fd, frame)
            if sent < len(frame):
                self.sock.sendall(memoryview(frame)[sent:])
            return
        try:
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
            sent = self.sock.sendmsg([frame], rights)
            if sent < len(frame):
                self.sock.sendall(memoryview(frame)[sent:])
        finally:
            for transfer in transfers:
                transfer.release()

    def receive(self) -> Any:
        """The next message (a batch of tasks, None, or REVOKE_MARK); EOFError at the end."""
        fd = self.fd
        header = os.read(fd, 4)
        if len(header) < 4:
            header += self._read_exactly(4 - len(header))
        (size,) = _HEADER.unpack(header)
        if size == -1:
            (size,) = _BIG_HEADER.unpack(self._read_exactly(8))
        body = os.read(fd, size) if size else b""
        if len(body) < size:
            body += self._read_exactly(size - len(body))
        message = pickle.loads(body)
        if type(message) is tuple:  # descriptors follow, on one byte of their own
            self._receive_fds()
            message = attach_task_fds(message[0], self.fds)
        return message

    def _read_exactly(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = os.read(self.fd, min(n, _MAX_READ))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def _receive_fds(self) -> None:
        while True:
            data, ancdata, _flags, _addr = self.sock.recvmsg(1, ANCILLARY_SPACE)
            if not data:
                raise EOFError
            collect_fds(ancdata, self.fds)
            return

    def close(self) -> None:
        self.sock.close()
        while self.fds:
            os.close(self.fds.popleft())


def process_worker_main(
    conn: socket.socket,
    permits: Any,
    parent_pid: int,
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
    max_tasks: int | None,
    max_memory: int | None,
    logger_name: str,
) -> None:
    """Entry point of a pool worker process (the ``target`` of its Process)."""
    _die_with_parent(parent_pid)
    # Ctrl-C reaches the whole process group; the parent decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A pool worker may run tasks that start their own processes or pools.
    process.current_process()._config["daemon"] = False

    channel = _Channel(conn)
    send = channel.send

    def receive() -> Any:
        try:
            return channel.receive()
        except (EOFError, OSError):
            return None  # the parent closed the channel or died

    try:
        if not _initialized(initializer, initargs, send, logger_name):
            return
        exit_status = serve(receive, send, PickleCodec, max_tasks, max_memory, permits.acquire)
    except (BrokenPipeError, ConnectionResetError):
        return  # the parent went away while we were reporting
    finally:
        channel.close()
    if exit_status is not None:
        sys.exit(exit_status)


def thread_worker_main(
    inbox: Any,
    permits: Any,
    post: Callable[[list[Any]], None],
    abandoned: Callable[[], bool],
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
    max_tasks: int | None,
    logger_name: str,
) -> None:
    """Entry point of a ``ThreadPool`` worker thread."""
    if not _initialized(initializer, initargs, post, logger_name):
        return
    serve(
        inbox.get,
        post,
        ObjectCodec,
        max_tasks,
        None,
        permits.acquire,
        acknowledge=False,
        abandoned=abandoned,
    )
