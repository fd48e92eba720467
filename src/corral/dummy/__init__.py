"""The multiprocessing API on threads (``multiprocessing.dummy``).

Same names as the top-level package, backed by ``threading`` and ``queue``:
useful to switch a program between processes and threads with one import.
``Pool`` (a thread pool) arrives with corral's pool engine.
"""

from __future__ import annotations

import array
import threading
import weakref
from collections.abc import Callable, Iterable
from queue import Queue
from typing import TYPE_CHECKING, Any

from . import connection
from .connection import Pipe

if TYPE_CHECKING:
    from ..pool import ThreadPool

__all__ = (
    "Array",
    "Barrier",
    "BoundedSemaphore",
    "Condition",
    "Event",
    "JoinableQueue",
    "Lock",
    "Manager",
    "Namespace",
    "Pipe",
    "Pool",
    "Process",
    "Queue",
    "RLock",
    "Semaphore",
    "Value",
    "active_children",
    "connection",
    "current_process",
    "freeze_support",
    "shutdown",
)

Lock = threading.Lock
RLock = threading.RLock
Semaphore = threading.Semaphore
BoundedSemaphore = threading.BoundedSemaphore
Condition = threading.Condition
Event = threading.Event
Barrier = threading.Barrier
JoinableQueue = Queue


class DummyProcess(threading.Thread):
    """A thread with the ``Process`` API (``exitcode``, ``start``, ``join``, ...)."""

    def __init__(
        self,
        group: None = None,
        target: Any = None,
        name: str | None = None,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        threading.Thread.__init__(self, group, target, name, args, kwargs or {})
        self._pid = None
        self._children: weakref.WeakKeyDictionary[DummyProcess, None] = weakref.WeakKeyDictionary()
        self._start_called = False
        self._parent = current_process()

    def start(self) -> None:
        """Start the thread.

        Raises:
            AssertionError: called from a thread other than the one that created it.
        """
        if self._parent is not current_process():
            msg = f"Parent is {self._parent!r} but current_process is {current_process()!r}"
            raise RuntimeError(msg)
        self._start_called = True
        if hasattr(self._parent, "_children"):
            self._parent._children[self] = None
        threading.Thread.start(self)

    @property
    def exitcode(self) -> int | None:
        """0 once the thread has finished, None before."""
        if self._start_called and not self.is_alive():
            return 0
        return None


Process = DummyProcess
current_process = threading.current_thread
current_process()._children = weakref.WeakKeyDictionary()  # type: ignore[attr-defined]


def active_children() -> list[DummyProcess]:
    """The threads started from this thread that are still running."""
    children = current_process()._children  # type: ignore[attr-defined]
    for child in list(children):
        if not child.is_alive():
            children.pop(child, None)
    return list(children)


def freeze_support() -> None:
    """Nothing to do for threads."""


class Namespace:
    """A plain attribute bag whose repr lists its public attributes."""

    def __init__(self, /, **kwds: Any) -> None:
        self.__dict__.update(kwds)

    def __repr__(self) -> str:
        items = sorted((k, v) for k, v in self.__dict__.items() if not k.startswith("_"))
        return "Namespace(" + ", ".join(f"{k}={v!r}" for k, v in items) + ")"


dict = dict
list = list


def Array(typecode: str, sequence: Any, lock: bool = True) -> array.array:
    """A plain ``array.array`` (threads share memory already)."""
    return array.array(typecode, sequence)


class Value:
    """A boxed value with the ``.value`` attribute of ``corral.Value``."""

    def __init__(self, typecode: str, value: Any, lock: bool = True) -> None:
        self._typecode = typecode
        self._value = value

    @property
    def value(self) -> Any:
        return self._value

    @value.setter
    def value(self, value: Any) -> None:
        self._value = value

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__}({self._typecode!r}, {self._value!r})>"


def Manager() -> Any:
    """This module itself: its Queue, Lock, dict, ... are already shared by threads."""
    import sys

    return sys.modules[__name__]


def Pool(
    processes: int | None = None,
    initializer: Callable[..., object] | None = None,
    initargs: Iterable[Any] = (),
) -> ThreadPool:
    """A ``ThreadPool``: the ``Pool`` API on worker threads (``corral.pool.ThreadPool``)."""
    from ..pool import ThreadPool

    return ThreadPool(processes, initializer, initargs)


def shutdown() -> None:
    """Nothing to shut down for threads."""
