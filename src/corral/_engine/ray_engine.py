"""The engine contract on a Ray cluster (``backend="ray"``).

How a task travels::

    caller thread                                   worker: a Ray actor (a process)
    new_task: pickle (shared handles -> ObjectRefs,
              big buffers out of band)
    submit: queue (deque) -> _fill: an idle actor,
            claim(), actor.run.remote(...)  ------> _run: initializer once per
            ref._on_completed callback                 process and pool, loads,
                 |                                     call, dumps (never raises)
    delivery thread (one): _done.get() <------------------
            decode -> on_done(ok, value), actor idle again, _fill()

Each worker is an actor (``_Worker``) that corral starts, replaces and kills
itself. A task goes to an idle actor only, so at most ``size`` tasks are in Ray;
the rest waits in corral, where ``cancel_queued`` takes it back exactly, a task
starts as it is handed over (its ``task_timeout`` counts run time) and a dying
actor holds no task but the one it runs. Actors run with ``max_restarts=0`` and
``max_task_retries=0``: an actor that dies mid-task fails that task alone with
``WorkerLostError`` (Ray's error as ``__cause__``), never a silent rerun, and a
new actor takes its place. A ``task_timeout`` kills the actor (stopping the
task) and fails the task with ``TaskTimeoutError``; ``maxtasksperchild``
replaces an actor after that many tasks. Completions arrive through each
ObjectRef's completion callback (``_on_completed``, what ``ref.future()`` builds
on, without the ``Future``), so the delivery thread sleeps until one does (or a
deadline passes): no polling. The session is found or started by
``ray_cluster.connect``, which alone decides whether it is shut down.
"""

from __future__ import annotations

import pickle
import queue
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from .. import reduction
from .._transfer import SharedElsewhere
from ..errors import MaybeEncodingError, TaskTimeoutError, attach_remote_traceback
from .cluster_pickle import dumps_for_cluster
from .contract import CALL, MAP, EngineSpec, Task
from .insights import Insights, ParentCounts
from .main_namespace import adopt
from .ray_cluster import Session, connect, import_ray

_CHECK = 1.0  # seconds between checks that the session still exists, when idle
_T = TypeVar("_T")
_BIG = 1 << 20  # buffers this big travel through the object store, out of the pickle

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


class RayShared(SharedElsewhere[_T]):
    """What ``share()`` returns on the Ray backend: an object placed once in Ray's object store.

    A ``corral.Shared``: passed in the arguments of the pool's tasks, it
    arrives in the worker as the object itself (Ray fetches it from its store,
    once per node; a NumPy array arrives read-only, mapped from the store).
    ``get()`` fetches it here. ``release()``, the pool's end, or the last
    reference to the handle going away drops corral's ``ObjectRef``, so Ray
    frees the object once tasks already submitted with it (which hold their
    own) are done; a new task given a released handle raises ``ValueError`` at
    the call. Pickled anywhere else the handle raises ``TypeError``.
    """

    __slots__ = ("ref",)

    def __init__(self, ref: Any, description: str) -> None:
        super().__init__(description)
        self.ref: Any = ref

    def get(self) -> _T:
        """The object, fetched from Ray's object store (a NumPy array: read-only).

        Raises:
            ValueError: the handle was released.
        """
        ref = self.ref
        if self._released or ref is None:
            raise ValueError(self._released_message())
        import ray

        value: _T = ray.get(ref)
        return value

    def release(self) -> None:
        """Drop corral's reference: Ray frees the object once submitted tasks are done."""
        with self._lock:
            self._released = True
            self.ref = None

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        refs = getattr(_collect, "refs", None)
        if refs is None:
            msg = (
                "a Ray shared handle can only be sent in the arguments of a task "
                "of the Ray engine that shared it"
            )
            raise TypeError(msg)
        ref = self.ref
        if self._released or ref is None:
            raise ValueError(self._released_message())
        # The same handle twice (or a task pickled again) keeps one index.
        for index, known in enumerate(refs):
            if known is ref:
                return _shared_value, (index,)
        refs.append(ref)
        return _shared_value, (len(refs) - 1,)

    def __repr__(self) -> str:
        state = "released" if self._released else "live"
        return f"<corral.Shared {self.description} on Ray ({state})>"

    def __del__(self) -> None:
        self.release()


# (In a Ray worker) the pools whose initializer this process has run. Ray
# reuses a worker process for many tasks, so the pool's token marks it.
_initialised: set[str] = set()

