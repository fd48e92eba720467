"""``multiprocessing.pool``: ``Pool`` and ``ThreadPool`` on corral's engine.

Same API and errors as the stdlib's, with these differences, all on purpose:

* A worker that dies (signal, segfault, ``os._exit``, ``sys.exit`` in a task)
  fails only the task it was running, with ``WorkerLostError``; the stdlib's
  ``map`` waits forever instead. A replacement worker starts.
* An ``initializer`` that raises breaks the pool once, with ``InitializerError``
  for every pending and later call, instead of respawning workers forever.
* ``task_timeout=`` (seconds, on the constructor and on every call) stops a
  worker whose task runs too long and fails that task with ``TaskTimeoutError``.
  For ``map``-style calls the deadline of a chunk is ``task_timeout`` times its
  length. A ``ThreadPool`` cannot stop a thread: the task fails on time, the
  thread finishes it in the background and is replaced.
* ``max_memory_per_child=`` recycles a worker whose resident memory is above
  that many bytes after a task.
* Arguments that cannot be pickled raise at the call (``apply_async``,
  ``map_async`` ...), not later from ``get()``.
* ``imap``/``imap_unordered`` read their input lazily, keeping a bounded number
  of chunks in flight; ``close()`` lifts that bound so ``close(); join()`` still
  runs all of the input, as with the stdlib.
* ``chunksize="auto"`` on every map-like call sizes the chunks from the time
  per item measured as the call runs (docs/chunking.md); the defaults are the
  stdlib's.
* ``terminate()`` fails the results still pending with ``BrokenProcessPool``
  instead of leaving their ``get()`` waiting forever.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable, Generator, Iterable, Mapping, Sized
from concurrent.futures import CancelledError
from functools import partial
from itertools import islice
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from . import context as _context
from . import util
from ._backend_context import BackendContext
from ._chunking import ChunkSizer, is_auto
from ._engine import CALL, MAP, STARMAP, Engine, EngineSpec, Insights, start_engine
from ._feed import Feed, FeedTimeout, default_window
from ._progress import CallProgress, ProgressArg, open_progress
from ._typevars import T as _T
from .backends import as_backend
from .errors import BrokenProcessPool, TimeoutError
from .errors import MaybeEncodingError as MaybeEncodingError
from .errors import RemoteTraceback as RemoteTraceback

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._transfer import Shared

__all__ = ("Pool", "ThreadPool")

# Pool states, with the stdlib's names and values.
INIT = "INIT"
RUN = "RUN"
CLOSE = "CLOSE"
TERMINATE = "TERMINATE"

_DEFAULT: Any = object()

# For a type checker: what a task takes (_S); what it returns is _T.
_S = TypeVar("_S")


def _check_positive_timeout(task_timeout: float | None) -> None:
    if task_timeout is not None and not task_timeout > 0:
        msg = f"task_timeout must be a positive number of seconds or None, not {task_timeout!r}"
        raise ValueError(msg)


class ApplyResult(Generic[_T]):
    """The result of ``apply_async``: ``get``, ``wait``, ``ready``, ``successful``.

    ``ApplyResult[int]`` (alias ``AsyncResult[int]``) is the result of a call returning int.
    """

    def __init__(
        self,
        pool: Pool | None,
        callback: Callable[[_T], object] | None,
        error_callback: Callable[[BaseException], object] | None,
    ) -> None:
        self._pool = pool  # keeps the pool alive while the result is pending
        self._event = threading.Event()
        self._callback = callback
        self._error_callback = error_callback
        self._success: bool | None = None
        self._value: Any = None
        self._started = False  # a task of it was handed to a worker (_claim)
        self._cancelled = False  # its awaiting coroutine was cancelled first

    def ready(self) -> bool:
        """Whether the call has completed."""
        return self._event.is_set()

    def successful(self) -> bool:
        """Whether the call completed without raising.

        Raises:
            ValueError: the result is not ready yet.
        """
        if not self.ready():
            msg = f"{self!r} not ready"
            raise ValueError(msg)
        return bool(self._success)

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the result is available or ``timeout`` seconds pass."""
        self._event.wait(timeout)

    def get(self, timeout: float | None = None) -> _T:
        """Return the result; re-raise the task's exception.

        Raises:
            corral.TimeoutError: not ready within ``timeout`` seconds.
        """
        if not self._event.wait(timeout):
            raise TimeoutError
        if self._success:
            result: _T = self._value
            return result
        raise self._value

    def _set(self, ok: bool, value: Any) -> None:
        self._success = ok
        self._value = value
        try:
            if ok and self._callback is not None:
                self._callback(value)
            elif not ok and self._error_callback is not None:
                self._error_callback(value)
        finally:
            self._event.set()
            self._pool = None
            waiters = self.__dict__.get("_waiters")  # awaiting coroutines (__await__)
            if waiters:
                for wake in list(waiters):
                    wake()

    def __await__(self) -> Generator[Any, None, _T]:
        """``await result``: the result in a coroutine, without blocking the event loop.

        Re-raises the task's exception. Cancelling the awaiting coroutine (or
        ``asyncio.wait_for`` running out) stops the waiting, not the call,
        which still runs and sets this result.
        """
        return self._wait_in_loop().__await__()

    def _claim(self) -> bool:
        """(The engine, as a task of this result starts) False drops it: cancelled."""
        with _claims:
            if self._cancelled:
                return False
            self._started = True
            return True

    def _cancel_if_not_started(self) -> None:
        """Cancel the call if no task of it has started: ``get()`` then raises CancelledError."""
        with _claims:
            if self._started or self._event.is_set():
                return
            self._cancelled = True
        msg = "the coroutine awaiting this call was cancelled before the call started"
        ApplyResult._set(self, False, CancelledError(msg))

    async def _wait_in_loop(self) -> _T:
        if not self._event.is_set():
            import asyncio

            loop = asyncio.get_running_loop()
            waiter = loop.create_future()

            def wake() -> None:
                loop.call_soon_threadsafe(_resolve_waiter, waiter)

            waiters: list[Callable[[], None]] = self.__dict__.setdefault("_waiters", [])
            waiters.append(wake)
            if self._event.is_set():  # set meanwhile: _set may have missed the new waiter
                wake()
            try:
                await waiter
            except BaseException:  # cancelled (asyncio.wait_for ran out...)
                self._cancel_if_not_started()
                raise
            finally:
                waiters.remove(wake)
        return self.get(0)


