"""``corral.as_completed``: ``concurrent.futures.as_completed`` with ``progress=``.

It takes executor futures (any ``concurrent.futures.Future``) and pool
results (``AsyncResult``/``MapResult``) alike, mixed. Each finished one is
yielded once, in completion order; a failed one counts as finished (its
``result()``/``get()`` raises).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FuturesTimeoutError
from typing import Any, TypeVar

from ._progress import ProgressArg, open_progress

__all__ = ("as_completed",)

_F = TypeVar("_F")


def as_completed(
    fs: Iterable[_F], timeout: float | None = None, *, progress: ProgressArg = False
) -> Iterator[_F]:
    """Yield the futures (or pool results) of ``fs`` as they finish.

    Args:
        fs: ``concurrent.futures.Future`` objects (``executor.submit``) and/or
            pool results (``pool.apply_async``, ``map_async``); duplicates are
            yielded once.
        timeout: seconds from the call after which the iteration raises if
            some are not finished; None waits as long as it takes.
        progress: ``True`` (a bar on stderr), a tqdm bar, or a callable taking
            counts: advanced by one per finished future (docs/progress.md).

    Raises:
        TimeoutError: (``concurrent.futures.TimeoutError``) ``timeout`` passed
            with futures unfinished; the message says how many.
        TypeError: an item is neither a future nor a pool result, or
            ``progress`` is not a bool, a bar or a callable.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    pending = list(dict.fromkeys(fs))
    for f in pending:
        if not isinstance(f, Future) and not hasattr(f, "ready"):
            msg = f"as_completed takes futures and pool results, not {type(f).__name__}"
            raise TypeError(msg)
    bar = open_progress(progress, len(pending), unit="task")
    return _completed(pending, deadline, bar)


def _completed(pending: list[Any], deadline: float | None, bar: Any) -> Iterator[Any]:
    finished: queue.SimpleQueue[Any] = queue.SimpleQueue()
    hooks: list[tuple[list[Callable[[], None]], Callable[[], None]]] = []
    seen: set[int] = set()
    try:
        for f in pending:
            if isinstance(f, Future):
                f.add_done_callback(finished.put)  # at once if it is done already
            else:
                hook = _result_hook(f, finished)
                waiters: list[Callable[[], None]] = f.__dict__.setdefault("_waiters", [])
                waiters.append(hook)
                hooks.append((waiters, hook))
                if f.ready():  # set meanwhile: the hook may have come too late
                    hook()
        total = len(pending)
        while len(seen) < total:
            try:
                if deadline is None:
                    f = finished.get()
                else:
                    f = finished.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                msg = f"{total - len(seen)} (of {total}) futures unfinished"
                raise FuturesTimeoutError(msg) from None
            if id(f) in seen:
                continue  # a pool result reported twice (set while its hook was added)
            seen.add(id(f))
            if bar is not None:
                bar.advance(1)
            yield f
    finally:
        for waiters, hook in hooks:
            try:
                waiters.remove(hook)
            except ValueError:
                pass
        if bar is not None:
            bar.close()


def _result_hook(result: Any, finished: queue.SimpleQueue[Any]) -> Callable[[], None]:
    """A waiter a pool result calls (no arguments) when it is set (``ApplyResult._set``)."""

    def hook() -> None:
        finished.put(result)

    return hook
