"""The engine contract on a Ray cluster (issue 15; the front ends are not wired yet).

How a task travels::

    caller thread                       delivery thread (one)          Ray worker
    new_task: ForkingPickler.dumps  ->
      (shared handles -> ObjectRefs)
    submit: queue (deque) -> _fill: claim(), _run.remote(kind, payload, *refs)
                                        ray.wait(in flight, 1) ------> _run: loads,
                                        ray.get(ready)  <------------   call, dumps result
                                        on_done(ok, value), _fill()      (never raises)

At most ``size + _WINDOW`` tasks are in Ray at once (``size`` alone while a
task with a ``task_timeout`` is queued or running, so that a submitted task
starts at once and its clock is its run time); the rest waits in corral, where
``cancel_queued`` takes it back exactly. Tasks run with ``max_retries=0`` and
``retry_exceptions=False``: a worker that dies mid-task fails that task alone
with ``WorkerLostError`` (Ray's error as ``__cause__``), never a silent rerun.
A ``task_timeout`` force-cancels the task (Ray kills its worker process) and
fails it with ``TaskTimeoutError``. A Ray session corral started (``ray.init``)
is shut down when the engine stops; one it found running is left alone.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .. import reduction
from ..errors import MaybeEncodingError, TaskTimeoutError, attach_remote_traceback
from .contract import CALL, MAP, Task

_WINDOW = 4  # tasks submitted to the cluster beyond its capacity
_POLL = 0.05  # seconds ray.wait blocks before looking for new tasks and deadlines

# Shared handles met while pickling a task in this thread (their ObjectRefs go
# to Ray as top-level arguments, which Ray resolves in the worker), and, in a
# worker, the values Ray resolved them to while the task is unpickled.
_collect = threading.local()


def _shared_value(index: int) -> Any:
    """(In a Ray worker) the value of the task's ``index``-th shared handle."""
    values = getattr(_collect, "values", None)
    if values is None:
        msg = (
            "a Ray shared handle was unpickled outside a Ray task of corral's; "
            "pass it only in the arguments of tasks of the engine that made it"
        )
        raise RuntimeError(msg)
    return values[index]


class RayShared:
    """What ``RayEngine.share`` returns: an object placed once in Ray's object store.

    Passed in the arguments of the engine's tasks, it arrives in the worker as
    the object itself (Ray fetches it from its store, once per node). Pickled
    anywhere else it raises ``SerializationError``.
    """

    __slots__ = ("ref",)

    def __init__(self, ref: Any) -> None:
        self.ref = ref

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        refs = getattr(_collect, "refs", None)
        if refs is None:
            msg = (
                "a Ray shared handle can only be sent in the arguments of a task "
                "of the Ray engine that shared it"
            )
            raise TypeError(msg)
        refs.append(self.ref)
        return _shared_value, (len(refs) - 1,)


def _run(kind: int, payload: bytes, *shared: Any) -> bytes:
    """(In a Ray worker) run one corral task; never raise: pickled (ok, value, traceback)."""
    import traceback

    try:
        _collect.values = shared
        try:
            fn, args, kwargs = reduction.ForkingPickler.loads(payload)
        finally:
            _collect.values = None
        if kind == CALL:
            outcome: tuple[bool, Any, str | None] = (True, fn(*args, **kwargs), None)
        elif kind == MAP:
            outcome = (True, [fn(item) for item in args], None)
        else:
            outcome = (True, [fn(*item) for item in args], None)
    except BaseException as exc:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        exc.__traceback__ = None
        outcome = (False, exc, text)
    try:
        return reduction.ForkingPickler.dumps(outcome)
    except BaseException as exc:  # the result or the exception cannot be pickled
        error = MaybeEncodingError(exc, outcome[1])
        return reduction.ForkingPickler.dumps((False, error, outcome[2]))