# Guards an AsyncResult's started/cancelled pair (claim in the engine thread,
# cancel in an event loop's); one for all: it is held for two assignments.
_claims = threading.Lock()


def _resolve_waiter(waiter: Any) -> None:
    if not waiter.done():
        waiter.set_result(None)


AsyncResult = ApplyResult


class MapResult(ApplyResult[list[_T]]):
    """The result of ``map_async``/``starmap_async``: one list, filled chunk by chunk.

    ``MapResult[int]`` is an ``AsyncResult[list[int]]``.
    """

    def __init__(
        self,
        pool: Pool | None,
        chunk_lengths: list[int],
        callback: Callable[[list[_T]], object] | None,
        error_callback: Callable[[BaseException], object] | None,
    ) -> None:
        super().__init__(pool, callback, error_callback)
        self._success = True
        self._value = [None] * sum(chunk_lengths)
        self._starts = [0] * len(chunk_lengths)
        position = 0
        for i, n in enumerate(chunk_lengths):
            self._starts[i] = position
            position += n
        self._number_left = len(chunk_lengths)
        if not chunk_lengths:
            self._event.set()
            self._pool = None

    _bar: CallProgress | None = None  # the call's progress (progress=), if any

    def get(self, timeout: float | None = None) -> list[_T]:
        """Return the list of results; re-raise the first task's exception.

        Raises:
            corral.TimeoutError: not ready within ``timeout`` seconds.
        """
        if self._bar is None:
            return super().get(timeout)
        try:
            return super().get(timeout)
        except KeyboardInterrupt:
            self._bar.close()  # Ctrl-C in the waiting caller ends the bar
            raise

    def _set_chunk(self, index: int, ok: bool, value: Any) -> None:
        self._number_left -= 1
        if ok and self._success:
            start = self._starts[index]
            self._value[start : start + len(value)] = value
        elif not ok and self._success:
            self._success = False  # keep the first error only
            self._value = value
        if self._number_left == 0:
            ApplyResult._set(self, bool(self._success), self._value)


