"""What a worker measures of its own work, and how it runs a chunk that reports progress.

Both run inside the worker (process or thread) and reach the engine on the
records the worker sends anyway (``protocol``: "Progress and counters"):

* ``WorkerCounters``: cumulative counts (tasks, items, time spent unpickling
  arguments, running, pickling results, bytes read and written) that ride on
  an OK record when the worker is about to wait for work, or every
  ``COUNTERS_INTERVAL`` seconds while it is busy. Always on: a few clock reads
  and additions per task (docs/performance.md has the measured cost).
* ``run_reporting``: a MAP/STARMAP chunk run in sub-batches that grow while
  they are quick, with a PROGRESS record at most every ``PROGRESS_INTERVAL``
  seconds. Only tasks whose call asked for progress run this way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import islice, starmap
from typing import Any

from .. import _transfer
from .protocol import COUNTERS_INTERVAL, PROGRESS, PROGRESS_INTERVAL

_COUNTERS_INTERVAL_NS = int(COUNTERS_INTERVAL * 1e9)
# Seconds of work per sub-batch of a chunk that reports progress: a few
# sub-batches per PROGRESS_INTERVAL, and a chunk of tiny items takes two or three.
_SUB_BATCH = 0.02


class WorkerCounters:
    """Cumulative counters of one worker (its own thread only)."""

    __slots__ = (
        "busy_ns",
        "bytes_in",
        "bytes_out",
        "items",
        "now",
        "pickle_ns",
        "sent_at",
        "sized",
        "tasks",
        "unpickle_ns",
    )

    def __init__(self, sized: bool = True) -> None:
        self.sized = sized  # tasks and results are bytes (process workers), not objects
        self.tasks = 0
        self.items = 0
        self.unpickle_ns = 0
        self.busy_ns = 0
        self.pickle_ns = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.sent_at = 0  # perf_counter_ns of the last snapshot sent
        self.now = 0  # perf_counter_ns at the end of the last task

    def add(
        self, items: int, t0: int, t1: int, t2: int, t3: int, payload: Any, result: Any
    ) -> None:
        """Count one finished task: read from ``t0`` to ``t1``, run to ``t2``, encoded by ``t3``."""
        self.tasks += 1
        self.items += items
        self.unpickle_ns += t1 - t0
        self.busy_ns += t2 - t1
        self.pickle_ns += t3 - t2
        self.now = t3
        if self.sized:
            self.bytes_in += len(payload) if type(payload) is bytes else _size(payload)
            self.bytes_out += len(result) if type(result) is bytes else _size(result)

    def due(self) -> bool:
        """Whether a busy worker should send its counters now (the last task's end is now)."""
        return self.now - self.sent_at >= _COUNTERS_INTERVAL_NS

    def snapshot(self) -> tuple[int, ...]:
        """The counters as the tuple an OK record carries (and note that they were sent)."""
        self.sent_at = self.now
        return (
            self.tasks,
            self.items,
            self.unpickle_ns,
            self.busy_ns,
            self.pickle_ns,
            self.bytes_in,
            self.bytes_out,
        )


def _size(blob: Any) -> int:
    """Bytes of an encoded payload or result (0 for objects passed as they are)."""
    kind = type(blob)
    if kind is bytes:
        return len(blob)
    if kind is tuple and len(blob) == 2 and type(blob[1]) is bytes:
        return len(blob[0]) + len(blob[1])  # (function reference, arguments)
    if kind is _transfer.Received or kind is _transfer.Sending:  # big buffers in shared memory
        try:
            return _transfer.size_of(blob.message)
        except (TypeError, ValueError):
            return 0
    return 0


def run_reporting(
    fn: Callable[..., Any],
    items: list[Any],
    star: bool,
    task_id: int,
    send: Callable[[list[Any]], None],
) -> list[Any]:
    """``[fn(item) ...]`` (``fn(*item)`` if ``star``) with a PROGRESS record now and then.

    The first sub-batch is one item; each next one is sized from the pace so
    far to take about 20 ms, so a chunk of tiny items costs two or three slices
    and a chunk of slow items reports after each item (at most every
    ``PROGRESS_INTERVAL`` seconds).
    """
    results: list[Any] = []
    # One iterator over the whole chunk, no slices (they would copy the list):
    # a chunk of tiny items runs its first item alone, then the rest in one go.
    mapped = (starmap if star else map)(fn, items)
    n = len(items)
    done = 0
    step = 1
    clock = time.monotonic
    last_report = clock()
    while done < n:
        started = clock()
        if step >= n - done:
            results.extend(mapped)
            done = n
        elif step == 1:
            results.append(next(mapped))
            done += 1
        else:
            results.extend(islice(mapped, step))
            done += step
        now = clock()
        # The next sub-batch: about _SUB_BATCH seconds of work at the pace so far.
        took = now - started
        step = max(1, int(_SUB_BATCH * step / took)) if took > 0 else n
        if done < n and now - last_report >= PROGRESS_INTERVAL:
            send([(PROGRESS, task_id, done, None)])
            last_report = now
    return results
