"""What a worker measures of its own work, and how it runs a chunk that reports progress.

Both run inside the worker (process or thread) and reach the engine on the
records the worker sends anyway (``protocol``: "Progress and counters"):

* the counters (``new_counters``): cumulative counts (tasks, items, time spent unpickling
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

DUE_NS = int(COUNTERS_INTERVAL * 1e9)  # a busy worker sends its counters this often
# Seconds of work per sub-batch of a chunk that reports progress: a few
# sub-batches per PROGRESS_INTERVAL, and a chunk of tiny items takes two or three.
_SUB_BATCH = 0.02


# A worker's counters: one list of ints, updated in place by ``worker.run_one``
# (list items are the cheapest thing to add to in CPython). The first seven
# are what an OK record carries, in this order.
TASKS, ITEMS, UNPICKLE_NS, BUSY_NS, PICKLE_NS, BYTES_IN, BYTES_OUT = range(7)
NOW = 7  # perf_counter_ns at the end of the last task
SENT_AT = 8  # NOW when the counters were last sent
SIZED = 9  # 1: tasks and results are bytes (process workers); 0: objects (threads)


def new_counters(sized: bool) -> list[int]:
    """Fresh counters for one worker."""
    return [0, 0, 0, 0, 0, 0, 0, 0, 0, int(sized)]


def snapshot(counters: list[int]) -> tuple[int, ...]:
    """The counters as the tuple an OK record carries (and note that they were sent)."""
    counters[SENT_AT] = counters[NOW]
    return tuple(counters[:7])


def size(blob: Any) -> int:
    """Bytes of an encoded payload or result."""
    kind = type(blob)
    if kind is bytes:
        return len(blob)
    if kind is tuple and len(blob) == 2 and type(blob[1]) is bytes:
        return len(blob[0]) + len(blob[1])  # (function reference, arguments)
    return _size(blob)


def _size(blob: Any) -> int:
    """``size`` of what is not plain bytes (0 for objects passed as they are)."""
    kind = type(blob)
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