class _AutoMapResult(MapResult[_T]):
    """A ``MapResult`` whose chunks are cut while the call runs (``chunksize="auto"``).

    The feed reports each chunk's outcome with the position of its first item
    (``_set_at``, in the engine's thread) and, once all are submitted, how many
    there are (``_all_submitted``, in the feed's thread).
    """

    def __init__(
        self,
        pool: Pool | None,
        length: int,
        callback: Callable[[list[_T]], object] | None,
        error_callback: Callable[[BaseException], object] | None,
    ) -> None:
        ApplyResult.__init__(self, pool, callback, error_callback)
        self._success = True
        self._value = [None] * length
        self._lock = threading.Lock()
        self._received = 0
        self._chunks: int | None = None  # known once the feed has submitted them all
        self._finished = False

    def _set_at(self, start: int, ok: bool, value: Any) -> None:
        with self._lock:
            if self._finished or self._event.is_set():  # cancelled before it started
                return
            self._received += 1
            if ok and self._success:
                self._value[start : start + len(value)] = value
            elif not ok and self._success:
                self._success = False  # keep the first error only
                self._value = value
            self._finished = self._received == self._chunks
            if not self._finished:
                return
        ApplyResult._set(self, bool(self._success), self._value)

    def _all_submitted(self, chunks: int) -> None:
        with self._lock:
            if self._finished or self._event.is_set():
                return
            self._chunks = chunks
            self._finished = self._received == chunks
            if not self._finished:
                return
        ApplyResult._set(self, bool(self._success), self._value)


class IMapIterator(Generic[_T]):
    """The iterator ``imap`` returns; ``next(timeout)`` raises ``corral.TimeoutError``.

    ``IMapIterator[int]`` yields the ints the task returns.
    """

    def __init__(self, feed: Feed, bar: CallProgress | None = None) -> None:
        self._feed = feed
        self._items: list[Any] = []  # the current chunk's results, reversed
        self._bar = bar
        self._finalizer = util.Finalize(self, _stop_feed, args=(feed, bar))

    def __iter__(self) -> IMapIterator[_T]:
        return self

    def next(self, timeout: float | None = None) -> _T:
        """The next result; re-raise a task's exception at its place.

        Raises:
            StopIteration: all results were returned.
            corral.TimeoutError: none arrived within ``timeout`` seconds.
        """
        if self._items:
            item: _T = self._items.pop()
            return item
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                ok, value = self._feed.take(deadline)
            except FeedTimeout:
                raise TimeoutError from None
            except BaseException:  # the end (StopIteration), Ctrl-C: the bar ends too
                if self._bar is not None:
                    self._bar.close()
                raise
            if not ok:
                if self._bar is not None:
                    self._bar.close()
                raise value
            if value:
                value.reverse()
                item = value.pop()
                self._items = value
                return item

    __next__ = next

    def __aiter__(self) -> IMapIterator[_T]:
        return self

    async def __anext__(self) -> _T:
        """``async for item in pool.imap(...)``: the next result, waited for in a thread.

        Raises:
            StopAsyncIteration: all results were returned.
        """
        if self._items:  # the rest of a chunk already here
            item: _T = self._items.pop()
            return item
        import asyncio

        done, value = await asyncio.to_thread(self._next_or_end)
        if done:
            raise StopAsyncIteration
        return value

    def _next_or_end(self) -> tuple[bool, Any]:
        try:
            return False, self.next()
        except StopIteration:  # may not cross into a coroutine
            return True, None


class IMapUnorderedIterator(IMapIterator[_T]):
    """The iterator ``imap_unordered`` returns: results in completion order."""


def _stop_feed(feed: Feed, bar: CallProgress | None) -> None:
    feed.stop()
    if bar is not None:
        bar.close()