_INIT_FAILED = 2  # an outcome's "ok" when the pool's initializer raised


def _initialise(init: tuple[str, list[Any]] | None) -> None:
    """(In a Ray worker) run the pool's initializer if this process has not yet."""
    if init is None or init[0] in _initialised:
        return
    import ray

    fn, args = ray.get(init[1][0])
    adopt(fn)(*args)
    _initialised.add(init[0])


def _run_initializer(init: tuple[str, list[Any]]) -> bytes | None:
    """(In a Ray worker) run the initializer now; None, or the pickled (error, traceback)."""
    try:
        _initialise(init)
    except BaseException as exc:
        return reduction.ForkingPickler.dumps((exc, _traceback_text(exc)))
    return None


def _traceback_text(exc: BaseException) -> str:
    import traceback

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    exc.__traceback__ = None
    return text


def _run(
    kind: int,
    payload: bytes,
    init: tuple[str, list[Any]] | None,
    buffers: list[Any] | None,
    *shared: Any,
) -> bytes:
    """(In a Ray worker) run one corral task; never raise: pickled (ok, value, traceback).

    ``buffers`` (the task's big buffers, which Ray maps read-only from its
    object store) are copied once, so that arrays arrive writable, as with
    the stdlib's pool.
    """
    try:
        _initialise(init)
    except BaseException as exc:
        return reduction.ForkingPickler.dumps((_INIT_FAILED, exc, _traceback_text(exc)))
    try:
        _collect.values = shared
        try:
            if buffers:
                copies = [bytearray(buffer) for buffer in buffers]
                fn, args, kwargs = reduction.ForkingPickler.loads(payload, buffers=copies)
            else:
                fn, args, kwargs = reduction.ForkingPickler.loads(payload)
        finally:
            _collect.values = None
        fn = adopt(fn)  # a script's functions share one __main__ here, as in a local worker
        if kind == CALL:
            outcome: tuple[bool, Any, str | None] = (True, fn(*args, **kwargs), None)
        elif kind == MAP:
            outcome = (True, [fn(item) for item in args], None)
        else:
            outcome = (True, [fn(*item) for item in args], None)
    except BaseException as exc:
        outcome = (False, exc, _traceback_text(exc))
    try:
        return reduction.ForkingPickler.dumps(outcome)
    except BaseException as exc:  # the result or the exception cannot be pickled
        error = MaybeEncodingError(exc, outcome[1])
        return reduction.ForkingPickler.dumps((False, error, outcome[2]))


class _Worker:
    """(A Ray actor: one worker process of a pool) runs the pool's tasks, one at a time."""

    def ready(self, init: tuple[str, list[Any]] | None) -> bytes | None:
        """Run the initializer now; None, or its pickled (error, traceback)."""
        return None if init is None else _run_initializer(init)

    def run(
        self,
        kind: int,
        payload: bytes,
        init: tuple[str, list[Any]] | None,
        buffers: list[Any] | None,
        *shared: Any,
    ) -> bytes:
        """Run one task (see ``_run``)."""
        return _run(kind, payload, init, buffers, *shared)


class _Actor:
    """The engine's side of one ``_Worker`` actor: its handle and the tasks it ran."""

    __slots__ = ("handle", "tasks")

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.tasks = 0


class _InFlight:
    """A task handed to Ray: its ObjectRef and its deadline (monotonic), if any."""

    __slots__ = ("actor", "deadline", "outcome", "ref", "task")

    def __init__(self, task: Task, actor: _Actor) -> None:
        self.task = task
        self.actor = actor
        self.ref: Any = None
        self.outcome: Any = None  # what Ray's completion callback got
        self.deadline: float | None = None


