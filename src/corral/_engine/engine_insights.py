"""The local engine's bookkeeping for ``insights()`` and progress: half of ``LocalEngine``.

What it keeps (all touched by the engine thread, except ``_encode_ns`` and
``_encoded``, which callers add to in ``new_task``, and ``_last_done``, which a
direct call sets): the last ``_ENDED_SHOWN`` workers that ended with their
numbers, the sum of every ended worker (for exact totals), restarts by reason,
the callers' pickling time (one task in ``ENCODE_SAMPLE + 1`` timed) and when
the last outcome arrived (the end of the window in which idleness counts).
How a worker's end gets its reason is ``_end_reason``; see docs/architecture.md
("Progress and insights").
"""

from __future__ import annotations

import logging
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
        now = time.monotonic()
        last_done = self._last_done
        live = [
            _insights.of_handle(w, "running", last_done, now) for w in list(self._workers.values())
        ]
        return _insights.totals(
            "thread" if self.codec is ObjectCodec else "process",
            live,
            self._ended_sum,
            self._encode_ns / 1e9,
            self._restarts,
            tuple(live) + tuple(self._ended),
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

    def _note_end(self, worker: WorkerHandle, reason: str) -> None:
        """Record the numbers of a worker that ended, and why."""
        worker.ended_at = time.monotonic()
        numbers = _insights.of_handle(worker, reason, self._last_done, worker.ended_at)
        self._ended.append(numbers)
        self._ended_sum = _insights.add(self._ended_sum, numbers)
        if reason != "stopped":
            self._restarts[reason] = self._restarts.get(reason, 0) + 1