class Pool:
    """A pool of worker processes (the stdlib's ``multiprocessing.pool.Pool``).

    Args:
        processes: number of workers; default ``os.cpu_count()``.
        initializer, initargs: each worker calls ``initializer(*initargs)`` first.
        maxtasksperchild: replace a worker after this many tasks (chunks).
        context: the context whose ``Process`` starts workers.
        task_timeout: default per-task deadline in seconds (see the module doc).
        max_memory_per_child: replace a worker whose RSS exceeds this many bytes.
        isolate_failures: False makes any worker death break the whole pool,
            like the stdlib's executor; by default only its task fails.
        backend: where tasks run: None or ``"process"`` (worker processes
            here), ``"dask"`` or ``corral.backends.Dask(...)`` (a Dask cluster;
            ``processes`` then defaults to its worker threads), ``"ray"`` or
            ``corral.backends.Ray(...)`` (a Ray cluster; its CPUs).

    Raises:
        ValueError: ``processes`` < 1, bad ``maxtasksperchild`` or ``task_timeout``,
            an unknown backend name.
        TypeError: ``initializer`` is not callable.
        ImportError: the backend's package is not installed (names the extra).
        OSError: a worker could not be started (none is left running).
    """

    _state = INIT

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        *,
        task_timeout: float | None = None,
        max_memory_per_child: int | None = None,
        isolate_failures: bool = True,
        backend: Any = None,
    ) -> None:
        if backend is None and isinstance(context, BackendContext):  # backend.get_context()
            backend = context.corral_backend
        self._backend = as_backend(backend)
        # None keeps the default context itself: workers started later follow
        # set_start_method(force=True); any other object is normalised.
        if context is None:
            self._ctx: Any = _context._default_context
        else:
            self._ctx = _context.as_context(context, "context")
        if processes is None:
            # On a cluster, 0 asks the engine for the cluster's capacity.
            processes = (os.cpu_count() or 1) if self._backend == "process" else 0
        elif processes < 1:
            msg = "Number of processes must be at least 1"
            raise ValueError(msg)
        if maxtasksperchild is not None and (
            not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0
        ):
            msg = "maxtasksperchild must be a positive int or None"
            raise ValueError(msg)
        if initializer is not None and not callable(initializer):
            msg = "initializer must be a callable"
            raise TypeError(msg)
        _check_positive_timeout(task_timeout)
        self._processes = processes
        self._maxtasksperchild = maxtasksperchild
        self._task_timeout = task_timeout
        self._isolate_failures = isolate_failures
        self._feeds: set[Feed] = set()
        self._engine: Engine = start_engine(
            self._engine_spec(initializer, tuple(initargs), maxtasksperchild, max_memory_per_child)
        )
        self._processes = self._engine.size
        self._state = RUN
        self._terminate = util.Finalize(
            self, _terminate_pool, args=(self._engine, self._feeds), exitpriority=15
        )

    def _engine_spec(
        self,
        initializer: Callable[..., object] | None,
        initargs: tuple[Any, ...],
        max_tasks: int | None,
        max_memory: int | None,
    ) -> EngineSpec:
        return EngineSpec(
            self._processes,
            backend=self._backend,
            context=self._ctx,
            initializer=initializer,
            initargs=initargs,
            max_tasks=max_tasks,
            max_memory=max_memory,
            isolate_failures=self._isolate_failures,
            name=f"corral-pool-engine-{id(self):x}",
            worker_name="CorralPoolWorker",
        )

    # ----------------------------------------------------------- introspection

    @property
    def _pool(self) -> list[Any]:
        """The live workers' Process objects (the stdlib's private attribute)."""
        return self._engine.processes()

    def _repopulate_pool(self) -> None:
        """Does nothing: the engine replaces workers as they exit (the stdlib's method)."""

    def __repr__(self) -> str:
        name = f"{type(self).__module__}.{type(self).__qualname__}"
        return f"<{name} state={self._state} pool_size={self._processes}>"

    def __reduce__(self) -> Any:
        msg = "pool objects cannot be passed between processes or pickled"
        raise NotImplementedError(msg)

    def __del__(self, _warn: Any = warnings.warn, RUN: str = RUN) -> None:
        if self._state == RUN:
            _warn(f"unclosed running multiprocessing pool {self!r}", ResourceWarning, source=self)

    # ----------------------------------------------------------- calls

    def _check_running(self) -> None:
        if self._state != RUN:
            msg = "Pool not running"
            raise ValueError(msg)

    def _timeout(self, task_timeout: Any) -> float | None:
        if task_timeout is _DEFAULT:
            return self._task_timeout
        _check_positive_timeout(task_timeout)
        result: float | None = task_timeout
        return result

    def apply(
        self,
        func: Callable[..., _T],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] | None = None,
        *,
        task_timeout: float | None = _DEFAULT,
    ) -> _T:
        """Call ``func(*args, **kwds)`` in a worker and return its result.

        With an idle worker and no ``task_timeout`` the caller talks to the
        worker itself, without the engine thread in between (``Engine.run_direct``).

        Raises:
            ValueError: the pool is closed or terminated.
            SerializationError: ``func`` or an argument cannot be pickled.
            Exception: whatever the call raised, with the remote traceback as cause.
        """
        self._check_running()
        timeout = self._timeout(task_timeout)
        result: ApplyResult[_T] = ApplyResult(self, None, None)
        task = self._engine.new_task(
            CALL, func, tuple(args), kwds or {}, result._set, timeout=timeout
        )
        if timeout is not None or not self._engine.run_direct(task):
            self._engine.submit(task)
        return result.get()

    def apply_async(
        self,
        func: Callable[..., _T],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] | None = None,
        callback: Callable[[_T], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        task_timeout: float | None = _DEFAULT,
    ) -> ApplyResult[_T]:
        """Start ``func(*args, **kwds)`` in a worker; return an ``AsyncResult``.

        Raises:
            ValueError: the pool is closed or terminated.
            SerializationError: ``func`` or an argument cannot be pickled.
        """
        self._check_running()
        timeout = self._timeout(task_timeout)
        result = ApplyResult(self, callback, error_callback)
        task = self._engine.new_task(
            CALL, func, tuple(args), kwds or {}, result._set, timeout=timeout, claim=result._claim
        )
        self._engine.submit(task)
        return result

    def _map_async(
        self,
        kind: int,
        func: Callable[..., _T],
        iterable: Iterable[Any],
        chunksize: int | Literal["auto"] | None,
        callback: Callable[[list[_T]], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        task_timeout: Any,
        cancellable: bool = False,
        progress: ProgressArg = False,
    ) -> MapResult[_T]:
        # cancellable: map_async/starmap_async, whose result may be awaited and
        # the awaiter cancelled; map/starmap wait for it here and cannot be.
        self._check_running()
        timeout = self._timeout(task_timeout)
        auto = is_auto(chunksize)
        if not hasattr(iterable, "__len__"):
            iterable = list(iterable)
        length = len(iterable)  # type: ignore[arg-type]
        if auto and length:
            # A copy (of references: fast), so that changing the caller's list
            # after the call changes nothing, as when the chunks are cut here.
            return self._map_auto(
                kind, func, list(iterable), callback, error_callback, timeout, cancellable, progress
            )
        if auto or chunksize is None:
            chunksize, extra = divmod(length, self._processes * 4)
            if extra:
                chunksize += 1
        if length == 0:
            chunksize = 1
        assert not isinstance(chunksize, str)  # is_auto checked it
        if chunksize < 1:
            msg = f"Chunksize must be 1+, not {chunksize}"
            raise ValueError(msg)
        items = iter(iterable)
        chunks = []
        while True:
            chunk = list(islice(items, chunksize))
            if not chunk:
                break
            chunks.append(chunk)
        result: MapResult[_T] = MapResult(self, [len(c) for c in chunks], callback, error_callback)
        new_task = self._engine.new_task
        bar = result._bar = open_progress(progress, length)
        tasks = [
            new_task(
                kind,
                func,
                chunk,
                None,
                partial(result._set_chunk, i)
                if bar is None
                else bar.wrap(i, partial(result._set_chunk, i)),
                timeout=None if timeout is None else timeout * len(chunk),
                claim=result._claim if cancellable else None,
                progress=None if bar is None else partial(bar.partial, i),
            )
            for i, chunk in enumerate(chunks)
        ]
        if tasks:
            self._engine.submit_many(tasks)
        return result

    def _map_auto(
        self,
        kind: int,
        func: Callable[..., _T],
        items: list[Any],
        callback: Callable[[list[_T]], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        timeout: float | None,
        cancellable: bool,
        progress: ProgressArg,
    ) -> MapResult[_T]:
        """``map_async`` with ``chunksize="auto"``: a feed cuts the chunks as they finish."""
        length = len(items)
        result: _AutoMapResult[_T] = _AutoMapResult(self, length, callback, error_callback)
        bar = result._bar = open_progress(progress, length)
        feed = Feed(
            self._engine,
            func,
            items,
            ChunkSizer(self._processes, length),
            kind,
            timeout,
            None,
            False,
            claim=result._claim if cancellable else None,
            sink=result._set_at,
            on_end=result._all_submitted,
            progress=bar,
        )
        self._start_feed(feed, "map", first_here=True)
        return result

    def _start_feed(self, feed: Feed, name: str, first_here: bool = False) -> None:
        for done in [f for f in self._feeds if not f.thread.is_alive() and f.thread.ident]:
            self._feeds.discard(done)  # feeds whose thread has ended (a long-lived pool)
        feed.thread.name = f"corral-{name}-feed-{id(feed):x}"
        self._feeds.add(feed)
        try:
            feed.start(first_here=first_here)
        except BaseException:  # (first_here) the first chunk cannot be encoded: nothing started
            self._feeds.discard(feed)
            raise

    def map(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int | Literal["auto"] | None = None,
        *,
        task_timeout: float | None = _DEFAULT,
        progress: ProgressArg = False,
    ) -> list[_T]:
        """``list(map(func, iterable))`` in the workers, in chunks; re-raise the first error.

        ``chunksize``: items per task; None (the default, as in the stdlib)
        cuts the input into about four chunks per worker; ``"auto"`` sizes
        each chunk from the time per item measured so far (docs/chunking.md).
        ``progress``: ``True`` (a bar on stderr), a tqdm bar or a callable taking
        counts: advanced per finished item (docs/progress.md).

        Raises:
            ValueError: ``chunksize`` < 1 or a string other than ``"auto"``;
                the pool is closed or terminated.
            TypeError: ``chunksize`` is neither an int, None nor ``"auto"``;
                ``progress`` is not a bool, a bar or a callable.
            Exception: the first error a task raised, with the remote traceback as cause.
        """
        return self._map_async(
            MAP, func, iterable, chunksize, None, None, task_timeout, progress=progress
        ).get()

    def map_async(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int | Literal["auto"] | None = None,
        callback: Callable[[list[_T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        task_timeout: float | None = _DEFAULT,
        progress: ProgressArg = False,
    ) -> MapResult[_T]:
        """Start ``map``; return a ``MapResult``."""
        return self._map_async(
            MAP, func, iterable, chunksize, callback, error_callback, task_timeout, True, progress
        )

    def starmap(
        self,
        func: Callable[..., _T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | Literal["auto"] | None = None,
        *,
        task_timeout: float | None = _DEFAULT,
        progress: ProgressArg = False,
    ) -> list[_T]:
        """Like ``map`` with ``func(*args)`` for each ``args`` in ``iterable``."""
        return self._map_async(
            STARMAP, func, iterable, chunksize, None, None, task_timeout, progress=progress
        ).get()

    def starmap_async(
        self,
        func: Callable[..., _T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | Literal["auto"] | None = None,
        callback: Callable[[list[_T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        task_timeout: float | None = _DEFAULT,
        progress: ProgressArg = False,
    ) -> MapResult[_T]:
        """Start ``starmap``; return a ``MapResult``."""
        return self._map_async(
            STARMAP,
            func,
            iterable,
            chunksize,
            callback,
            error_callback,
            task_timeout,
            True,
            progress,
        )

    def _imap(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int | Literal["auto"],
        ordered: bool,
        task_timeout: Any,
        progress: ProgressArg = False,
    ) -> IMapIterator[_T]:
        self._check_running()
        timeout = self._timeout(task_timeout)
        sizes: int | ChunkSizer
        if is_auto(chunksize, none=False):
            sizes = ChunkSizer(self._processes, _length_if_known(iterable))
        else:
            assert not isinstance(chunksize, str)  # is_auto checked it
            if chunksize < 1:
                msg = f"Chunksize must be 1+, not {chunksize:n}"
                raise ValueError(msg)
            sizes = chunksize
        window = default_window(self._processes)
        total = len(iterable) if isinstance(iterable, Sized) else None
        bar = open_progress(progress, total)
        feed = Feed(
            self._engine, func, iterable, sizes, MAP, timeout, window, ordered, progress=bar
        )
        self._start_feed(feed, "imap")
        return IMapIterator(feed, bar) if ordered else IMapUnorderedIterator(feed, bar)

    def imap(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int | Literal["auto"] = 1,
        *,
        task_timeout: float | None = _DEFAULT,
        progress: ProgressArg = False,
    ) -> IMapIterator[_T]:
        """Lazy ``map``: results in input order as they arrive.

        ``chunksize``: items per task (default 1, as in the stdlib); ``"auto"``
        sizes each chunk from the time per item measured so far (docs/chunking.md).
        ``progress`` counts finished items, not items taken from the iterator;
        the total is ``len(iterable)`` if it has one.

        Raises:
            ValueError: ``chunksize`` < 1 or a string other than ``"auto"``;
                the pool is closed or terminated.
            TypeError: ``chunksize`` is neither an int nor ``"auto"``; ``progress``
                is not a bool, a bar or a callable.
        """
        return self._imap(func, iterable, chunksize, True, task_timeout, progress)

    def imap_unordered(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int | Literal["auto"] = 1,
        *,
        task_timeout: float | None = _DEFAULT,
        progress: ProgressArg = False,
    ) -> IMapIterator[_T]:
        """Lazy ``map``: results in completion order (``chunksize``, ``progress``: see ``imap``)."""
        return self._imap(func, iterable, chunksize, False, task_timeout, progress)

    def share(self, obj: _T) -> Shared[_T]:
        """Place ``obj`` in shared memory once; return a handle to pass to any number of tasks.

        Each task that gets the handle (anywhere in its arguments) receives
        the object itself, rebuilt on read-only views of the shared memory:
        a NumPy array is neither pickled nor copied per task. The memory is
        freed by ``handle.release()``, when the last reference to the handle
        is gone, or when the pool ends. In a ``ThreadPool`` the handle holds
        the object itself (found in a task's arguments and in the items of
        map-like calls, one level down).

        Raises:
            ValueError: the pool is closed or terminated.
            SerializationError: ``obj`` cannot be pickled.
        """
        self._check_running()
        handle: Shared[_T] = self._engine.share(obj)
        return handle

    def insights(self) -> Insights:
        """Per-worker numbers (tasks, busy, idle, start-up, pickling, bytes, restarts) and advice.

        ``print(pool.insights())`` shows a table and what to change; the
        numbers are a snapshot (see docs/progress.md). Cluster backends give
        totals measured in this process only.
        """
        return self._engine.insights()

    # ----------------------------------------------------------- lifetime

    def close(self) -> None:
        """Accept no more work; workers exit once the submitted work is done."""
        if self._state == RUN:
            self._state = CLOSE
            for feed in list(self._feeds):
                feed.lift_window()
            self._engine.close()

    def terminate(self) -> None:
        """Stop the workers now; pending results fail with ``BrokenProcessPool``."""
        self._state = TERMINATE
        self._terminate()

    def join(self) -> None:
        """Wait for the workers to exit (after ``close()`` or ``terminate()``).

        Raises:
            ValueError: the pool is still running.
        """
        if self._state == RUN:
            msg = "Pool is still running"
            raise ValueError(msg)
        if self._state not in (CLOSE, TERMINATE):
            msg = "In unknown state"
            raise ValueError(msg)
        for feed in list(self._feeds):
            feed.thread.join()
        self._feeds.clear()
        self._engine.join()

    def __enter__(self) -> Self:
        self._check_running()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()


def _length_if_known(iterable: Iterable[Any]) -> int | None:
    """``len(iterable)`` for a sized input (a list, a range), None for an iterator."""
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def _terminate_pool(engine: Engine, feeds: set[Feed]) -> None:
    for feed in list(feeds):
        feed.stop()
    engine.stop(BrokenProcessPool("the pool was terminated before this task finished"))
    engine.join()
    for feed in list(feeds):
        feed.thread.join()


class ThreadPool(Pool):
    """``Pool`` on threads: same API, objects are passed without pickling."""

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        *,
        task_timeout: float | None = None,
        backend: Any = None,
    ) -> None:
        if backend is not None and backend != "thread":
            msg = (
                f"ThreadPool runs its tasks on threads of this process and takes no "
                f"backend={backend!r}; use corral.Pool(backend=...) to run them elsewhere"
            )
            raise ValueError(msg)
        super().__init__(processes, initializer, initargs, task_timeout=task_timeout)

    def _engine_spec(
        self,
        initializer: Callable[..., object] | None,
        initargs: tuple[Any, ...],
        max_tasks: int | None,
        max_memory: int | None,
    ) -> EngineSpec:
        return EngineSpec(
            self._processes,
            backend="thread",
            initializer=initializer,
            initargs=initargs,
            max_tasks=max_tasks,
            name=f"corral-threadpool-engine-{id(self):x}",
            worker_name="CorralThreadPoolWorker",
        )
