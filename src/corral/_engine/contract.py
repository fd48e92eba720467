"""The engine contract: everything a front end may use of an engine, and nothing more.

The front ends (``Pool``, ``ThreadPool``, ``ProcessPoolExecutor``, the lazy
``Feed`` under ``imap`` and ``Executor.map``) hold an engine only as this
``Engine`` protocol, made by ``corral._engine.start_engine(EngineSpec(...))``.
They never see workers, file descriptors, selectors or ``Process`` objects
(``processes()`` is for the stdlib's private attributes ``pool._pool`` and
``executor._processes``, and may be empty), and they never encode a task
themselves: ``new_task`` encodes it with the engine's own codec, in the
caller's thread, so that an argument that cannot be sent raises at the call.

A backend (the local process engine, the thread engine, and the cluster
backends to come) implements this protocol; nothing in the front ends changes
when one is added.

Lifecycle of a task::

    task = engine.new_task(kind, fn, args, kwargs, on_done, timeout=, claim=, tag=, progress=)
    engine.submit(task)            # or submit_many([...]): queued, in order
      -> task.claim()              # (if given) just before it starts; False drops it
      -> task.progress(n)          # (if given, MAP/STARMAP) n items of the chunk are done
      -> task.on_done(ok, value)   # exactly once: (True, result) or (False, exception)

``progress`` is a capability an engine may lack: the local engine reports a
running chunk's finished items about ten times a second; the cluster engines
never call it (the front end then counts whole chunks from ``on_done``).
``insights()``
returns what the engine measured of its workers (``insights.Insights``), with
less detail where the workers are not its own.

``on_done`` may run in any thread (usually the engine's). Outcomes arrive in
batches: while ``delivering()`` is true in the calling thread, a function given
to ``after_delivery`` runs once the current batch is over (``Feed`` hands its
consumer one list per batch that way).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .insights import Insights

# Task kinds: how the worker calls the function on the arguments.
CALL = 0  # fn(*args, **kwargs)
MAP = 1  # [fn(item) for item in args]    (a chunk of a map)
STARMAP = 2  # [fn(*item) for item in args]  (a chunk of a starmap)


class Task:
    """One unit of work (a call or a chunk of a map), as ``Engine.new_task`` made it.

    The front end reads only ``tag``, its own reference (for example the
    ``Future`` to cancel on ``shutdown(cancel_futures=True)``); the engine
    never looks at it. The other attributes belong to the engine.
    """

    __slots__ = (
        "__weakref__",
        "claim",
        "kind",
        "on_done",
        "payload",
        "progress",
        "seq",
        "size",
        "tag",
        "taken",
        "task_id",
        "timeout",
        "transfer",
    )

    def __init__(
        self,
        kind: int,
        payload: Any,
        on_done: Callable[[bool, Any], None],
        timeout: float | None = None,
        claim: Callable[[], bool] | None = None,
        tag: Any = None,
        size: int = 64,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.task_id = 0
        self.kind = kind
        self.payload = payload  # encoded by the engine's codec
        self.on_done = on_done  # called once with (ok, value)
        self.timeout = timeout  # seconds the task may run, None for no limit
        self.claim = claim  # called as the task starts; False drops it (cancelled)
        self.tag = tag  # the front end's own reference
        self.progress = progress  # called with the items of the chunk done so far
        self.size = size  # bytes the encoded task takes (what Feed budgets)
        self.taken = False  # claimed by a caller that runs it directly
        self.seq = 0  # (local engine) its number on its worker's channel
        self.transfer: Any = None  # (local engine) shared memory holding its big buffers


class EngineSpec:
    """What a front end asks of an engine: its workers and their limits.

    Args:
        workers: how many workers to keep; 0 asks a cluster backend for the
            cluster's capacity (``Engine.size`` says what it got).
        backend: ``"process"`` (worker processes of ``context``),
            ``"thread"`` (worker threads; objects are passed as they are), or a
            cluster backend object such as ``corral.backends.Dask(...)``
            (``start_engine`` picks the engine by its ``name``).
        context: the corral context whose ``Process`` starts process workers.
        initializer, initargs: each worker calls ``initializer(*initargs)`` first.
        max_tasks: replace a worker after this many tasks.
        max_memory: replace a worker whose resident memory passes this many bytes.
        isolate_failures: False makes any worker death break the whole engine.
        logger_name: the logger a failing initializer is reported to.
        name: names the engine's thread and (with a number) its workers.
    """

    __slots__ = (
        "backend",
        "context",
        "initargs",
        "initializer",
        "isolate_failures",
        "logger_name",
        "max_memory",
        "max_tasks",
        "name",
        "worker_name",
        "workers",
    )

    def __init__(
        self,
        workers: int,
        *,
        backend: Any = "process",
        context: Any = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        max_tasks: int | None = None,
        max_memory: int | None = None,
        isolate_failures: bool = True,
        logger_name: str = "multiprocessing",
        name: str = "corral-engine",
        worker_name: str = "CorralPoolWorker",
    ) -> None:
        self.workers = workers
        self.backend = backend
        self.context = context
        self.initializer = initializer
        self.initargs = initargs
        self.max_tasks = max_tasks
        self.max_memory = max_memory
        self.isolate_failures = isolate_failures
        self.logger_name = logger_name
        self.name = name
        self.worker_name = worker_name


class Engine(Protocol):
    """Runs tasks on a set of workers (see the module docstring).

    Attributes:
        size: how many workers it keeps (its capacity for tasks at once).
        broken: the error that broke it (it runs nothing more), or None.
        thread: the thread that runs it and delivers outcomes, if it has one.
    """

    size: int
    broken: BaseException | None

    @property
    def thread(self) -> threading.Thread | None:
        """The thread that runs the engine and delivers outcomes, if it has one."""
        ...

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
        """Encode ``fn`` and its arguments into a task (not yet submitted).

        For MAP/STARMAP ``args`` is the chunk's list of items and ``kwargs`` None.
        ``progress``: called (any thread, maybe never) with how many items of
        the chunk are done while it runs.

        Raises:
            SerializationError: ``fn`` or an argument cannot be sent to a worker.
        """
        ...

    def submit(self, task: Task) -> None:
        """Queue a task (any thread). A broken or stopped engine fails it at once."""
        ...

    def submit_many(self, tasks: list[Task]) -> None:
        """Queue several tasks, in order, at once."""
        ...

    def run_direct(self, task: Task, *, queued: bool = False) -> bool:
        """Optional fast path for a caller about to block on ``task``.

        Run it in the calling thread if the engine can (an idle worker, nothing
        queued) and return True once ``on_done`` has been or will be called;
        return False (the default answer) to have the caller ``submit`` it.
        ``queued``: the task was submitted already; run it only if
        ``task.claim()`` takes it first.
        """
        ...

    def cancel_queued(self) -> list[Task]:
        """Take back every task that has not started; their ``on_done`` is never called."""
        ...

    def hold(self) -> None:
        """Keep running after ``close()`` until ``release()`` (a feed still submitting)."""
        ...

    def release(self) -> None:
        """Undo one ``hold()``."""
        ...

    def delivering(self) -> bool:
        """Whether the calling thread is delivering a batch of outcomes right now."""
        ...

    def after_delivery(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` once the batch being delivered is over (only while ``delivering()``)."""
        ...

    def close(self) -> None:
        """Run what is queued, then stop the workers."""
        ...

    def stop(self, error: BaseException | None, *, hard: bool = False) -> None:
        """Stop now; fail queued and running tasks with ``error`` (drop them if None).

        ``hard``: kill the workers at once instead of asking them to stop first.
        """
        ...

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the engine has stopped; return whether it has."""
        ...

    def processes(self) -> list[Any]:
        """The live workers' ``Process`` (or thread) objects; empty where there are none."""
        ...

    def insights(self) -> Insights:
        """What the engine measured of its workers and tasks so far (a snapshot)."""
        ...

    def share(self, obj: Any) -> Any:
        """Place ``obj`` where every worker can read it; return a small handle to pass to tasks.

        Raises:
            SerializationError: ``obj`` cannot be sent to a worker.
        """
        ...