class RayEngine:
    """``contract.Engine`` on a Ray session (see the module docstring).

    Args:
        session: the session (``ray_cluster.connect``), released when the engine stops.
        size: how many workers (actors), so how many tasks run at once.
        actor_class: the ``_Worker`` actor class with its options, to replace workers.
        init: ``(token, [ObjectRef of (initializer, initargs)])``, or None.
        max_tasks: a worker (actor) is replaced after this many tasks.
        actors: the workers, already started (``start_actors``).
    """

    def __init__(
        self,
        session: Session,
        size: int,
        *,
        actor_class: Any,
        actors: list[_Actor],
        init: tuple[str, list[Any]] | None = None,
        max_tasks: int | None = None,
    ) -> None:
        ray = session.ray
        self._ray = ray
        self._session = session
        self._actor_class = actor_class
        self._idle: deque[_Actor] = deque(actors)
        self._actors: set[_Actor] = set(actors)
        self._max_tasks = max_tasks
        self._init = init
        self.size = size
        self._counts = ParentCounts()  # insights()
        self.broken: BaseException | None = None
        self._lock = threading.Lock()
        self._done: queue.SimpleQueue[_InFlight | None] = queue.SimpleQueue()
        self._queue: deque[Task] = deque()
        self._running: dict[_InFlight, None] = {}
        self._timed = 0  # tasks with a timeout queued or in flight
        self._shared: weakref.WeakSet[RayShared[Any]] = weakref.WeakSet()  # released at the end
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
        progress: Callable[[int], None] | None = None,
    ) -> Task:
        """Encode the task in the calling thread (unpicklable arguments raise here).

        ``progress`` is never called: the front end counts whole chunks.

        Raises:
            SerializationError: ``fn`` or an argument cannot be pickled.
            ValueError: a shared handle in the arguments was released.
        """
        _collect.refs = []
        started = time.perf_counter_ns()
        try:
            payload, buffers = dumps_for_cluster((fn, args, kwargs or {}), _BIG, "Ray")
            refs = _collect.refs
        finally:
            _collect.refs = None
        self._counts.encode_ns += time.perf_counter_ns() - started
        size = len(payload) + sum(view.nbytes for view in buffers)
        if buffers:
            # Copied now, as the stdlib copies at the call: the caller may change
            # its array once the call returns. Into Ray's object store only
            # when the task is handed to Ray (a full store spills to disk).
            copies = [bytearray(view) for view in buffers]
            task = Task(kind, (payload, copies), on_done, timeout, claim, tag, size)
        else:
            task = Task(kind, payload, on_done, timeout, claim, tag, size)
        task.transfer = refs
        return task

    def submit(self, task: Task) -> None:
        """Queue ``task`` (any thread) and hand it to Ray if there is room."""
        self.submit_many([task])

    def submit_many(self, tasks: list[Task]) -> None:
        """Queue several tasks, in order; a stopped engine fails them at once."""
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
        self._fill()

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
        self._done.put(None)

    def delivering(self) -> bool:
        """Whether the calling thread is the delivery thread, delivering outcomes."""
        return bool(getattr(self._delivering, "on", False))

    def after_delivery(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` now (outcomes are delivered one at a time)."""
        fn()

    def close(self) -> None:
        """Run what is queued, then stop (and release the session)."""
        self._closing = True
        self._done.put(None)

    def stop(self, error: BaseException | None, *, hard: bool = False) -> None:
        """Stop now: cancel running tasks (``hard`` kills their workers), fail or drop the rest."""
        with self._lock:
            queued = list(self._queue)
            self._queue.clear()
            running = list(self._running)
            self._running.clear()
            self._timed = 0
        self._stopping.set()
        if self._ray.is_initialized():  # (any Ray call without a session starts one)
            for actor in list(self._actors):
                self._kill(actor)
        if error is not None:
            for task in [flight.task for flight in running] + queued:
                task.on_done(False, error)
        self._done.put(None)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the engine has stopped (and released its session)."""
        return self._stopped.wait(timeout)

    def insights(self) -> Insights:
        """Tasks, items, restarts, pickling here (the cluster's workers are not measured)."""
        return self._counts.insights("ray")

    def processes(self) -> list[Any]:
        """Ray's workers are not ``Process`` objects: always empty."""
        return []

    def share(self, obj: Any) -> RayShared[Any]:
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
        handle: RayShared[Any] = RayShared(ref, type(obj).__name__)
        self._shared.add(handle)
        return handle

    # ------------------------------------------------------------- inside

    def _fill(self) -> None:
        """Hand queued tasks to idle workers, one task per worker (any thread).

        A worker never holds a task waiting behind the one it runs, so its
        death fails that task alone, and a task starts as it is handed over
        (its ``task_timeout`` counts run time).
        """
        while not self._stopping.is_set():
            with self._lock:
                if not self._queue or not self._idle:
                    return
                task = self._queue.popleft()
                flight = _InFlight(task, self._idle.popleft())
                self._running[flight] = None
            if task.claim is not None and not task.claim():
                with self._lock:
                    self._running.pop(flight, None)
                    self._idle.appendleft(flight.actor)
                    if task.timeout is not None:
                        self._timed -= 1
                continue
            shared = task.transfer or ()
            payload, buffers = task.payload if type(task.payload) is tuple else (task.payload, None)
            if buffers:  # out of band: Ray places them in its store with no pickling
                buffers = [pickle.PickleBuffer(buffer) for buffer in buffers]
            run = flight.actor.handle.run
            flight.ref = run.remote(task.kind, payload, self._init, buffers, *shared)
            task.payload = None  # Ray holds its copy now
            if task.timeout is not None:
                flight.deadline = time.monotonic() + task.timeout
            flight.ref._on_completed(partial(self._completed, flight))
            if self._stopping.is_set():  # stop() ran meanwhile and failed the task
                self._kill(flight.actor)
            if flight.deadline is not None:
                self._done.put(None)  # the delivery thread recomputes its wake-up time

    def _kill(self, actor: _Actor) -> None:
        """Kill a worker actor (its running task, if any, is lost); never raise."""
        with self._lock:
            self._actors.discard(actor)
        try:
            self._ray.kill(actor.handle)
        except Exception:  # already dead, or the session is gone
            pass

    def _replace(self, actor: _Actor) -> None:
        """Kill ``actor`` and start a new worker in its place (delivery thread)."""
        self._kill(actor)
        if self._stopping.is_set() or not self._ray.is_initialized():
            return
        fresh = _Actor(self._actor_class.remote())
        with self._lock:
            self._actors.add(fresh)
            self._idle.append(fresh)

    def _deliver_loop(self) -> None:
        self._delivering.on = True
        try:
            while not self._stopping.is_set():
                batch = []
                try:
                    batch.append(self._done.get(timeout=self._wait_time()))
                    while True:  # and whatever else completed meanwhile
                        batch.append(self._done.get_nowait())
                except queue.Empty:
                    pass
                # Any Ray call without a session would start a new one (Ray's
                # auto-init): check first, and fail what is left if it is gone.
                if not self._ray.is_initialized():
                    self._session_lost(None)
                    break
                for flight in batch:
                    if flight is not None:
                        self._deliver(flight)
                        self._fill()
                if self._timed:
                    self._expire()
                self._fill()
                with self._lock:
                    idle = not self._queue and not self._running and self._holds <= 0
                if self._closing and idle:
                    break
        finally:
            self._stopping.set()
            for handle in list(self._shared):
                handle.release()
            if self._ray.is_initialized():
                for actor in list(self._actors):
                    self._kill(actor)
            self._session.close()
            self._stopped.set()

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
        if not self._timed:
            return _CHECK
        with self._lock:
            deadlines = [f.deadline for f in self._running if f.deadline is not None]
        if not deadlines:
            return _CHECK
        return max(0.0, min(_CHECK, min(deadlines) - time.monotonic()))

    def _deliver(self, flight: _InFlight) -> None:
        with self._lock:
            if flight not in self._running:
                return  # stopped or timed out meanwhile
            del self._running[flight]
            if flight.task.timeout is not None:
                self._timed -= 1
        ok, value = self._outcome(flight.outcome)
        if ok == _INIT_FAILED:
            self._initializer_failed(value)
            return
        actor = flight.actor
        actor.tasks += 1
        if isinstance(flight.outcome, BaseException):  # the worker died: a new one
            self._counts.restarted("crashed")
            self._replace(actor)
        elif self._max_tasks is not None and actor.tasks >= self._max_tasks:
            self._counts.restarted("recycled")
            self._replace(actor)  # maxtasksperchild: a new process
        else:
            with self._lock:
                self._idle.append(actor)
        self._counts.done(flight.task.kind, ok, value)
        try:
            flight.task.on_done(ok, value)
        except BaseException:  # a front end's callback must not stop delivery
            pass

    def _completed(self, flight: _InFlight, outcome: Any) -> None:
        """(A Ray thread) the task's result, or Ray's error, is here: hand it to delivery."""
        flight.outcome = outcome
        self._done.put(flight)

    def _outcome(self, encoded: Any) -> tuple[Any, Any]:
        if isinstance(encoded, BaseException):  # Ray's error: the worker died, or was lost
            from ..errors import WorkerLostError

            msg = (
                "the Ray worker running this task died or was lost before returning "
                "its result (Ray's error is the cause); the other tasks continue. "
                "os._exit(), a crash in native code or the out-of-memory killer can "
                "cause this; corral never reruns a task."
            )
            lost = WorkerLostError(msg)
            lost.__cause__ = encoded
            return False, lost
        try:
            ok, value, text = reduction.ForkingPickler.loads(encoded)
        except BaseException as exc:
            from ..errors import ResultUnpicklingError

            msg = f"the result of a task could not be unpickled here: {exc!r}"
            error = ResultUnpicklingError(msg)
            error.__cause__ = exc
            return False, error
        if ok is not True and text:
            value = attach_remote_traceback(value, text)
        return ok, value

    def _initializer_failed(self, exc: BaseException) -> None:
        """A worker process that joined later could not run the initializer: break the pool."""
        error = _initializer_error(exc)
        self.broken = error
        self.stop(error)

    def _expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            late = [f for f in self._running if f.deadline is not None and f.deadline <= now]
            for flight in late:
                del self._running[flight]
                self._timed -= 1
        for flight in late:
            self._replace(flight.actor)  # stops the task: its process is killed
            msg = (
                f"the task ran longer than its task_timeout ({flight.task.timeout} s); "
                "its Ray worker was killed and the other tasks continue"
            )
            self._counts.restarted("task_timeout")
            try:
                flight.task.on_done(False, TaskTimeoutError(msg))
            except BaseException:
                pass


def _initializer_error(exc: BaseException) -> BaseException:
    from ..errors import InitializerError

    msg = (
        f"the pool's initializer raised {type(exc).__name__}: {exc} in a Ray worker; "
        "the pool cannot run tasks. Fix the initializer and create a new pool."
    )
    error = InitializerError(msg)
    error.__cause__ = exc
    return error


def start_actors(
    session: Session, actor_class: Any, count: int, init: tuple[str, list[Any]] | None
) -> list[_Actor]:
    """Start ``count`` worker actors; with an initializer, wait until each has run it.

    Run eagerly so that an initializer that raises fails ``Pool()`` (the
    executor's first submit), as on the Dask backend, rather than every task.

    Raises:
        InitializerError: it raised (its error, with the remote traceback, is the
            cause); the actors are killed again.
    """
    ray = session.ray
    actors = [_Actor(actor_class.remote()) for _ in range(count)]
    if init is None:
        return actors
    try:
        failures = ray.get([actor.handle.ready.remote(init) for actor in actors])
        for failed in failures:
            if failed is not None:
                exc, text = reduction.ForkingPickler.loads(failed)
                raise _initializer_error(attach_remote_traceback(exc, text))
    except BaseException:
        for actor in actors:
            ray.kill(actor.handle)
        raise
    return actors


def start_ray_engine(spec: EngineSpec) -> RayEngine:
    """The engine on the Ray cluster ``spec.backend`` (a ``corral.backends.Ray``) points at.

    Each worker is a Ray actor (one process). ``spec.workers`` 0 means the
    cluster's CPUs (divided by ``num_cpus`` of the backend's ``remote_args``).
    ``spec.max_tasks``: a worker is replaced by a new one after that many tasks.

    Raises:
        ImportError: Ray is not installed (the message names the extra).
        InitializerError: the initializer raised in a worker (the session a
            failed start began is released).
        ValueError: ``max_memory_per_child`` (not supported on Ray), an
            ``address`` other than the cluster this process is connected to, or
            ``remote_args`` asking for more of a resource than the cluster has.
    """
    import_ray()
    remote_args = dict(getattr(spec.backend, "remote_args", None) or {})
    session = connect(spec.backend, spec.workers)
    try:
        ray = session.ray
        session.check_fits(remote_args)
        size = spec.workers or session.capacity(float(remote_args.get("num_cpus", 1)))
        options: dict[str, Any] = {"max_restarts": 0, "max_task_retries": 0}
        if "num_cpus" not in remote_args:
            # One CPU each, or an equal share when asked for more workers than
            # the cluster has CPUs (a worker that cannot be placed would wait).
            options["num_cpus"] = min(1.0, session.capacity() / size)
        actor_class = ray.remote(_Worker).options(**options, **remote_args)
        init = None
        if spec.initializer is not None:
            init = (uuid.uuid4().hex, [ray.put((spec.initializer, spec.initargs))])
        actors = start_actors(session, actor_class, size, init)
        return RayEngine(
            session,
            size,
            actor_class=actor_class,
            actors=actors,
            init=init,
            max_tasks=spec.max_tasks,
        )
    except BaseException:
        session.close()
        raise
