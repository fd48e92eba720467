"""The local engine's bookkeeping for ``insights()`` and progress: half of ``LocalEngine``.

What it keeps (all touched by the engine thread, except ``_encode_ns`` and
``_encoded``, which callers add to in ``new_task``, and ``_last_done``, which a
direct call sets): the last ``_ENDED_SHOWN`` workers that ended with their
numbers, the sum of every ended worker (for exact totals), restarts by reason,
the callers' pickling time (one task in ``ENCODE_SAMPLE + 1`` timed) and when
the last outcome arrived (the end of the window in which idleness counts).
How a worker's end gets its reason is ``_end_reason``; see docs/architecture.md
("Progress and insights").

A worker ends for insights when the engine decides it (``_end_now``: its task
timed out, it said it retires or exits, it finished the last task of its
``max_tasks``), before the caller gets the outcome, or else when it dies. Its
row says so at once; its numbers join the ended workers when it dies (its last
counters may still arrive). ``_insights_lock`` makes each change (an end, a
worker leaving ``_workers``) and each ``insights()`` snapshot whole, so a
reader in another thread never counts a worker twice or not at all; the
engine takes it only when a worker ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from . import insights as _insights
from .handles import WorkerHandle
from .protocol import ObjectCodec
from .states import STOPPED, STOPPING

_log = logging.getLogger("multiprocessing")

_ENDED_SHOWN = 32  # ended workers insights() lists one by one
ENCODE_SAMPLE = 7  # time one task's pickling in 8 (a mask)


class InsightsMixin:
    """The insights half of ``LocalEngine`` (see the module docstring)."""

    # Engine state this half reads (set in LocalEngine.__init__).
    _workers: dict[int, WorkerHandle]
    codec: Any
    state: str

    def _init_insights(self) -> None:
        self._ended: deque[_insights.WorkerInsight] = deque(maxlen=_ENDED_SHOWN)
        self._ended_sum: _insights.WorkerInsight | None = None
        self._restarts: dict[str, int] = {}
        self._encode_ns = 0  # callers' time pickling tasks (new_task), estimated
        self._encoded = 0  # tasks encoded (racy across caller threads: a sampling clock)
        self._last_done = 0.0  # when the last outcome arrived
        self._insights_lock = threading.Lock()

    def _on_progress(self, worker: WorkerHandle, task_id: int, done: int) -> None:
        """A running chunk reported ``done`` items finished: tell its caller."""
        held = worker.held
        if held and held[0].task_id == task_id and held[0].progress is not None:
            try:
                held[0].progress(done)
            except BaseException:
                _log.exception("a progress callback raised")

    def insights(self) -> _insights.Insights:
        """What this engine measured of its workers so far (``insights.Insights``)."""
        with self._insights_lock:
            now = time.monotonic()
            last_done = self._last_done
            workers = list(self._workers.values())
            ended_sum = self._ended_sum
            ended = tuple(self._ended)
            restarts = dict(self._restarts)
        running = []
        ending = []  # the engine ended them; not yet dead
        for w in workers:
            if w.ended_at is None:
                running.append(_insights.of_handle(w, "running", last_done, now))
            else:
                ending.append(_insights.of_handle(w, w.end_reason or "ended", last_done))
        return _insights.totals(
            "thread" if self.codec is ObjectCodec else "process",
            running + ending,
            ended_sum,
            self._encode_ns / 1e9,
            restarts,
            tuple(running) + tuple(ending) + ended,
        )

    def note_done_directly(self) -> None:
        """(direct.py) A caller got a task's outcome from a borrowed worker: the pool is in use."""
        self._last_done = time.monotonic()

    def _end_reason(self, worker: WorkerHandle) -> str:
        """Why a worker that died ended (the reason the engine set, or what its state says)."""
        if worker.end_reason is not None:
            return worker.end_reason
        if worker.quota_reached:
            return "recycled"
        if worker.stopping or self.state in (STOPPING, STOPPED):
            return "stopped"
        return "crashed" if worker.ready else "startup"

    def _end_now(self, worker: WorkerHandle, reason: str, lost_time: float | None = None) -> None:
        """The engine ends ``worker`` for ``reason``: insights show it at once.

        ``lost_time``: the seconds its running task ran, a task that will never
        finish (it counts as busy time, and the task as lost). Call before
        delivering the outcome that tells the caller, so that the caller sees it.
        """
        now = time.monotonic()
        with self._insights_lock:
            if lost_time is not None:
                worker.lost += 1
                worker.lost_busy += max(0.0, lost_time)
                self._last_done = now  # an outcome: the pool was in use until now
            worker.end_reason = reason
            if worker.ended_at is None:
                worker.ended_at = now
                if reason != "stopped":
                    self._restarts[reason] = self._restarts.get(reason, 0) + 1

    def _note_end(self, worker: WorkerHandle) -> None:
        """A worker died: move its final numbers to the ended workers (and count its end)."""
        if worker.ended_at is None:
            running = time.monotonic() - worker.running_since if worker.held else None
            self._end_now(worker, self._end_reason(worker), running)
        with self._insights_lock:
            reason = worker.end_reason or "ended"
            numbers = _insights.of_handle(worker, reason, self._last_done, worker.ended_at)
            self._ended.append(numbers)
            self._ended_sum = _insights.add(self._ended_sum, numbers)
            del self._workers[worker.worker_id]
