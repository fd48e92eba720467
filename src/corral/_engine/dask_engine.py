"""The engine contract on a Dask cluster (``backend="dask"``).

How a task travels::

    front end --new_task--> Task (payload pickled here, in the caller's thread;
                            shared handles in it become Dask keys it depends on;
                            buffers >= 1 MiB scattered to a worker now, likewise)
      submit --> _queue (in corral: cancellable, bounded memory)
      _fill (the caller if the engine is idle, else the submitting thread):
             at most capacity + window tasks in Dask at once; claim() just
             before; every free slot's task in one graph (client.get), each a
             unique key marked a data producer, so the scheduler queues it
             and hands a worker only as many as it has threads
      worker process: _run unpickles, calls, returns (ok, value, traceback text)
      delivery thread: as_completed batches --> one gather per batch
                       --> on_done(ok, value) --> _fill

Outcomes: the task's own exception (type kept, remote traceback as
``__cause__``); ``WorkerLostError`` when the cluster lost the task (its worker
died while it ran; Dask's error as ``__cause__``; a task Dask failed with
``KilledWorker`` that never started, having only waited on the dying worker,
is resubmitted once instead: ``_resubmit``); ``TaskTimeoutError`` past
``task_timeout`` (the task is cancelled and its worker restarted).
"""

from __future__ import annotations

import pickle
import threading
import time
import traceback
import uuid
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from .. import reduction
from .._transfer import MIN_SIZE
from .cluster_pickle import dumps_for_cluster
from .contract import CALL, MAP, EngineSpec, Task
from .dask_cluster import INSTALL_HINT, Connection, connect
from .dask_shared import DaskShared, collecting, resolving
from .insights import Insights, ParentCounts
from .main_namespace import adopt, forget

try:
    from dask._task_spec import Task as DaskTask
    from dask._task_spec import TaskRef
    from distributed import Future, WorkerPlugin, get_worker
    from distributed.scheduler import KilledWorker
    from distributed.utils import sync
except ImportError as exc:  # the registry imports this module on first use
    raise ImportError(INSTALL_HINT) from exc

# Tasks in Dask beyond the cluster's capacity (at least _WINDOW, else as many as
# the capacity): they wait in the scheduler's queue, not on a worker (they are
# marked data producers, which the scheduler queues while worker-saturation is
# finite), so a worker's death fails only what it runs, and a worker that
# finishes a task gets the next one without a round trip through corral.
_WINDOW = 16


_started: dict[Any, float] = {}  # (in a worker) task key -> time.monotonic() it started


def _run(kind: int, payload: bytes, marker: bool, n_shared: int, *inputs: Any) -> bytes:
    """(In a Dask worker) run one corral task; never raise.

    Returns the pickled ``(ok, value, traceback text)``: pickled here, so that a
    result that cannot be pickled fails its task with ``MaybeEncodingError`` (as
    in the local pool) instead of looking like a lost worker to Dask. ``inputs``
    are what Dask resolved the task's dependencies to: the objects of its
    ``n_shared`` shared handles, then its big buffers, out of the pickle.
    ``marker``: log the task's start on the scheduler first (a user's cluster).
    """

    worker = get_worker()
    key = str(worker.get_current_task())  # corral's keys are strings
    _started[key] = time.monotonic()
    # The start marker, on the scheduler before the task's code runs (a round
    # trip, acknowledged: a task that kills its worker at once still left it),
    # so that a KilledWorker for a task that never started can be told apart.
    # Not on a cluster corral started: there a worker holds only what it runs
    # (allowed-failures=0, worker-saturation=1.0), so every lost task had started.
    if marker:
        try:
            sync(worker.loop, worker.scheduler.log_event, topic=_marker_topic(key), msg=key)
        except Exception:  # no marker: at worst, lost with its worker, it is resubmitted once
            pass
    try:
        with resolving(inputs[:n_shared]):
            fn, args, kwargs = pickle.loads(payload, buffers=inputs[n_shared:])
        # A script's functions share one __main__ per pool here, as in a local worker.
        fn = adopt(fn, str(key).rsplit("-", 1)[0])
        if kind == CALL:
            outcome: tuple[bool, Any, str | None] = (True, fn(*args, **kwargs), None)
        elif kind == MAP:
            outcome = (True, [fn(item) for item in args], None)
        else:
            outcome = (True, [fn(*item) for item in args], None)
    except BaseException as exc:
        outcome = (False, exc, _traceback_text(exc))
    finally:
        _started.pop(key, None)
    try:
        return bytes(reduction.ForkingPickler.dumps(outcome))
    except Exception as exc:
        from ..errors import MaybeEncodingError

        error = MaybeEncodingError(exc, outcome[1])
        return bytes(reduction.ForkingPickler.dumps((False, error, _traceback_text(exc))))