def _encode_task(call: tuple[Any, Any, Any]) -> bytes:
    """Pickle a task as corral does, but with ``__main__``'s definitions by value.

    A Ray worker's ``__main__`` is Ray's own worker script, never the user's,
    so a function of the user's script must travel by value (cloudpickle).

    Raises:
        SerializationError: something in ``call`` cannot be pickled.
    """
    payload = reduction.ForkingPickler.dumps(call)
    if b"__main__" not in payload:
        return payload
    import cloudpickle

    from ..errors import SerializationError

    del _collect.refs[:]  # pickled again below
    try:
        return cloudpickle.dumps(call, protocol=5)
    except Exception as exc:
        msg = f"the task cannot be pickled for Ray: {exc}"
        raise SerializationError(msg) from exc


class _InFlight:
    """A task submitted to Ray: its ObjectRef and its deadline (monotonic), if any."""

    __slots__ = ("deadline", "ref", "task")

    def __init__(self, task: Task, ref: Any) -> None:
        self.task = task
        self.ref = ref
        self.deadline = None if task.timeout is None else time.monotonic() + task.timeout


class RayEngine:
    """``contract.Engine`` on a Ray session (see the module docstring).

    Args:
        size: how many tasks run at once (the cluster's CPUs by default).
        owns_session: this engine called ``ray.init``; it calls ``ray.shutdown``
            when it stops.
    """

    def __init__(self, size: int, *, owns_session: bool) -> None:
        import ray

        self._ray = ray
        self._remote = ray.remote(max_retries=0, retry_exceptions=False, num_cpus=1)(_run)
        self.size = size
        self.broken: BaseException | None = None
        self._owns_session = owns_session
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._queue: deque[Task] = deque()
        self._running: dict[Any, _InFlight] = {}
        self._timed = 0  # tasks with a timeout queued or in flight
        self._holds = 0
        self._closing = False
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._delivering = threading.local()
        self.thread: threading.Thread | None = threading.Thread(
            target=self._deliver_loop, name="corral-ray-engine", daemon=True
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
        """Encode the task in the calling thread (unpicklable arguments raise here).

        Raises:
            SerializationError: ``fn`` or an argument cannot be pickled.
        """
        _collect.refs = []
        try:
            payload = _encode_task((fn, args, kwargs or {}))
            refs = _collect.refs
        finally:
            _collect.refs = None
        task = Task(kind, payload, on_done, timeout, claim, tag, len(payload))
        task.transfer = refs
        return task

    def submit(self, task: Task) -> None:
        """Queue ``task`` (any thread); a stopped engine fails it at once."""
        self.submit_many([task])

    def submit_many(self, tasks: list[Task]) -> None:
        """Queue several tasks, in order."""
        if self.broken is not None or self._stopping.is_set():
            error = self.broken
            if error is None:
                from ..errors import BrokenProcessPool

                error = BrokenProcessPool("the Ray engine has stopped; start a new pool")
            for task in tasks:
                task.on_done(False, error)
            return
        with self._lock:
            self._queue.extend(tasks)
            self._timed += sum(task.timeout is not None for task in tasks)
        self._wake.set()

    def run_direct(self, task: Task, *, queued: bool = False) -> bool:
        """Never: every task goes through Ray."""
        return False

    def cancel_queued(self) -> list[Task]:
        """Take back the tasks not yet handed to Ray."""
        with self._lock:
            taken = list(self._queue)
            self._queue.clear()
            self._timed -= sum(task.timeout is not None for task in taken)
        return taken

    def hold(self) -> None:
        """Keep running after ``close()`` until ``release()``."""
        with self._lock:
            self._holds += 1

    def release(self) -> None:
        """Undo one ``hold()``."""
        with self._lock:
            self._holds -= 1
        self._wake.set()

    def delivering(self) -> bool:
        """Whether the calling thread is the delivery thread, delivering outcomes."""
        return bool(getattr(self._delivering, "on", False))

    def after_delivery(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` now (outcomes are delivered one at a time)."""
        fn()

    def close(self) -> None:
        """Run what is queued, then stop (and shut down a session corral started)."""
        self._closing = True
        self._wake.set()

    def stop(self, error: BaseException | None, *, hard: bool = False) -> None:
        """Stop now: cancel running tasks (``hard`` kills their workers), fail or drop the rest."""
        with self._lock:
            queued = list(self._queue)
            self._queue.clear()
            running = list(self._running.values())
            self._running.clear()
            self._timed = 0
        self._stopping.set()
        for flight in running if self._ray.is_initialized() else ():  # no auto-init
            try:
                self._ray.cancel(flight.ref, force=hard)
            except Exception:  # already finished, or the session is gone
                pass
        if error is not None:
            for task in [flight.task for flight in running] + queued:
                task.on_done(False, error)
        self._wake.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the engine has stopped (and its session, if corral's, is shut down)."""
        return self._stopped.wait(timeout)

    def processes(self) -> list[Any]:
        """Ray's workers are not ``Process`` objects: always empty."""
        return []

    def share(self, obj: Any) -> RayShared:
        """Place ``obj`` in Ray's object store once (``ray.put``); return its handle.

        Raises:
            SerializationError: ``obj`` cannot be pickled.
        """
        from ..errors import SerializationError

        try:
            ref = self._ray.put(obj)
        except Exception as exc:
            msg = f"share() could not place the object in Ray's object store: {exc}"
            raise SerializationError(msg) from exc
        return RayShared(ref)

    # ------------------------------------------------------------- inside

    def _fill(self) -> None:
        """Hand queued tasks to Ray up to the in-flight limit (delivery thread only)."""
        while not self._stopping.is_set():
            with self._lock:
                limit = self.size if self._timed else self.size + _WINDOW
                if not self._queue or len(self._running) >= limit:
                    return
                task = self._queue.popleft()
            if task.claim is not None and not task.claim():
                if task.timeout is not None:
                    with self._lock:
                        self._timed -= 1
                continue
            ref = self._remote.remote(task.kind, task.payload, *(task.transfer or ()))
            with self._lock:
                self._running[ref] = _InFlight(task, ref)

    def _deliver_loop(self) -> None:
        self._delivering.on = True
        try:
            while not self._stopping.is_set():
                # Any Ray call without a session would start a new one (Ray's
                # auto-init): check first, and fail what is left if it is gone.
                if not self._ray.is_initialized():
                    self._session_lost(None)
                    break
                try:
                    if not self._step():
                        break
                except self._ray.exceptions.RaySystemError as exc:
                    self._session_lost(exc)
                    break
        finally:
            self._stopping.set()
            if self._owns_session:
                self._ray.shutdown()
            self._stopped.set()

    def _step(self) -> bool:
        """Hand over, wait for and deliver tasks once; False when closed and idle."""
        self._fill()
        with self._lock:
            refs = list(self._running)
            idle = not self._queue and not refs and self._holds <= 0
        if self._closing and idle:
            return False
        if not refs:
            self._wake.wait()
            self._wake.clear()
            return True
        ready, rest = self._ray.wait(refs, num_returns=1, timeout=self._wait_time())
        if ready:
            more, _ = self._ray.wait(rest, num_returns=len(rest), timeout=0) if rest else ([], [])
            self._deliver(ready + more)
        self._expire()
        return True

    def _session_lost(self, cause: BaseException | None) -> None:
        """The Ray session went away under the engine: it is broken, every task fails."""
        from ..errors import BrokenProcessPool

        msg = (
            "the Ray session was shut down (or lost) while the pool was using it; "
            "its tasks failed. Close the pool before ray.shutdown(), and start a new pool"
        )
        error = BrokenProcessPool(msg)
        error.__cause__ = cause
        self.broken = error
        self.stop(error)

    def _wait_time(self) -> float:
        with self._lock:
            deadlines = [f.deadline for f in self._running.values() if f.deadline is not None]
        if not deadlines:
            return _POLL
        return max(0.0, min(_POLL, min(deadlines) - time.monotonic()))

    def _deliver(self, refs: list[Any]) -> None:
        for ref in refs:
            with self._lock:
                flight = self._running.pop(ref, None)
                if flight is not None and flight.task.timeout is not None:
                    self._timed -= 1
            if flight is None:
                continue  # stopped or timed out meanwhile
            ok, value = self._outcome(ref)
            try:
                flight.task.on_done(ok, value)
            except BaseException:  # a front end's callback must not stop delivery
                pass

    def _outcome(self, ref: Any) -> tuple[bool, Any]:
        try:
            encoded = self._ray.get(ref)
        except self._ray.exceptions.RayError as exc:  # the worker died, or Ray lost it
            from ..errors import WorkerLostError

            msg = (
                "the Ray worker running this task died or was lost before returning "
                "its result (Ray's error is the cause); the other tasks continue. "
                "os._exit(), a crash in native code or the out-of-memory killer can "
                "cause this; corral never reruns a task."
            )
            lost = WorkerLostError(msg)
            lost.__cause__ = exc
            return False, lost
        try:
            ok, value, text = reduction.ForkingPickler.loads(encoded)
        except BaseException as exc:
            from ..errors import ResultUnpicklingError

            msg = f"the result of a task could not be unpickled here: {exc!r}"
            error = ResultUnpicklingError(msg)
            error.__cause__ = exc
            return False, error
        if not ok and text:
            value = attach_remote_traceback(value, text)
        return ok, value

    def _expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            late = [f for f in self._running.values() if f.deadline and f.deadline <= now]
            for flight in late:
                del self._running[flight.ref]
                self._timed -= 1
        for flight in late:
            try:
                self._ray.cancel(flight.ref, force=True)  # Ray kills the worker process
            except Exception:  # it finished meanwhile
                pass
            msg = (
                f"the task ran longer than its task_timeout ({flight.task.timeout} s); "
                "its Ray worker was killed and the other tasks continue"
            )
            try:
                flight.task.on_done(False, TaskTimeoutError(msg))
            except BaseException:
                pass


def start_ray_engine(
    workers: int | None,
    address: str | None = None,
    *,
    initializer: Callable[..., object] | None = None,
    max_tasks: int | None = None,
    max_memory: int | None = None,
) -> RayEngine:
    """Start a ``RayEngine`` on a Ray session: the one running, or one it starts.

    Order: a session already initialised in this process (left running at the
    end); else ``ray.init(address)`` (``address`` or ``RAY_ADDRESS`` connects to
    a cluster; neither starts a local one sized for ``workers`` with the
    dashboard off, a 200 MiB object store and no usage reporting), shut down
    when the engine stops. ``initializer``, ``max_tasks`` and ``max_memory``
    (``EngineSpec``'s) are not supported yet: given, they raise rather than
    being ignored.

    Raises:
        ImportError: Ray is not installed (the message names the pip command).
        NotImplementedError: ``initializer``, ``max_tasks`` or ``max_memory`` given.
    """
    for name, value in (
        ("initializer", initializer),
        ("maxtasksperchild/max_tasks_per_child", max_tasks),
        ("max_memory", max_memory),
    ):
        if value is not None:
            msg = (
                f"{name} is not supported on the Ray backend yet; "
                "run without it, or use the local process backend"
            )
            raise NotImplementedError(msg)
    try:
        import ray
    except ImportError as exc:
        msg = "the Ray backend needs ray: pip install 'corral[ray]'"
        raise ImportError(msg) from exc
    owns_session = not ray.is_initialized()
    if owns_session:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no token file in $HOME
        if address or os.environ.get("RAY_ADDRESS"):
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(
                num_cpus=workers or os.cpu_count() or 1,
                include_dashboard=False,
                object_store_memory=200 * 1024 * 1024,
                log_to_driver=False,
            )
    try:
        size = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        return RayEngine(size, owns_session=owns_session)
    except BaseException:
        if owns_session:
            ray.shutdown()
        raise
