"""Direct calls: a caller that blocks on one task runs it on a parked worker itself.

Through the engine thread a round trip costs two thread hand-offs in the parent
(caller -> engine to send, engine -> caller to deliver) on top of the pipe round
trip, which roughly doubles it. For ``Pool.apply`` the caller waits anyway, so
it may skip the engine thread:

    caller thread                                    worker process
    Engine.borrow(): take a parked worker (an idle
      worker whose channel the engine is not
      watching; the engine still watches its death)
    send [(id, CALL, payload)] ──── its channel ───▶ run it
    poll(channel, death) ◀───────── its channel ──── [(RECEIVED, id), (OK, id, blob)]
    Engine.give_back(): park it again
    task.on_done(ok, value)

Only the plain case is handled here: the task's own final record and nothing
else. Anything more (the worker died, exited, retired, the channel closed, or
Ctrl-C arrived) hands the worker, the task and the records read so far back to
the engine thread (``Engine.hand_back``), which treats them exactly as if it had
sent the task itself. A caller interrupted while sending cannot know whether the
task left; the engine then retires that worker, whose death tells it
(``received_count``) whether to requeue the task.
"""

from __future__ import annotations

import select
import time
from typing import Any

from .protocol import EXITING, INIT_FAIL, OK, READY, RECEIVED, RETIRING, REVOKED, outcome_of

_NOT_FINAL = frozenset({RECEIVED, EXITING, INIT_FAIL, RETIRING, READY, REVOKED})


class _HandBack(Exception):
    """Something other than the plain outcome arrived: the engine takes over."""

    def __init__(self, closed: bool) -> None:
        self.closed = closed


def run_direct(engine: Any, task: Any, *, queued: bool = False) -> bool:
    """Run ``task`` on a borrowed worker; False if no worker is parked.

    ``queued``: the task was submitted to the engine too (a future's task); it
    runs here only if ``task.claim()`` takes it before the engine does.
    When True, ``task.on_done`` has been called, or will be by the engine.
    """
    worker = engine.borrow()
    if worker is None:
        return False
    if queued:
        if task.claim is None or not task.claim():
            engine.give_back(worker)  # the engine has it, or it was cancelled
            return False
        task.taken = True  # the engine drops it from its queue (or its claim fails)
    task_id = engine.new_task_id()
    records: list[Any] = []
    sent = False
    sent_at = time.monotonic()  # when it started, as far as the engine knows (insights)
    try:
        worker.tasks_sent += 1
        worker.sent_count += 1
        worker.post_permits(1)
        sent = True  # from here on the worker may have it (see the module docstring)
        fds = task.transfer.fds() if task.transfer is not None else None
        if not worker.send([(task_id, task.kind, task.payload)], fds):
            _flush(worker)
        ok, value = _await_outcome(worker, task_id, records)
    except _HandBack as back:
        engine.hand_back(worker, task, task_id, records, closed=back.closed, since=sent_at)
        return True
    except BaseException:  # Ctrl-C, or an OS error on the channel
        engine.hand_back(
            worker, task, task_id, records, closed=False, retire=True, sent=sent, since=sent_at
        )
        raise
    engine.note_done_directly()
    engine.give_back(worker)
    engine.settle(task, ok, value)
    return True


def _flush(worker: Any) -> None:
    poller = select.poll()
    poller.register(worker.channel_fd, select.POLLOUT)
    poller.register(worker.death_fd, select.POLLIN)
    while not worker.flush():
        for fd, _event in poller.poll():
            if fd == worker.death_fd:
                raise _HandBack(closed=False)


def _await_outcome(worker: Any, task_id: int, records: list[Any]) -> tuple[bool, Any]:
    poller = select.poll()
    poller.register(worker.channel_fd, select.POLLIN)
    poller.register(worker.death_fd, select.POLLIN)
    while True:
        died = False
        for fd, _event in poller.poll():
            if fd == worker.death_fd:
                died = True
        new, closed = worker.read_records()
        records.extend(new)
        if closed or died:
            raise _HandBack(closed=closed)
        if not records:
            continue
        status, record_id, a, b = records[-1]
        if status in _NOT_FINAL or record_id != task_id:
            if status == RECEIVED and record_id == task_id and len(records) == 1:
                worker.received_count = a
                records.clear()
                continue
            raise _HandBack(closed=False)
        if len(records) > 2 or (len(records) == 2 and records[0][:2] != (RECEIVED, task_id)):
            raise _HandBack(closed=False)
        if len(records) == 2:
            worker.received_count = records[0][2]
        records.clear()
        if status == OK and b is not None:
            worker.counters = b  # insights: the worker's latest counters
        return outcome_of(worker.codec, status, a, b)
