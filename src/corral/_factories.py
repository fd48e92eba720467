"""The factories of a context: ``ctx.Lock()``, ``ctx.Queue()``, ``ctx.Pool()``, ...

``ContextFactories`` is the base class of every context (``corral.context.BaseContext``):
it holds the methods that build the objects of the layers above the contexts
(connections, locks, shared ctypes, queues, managers, pools). Each one imports
its module when called, never at import: these methods are the documented lazy
factories through which the ground floor (``_contexts``, the contexts and the
default context, which almost every module imports) reaches the upper layers
without an import cycle (docs/architecture.md, "Layers"). This module imports
nothing of corral at import time.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing is not imported at run time (import speed)
if TYPE_CHECKING:
    import ctypes
    import logging
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any, Literal, TypeVar, overload

    from . import pool, queues, synchronize
    from ._contexts import BaseContext
    from ._wire import Connection
    from .managers import SyncManager
    from .sharedctypes import Synchronized, SynchronizedArray, SynchronizedString

    _T = TypeVar("_T")
    # A ctypes type (ctypes' own private base, as typeshed spells it).
    _CT = TypeVar("_CT", bound="ctypes._CData")
else:

    def overload(fn: Any) -> Any:
        """typing.overload without importing typing: the last definition wins."""
        return fn


__all__ = ("ContextFactories",)


class ContextFactories:
    """The factories of a context; each passes the context on (``ctx=self.get_context()``)."""

    if TYPE_CHECKING:
        # Defined by BaseContext (the concrete context this one stands for).
        def get_context(self, method: str | None = None) -> BaseContext: ...

    def Pipe(self, duplex: bool = True) -> tuple[Connection, Connection]:
        """Return two connected ``Connection`` objects (see ``corral.connection.Pipe``)."""
        from .connection import Pipe

        return Pipe(duplex)

    def Lock(self) -> synchronize.Lock:
        """A non-recursive lock shared with children (``corral.synchronize.Lock``)."""
        from .synchronize import Lock

        return Lock(ctx=self.get_context())

    def RLock(self) -> synchronize.RLock:
        """A recursive lock shared with children (``corral.synchronize.RLock``)."""
        from .synchronize import RLock

        return RLock(ctx=self.get_context())

    def Condition(
        self, lock: synchronize.Lock | synchronize.RLock | None = None
    ) -> synchronize.Condition:
        """A condition variable shared with children (``corral.synchronize.Condition``)."""
        from .synchronize import Condition

        return Condition(lock, ctx=self.get_context())

    def Semaphore(self, value: int = 1) -> synchronize.Semaphore:
        """A semaphore shared with children (``corral.synchronize.Semaphore``)."""
        from .synchronize import Semaphore

        return Semaphore(value, ctx=self.get_context())

    def BoundedSemaphore(self, value: int = 1) -> synchronize.BoundedSemaphore:
        """A bounded semaphore shared with children."""
        from .synchronize import BoundedSemaphore

        return BoundedSemaphore(value, ctx=self.get_context())

    def Event(self) -> synchronize.Event:
        """An event flag shared with children (``corral.synchronize.Event``)."""
        from .synchronize import Event

        return Event(ctx=self.get_context())

    def Barrier(
        self,
        parties: int,
        action: Callable[[], object] | None = None,
        timeout: float | None = None,
    ) -> synchronize.Barrier:
        """A barrier for ``parties`` processes (``corral.synchronize.Barrier``)."""
        from .synchronize import Barrier

        return Barrier(parties, action, timeout, ctx=self.get_context())

    @overload
    def RawValue(self, typecode_or_type: type[_CT], *args: Any) -> _CT: ...
    @overload
    def RawValue(self, typecode_or_type: str, *args: Any) -> Any: ...
    def RawValue(self, typecode_or_type: Any, *args: Any) -> Any:
        """A ctypes object in shared memory, without a lock."""
        from .sharedctypes import RawValue

        return RawValue(typecode_or_type, *args)

    @overload
    def RawArray(
        self, typecode_or_type: type[_CT], size_or_initializer: int | Sequence[Any]
    ) -> ctypes.Array[_CT]: ...
    @overload
    def RawArray(self, typecode_or_type: str, size_or_initializer: int | Sequence[Any]) -> Any: ...
    def RawArray(self, typecode_or_type: Any, size_or_initializer: Any) -> Any:
        """A ctypes array in shared memory, without a lock."""
        from .sharedctypes import RawArray

        return RawArray(typecode_or_type, size_or_initializer)

    # Typed as typeshed types the stdlib's: a ctypes type gives a typed value, a
    # typecode a Synchronized[Any]; lock=False gives the raw (unknown) object.
    @overload
    def Value(
        self,
        typecode_or_type: type[ctypes._SimpleCData[_T]],
        *args: Any,
        lock: Literal[True] | synchronize.Lock | synchronize.RLock = True,
    ) -> Synchronized[_T]: ...
    @overload
    def Value(
        self,
        typecode_or_type: str,
        *args: Any,
        lock: Literal[True] | synchronize.Lock | synchronize.RLock = True,
    ) -> Synchronized[Any]: ...
    @overload
    def Value(
        self,
        typecode_or_type: str | type[ctypes._CData],
        *args: Any,
        lock: bool | synchronize.Lock | synchronize.RLock = True,
    ) -> Any: ...
    def Value(self, typecode_or_type: Any, *args: Any, lock: Any = True) -> Any:
        """A ctypes object in shared memory, guarded by a lock (``corral.sharedctypes``)."""
        from .sharedctypes import Value

        return Value(typecode_or_type, *args, lock=lock, ctx=self.get_context())

    @overload
    def Array(
        self,
        typecode_or_type: type[ctypes.c_char],
        size_or_initializer: int | Sequence[Any],
        *,
        lock: Literal[True] | synchronize.Lock | synchronize.RLock = True,
    ) -> SynchronizedString: ...
    @overload
    def Array(
        self,
        typecode_or_type: type[ctypes._SimpleCData[_T]],
        size_or_initializer: int | Sequence[Any],
        *,
        lock: Literal[True] | synchronize.Lock | synchronize.RLock = True,
    ) -> SynchronizedArray[_T]: ...
    @overload
    def Array(
        self,
        typecode_or_type: str,
        size_or_initializer: int | Sequence[Any],
        *,
        lock: Literal[True] | synchronize.Lock | synchronize.RLock = True,
    ) -> SynchronizedArray[Any]: ...
    @overload
    def Array(
        self,
        typecode_or_type: str | type[ctypes._CData],
        size_or_initializer: int | Sequence[Any],
        *,
        lock: bool | synchronize.Lock | synchronize.RLock = True,
    ) -> Any: ...
    def Array(self, typecode_or_type: Any, size_or_initializer: Any, *, lock: Any = True) -> Any:
        """A ctypes array in shared memory, guarded by a lock (``corral.sharedctypes``)."""
        from .sharedctypes import Array

        return Array(typecode_or_type, size_or_initializer, lock=lock, ctx=self.get_context())

    def Queue(self, maxsize: int = 0) -> queues.Queue[Any]:
        """A FIFO queue shared with children (``corral.queues.Queue``)."""
        from .queues import Queue

        return Queue(maxsize, ctx=self.get_context())

    def JoinableQueue(self, maxsize: int = 0) -> queues.JoinableQueue[Any]:
        """A queue with ``task_done``/``join`` (``corral.queues.JoinableQueue``)."""
        from .queues import JoinableQueue

        return JoinableQueue(maxsize, ctx=self.get_context())

    def SimpleQueue(self) -> queues.SimpleQueue[Any]:
        """A queue without a feeder thread (``corral.queues.SimpleQueue``)."""
        from .queues import SimpleQueue

        return SimpleQueue(ctx=self.get_context())

    def Manager(self) -> SyncManager:
        """A started ``SyncManager`` whose server runs in a process of this context.

        Shut it down with ``shutdown()`` or a ``with`` block; it also stops
        when collected, at exit, and when this process dies.
        """
        from .managers import SyncManager

        manager = SyncManager(ctx=self.get_context())
        manager.start()
        return manager

    def Pool(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        *,
        task_timeout: float | None = None,
        max_memory_per_child: int | None = None,
        isolate_failures: bool = True,
        backend: Any = None,
    ) -> pool.Pool:
        """A pool of worker processes of this context (``corral.pool.Pool``).

        ``task_timeout``, ``max_memory_per_child``, ``isolate_failures`` and
        ``backend`` are corral's additions (see ``corral.pool.Pool``).

        Raises:
            ValueError: ``processes`` < 1, bad ``maxtasksperchild`` or ``task_timeout``.
            TypeError: ``initializer`` is not callable.
            OSError: a worker could not be started.
        """
        from .pool import Pool

        return Pool(
            processes,
            initializer,
            initargs,
            maxtasksperchild,
            context=self.get_context(),
            task_timeout=task_timeout,
            max_memory_per_child=max_memory_per_child,
            isolate_failures=isolate_failures,
            backend=backend,
        )

    def get_logger(self) -> logging.Logger:
        """Return the package logger (see ``corral.util.get_logger``)."""
        from .util import get_logger

        return get_logger()

    def log_to_stderr(self, level: int | str | None = None) -> logging.Logger:
        """Log to stderr with the stdlib's format (see ``corral.util.log_to_stderr``)."""
        from .util import log_to_stderr

        return log_to_stderr(level)

    def allow_connection_pickling(self) -> None:
        """Kept for compatibility: connections and sockets are always picklable."""

    def set_executable(self, executable: str) -> None:
        """Set the Python interpreter that spawn and forkserver children run."""
        from ._spawn import set_executable

        set_executable(executable)

    def set_forkserver_preload(self, module_names: Sequence[str]) -> None:
        """Modules the forkserver imports once, so its children start with them loaded.

        Raises:
            TypeError: module_names is not a list of strings.
        """
        from ._forkserver import set_forkserver_preload

        set_forkserver_preload(module_names)

    def freeze_support(self) -> None:
        """Run a child's bootstrap when a frozen program is started as a child.

        In a program frozen into an executable (``sys.frozen``) that was started
        by spawn, this runs the child and exits; otherwise it does nothing.
        """
        if getattr(sys, "frozen", False):
            from ._spawn import freeze_support

            freeze_support()
