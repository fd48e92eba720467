"""``ProcessPoolExecutor`` on corral's engine (``concurrent.futures`` API).

Futures are ``concurrent.futures.Future``, so ``concurrent.futures.wait`` and
``as_completed`` work. Differences from the stdlib's executor, on purpose:

* A worker that dies fails only the future it was running, with
  ``WorkerLostError`` (a ``BrokenProcessPool``); the others still complete and
  the executor keeps working. ``isolate_failures=False`` restores the stdlib's
  "whole pool breaks" behaviour.
* ``task_timeout=`` fails a future that runs too long with ``TaskTimeoutError``
  and replaces its worker; ``max_memory_per_child=`` recycles big workers.
* ``max_tasks_per_child`` works with every start method (the default context
  is still spawn when it is given, as in the stdlib).
* ``map`` reads its input lazily with a bounded window of chunks in flight;
  ``shutdown()`` lifts the bound so that all of its work still runs.
* ``map(..., chunksize="auto")`` sizes the chunks from the time per item
  measured as the call runs (docs/chunking.md); the default is still 1.
* ``terminate_workers()`` and ``kill_workers()`` as in Python 3.14; leaving a
  ``with`` block by ``KeyboardInterrupt`` stops the workers at once instead of
  waiting for running tasks.
* At interpreter exit, work already submitted still runs to completion, as in
  the stdlib (use ``task_timeout`` to bound a task that may hang).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sized
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

from . import context as _context
from ._backend_context import BackendContext
from ._chunking import ChunkSizer, is_auto
from ._engine import CALL, STARMAP, Engine, EngineSpec, Insights, check_spec, start_engine
from ._feed import Feed, FeedTimeout, default_window
from ._future import _Future, _FutureSetter
from ._progress import CallProgress, ProgressArg, open_progress
from .backends import as_backend
from .errors import BrokenProcessPool as BrokenProcessPool
from .errors import RemoteTraceback as _RemoteTraceback  # noqa: F401  (stdlib: process._RemoteTraceback)

if TYPE_CHECKING:
    from ._transfer import Shared

__all__ = ("BrokenProcessPool", "ProcessPoolExecutor")

# For a type checker: what a task returns (_T) and the parameters it takes (_P).
_T = TypeVar("_T")
_P = ParamSpec("_P")

# Engines with work that must finish before the interpreter exits, whether or
# not their executor still exists or was shut down with wait=False (bpo-39205):
# engine -> (the pid that owns it, its executor's feeds). An engine stays alive
# while its thread runs, so weak keys drop exactly the engines that are done.
_live_engines: weakref.WeakKeyDictionary[Engine, tuple[int, set[Feed]]] = (
    weakref.WeakKeyDictionary()
)
_interpreter_exiting = False
_exit_hook_lock = threading.Lock()
_exit_hook_registered = False


def _on_interpreter_exit() -> None:
    """Finish the submitted work of every executor, as the stdlib does."""
    global _interpreter_exiting
    _interpreter_exiting = True
    # A forked child inherits this hook and copies of its parent's engines:
    # those are not its own to wait for.
    own = [(e, feeds) for e, (pid, feeds) in list(_live_engines.items()) if pid == os.getpid()]
    try:
        for engine, feeds in own:
            _close_engine(engine, feeds)
            for feed in list(feeds):
                feed.thread.join()
            engine.join()
    except KeyboardInterrupt:
        # Ctrl-C while exit waits for a task that does not end: stop the
        # workers now instead of leaving the interpreter waiting.
        error = BrokenProcessPool("the interpreter was interrupted while exiting")
        for engine, _feeds in own:
            engine.stop(error, hard=True)
        for engine, _feeds in own:
            engine.join(5.0)
        raise


def _register_exit_hook() -> None:
    global _exit_hook_registered
    with _exit_hook_lock:
        if not _exit_hook_registered:
            # Runs before non-daemon threads are joined, like the stdlib's hook,
            # so submitted work finishes before the interpreter tears down.
            threading._register_atexit(_on_interpreter_exit)  # type: ignore[attr-defined]
            _exit_hook_registered = True


class ProcessPoolExecutor(Executor):
    """Run calls in worker processes; see the module docstring.

    Args:
        max_workers: number of workers; default ``os.cpu_count()``.
        mp_context: the context whose ``Process`` starts workers.
        initializer, initargs: each worker calls ``initializer(*initargs)`` first;
            if it raises, the executor breaks with ``InitializerError``.
        max_tasks_per_child: replace a worker after this many tasks.
        task_timeout: per-task deadline in seconds.
        max_memory_per_child: replace a worker whose RSS exceeds this many bytes.
        isolate_failures: False makes any worker death break the executor.
        backend: where tasks run: None or ``"process"`` (worker processes
            here), ``"dask"`` or ``corral.backends.Dask(...)`` (a Dask cluster;
            ``max_workers`` then defaults to its worker threads), ``"ray"`` or
            ``corral.backends.Ray(...)`` (a Ray cluster; its CPUs).

    Raises:
        ValueError: ``max_workers`` < 1 or bad limits, an unknown backend name.
        TypeError: ``initializer`` is not callable, or a limit is not an int.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        max_tasks_per_child: int | None = None,
        task_timeout: float | None = None,
        max_memory_per_child: int | None = None,
        isolate_failures: bool = True,
        backend: Any = None,
    ) -> None:
        if backend is None and isinstance(mp_context, BackendContext):  # backend.get_context()
            backend = mp_context.corral_backend
        backend = as_backend(backend)
        if max_workers is None:
            # On a cluster, 0 asks the engine for the cluster's capacity.
            max_workers = (os.cpu_count() or 1) if backend == "process" else 0
        elif max_workers <= 0:
            msg = "max_workers must be greater than 0"
            raise ValueError(msg)
        if mp_context is None:
            mp_context = _context._default_context.get_context(
                "spawn" if max_tasks_per_child else None
            )
        else:
            mp_context = _context.as_context(mp_context, "mp_context")
        if initializer is not None and not callable(initializer):
            msg = "initializer must be a callable"
            raise TypeError(msg)
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int):
                msg = "max_tasks_per_child must be an integer"
                raise TypeError(msg)
            if max_tasks_per_child <= 0:
                msg = "max_tasks_per_child must be >= 1"
                raise ValueError(msg)
        if task_timeout is not None and not task_timeout > 0:
            msg = f"task_timeout must be a positive number of seconds or None, not {task_timeout!r}"
            raise ValueError(msg)
        self._owner_pid = os.getpid()
        self._max_workers = max_workers
        self._mp_context = mp_context
        self._task_timeout = task_timeout
        self._engine_spec = EngineSpec(
            max_workers,
            backend=backend,
            context=mp_context,
            initializer=initializer,
            initargs=tuple(initargs),
            max_tasks=max_tasks_per_child,
            max_memory=max_memory_per_child,
            isolate_failures=isolate_failures,
            logger_name="concurrent.futures",
            name=f"corral-executor-engine-{id(self):x}",
            worker_name="CorralExecutorWorker",
        )
        check_spec(self._engine_spec)  # a backend refuses here, not at the first submit
        self._engine: Engine | None = None
        self._feeds: set[Feed] = set()
        self._shutdown_lock = threading.Lock()
        self._shutdown_thread = False
        self._finalizer: weakref.finalize[Any, Any] | None = None

    # ----------------------------------------------------------- introspection

    @property
    def _broken(self) -> BaseException | bool:
        """The error that broke the executor, or False (the stdlib's private attribute)."""
        engine = self._engine
        return engine.broken if engine is not None and engine.broken is not None else False

    @property
    def _processes(self) -> dict[int, Any]:
        """pid -> Process of the live workers (the stdlib's private attribute)."""
        engine = self._engine
        return {p.pid: p for p in engine.processes()} if engine is not None else {}

    @property
    def _executor_manager_thread(self) -> threading.Thread | None:
        return self._engine.thread if self._engine is not None else None

    # ----------------------------------------------------------- submitting

    def _start_engine(self) -> Engine:
        engine = self._engine
        if engine is None:
            _register_exit_hook()
            engine = start_engine(self._engine_spec)
            self._engine = engine
            self._max_workers = engine.size
            self._finalizer = weakref.finalize(self, _close_engine, engine, self._feeds)
            _live_engines[engine] = (self._owner_pid, self._feeds)
        return engine

    def _check_open(self) -> Engine:
        if self._shutdown_thread:
            msg = "cannot schedule new futures after shutdown"
            raise RuntimeError(msg)
        if _interpreter_exiting:
            msg = "cannot schedule new futures after interpreter shutdown"
            raise RuntimeError(msg)
        engine = self._start_engine()
        if engine.broken is not None:
            msg = f"the executor is broken and cannot run new tasks: {engine.broken}"
            raise BrokenProcessPool(msg) from engine.broken
        return engine

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        """Schedule ``fn(*args, **kwargs)``; return its ``Future``.

        An object that cannot be pickled fails the returned future at once
        (with ``SerializationError``, a ``pickle.PicklingError``).

        Raises:
            RuntimeError: after ``shutdown()`` or during interpreter exit.
            BrokenProcessPool: the executor is broken (its initializer failed).
        """
        with self._shutdown_lock:
            engine = self._check_open()
        future = _Future()
        setter = _FutureSetter(future, engine)
        try:
            task = engine.new_task(
                CALL,
                fn,
                args,
                kwargs,
                setter,
                timeout=self._task_timeout,
                claim=setter.claim,
                tag=future,
            )
        except Exception as exc:
            future.set_exception(exc)
            return future
        if self._task_timeout is None:
            future._direct = task
        engine.submit(task)
        return future

    def map(
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | Literal["auto"] = 1,
        progress: ProgressArg = False,
    ) -> Iterator[_T]:
        """Lazy ``map(fn, *iterables)`` in the workers, results in input order.

        ``chunksize``: items per task (default 1, as in the stdlib); ``"auto"``
        sizes each chunk from the time per item measured so far (docs/chunking.md).
        ``progress``: ``True`` (a bar on stderr), a tqdm bar or a callable taking
        counts, advanced per finished item; the total is the shortest input's
        ``len()`` if every input has one (docs/progress.md).

        Raises:
            ValueError: ``chunksize`` < 1 or a string other than ``"auto"``.
            TypeError: ``chunksize`` is neither an int nor ``"auto"``; ``progress``
                is not a bool, a bar or a callable.
            TimeoutError: (while iterating) ``timeout`` seconds after the call.
        """
        sizes: int | ChunkSizer | None = None  # None: "auto", sized once the engine runs
        if not is_auto(chunksize, none=False):
            assert not isinstance(chunksize, str)  # is_auto checked it
            if chunksize < 1:
                msg = "chunksize must be >= 1."
                raise ValueError(msg)
            sizes = chunksize
        deadline = None if timeout is None else time.monotonic() + timeout
        sized = [it for it in iterables if isinstance(it, Sized)]
        total = min((len(it) for it in sized), default=0) if len(sized) == len(iterables) else None
        with self._shutdown_lock:
            engine = self._check_open()
            bar = open_progress(progress, total)
            window = default_window(self._max_workers)
            if sizes is None:
                sizes = ChunkSizer(self._max_workers, total)
            feed = Feed(
                engine,
                fn,
                zip(*iterables),  # noqa: B905  (map stops at the shortest, as the stdlib's)
                sizes,
                STARMAP,
                self._task_timeout,
                window,
                True,
                progress=bar,
            )
            self._feeds.add(feed)
            feed.start()
        return _map_results(feed, deadline, self._feeds, bar)

    def insights(self) -> Insights:
        """Per-worker numbers (tasks, busy, idle, start-up, pickling, bytes, restarts) and advice.

        ``print(executor.insights())`` shows a table and what to change
        (docs/progress.md); before the first task, an empty report.
        """
        engine = self._engine
        if engine is None:
            backend = self._engine_spec.backend
            name = backend if isinstance(backend, str) else getattr(backend, "name", "process")
            return Insights(backend=str(name))
        return engine.insights()

    def share(self, obj: _T) -> Shared[_T]:
        """Place ``obj`` in shared memory once; return a handle to pass to any number of tasks.

        Each task that gets the handle (anywhere in its arguments) receives
        the object itself, rebuilt on read-only views of the shared memory.
        The memory is freed by ``handle.release()``, when the last reference
        to the handle is gone, or when the executor shuts down.

        Raises:
            RuntimeError: after ``shutdown()``.
            SerializationError: ``obj`` cannot be pickled.
        """
        with self._shutdown_lock:
            engine = self._check_open()
        handle: Shared[_T] = engine.share(obj)
        return handle

    # ----------------------------------------------------------- stopping

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no more work; free the workers once the submitted work is done.

        Args:
            wait: block until all submitted work has run and workers exited.
            cancel_futures: cancel the futures that have not started.
        """
        with self._shutdown_lock:
            self._shutdown_thread = True
            engine = self._engine
        if engine is None:
            return
        if cancel_futures:
            for feed in list(self._feeds):
                feed.stop()
            for task in engine.cancel_queued():
                if task.tag is not None:
                    task.tag.cancel()
        for feed in list(self._feeds):
            feed.lift_window()
        engine.close()
        if wait:
            for feed in list(self._feeds):
                feed.thread.join()
            engine.join()

    def terminate_workers(self) -> None:
        """Stop every worker now (SIGTERM, then SIGKILL) and shut down.

        Futures not finished fail with ``BrokenProcessPool``.
        """
        self._stop_workers(hard=False)

    def kill_workers(self) -> None:
        """Kill every worker now (SIGKILL) and shut down.

        Futures not finished fail with ``BrokenProcessPool``.
        """
        self._stop_workers(hard=True)

    def _stop_workers(self, hard: bool) -> None:
        with self._shutdown_lock:
            self._shutdown_thread = True
            engine = self._engine
        if engine is None:
            return
        for feed in list(self._feeds):
            feed.stop()
        engine.stop(
            BrokenProcessPool("the executor's workers were stopped before this task finished"),
            hard=hard,
        )
        engine.join()

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        if exc_type is not None and not issubclass(exc_type, Exception):
            self.terminate_workers()  # Ctrl-C: do not wait for running tasks
        else:
            self.shutdown(wait=True)


def _close_engine(engine: Engine, feeds: set[Feed]) -> None:
    for feed in list(feeds):
        feed.lift_window()
    engine.close()


def _map_results(
    feed: Feed, deadline: float | None, feeds: set[Feed], bar: CallProgress | None = None
) -> Iterator[Any]:
    try:
        while True:
            try:
                ok, value = feed.take(deadline)
            except StopIteration:
                return
            except FeedTimeout:
                raise TimeoutError from None
            if not ok:
                raise value
            # Pop the items so that this generator keeps no reference to a
            # result it has handed out (stdlib bpo-14406).
            value.reverse()
            while value:
                yield value.pop()
    finally:
        feed.stop()
        feeds.discard(feed)
        if bar is not None:
            bar.close()  # the end, an error, Ctrl-C, or the iterator dropped
