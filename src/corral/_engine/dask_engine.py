"""PROTOTYPE (issue 15, not finished): the engine contract on a Dask cluster.

What works: new_task/submit/submit_many, outcomes delivered by one thread,
bounded in-flight window (capacity + a few), claim before a task starts,
cancel_queued, close/stop/join, a cluster corral starts itself and stops.
Not yet: initializer per worker (WorkerPlugin), max_tasks, task_timeout
(cancel + restart the worker), worker death -> WorkerLostError (needs
allowed-failures=0), share() through scatter, cluster discovery order,
tests. See /work/notes/issue15.md.
"""

from __future__ import annotations

import threading
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

from .. import reduction
from .contract import CALL, MAP, Task

_WINDOW = 4  # tasks submitted to the cluster beyond its capacity


def _run(kind: int, payload: bytes) -> tuple[bool, Any, str | None]:
    """(In a Dask worker) run one corral task; never raise: (ok, value, traceback text)."""
    import pickle

    try:
        fn, args, kwargs = pickle.loads(payload)
        if kind == CALL:
            return True, fn(*args, **kwargs), None
        if kind == MAP:
            return True, [fn(item) for item in args], None
        return True, [fn(*item) for item in args], None
    except BaseException as exc:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        exc.__traceback__ = None
        return False, exc, text


class DaskEngine:
    """``contract.Engine`` on a ``distributed.Client``."""

    def __init__(self, client: Any, size: int, owned_cluster: Any = None) -> None:
        from distributed import as_completed

        self.client = client
        self.size = size
        self.broken: BaseException | None = None
        self._owned_cluster = owned_cluster
        self._lock = threading.Lock()
        self._queue: deque[Task] = deque()
        self._running: dict[str, Task] = {}
        self._holds = 0
        self._closing = False
        self._stopped = threading.Event()
        self._done = as_completed([], with_results=False)
        self._delivering = threading.local()
        self.thread: threading.Thread | None = threading.Thread(
            target=self._deliver, name="corral-dask-engine", daemon=True
        )
        self.thread.start()

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
    ) -> Task:
        payload = reduction.ForkingPickler.dumps((fn, args, kwargs or {}))
        return Task(kind, payload, on_done, timeout, claim, tag, len(payload))

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

    def processes(self) -> list[Any]:
        return []

    def share(self, obj: Any) -> Any:
        msg = "share() is not available on the Dask backend yet"
        raise NotImplementedError(msg)

    # ------------------------------------------------------------- inside

    def _fill(self) -> None:
        while True:
            with self._lock:
                if not self._queue or len(self._running) >= self.size + _WINDOW:
                    break
                task = self._queue.popleft()
            if task.claim is not None and not task.claim():
                continue
            future = self.client.submit(_run, task.kind, task.payload, pure=False)
            with self._lock:
                self._running[future.key] = task
            self._done.add(future)

    def _deliver(self) -> None:
        self._delivering.on = True
        while not self._stopped.is_set():
            for future in self._done:
                with self._lock:
                    task = self._running.pop(future.key, None)
                if task is None:
                    continue
                try:
                    ok, value, text = future.result()
                except BaseException as exc:  # the cluster lost it (worker died...)
                    ok, value, text = False, exc, None
                if not ok and text:
                    from ..errors import attach_remote_traceback

                    value = attach_remote_traceback(value, text)
                try:
                    task.on_done(ok, value)
                except BaseException:
                    pass
                self._fill()
                self._maybe_finish()
            if self._stopped.wait(0.05):
                break

    def _maybe_finish(self) -> None:
        with self._lock:
            idle = not self._queue and not self._running and self._holds <= 0
        if self._closing and idle:
            self._finish()

    def _finish(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        try:
            self.client.close()
        finally:
            if self._owned_cluster is not None:
                self._owned_cluster.close()


def start_dask_engine(workers: int | None) -> DaskEngine:
    """A new local cluster (the prototype does not look for an existing one yet)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        msg = "the Dask backend needs distributed: pip install 'corral[dask]'"
        raise ImportError(msg) from exc
    n = workers or 2
    cluster = LocalCluster(
        n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    return DaskEngine(client, n, owned_cluster=cluster)
