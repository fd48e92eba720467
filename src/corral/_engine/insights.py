"""What a pool's workers did, as numbers and advice (``Pool.insights()``, issue 16).

The local engine fills these from what it knows itself (when each worker
started, became ready and ended, and why; the time spent pickling arguments
in callers and unpickling results in its thread) and from the counters each
worker sends on its records (``metering.WorkerCounters``). Cluster engines
fill what this process can see (tasks, pickling here), and say so in
``detail``.

``Insights.advice()`` turns the numbers into lines that say what to change;
the thresholds are below, each with the reason for its value.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .contract import CALL

__all__ = ("Insights", "WorkerInsight")

# Advice thresholds.
_SHORT_TASK = 0.001  # s of work per task below which the fixed cost per task shows
_TARGET_TASK = 0.01  # s of work per task the chunksize advice aims at
_MIN_TASKS = 50  # fewer tasks than this say nothing about task size
_BIG_MESSAGE = 10 << 20  # bytes per task (arguments or result) worth sharing instead
_PICKLING_SHARE = 0.5  # (un)pickling time above this share of the work time
_IDLE_SHARE = 0.5  # workers idle more than this share of the time the pool was in use
_MIN_ACTIVE = 0.2  # s of pool use below which idleness is noise
_RECYCLE_COUNT = 10  # recyclings worth a word when they cost startup time


@dataclass(frozen=True)
class WorkerInsight:
    """One worker's numbers (times in seconds).

    Attributes:
        worker: the worker's number in its pool.
        pid: its process id (None for threads and cluster workers).
        state: ``"running"``, or why it ended: ``"stopped"`` (the pool
            closed), ``"crashed"`` (died: a signal, ``os._exit``, out of
            memory), ``"task_timeout"``, ``"recycled"`` (maxtasksperchild or
            max_memory_per_child), ``"exited"`` (a task called ``sys.exit``),
            ``"startup"`` (died before it was ready).
        tasks: tasks finished (a chunk of a map is one task).
        items: items finished (a call is one item).
        lost: tasks it never finished: stopped at their task_timeout, lost
            with it when it died, or that called ``sys.exit``.
        busy: time running tasks, the time lost tasks ran included.
        idle: time ready but without work while the pool was in use (from
            its start-up to the last result of the pool).
        startup: time from its start to ready (initializer included).
        unpickling: time it spent unpickling arguments.
        pickling: time it spent pickling results.
        result_unpickling: time the parent spent unpickling its results.
        bytes_in: bytes of pickled arguments it read.
        bytes_out: bytes of pickled results it sent.
        lifetime: time since it started (to its end if it ended).
    """

    worker: int
    pid: int | None
    state: str
    tasks: int = 0
    items: int = 0
    busy: float = 0.0
    idle: float = 0.0
    startup: float = 0.0
    unpickling: float = 0.0
    pickling: float = 0.0
    result_unpickling: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    lifetime: float = 0.0
    lost: int = 0


@dataclass(frozen=True)
class Insights:
    """A pool's or executor's numbers, totals and advice; ``str()`` is the summary.

    Attributes:
        backend: ``"process"``, ``"thread"``, ``"ray"``, ``"dask"``.
        workers: the live workers, then the last workers that ended.
        tasks, items, busy, idle, startup, bytes_in, bytes_out, lost: sums
            over every worker the pool ever had.
        pickling: time pickling arguments (in the callers) and results (in
            the workers).
        unpickling: time unpickling arguments (workers) and results (here).
        restarts: workers replaced while the pool ran, by reason (the
            ``WorkerInsight.state`` values other than running and stopped).
        detail: what the backend could not measure (empty for local pools).
    """

    backend: str
    workers: tuple[WorkerInsight, ...] = ()
    tasks: int = 0
    items: int = 0
    busy: float = 0.0
    idle: float = 0.0
    startup: float = 0.0
    pickling: float = 0.0
    unpickling: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    restarts: Mapping[str, int] = field(default_factory=dict)
    detail: str = ""
    lost: int = 0

    def advice(self) -> list[str]:
        """Lines saying what to change, most useful first; empty when nothing stands out."""
        lines: list[str] = []
        if self.tasks >= _MIN_TASKS and self.busy / self.tasks < _SHORT_TASK:
            per_task = self.busy / self.tasks
            items = max(1.0, self.items / self.tasks)
            suggested = math.ceil(items * _TARGET_TASK / max(per_task, 1e-7))
            # Never more than a quarter of each worker's share of what was run.
            workers = max(1, len(self.workers))
            suggested = min(suggested, max(1, math.ceil(self.items / (4 * workers))))
            per = "1 item" if round(items) == 1 else f"{items:.0f} items"
            lines.append(
                f"chunks are too small: {per_task * 1e3:.2f} ms of work per task "
                f"({per}), about the fixed cost of sending a task; try "
                f"chunksize={suggested} (about {_TARGET_TASK * 1e3:.0f} ms of work per task), "
                "or batch apply_async/submit calls into one map"
            )
        if self.tasks and self.bytes_in / self.tasks > _BIG_MESSAGE:
            lines.append(
                f"arguments of {self.bytes_in / self.tasks / 1e6:.0f} MB per task: pass large "
                "read-only data once with pool.share(obj) (or load it in an initializer)"
            )
        if self.tasks and self.bytes_out / self.tasks > _BIG_MESSAGE:
            lines.append(
                f"results of {self.bytes_out / self.tasks / 1e6:.0f} MB per task: return "
                "less (a summary, a file name) or write into shared memory"
            )
        moving = self.pickling + self.unpickling
        if moving > 0.1 and moving > _PICKLING_SHARE * self.busy:
            lines.append(
                f"pickling and unpickling took {moving:.2f} s against {self.busy:.2f} s of "
                "work: send less data per task (pool.share() for big inputs, smaller results)"
            )
        active = self.busy + self.idle
        # When as many tasks were lost (timeouts, crashes) as finished, the
        # restarts advice comes first: the idleness around them says little.
        mostly_lost = self.lost and self.lost >= self.tasks
        if active > _MIN_ACTIVE and self.idle > _IDLE_SHARE * active and not mostly_lost:
            live = sum(1 for w in self.workers if w.state == "running") or len(self.workers)
            lines.append(
                f"workers were idle {100 * self.idle / active:.0f}% of the time: the caller "
                f"produces tasks too slowly, or there are too few tasks for {live} workers; "
                "submit more at once (map/imap with a chunksize) or use fewer workers"
            )
        if self.startup > 1.0 and self.startup > self.busy:
            lines.append(
                f"workers spent {self.startup:.1f} s starting against {self.busy:.1f} s of "
                "work: keep one pool for many calls, or start workers faster (the 'fork' or "
                "'forkserver' start method, lighter imports and initializer)"
            )
        lines.extend(self._restart_advice())
        return lines

    def _restart_advice(self) -> list[str]:
        lines = []
        crashed = self.restarts.get("crashed", 0) + self.restarts.get("startup", 0)
        if crashed:
            lines.append(
                f"{crashed} worker(s) died and were replaced (a signal, os._exit, out of "
                "memory?): their tasks failed with WorkerLostError"
            )
        if self.restarts.get("task_timeout", 0):
            lines.append(
                f"{self.restarts['task_timeout']} task(s) ran past task_timeout and their "
                "workers were replaced: raise task_timeout or split the work"
            )
        recycled = self.restarts.get("recycled", 0)
        if recycled >= _RECYCLE_COUNT:
            lines.append(
                f"workers were recycled {recycled} times (maxtasksperchild or "
                "max_memory_per_child), each restart costing start-up time: raise the limit"
            )
        return lines

    def summary(self) -> str:
        """A table of the workers, the totals and the advice, ready to print."""
        live = sum(1 for w in self.workers if w.state == "running")
        out = [
            f"corral insights ({self.backend} backend, {live} live workers, "
            f"{self.tasks} tasks, {self.items} items"
            + (f", {self.lost} lost)" if self.lost else ")")
        ]
        if self.detail:
            out.append(self.detail)
        header = (
            f"{'worker':>6} {'pid':>7} {'state':>12} {'tasks':>7} {'items':>9} {'busy s':>8} "
            f"{'idle s':>8} {'start s':>7} {'pickle s':>8} {'unpick s':>8} {'MB in':>7} "
            f"{'MB out':>7}"
        )
        out.append(header)
        out.extend(_row(w) for w in self.workers)
        out.append(
            f"{'total':>6} {'':>7} {'':>12} {self.tasks:>7} {self.items:>9} {self.busy:>8.3f} "
            f"{self.idle:>8.3f} {self.startup:>7.3f} {self.pickling:>8.3f} "
            f"{self.unpickling:>8.3f} {self.bytes_in / 1e6:>7.1f} {self.bytes_out / 1e6:>7.1f}"
        )
        if self.restarts:
            out.append(
                "restarts: " + ", ".join(f"{k} {v}" for k, v in sorted(self.restarts.items()))
            )
        advice = self.advice()
        out.append("advice:" if advice else "advice: nothing stands out")
        out.extend(f"  - {line}" for line in advice)
        return "\n".join(out)

    def __str__(self) -> str:
        return self.summary()


def _row(w: WorkerInsight) -> str:
    pid = w.pid if w.pid is not None else "-"
    return (
        f"{w.worker:>6} {pid:>7} {w.state:>12} {w.tasks:>7} {w.items:>9} {w.busy:>8.3f} "
        f"{w.idle:>8.3f} {w.startup:>7.3f} {w.pickling:>8.3f} "
        f"{w.unpickling + w.result_unpickling:>8.3f} {w.bytes_in / 1e6:>7.1f} "
        f"{w.bytes_out / 1e6:>7.1f}"
    )


def totals(
    backend: str,
    workers: Iterable[WorkerInsight],
    ended_sum: WorkerInsight | None,
    args_pickling: float,
    restarts: Mapping[str, int],
    shown: tuple[WorkerInsight, ...],
    detail: str = "",
) -> Insights:
    """Insights whose totals add ``workers`` and ``ended_sum`` (ended workers no longer shown)."""
    every = list(workers)
    if ended_sum is not None:
        every.append(ended_sum)
    return Insights(
        backend=backend,
        workers=shown,
        tasks=sum(w.tasks for w in every),
        items=sum(w.items for w in every),
        busy=sum(w.busy for w in every),
        idle=sum(w.idle for w in every),
        startup=sum(w.startup for w in every),
        pickling=args_pickling + sum(w.pickling for w in every),
        unpickling=sum(w.unpickling + w.result_unpickling for w in every),
        bytes_in=sum(w.bytes_in for w in every),
        bytes_out=sum(w.bytes_out for w in every),
        restarts=dict(restarts),
        detail=detail,
        lost=sum(w.lost for w in every),
    )


def add(a: WorkerInsight | None, b: WorkerInsight) -> WorkerInsight:
    """The sum of two workers' numbers (for the ended workers' running total)."""
    if a is None:
        return b
    return WorkerInsight(
        worker=-1,
        pid=None,
        state="ended",
        tasks=a.tasks + b.tasks,
        items=a.items + b.items,
        busy=a.busy + b.busy,
        idle=a.idle + b.idle,
        startup=a.startup + b.startup,
        unpickling=a.unpickling + b.unpickling,
        pickling=a.pickling + b.pickling,
        result_unpickling=a.result_unpickling + b.result_unpickling,
        bytes_in=a.bytes_in + b.bytes_in,
        bytes_out=a.bytes_out + b.bytes_out,
        lifetime=a.lifetime + b.lifetime,
        lost=a.lost + b.lost,
    )


def of_handle(handle: Any, state: str, last_done: float, now: float | None = None) -> WorkerInsight:
    """A local worker's numbers from its handle (``handles.WorkerHandle``) and counters."""
    if now is None:
        now = time.monotonic()
    end = handle.ended_at if handle.ended_at is not None else now
    c = handle.counters or (0, 0, 0, 0, 0, 0, 0)
    tasks, items, unpickle_ns, busy_ns, pickle_ns, bytes_in, bytes_out = c
    busy = busy_ns / 1e9 + handle.lost_busy  # a task that never finished ran too
    unpickling = unpickle_ns / 1e9
    pickling = pickle_ns / 1e9
    startup = (handle.ready_at if handle.ready_at is not None else end) - handle.created_at
    idle = 0.0
    if handle.ready_at is not None:
        used_until = min(end, max(last_done, handle.ready_at))
        idle = max(0.0, used_until - handle.ready_at - busy - unpickling - pickling)
    return WorkerInsight(
        worker=handle.worker_id,
        pid=handle.pid,
        state=state,
        tasks=tasks,
        items=items,
        busy=busy,
        idle=idle,
        startup=max(0.0, startup),
        unpickling=unpickling,
        pickling=pickling,
        result_unpickling=handle.result_unpickle_ns / 1e9,
        bytes_in=bytes_in,
        bytes_out=bytes_out,
        lifetime=end - handle.created_at,
        lost=handle.lost,
    )


class ParentCounts:
    """What a cluster engine (Ray, Dask) measures in this process, for ``insights()``.

    Its workers are the cluster's: their busy, idle and start-up times are not
    known here; tasks, items and the time spent pickling tasks here are.
    """

    __slots__ = ("encode_ns", "items", "restarts", "tasks")

    def __init__(self) -> None:
        self.encode_ns = 0
        self.tasks = 0
        self.items = 0
        self.restarts: dict[str, int] = {}

    def done(self, kind: int, ok: bool, value: Any) -> None:
        """Count a task whose outcome is being delivered."""
        self.tasks += 1
        self.items += len(value) if ok and kind != CALL and type(value) is list else 1

    def restarted(self, reason: str) -> None:
        self.restarts[reason] = self.restarts.get(reason, 0) + 1

    def insights(self, backend: str) -> Insights:
        return Insights(
            backend=backend,
            tasks=self.tasks,
            items=self.items,
            pickling=self.encode_ns / 1e9,
            restarts=dict(self.restarts),
            detail=(
                f"(the {backend} cluster's workers are not measured from here: per-worker "
                "rows, busy, idle and start-up times are missing; tasks, items and the "
                "pickling of tasks in this process are counted)"
            ),
        )
