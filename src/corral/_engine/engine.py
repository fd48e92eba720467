"""The local engine: one thread that owns every task and every worker (``contract.Engine``).

How a task travels (``Pool.apply_async``, ``ProcessPoolExecutor.submit``)::

    caller thread                     engine thread                      worker process
    -------------                     -------------                      --------------
    engine.new_task(): the codec
    pickles fn+args, big buffers
    into shared memory (_transfer)
    (errors raise here, at once)
    submit(Task) ─────────append──────▶ incoming deque
    wake byte ───────────────────────▶ wake pipe ─┐
                                                  ▼
                                      selector.select() on: wake pipe,
                                      every worker's channel, every
                                      worker's death fd (pidfd), timers
                                                  │
                                      queue ──▶ dispatch: each worker gets
                                      at most `prefetch` tasks; the engine
                                      records them in worker.held (FIFO)
                                                  │ [(id, kind, payload)...] + fds
                                                  └──── private socket ────▶ run in order,
                                                                          one record per task
                                      read records ◀──── private socket ──── [(OK, id, blob)]
                                      held.popleft() is that task;
                                      unpickle result (errors fail
                                      only this task)
    AsyncResult / Future ◀─on_done────┘
    (caller wakes up)

    worker death (pidfd readable): drain its channel, fail held[0] with
        WorkerLostError (held[0] is the task it was running), put held[1:]
        (sent, never started) back at the front of the queue, start a
        replacement.
    deadline (timer heap): held[0] of a worker ran past its task_timeout:
        fail it with TaskTimeoutError, requeue the rest, SIGTERM the worker,
        SIGKILL it 0.5 s later if it is still there.
    recycling: the worker stops itself after max_tasks or above max_memory
        (RETIRING record); whatever it still held is requeued.
    start-up: a worker gets tasks only after its READY record (its initializer
        ran). Three workers in a row that die before READY, none ready in
        between, break the pool with WorkerStartupError (a spawn script
        without the main guard would otherwise restart workers forever).
    taking back: when nothing is queued and a worker is idle, a worker whose
        current task has run for 10 ms (or 4x the average task) gives back
        the tasks it was sent ahead and has not started (permits: see
        protocol.py), so no task waits behind a hung one.

Only the engine thread touches the queue, the workers and the timers; callers
talk to it through ``submit`` (an append and a wake-up) and ``_call_soon``.
One exception, for latency: when nothing is queued the engine *parks* its idle
process workers (stops watching their channel, keeps watching their death), and
a caller blocked on one task (``Pool.apply``, ``Future.result()``) may borrow a
parked worker under ``_lend_lock`` and run the task over its channel itself;
anything but the plain outcome hands the worker back (``direct.py``).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import selectors
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from time import perf_counter_ns
from typing import Any

from .. import _popen_fork, _transfer
from ..errors import (
    BrokenProcessPool,
    InitializerError,
    TaskExitError,
    TaskTimeoutError,
    WorkerLostError,
    WorkerStartupError,
    describe_exitcode,
)
from .contract import Task
from .direct import run_direct
from .engine_insights import ENCODE_SAMPLE, InsightsMixin
from .handles import WorkerHandle
from .lending import LendingMixin
from .protocol import (
    CALL,
    EXITING,
    INIT_FAIL,
    MAX_FDS,
    OK,
    PROGRESS,
    READY,
    RECEIVED,
    REPORT_PROGRESS,
    RETIRING,
    REVOKE_MARK,
    REVOKED,
    ObjectCodec,
    outcome_of,
    with_cause,
)
from .states import _CHANNEL, _DEATH, _WAKE, CLOSING, RUNNING, STOPPED, STOPPING

_log = logging.getLogger("multiprocessing")
_Received = _transfer.Received  # a result with big buffers in shared memory


_KILL_GRACE = 0.5  # seconds between SIGTERM and SIGKILL
_PREFETCH_TARGET = 0.002  # hand a worker about this many seconds of work at once
_PREFETCH_MAX = 64
# Tasks sent ahead to a worker are taken back for an idle worker once the
# worker's current task has run this long (or 4 times the average task, if more).
_TAKE_BACK_AFTER = 0.01
# Workers that die before READY, in a row, before the pool gives up (WorkerStartupError).
_STARTUP_DEATHS_LIMIT = 3
_TIMED_RESULT = 4096  # bytes of a pickled result above which its unpickling is timed


class LocalEngine(LendingMixin, InsightsMixin):
    """The local engine: worker processes or threads of this machine (``contract.Engine``).

    See the module docstring for the flow. Args:
        spawner: starts one worker (``ProcessSpawner`` or ``ThreadSpawner``).
        size: how many workers to keep.
        isolate_failures: if False, the first worker death breaks the whole
            pool (the stdlib's executor behaviour); by default only the task
            the worker held fails.
        name: used for the engine thread's name.
    """

    def __init__(
        self,
        spawner: Any,
        size: int,
        *,
        isolate_failures: bool = True,
        name: str = "corral-engine",
    ) -> None:
        self.spawner = spawner
        self.codec = spawner.codec
        self._encode_call = spawner.codec.encode_call
        self._shares: weakref.WeakSet[Any] = weakref.WeakSet()  # released when it finishes
        self.size = size
        self.isolate_failures = isolate_failures
        self.state = RUNNING
        self.broken: BaseException | None = None
        self._incoming: deque[Task] = deque()
        self._requests: deque[Callable[[], None]] = deque()
        self._queue: deque[Task] = deque()
        self._workers: dict[int, WorkerHandle] = {}
        self._worker_ids = itertools.count()
        self._task_ids = itertools.count(1)
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = itertools.count()
        self._holds = 0  # front-end feeders still submitting after close()
        self._after_step: list[Callable[[], None]] = []
        # Parked workers: idle process workers whose channel the engine does not
        # watch, so that a synchronous caller may borrow one (see direct.py).
        # Guarded by _lend_lock, the one piece of state callers touch.
        self._lend_lock = threading.Lock()
        self._parked: list[WorkerHandle] = []
        self._lent = 0  # workers a caller is using right now
        self._want_back = False  # the engine needs lent workers back (work queued, closing)
        self._lending = spawner.lendable and not spawner.max_tasks
        self._avg_task_time = 0.0
        self._take_back_at: float | None = None  # the pending take-back timer's time
        self._startup_deaths = 0  # workers in a row that died before READY
        self._init_insights()
        self._stop_error: BaseException | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wake_pending = False
        self._wake_lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, (_WAKE, None))
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.stopped = threading.Event()

    # ----------------------------------------------------------- caller side

    def start(self) -> None:
        """Start the engine thread and the first workers; raise if a worker cannot start."""
        if self.codec is not ObjectCodec:
            _transfer.engine_started()
        self.thread.start()
        self._started.wait()
        if self._start_error is not None:
            self.thread.join()
            raise self._start_error

    def new_task(
        self,
        kind: int,
        fn: Any,
        args: Any,
        kwargs: Any,
        on_done: Callable[[bool, Any], None],
        *,
        timeout: float | None = None,
        claim: Callable[[], bool] | None = None,
        tag: Any = None,
        progress: Callable[[int], None] | None = None,
    ) -> Task:
        """Encode a task with the workers' codec, in the caller's thread (errors raise here)."""
        self._encoded += 1
        if self._encoded & ENCODE_SAMPLE:
            payload, size, transfer = self._encode_call(fn, args, kwargs)
        else:  # one task in 8 is timed (insights): the clock costs more than an increment
            started = perf_counter_ns()
            payload, size, transfer = self._encode_call(fn, args, kwargs)
            self._encode_ns += (perf_counter_ns() - started) * (ENCODE_SAMPLE + 1)
        task = Task(kind, payload, on_done, timeout, claim, tag, size, progress)
        if transfer is not None:
            task.transfer = transfer
        return task

    def share(self, obj: Any) -> Any:
        """Place ``obj`` in shared memory once (process workers) and return its handle.

        Thread workers share the process's memory: the handle holds the
        object itself. Handles are released when the engine finishes.
        """
        if self.codec is ObjectCodec:
            handle: Any = _transfer.SharedInProcess(obj)
            ObjectCodec.shared = True
        else:
            handle = _transfer.Shared(obj)
        self._shares.add(handle)
        return handle

    def run_direct(self, task: Task, *, queued: bool = False) -> bool:
        """Run ``task`` on a parked worker from the calling thread (``direct.py``)."""
        return run_direct(self, task, queued=queued)

    def submit(self, task: Task) -> None:
        """Queue ``task`` (thread-safe). A broken engine fails it at once."""
        if self.broken is not None:
            task.on_done(False, self.broken)
            return
        self._incoming.append(task)
        if not self._wake_pending:
            self._wake()
        if self.stopped.is_set():
            self._fail_leftovers()

    def submit_many(self, tasks: list[Task]) -> None:
        """Queue several tasks with one wake-up."""
        if self.broken is not None:
            for task in tasks:
                task.on_done(False, self.broken)
            return
        self._incoming.extend(tasks)
        self._wake()
        if self.stopped.is_set():
            self._fail_leftovers()

    def close(self) -> None:
        """Run what is queued, then stop the workers and the engine thread."""
        self._call_soon(self._begin_close)

    def stop(self, error: BaseException | None, *, hard: bool = False) -> None:
        """Stop now: stop the workers; fail queued and running tasks with ``error``.

        Workers get SIGTERM, then SIGKILL after a grace period (at once with
        ``hard``). With ``error=None`` tasks are dropped without a callback.
        """
        self._call_soon(lambda: self._begin_stop(error, hard))

    def hold(self) -> None:
        """Keep the engine running after ``close()`` until ``release()``."""
        self._call_soon(self._add_hold)

    def release(self) -> None:
        self._call_soon(self._drop_hold)

    def processes(self) -> list[Any]:
        """The live workers' process (or thread) objects, a snapshot."""
        return [w.process for w in list(self._workers.values())]

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the engine thread to finish; return True if it has."""
        if not self.thread.is_alive() and not self.thread.ident:
            return True
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def cancel_queued(self) -> list[Task]:
        """Take back every task not yet handed to a worker (for cancel_futures)."""
        taken: list[Task] = []
        done = threading.Event()

        def take() -> None:
            self._absorb_incoming()
            self._dispatch()  # what workers can take now runs; the rest is returned
            taken.extend(self._queue)
            self._queue.clear()
            done.set()

        self._call_soon(take)
        while not done.wait(0.1):
            if not self.thread.is_alive():
                break
        return taken

    def _call_soon(self, fn: Callable[[], None]) -> None:
        self._requests.append(fn)
        self._wake()

    def _wake(self) -> None:
        self._wake_pending = True
        with self._wake_lock:  # the engine closes the pipe when it finishes
            if self._wake_w >= 0:
                try:
                    os.write(self._wake_w, b"\0")
                except BlockingIOError:
                    pass  # a wake-up is pending already

    def _fail_leftovers(self) -> None:
        error = self.broken or self._stop_error or BrokenProcessPool("the pool has shut down")
        while True:
            try:
                task = self._incoming.popleft()
            except IndexError:
                return
            self.settle(task, False, error)

    # ----------------------------------------------------------- engine thread

    def _run(self) -> None:
        _popen_fork.pool_engine_thread.is_pool_engine = True
        try:
            try:
                self._start_first_workers()
            except BaseException as exc:
                self._start_error = exc
                self.state = STOPPED
                return
            finally:
                self._started.set()
            while self.state != STOPPED:
                self._step()
        except BaseException as exc:  # a bug in the engine: fail loudly, leave nothing behind
            _log.critical("corral pool engine failed", exc_info=exc)
            error = BrokenProcessPool(f"the pool's engine thread failed: {exc!r}")
            self.broken = error
            self._kill_all_now(error)
        finally:
            self._finish()

    def _start_first_workers(self) -> None:
        started: list[tuple[Any, Callable[[], WorkerHandle]]] = []
        try:
            for _ in range(self.size):
                started.append(self.spawner.start(next(self._worker_ids)))  # noqa: PERF401
        except BaseException:
            for proc, _make in started:
                proc.terminate()
            for proc, _make in started:
                proc.join()
            raise
        for _proc, make in started:
            self._adopt(make())

    def _adopt(self, worker: WorkerHandle) -> None:
        self._workers[worker.worker_id] = worker
        self._selector.register(worker.channel_fd, selectors.EVENT_READ, (_CHANNEL, worker))
        self._selector.register(worker.death_fd, selectors.EVENT_READ, (_DEATH, worker))

    def _step(self) -> None:
        timeout = None
        if self._timers:
            timeout = max(0.0, self._timers[0][0] - time.monotonic())
        for key, mask in self._selector.select(timeout):
            what, worker = key.data
            if what == _WAKE:
                self._on_wake()
            elif what == _CHANNEL:
                if worker.worker_id not in self._workers:
                    continue
                if mask & selectors.EVENT_WRITE and worker.flush():
                    self._selector.modify(worker.channel_fd, selectors.EVENT_READ, key.data)
                if mask & selectors.EVENT_READ:
                    records, closed = worker.read_records()
                    self._on_records(worker, records)
                    if closed:
                        self._unwatch_channel(worker)
            elif worker.worker_id in self._workers:
                self._on_death(worker)
        self._run_timers()
        self._absorb_incoming()
        if self.state != STOPPED:
            self._dispatch()
            self._top_up()
            self._maybe_finish()
            if self._lending and self.state == RUNNING and not self._queue:
                self._park_idle()
        self._flush_step()

    def delivering(self) -> bool:
        """Whether this is the engine thread (which delivers outcomes in steps)."""
        return threading.get_ident() == self.thread.ident

    def after_delivery(self, fn: Callable[[], None]) -> None:
        """(Engine thread) Call ``fn`` once the current step is over.

        For front ends that collect the outcomes of a step and hand them on in
        one go (``Feed``), so that their consumer wakes once per step rather
        than once per task.
        """
        self._after_step.append(fn)

    def _flush_step(self) -> None:
        pending = self._after_step
        while pending:
            pending.pop()()

    def _on_wake(self) -> None:
        # Drain first, then clear the flag: a submitter that sets the flag after
        # this point also writes a byte, so the flag is never left set while the
        # pipe is empty (which would make later submit() calls skip the wake-up).
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        self._wake_pending = False
        while self._requests:
            self._requests.popleft()()

    def _absorb_incoming(self) -> None:
        incoming = self._incoming
        if not incoming:
            return
        if self.broken is not None or self.state == STOPPING or self.state == STOPPED:
            error = self.broken or self._stop_error
            while incoming:
                task = incoming.popleft()
                if error is not None:
                    self.settle(task, False, error)
            return
        queue = self._queue
        ids = self._task_ids
        while incoming:
            task = incoming.popleft()
            if task.taken:
                continue  # a caller runs it directly (direct.py)
            task.task_id = next(ids)
            queue.append(task)

    # ----------------------------------------------------------- dispatch

    def _prefetch(self) -> int:
        avg = self._avg_task_time
        if avg <= 0.0:
            return 2
        if avg >= _PREFETCH_TARGET:
            return 1
        return min(_PREFETCH_MAX, max(2, int(_PREFETCH_TARGET / avg)))

    def _dispatch(self) -> None:
        queue = self._queue
        if not queue:
            if self._idle_ready():
                self._take_back_waiting()
            if not queue:
                return
        if self._parked:
            self._unpark_all()
        limit = self._prefetch()
        quota = self.spawner.max_tasks
        ready = [
            w
            for w in self._workers.values()
            if w.ready
            and not w.revoking
            and not w.stopping
            and not w.lent
            and not w.parked
            and len(w.held) < limit
        ]
        if not ready:
            return
        ready.sort(key=lambda w: len(w.held))
        share = max(1, -(-len(queue) // len(ready)))
        now = time.monotonic()
        for worker in ready:
            room = min(limit - len(worker.held), share)
            if quota:
                room = min(room, quota - worker.tasks_sent)
            if room <= 0:
                continue
            batch = []
            while queue and room:
                task = queue.popleft()
                if task.claim is not None:
                    if not task.claim():
                        continue  # cancelled while it waited
                    task.claim = None  # a requeued task is not claimed twice
                batch.append(task)
                room -= 1
            if not batch:
                break
            was_idle = not worker.held
            worker.held.extend(batch)
            worker.tasks_sent += len(batch)
            seq = worker.sent_count
            for task in batch:
                seq += 1
                task.seq = seq
            worker.sent_count = seq
            if was_idle:
                worker.running_since = now
                self._arm_deadline(worker, batch[0], now)
            worker.post_permits(len(batch))
            self._send_tasks(worker, batch)
            if quota and worker.tasks_sent >= quota:
                worker.quota_reached = True
                worker.stopping = True  # it retires after these; send it nothing more
            if not queue:
                break
        if queue and self._lent:
            self._want_back = True

    # ----------------------------------------------------------- taking back

    def _idle_ready(self) -> bool:
        """Is some worker ready for a task and holding none?"""
        return any(
            w.ready and not w.held and not w.stopping and not w.revoking and not w.lent
            for w in self._workers.values()
        )

    def _take_back_waiting(self) -> None:
        """Take back tasks waiting behind a long-running task, for an idle worker.

        Called when nothing is queued and a worker is idle. A worker whose
        current task has run for longer than ``_take_back_after()`` gives back
        the tasks it has not started (protocol: "Taking tasks back"); a worker
        not there yet gets a timer, so a hung task is noticed without any other
        event.
        """
        now = time.monotonic()
        after = self._take_back_after()
        soonest = None
        for worker in self._workers.values():
            if len(worker.held) < 2 or worker.lent or worker.revoking:
                continue
            due = worker.running_since + after
            if due <= now:
                self._revoke(worker)
            elif soonest is None or due < soonest:
                soonest = due
        if soonest is not None and (self._take_back_at is None or soonest < self._take_back_at):
            self._take_back_at = soonest
            self._add_timer(soonest, self._clear_take_back_timer)

    def _clear_take_back_timer(self) -> None:
        self._take_back_at = None  # the step that runs this timer dispatches again

    def _take_back_after(self) -> float:
        return max(_TAKE_BACK_AFTER, 4 * self._avg_task_time)

    def _revoke(self, worker: WorkerHandle) -> None:
        held = worker.held
        taken = worker.take_back_permits(len(held) - 1)
        if not taken:
            return  # it has started them all already (their records are on the way)
        revoked = [held.pop() for _ in range(taken)]
        worker.tasks_sent -= taken
        if worker.quota_reached:  # below its max_tasks again: it may get more later
            worker.quota_reached = False
            worker.stopping = False
        worker.revoking = True
        self._send(worker, REVOKE_MARK)
        self._queue.extendleft(revoked)  # popped newest first: extendleft restores the order

    def _arm_deadline(self, worker: WorkerHandle, task: Task, now: float) -> None:
        if task.timeout is not None:
            # The timer holds the task weakly: a task done long before its
            # deadline (and its result) must not wait for the timer to be freed.
            ref = weakref.ref(task)

            def check() -> None:
                task = ref()
                if task is not None:
                    self._check_deadline(worker, task)

            self._add_timer(now + task.timeout, check)

    def _check_deadline(self, worker: WorkerHandle, task: Task) -> None:
        if (
            self._workers.get(worker.worker_id) is not worker
            or not worker.held
            or worker.held[0] is not task
        ):
            return  # finished in time, or its worker is already gone
        if task.kind == CALL:
            what = f"task ran longer than its task_timeout of {task.timeout:g} s"
        else:  # a map's chunk: its deadline is task_timeout x the items in it
            what = (
                f"a chunk of a map ran longer than its deadline of {task.timeout:g} s "
                "(task_timeout times the items in the chunk; pass chunksize=1 for a "
                "deadline per item)"
            )
        error = TaskTimeoutError(
            f"{what}; worker process {worker.pid} was stopped and replaced, "
            "the other tasks continue"
        )
        self._doom(worker, error)

    def _doom(self, worker: WorkerHandle, error: BaseException) -> None:
        """Fail the worker's running task with ``error``, requeue the rest, stop the worker."""
        self._end_now(worker, "task_timeout", time.monotonic() - worker.running_since)
        self.settle(worker.held.popleft(), False, error)
        self._requeue(worker)
        worker.stopping = True
        worker.kill(hard=False)
        self._add_timer(time.monotonic() + _KILL_GRACE, lambda: self._kill_if_alive(worker))

    # ----------------------------------------------------------- records

    def _on_records(self, worker: WorkerHandle, records: list[Any]) -> None:
        if not records:
            return
        codec = worker.codec
        now = self._last_done = time.monotonic()  # insights: the pool was in use until now
        for status, task_id, a, b in records:
            if status == INIT_FAIL:
                self._on_initializer_failure(a, b)
                return
            if status == RECEIVED:
                worker.received_count = a
                continue
            if status == PROGRESS:
                self._on_progress(worker, task_id, a)
                continue
            if status == READY:
                worker.ready = True
                worker.ready_at = now
                worker.started()
                self._startup_deaths = 0
                continue
            if status == REVOKED:
                worker.revoking = False
                continue
            if status == RETIRING:
                if b is not None:
                    worker.counters = b  # its final counters
                worker.stopping = True
                self._end_now(worker, "recycled")
                self._requeue(worker)
                continue
            held = worker.held
            if not held or held[0].task_id != task_id:
                continue  # a task the engine already failed (timeout) or requeued
            task = held.popleft()
            elapsed = now - worker.running_since
            self._avg_task_time = (
                elapsed if not self._avg_task_time else 0.8 * self._avg_task_time + 0.2 * elapsed
            )
            worker.running_since = now
            if held:
                if held[0].timeout is not None:
                    self._arm_deadline(worker, held[0], now)
            elif worker.quota_reached and worker.ended_at is None:
                # The last task of its max_tasks: it retires now (insights see it
                # before the caller sees the outcome; its RETIRING record follows).
                if status == OK and b is not None:
                    worker.counters = b
                self._end_now(worker, "recycled")
            if status == OK:  # the common case, inline
                if b is not None:
                    worker.counters = b
                # Timed only when it may take a while (insights): small results cost µs.
                kind = type(a)
                timed = (kind is bytes and len(a) > _TIMED_RESULT) or kind is _Received
                started = perf_counter_ns() if timed else 0
                try:
                    value = codec.decode_value(a)
                except BaseException:
                    pass  # outcome_of below decodes it again and reports the error
                else:
                    if timed:
                        worker.result_unpickle_ns += perf_counter_ns() - started
                    if task.transfer is not None:
                        task.transfer.release()
                    try:
                        task.on_done(True, value)
                    except BaseException:
                        _log.exception("a result callback raised")
                    continue
            if status != EXITING:
                ok, value = outcome_of(codec, status, a, b)
                self.settle(task, ok, value)
            else:
                worker.exit_status = a
                worker.stopping = True
                self._end_now(worker, "exited", elapsed)
                exit_error = TaskExitError(
                    f"the task called sys.exit({a!r}); its worker process {worker.pid} exited with "
                    f"{describe_exitcode(a)} and was replaced, the other tasks continue",
                    worker.pid,
                    a,
                )
                self.settle(task, False, exit_error)
                self._requeue(worker)

    def settle(self, task: Task, ok: bool, value: Any) -> None:
        """Deliver a task's outcome (any thread); a failing user callback is logged."""
        if task.transfer is not None:
            task.transfer.release()  # its big buffers' memory may be reused
        try:
            task.on_done(ok, value)
        except BaseException:  # a user callback failed: report it, keep the pool alive
            _log.exception("a result callback raised")

    def _requeue(self, worker: WorkerHandle) -> None:
        """Put the tasks a worker holds but never started back at the front of the queue."""
        if worker.held:
            self._queue.extendleft(reversed(worker.held))
            worker.held.clear()

    def _on_initializer_failure(self, info: Any, tb_text: str) -> None:
        type_name, message = info
        error = InitializerError(
            f"the pool's initializer raised {type_name}: {message}; the pool cannot run "
            "tasks. Fix the initializer and create a new pool."
        )
        self._break(with_cause(error, tb_text))

    def _break(self, error: BaseException) -> None:
        """The pool can run nothing more: fail everything with ``error`` and stop."""
        if self.broken is None:
            self.broken = error
        self._begin_stop(error)

    # ----------------------------------------------------------- deaths

    def _unwatch_channel(self, worker: WorkerHandle) -> None:
        try:
            self._selector.unregister(worker.channel_fd)
        except (KeyError, ValueError):
            pass

    def _on_death(self, worker: WorkerHandle) -> None:
        with self._lend_lock:
            if worker.lent:  # its borrower sees the death too and hands it back
                worker.death_seen = True
                self._selector.unregister(worker.death_fd)
                return
            if worker.parked:
                self._parked.remove(worker)
                worker.parked = False
        self._on_records(worker, worker.drain())
        exitcode = worker.exitcode()
        if worker.held and worker.held[0].seq > worker.received_count:
            self._requeue(worker)  # it died before reading them: nothing was started
        self._note_end(worker)  # leaves _workers (a task it still holds was lost)
        self._unwatch_channel(worker)
        self._selector.unregister(worker.death_fd)
        worker.close()
        if worker.pid is not None and self.codec is not ObjectCodec:
            _transfer.forget_sender(worker.pid)  # its segments will not come again
        if not worker.ready and not worker.stopping and self.state != STOPPING:
            self._on_startup_death(worker, exitcode)
            if self.broken is not None:
                return
        if worker.held:
            task = worker.held.popleft()
            error = WorkerLostError.for_worker(worker.pid, exitcode, "running this task")
            self.settle(task, False, error)
            self._requeue(worker)
            if not self.isolate_failures:
                self._break(BrokenProcessPool(f"the pool is broken because a {error}"))
        elif not worker.stopping and self.state == RUNNING and not self.isolate_failures:
            self._break(
                BrokenProcessPool(
                    f"the pool is broken because a {WorkerLostError.for_worker(worker.pid, exitcode, 'idle')}"  # noqa: E501
                )
            )

    def _on_startup_death(self, worker: WorkerHandle, exitcode: int | None) -> None:
        """A worker died before READY: the circuit breaker that stops endless restarts."""
        self._startup_deaths += 1
        if self._startup_deaths < _STARTUP_DEATHS_LIMIT:
            return
        method = self.spawner.start_method
        msg = (
            f"{self._startup_deaths} worker processes in a row died before they were ready "
            f"to run tasks (the last, process {worker.pid}, with "
            f"{describe_exitcode(exitcode)}); the pool cannot run tasks and was stopped."
        )
        main_path = getattr(sys.modules.get("__main__"), "__file__", None)
        if method in ("spawn", "forkserver") and main_path and not os.path.isfile(main_path):
            msg += (
                f" With the {method!r} start method every worker imports the main module "
                f"again, from {main_path!r}, which is not a file a child can read (a script "
                "fed on standard input?). Run the script from a file, or use the 'fork' "
                "start method; the workers' tracebacks are printed above."
            )
        elif method in ("spawn", "forkserver"):
            msg += (
                f" With the {method!r} start method every worker imports the main module "
                "again: a script that starts a pool or process at import time, without the "
                "\"if __name__ == '__main__':\" guard, or a main module that raises when it "
                "is imported, kills every new worker this way (their tracebacks are printed "
                "above). Put the code that starts pools under the guard:\n\n"
                "    if __name__ == '__main__':\n"
                "        freeze_support()   # only needed for frozen executables\n"
                "        ..."
            )
        else:
            msg += (
                " Something kills new workers as they start (out of memory, a signal from "
                "another program, or a failing os.register_at_fork hook); see the workers' "
                "output above."
            )
        self._break(WorkerStartupError(msg))

    def _top_up(self) -> None:
        if self.state != RUNNING and not (self.state == CLOSING and self._queue):
            return
        if self.broken is not None:
            return
        live = sum(1 for w in self._workers.values() if not w.stopping)
        while live < self.size:
            try:
                _proc, make = self.spawner.start(next(self._worker_ids))
            except Exception as exc:
                if not self._workers:
                    self._break(BrokenProcessPool(f"could not start a worker process: {exc!r}"))
                else:
                    _log.warning("could not start a worker process: %r; retrying in 1 s", exc)
                    self._add_timer(time.monotonic() + 1.0, lambda: None)
                return
            self._adopt(make())
            live += 1

    # ----------------------------------------------------------- timers

    def _add_timer(self, when: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (when, next(self._timer_seq), fn))

    def _run_timers(self) -> None:
        timers = self._timers
        if not timers:
            return
        now = time.monotonic()
        while timers and timers[0][0] <= now:
            heapq.heappop(timers)[2]()

    # ----------------------------------------------------------- stopping

    def _add_hold(self) -> None:
        self._holds += 1

    def _drop_hold(self) -> None:
        self._holds -= 1

    def _begin_close(self) -> None:
        if self.state == RUNNING:
            self.state = CLOSING

    def _begin_stop(self, error: BaseException | None, hard: bool = False) -> None:
        if self.state in (STOPPING, STOPPED):
            return
        self.state = STOPPING
        self._stop_error = error
        self._absorb_incoming()
        queued = list(self._queue)
        self._queue.clear()
        for worker in self._workers.values():
            self._stop_worker(worker, error, hard)
        if error is not None:
            for task in queued:
                self.settle(task, False, error)
        self._maybe_finish()

    def _stop_worker(self, worker: WorkerHandle, error: BaseException | None, hard: bool) -> None:
        held = list(worker.held)
        worker.held.clear()
        worker.stopping = True
        if error is not None:
            for task in held:
                self.settle(task, False, error)
        worker.kill(hard=hard)
        self._add_timer(time.monotonic() + _KILL_GRACE, lambda: self._kill_if_alive(worker))

    def _kill_if_alive(self, worker: WorkerHandle) -> None:
        if self._workers.get(worker.worker_id) is worker:
            worker.kill(hard=True)

    def _maybe_finish(self) -> None:
        if self.state == RUNNING:
            return
        if self._parked:
            self._unpark_all()
        if self._lent:
            self._want_back = True
        if self.state == CLOSING:
            if self._queue or self._incoming or self._holds > 0:
                return
            for worker in self._workers.values():
                if not worker.held and not worker.stopping and not worker.lent:
                    worker.stopping = True
                    self._send(worker, None)
        if self.state in (CLOSING, STOPPING) and not self._workers:
            self.state = STOPPED

    def _send(self, worker: WorkerHandle, message: Any, fds: list[int] | None = None) -> None:
        if not worker.send(message, fds):
            self._send_pending(worker)

    def _send_tasks(self, worker: WorkerHandle, batch: list[Task]) -> None:
        """Send tasks, with the descriptors of their big buffers (MAX_FDS at most a frame)."""
        message: list[Any] = []
        fds: list[int] = []
        for task in batch:
            transfer = task.transfer
            if transfer is not None:
                more = transfer.fds()  # cannot fail: a shared object is pinned until settled
                if len(fds) + len(more) > MAX_FDS and message:
                    self._send(worker, message, fds)
                    message, fds = [], []
                fds.extend(more)
            kind = task.kind if task.progress is None else task.kind | REPORT_PROGRESS
            message.append((task.task_id, kind, task.payload))
        self._send(worker, message, fds)

    def _send_pending(self, worker: WorkerHandle) -> None:
        """Watch the channel for room to write what ``worker`` still has queued."""
        self._selector.modify(
            worker.channel_fd, selectors.EVENT_READ | selectors.EVENT_WRITE, (_CHANNEL, worker)
        )

    def _kill_all_now(self, error: BaseException) -> None:
        for worker in list(self._workers.values()):
            for task in worker.held:
                self.settle(task, False, error)
            worker.held.clear()
            worker.kill(hard=True)
        for task in self._queue:
            self.settle(task, False, error)
        self._queue.clear()
        for worker in list(self._workers.values()):
            try:
                worker.exitcode()
            finally:
                worker.close()
        self._workers.clear()

    def _finish(self) -> None:
        self.state = STOPPED
        for handle in list(self._shares):
            handle.release()
        if self.codec is not ObjectCodec:
            _transfer.engine_finished()
        # Tasks submitted while the engine was going away still get an answer.
        self.stopped.set()
        self._fail_leftovers()
        self._flush_step()
        self._selector.close()
        with self._wake_lock:
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_w = -1