def _marker_topic(key: str) -> str:
    """The scheduler event topic a pool's tasks log their start under: the key's prefix."""
    return key.rpartition("-")[0] + "-started"


def _traceback_text(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    exc.__traceback__ = None
    return text


def _running_for(key: str, dask_worker: Any = None) -> float | None:
    """(In a worker, through ``client.run``) seconds task ``key`` has run, None if not running."""
    started = _started.get(key)
    return None if started is None else time.monotonic() - started


def _worker_of(key: str, dask_scheduler: Any = None) -> str | None:
    """(On the scheduler) the address of the worker processing ``key``, if any."""
    assert dask_scheduler is not None
    task = dask_scheduler.tasks.get(key)
    worker = getattr(task, "processing_on", None) if task is not None else None
    return None if worker is None else str(worker.address)


class _Initializer(WorkerPlugin):  # type: ignore[misc,unused-ignore]  # Any without distributed
    """Calls the pool's initializer once in each worker process, as it starts."""

    def __init__(self, fn: Callable[..., object], args: tuple[Any, ...], scope: str) -> None:
        self.scope = scope  # the pool's task-key prefix: its __main__ namespace in a worker
        self.fn = fn
        self.args = args

    def setup(self, worker: Any) -> None:
        adopt(self.fn, self.scope)(*self.args)


class DaskEngine:
    """``contract.Engine`` on a ``distributed.Client``."""

    def __init__(
        self, connection: Connection, size: int, plugin: str | None = None, scope: str = ""
    ) -> None:
        from distributed import as_completed

        self.client = connection.client
        self.size = size
        self._counts = ParentCounts()  # insights()
        self.broken: BaseException | None = None
        self._connection = connection
        self._plugin = plugin  # the initializer's plugin name, removed at the end
        self._window = max(_WINDOW, size)
        self._lock = threading.Lock()
        self._fill_lock = threading.RLock()  # one hand-out at a time, in order
        self._keys = scope  # task keys: this, then a number
        # Start markers only on a cluster the user runs (see _run and _resubmit).
        self._markers = connection.cluster is None
        self._count = 0
        self._shared: weakref.WeakSet[DaskShared[Any]] = weakref.WeakSet()
        # Tasks resubmitted once after a KilledWorker before they ever started.
        self._resubmitted: weakref.WeakSet[Task] = weakref.WeakSet()
        self._queue: deque[Task] = deque()
        self._running: dict[str, Task] = {}
        self._holds = 0
        self._closing = False
        self._stopped = threading.Event()
        # Set when a future joins _done (or the engine stops): the delivery
        # thread sleeps on it once every future handed out has been delivered.
        self._added = threading.Event()
        # Results are fetched per batch of finished futures (one gather, one request
        # per worker), not per future.
        self._done = as_completed([], loop=self.client.loop, with_results=False)
        self._delivering = threading.local()
        self.thread: threading.Thread | None = threading.Thread(
            target=self._deliver, name="corral-dask-engine", daemon=True
        )
        self.thread.start()
        # Hands queued tasks to Dask: callers only queue and wake it, so the tasks
        # submitted while it is busy go out together, as one graph.
        self._wanted = threading.Event()
        self._submitter = threading.Thread(
            target=self._hand_out_loop, name="corral-dask-submit", daemon=True
        )
        self._submitter.start()

    # ------------------------------------------------------------- contract

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
        """Encode the task in the calling thread (unpicklable arguments raise here).

        ``progress`` is never called: the front end counts whole chunks.

        Raises:
            SerializationError: ``fn`` or an argument cannot be pickled.
            ValueError: a shared handle in the arguments was released.
        """
        started = time.perf_counter_ns()
        with collecting() as keys:
            payload, buffers = dumps_for_cluster(
                (fn, args, kwargs or {}), MIN_SIZE, "the Dask cluster"
            )
        self._counts.encode_ns += time.perf_counter_ns() - started
        size = len(payload) + sum(view.nbytes for view in buffers)
        task = Task(kind, payload, on_done, timeout, claim, tag, size)
        # Our own references to the shared objects: they stay on the cluster until
        # the task is done even if their handles are released meanwhile.
        inputs: list[Any] = [Future(key, self.client) for key in keys]
        if buffers:
            # Big buffers (>= 1 MiB: NumPy arrays...) go straight to a worker now,
            # copied at the call as the local pool does, instead of inside the
            # task through the scheduler (which costs seconds per 64 MiB there).
            inputs += self.client.scatter(buffers, broadcast=False, hash=False)
        task.transfer = (len(keys), inputs)
        return task

    def submit(self, task: Task) -> None:
        self.submit_many([task])

    def submit_many(self, tasks: list[Task]) -> None:
        if self.broken is not None or self._stopped.is_set():
            error = self.broken or RuntimeError("the pool has shut down")
            for task in tasks:
                task.on_done(False, error)
            return
        with self._lock:
            self._queue.extend(tasks)
        self._fill()

    def run_direct(self, task: Task, *, queued: bool = False) -> bool:
        return False

    def cancel_queued(self) -> list[Task]:
        with self._lock:
            taken = list(self._queue)
            self._queue.clear()
        return taken

    def hold(self) -> None:
        with self._lock:
            self._holds += 1

    def release(self) -> None:
        with self._lock:
            self._holds -= 1
        self._maybe_finish()

    def delivering(self) -> bool:
        return bool(getattr(self._delivering, "on", False))

    def after_delivery(self, fn: Callable[[], None]) -> None:
        fn()

    def close(self) -> None:
        self._closing = True
        self._maybe_finish()

    def stop(self, error: BaseException | None, *, hard: bool = False) -> None:
        with self._lock:
            queued = list(self._queue)
            self._queue.clear()
            running = list(self._running.items())
            self._running.clear()
        for key, task in running:
            self.client.cancel([key], force=hard)
            if error is not None:
                task.on_done(False, error)
        if error is not None:
            for task in queued:
                task.on_done(False, error)
        self._closing = True
        self._finish()

    def join(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def insights(self) -> Insights:
        """Tasks, items, restarts, pickling here (the cluster's workers are not measured)."""
        return self._counts.insights("dask")

    def processes(self) -> list[Any]:
        return []

    def share(self, obj: Any) -> DaskShared[Any]:
        """Scatter ``obj`` into the cluster once (never deduplicated); return its handle.

        Raises:
            SerializationError: ``obj`` cannot be sent to the cluster.
        """
        from ..errors import SerializationError

        try:
            # A list of one: scatter would spread a list or dict's items instead.
            [future] = self.client.scatter([obj], broadcast=False, hash=False)
        except Exception as exc:
            msg = f"share() could not place the object on the Dask cluster: {exc}"
            raise SerializationError(msg) from exc
        handle: DaskShared[Any] = DaskShared(future, type(obj).__name__)
        self._shared.add(handle)
        return handle

    # ------------------------------------------------------------- inside

    def _fill(self) -> None:
        """Hand queued tasks to Dask (any thread).

        On an idle engine the caller does it at once (a lone call's latency);
        otherwise it wakes the submitting thread, so that tasks queued while
        that thread is busy go out together, as one graph.
        """
        with self._lock:
            idle = not self._running
        if idle and self._fill_lock.acquire(blocking=False):
            try:
                self._fill_now()
            finally:
                self._fill_lock.release()
        else:
            self._wanted.set()

    def _hand_out_loop(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._stopped.is_set():
                return
            try:
                self._fill_now()
            except BaseException as exc:  # the cluster went away: fail what waits
                self._break(exc)

    def _break(self, exc: BaseException) -> None:
        from ..errors import BrokenProcessPool

        msg = f"the Dask cluster can no longer take tasks ({type(exc).__name__}: {exc})"
        error = BrokenProcessPool(msg)
        error.__cause__ = exc
        self.broken = error
        try:
            self.stop(error)
        except Exception:  # cancelling on a cluster that is gone: nothing is left to stop
            self._finish()

    def _fill_now(self) -> None:
        """Hand every free slot's task to Dask, in one graph; claim() each just before."""
        with self._fill_lock:
            while True:
                with self._lock:
                    free = self.size + self._window - len(self._running)
                    batch = [self._queue.popleft() for _ in range(min(free, len(self._queue)))]
                if not batch:
                    return
                claimed = [task for task in batch if task.claim is None or task.claim()]
                if claimed:
                    self._hand_out(claimed)

    def _hand_out(self, tasks: list[Task]) -> None:
        graph = {}
        for task in tasks:
            self._count += 1
            # Numbered keys: the scheduler queues the graph's tasks in key order.
            key = f"{self._keys}-{self._count:012d}"
            n_shared, inputs = task.transfer
            refs = [TaskRef(future.key) for future in inputs]
            graph[key] = DaskTask(
                key,
                _run,
                task.kind,
                task.payload,
                self._markers,
                n_shared,
                *refs,
                _data_producer=True,
            )
        futures = self.client.get(graph, list(graph), sync=False)
        with self._lock:
            for future, task in zip(futures, tasks, strict=True):
                self._running[future.key] = task
        for future, task in zip(futures, tasks, strict=True):
            self._done.add(future)
            if task.timeout is not None:
                self._arm(future, task.timeout)
        self._added.set()

    def _arm(self, future: Any, delay: float) -> None:
        timer = threading.Timer(delay, self._check_deadline, (future,))
        timer.daemon = True
        timer.start()

    def _check_deadline(self, future: Any) -> None:
        """Fail a task past its ``task_timeout``: cancel it and restart its worker.

        The clock starts when the task starts running in its worker, not when
        it was handed to the cluster (it may wait there behind others).
        """
        with self._lock:
            task = self._running.get(future.key)
        if task is None or task.timeout is None or self._stopped.is_set():
            return
        try:
            address = self.client.run_on_scheduler(_worker_of, future.key)
            elapsed = None
            if address is not None:
                elapsed = self.client.run(_running_for, future.key, workers=[address])[address]
        except Exception:  # the worker went away meanwhile: delivery reports it
            address, elapsed = None, None
        if elapsed is None or elapsed < task.timeout:
            self._arm(future, task.timeout - (elapsed or 0.0))
            return
        with self._lock:
            task = self._running.pop(future.key, None)
        if task is None:
            return
        from ..errors import TaskTimeoutError

        self.client.cancel([future], force=True)
        try:
            self.client.restart_workers([address])
        except Exception:  # the nanny restarts a dead worker itself
            pass
        msg = (
            f"the task ran longer than task_timeout={task.timeout}s; its Dask worker "
            f"{address} was restarted and the other tasks continue"
        )
        self._counts.restarted("task_timeout")
        self._outcome(task, False, TaskTimeoutError(msg))
        self._fill()
        self._maybe_finish()

    def _outcome(self, task: Task, ok: bool, value: Any) -> None:
        self._counts.done(task.kind, ok, value)
        try:
            task.on_done(ok, value)
        except BaseException:  # a front end's callback must not stop delivery
            pass

    def _deliver(self) -> None:
        self._delivering.on = True
        while not self._stopped.is_set():
            # Cleared before draining: a future added after the drain sets it again.
            self._added.clear()
            for batch in self._done.batches():
                for future, result in self._results(batch):
                    self._deliver_one(future, result)
                # Our last references to these futures: the cluster frees their
                # results now, not when the next batch comes.
                batch = future = result = None
                self._fill()
                self._maybe_finish()
            self._added.wait()

    def _results(self, batch: list[Any]) -> list[tuple[Any, Any]]:
        """``(future, result)`` for a batch: ``_run``'s bytes, or Dask's error for the task."""
        finished = [future for future in batch if future.status == "finished"]
        values: dict[Any, Any] = {}
        if finished:
            try:
                values = dict(zip(finished, self.client.gather(finished), strict=True))
            except Exception:  # one of them was lost meanwhile: each on its own
                values = {}
        outcomes = []
        for future in batch:
            if future in values:
                outcomes.append((future, values[future]))
                continue
            try:
                outcomes.append((future, future.result()))
            except BaseException as exc:
                outcomes.append((future, exc))
        return outcomes

    def _deliver_one(self, future: Any, result: Any) -> None:
        """Deliver one outcome: ``result`` is ``_run``'s bytes, or Dask's error for the task."""
        with self._lock:
            task = self._running.pop(future.key, None)
        if task is None:  # timed out or stopped meanwhile
            return
        if isinstance(result, KilledWorker) and self._resubmit(future.key, task):
            return
        if isinstance(result, bytes):
            ok, value, text = _decode(result)
        else:  # the cluster lost it (its worker died...): Dask's error
            ok, value, text = False, _lost(result), None
        task.transfer = None  # our references to its shared objects and buffers
        if not ok and text:
            from ..errors import attach_remote_traceback

            value = attach_remote_traceback(value, text)
        self._outcome(task, ok, value)

    def _resubmit(self, key: str, task: Task) -> bool:
        """Run again, once, under a new key, a task Dask failed while it never started.

        Dask's ``KilledWorker`` also blames the tasks that only waited on a
        worker that died (``worker-saturation`` > 1 on a single-threaded
        worker; the nanny restarts the same worker with the same tasks). Only a
        task without a start marker on the scheduler is resubmitted; one whose
        marker is there (it ran when a worker died) fails with ``WorkerLostError``.
        """
        if not self._markers or task in self._resubmitted or self._stopped.is_set():
            return False  # on corral's own cluster a lost task had started
        try:
            started = {msg for _, msg in self.client.get_events(_marker_topic(key))}
        except Exception:  # the scheduler is gone: the task is lost
            return False
        if key in started:
            return False
        self._resubmitted.add(task)
        with self._fill_lock:
            self._hand_out([task])
        return True

    def _maybe_finish(self) -> None:
        with self._lock:
            idle = not self._queue and not self._running and self._holds <= 0
        if self._closing and idle:
            self._finish()

    def _finish(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._added.set()
        self._wanted.set()
        for handle in list(self._shared):
            handle.release()
        if self._connection.cluster is None:  # a cluster that lives on: leave nothing there
            try:
                if self._plugin is not None:
                    self.client.unregister_worker_plugin(self._plugin)
                self.client.run(forget, self._keys)
            except Exception:  # the cluster may be gone, and what we left with it
                pass
        self._connection.close()


def _decode(encoded: bytes) -> tuple[bool, Any, str | None]:
    """A task's outcome as ``_run`` pickled it; one that cannot be unpickled fails the task."""

    try:
        ok, value, text = pickle.loads(encoded)
    except Exception as exc:
        from ..errors import ResultUnpicklingError

        msg = (
            f"the task's result could not be unpickled here ({type(exc).__name__}: {exc}); "
            "only this task failed. Make the result's type importable in this process."
        )
        error = ResultUnpicklingError(msg)
        error.__cause__ = exc
        return False, error, None
    return ok, value, text


def _lost(exc: BaseException) -> BaseException:
    """The error for a task the cluster lost (``exc`` is Dask's, chained as the cause)."""
    from ..errors import WorkerLostError

    msg = (
        f"the Dask cluster lost this task ({type(exc).__name__}: {exc}); its worker most "
        "likely died (a crash in native code, os._exit(), the out-of-memory killer or an "
        "outside kill). The other tasks continue."
    )
    error = WorkerLostError(msg)
    error.__cause__ = exc
    return error


def _register_initializer(client: Any, plugin: str, spec: EngineSpec, scope: str) -> None:
    """Run the initializer in every worker now and in every worker that starts later.

    Raises:
        InitializerError: it raised in a worker (its error is the ``__cause__``);
            the plugin is removed again.
    """
    from ..errors import InitializerError

    assert spec.initializer is not None
    try:
        client.register_plugin(_Initializer(spec.initializer, spec.initargs, scope), name=plugin)
    except Exception as exc:
        try:
            client.unregister_worker_plugin(plugin)
        except Exception:  # it may not have been registered at all
            pass
        msg = (
            f"the pool's initializer raised {type(exc).__name__}: {exc} in a Dask worker; "
            "no pool was started. Fix the initializer and create the pool again."
        )
        raise InitializerError(msg) from exc


def start_dask_engine(spec: EngineSpec) -> DaskEngine:
    """The engine on the cluster ``spec.backend`` (a ``corral.backends.Dask``) points at.

    ``spec.workers`` 0 means the cluster's worker threads. The limits the
    backend refuses (``maxtasksperchild``, ``max_memory_per_child``) were
    refused already: ``start_engine`` calls ``corral.backends.Dask.validate``.

    Raises:
        ImportError: ``distributed`` is not installed (the message names the extra).
        InitializerError: the initializer raised in a worker (nothing is left running).
    """
    connection = connect(spec.backend, spec.workers)
    scope = f"corral-{uuid.uuid4().hex[:16]}"  # the pool's task keys start with it
    try:
        plugin = None
        if spec.initializer is not None:
            plugin = f"{scope}-initializer"
            _register_initializer(connection.client, plugin, spec, scope)
        size = spec.workers or connection.capacity()
        return DaskEngine(connection, size, plugin, scope)
    except BaseException:
        connection.close()
        raise
