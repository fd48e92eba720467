"""Contexts: which start method a ``Process`` (and every later factory) uses.

``get_context('fork' | 'spawn' | 'forkserver')`` returns a context whose
factories (``ctx.Process``, ``ctx.Pipe``, ...) all use that start method; the
top-level ``corral`` module is the *default* context, whose method is fixed by
``set_start_method`` or on first use. The context decides *which* start method;
``_popen_*`` decides *how* a child is started.
"""

from __future__ import annotations

import os
import sys
import threading
import types
from collections.abc import Callable, Iterable, Sequence

from . import process
from . import reduction as _reduction_module
from .errors import AuthenticationError, BufferTooShort, ProcessError, TimeoutError

TYPE_CHECKING = False  # typing is not imported at run time (import speed)
if TYPE_CHECKING:
    import ctypes
    import logging
    from typing import Any, ClassVar, Literal, TypeVar, overload

    from . import pool, queues, synchronize
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


__all__ = (
    "BaseContext",
    "DefaultContext",
    "ForkContext",
    "ForkServerContext",
    "SpawnContext",
)


class BaseContext:
    """The factories and settings of one start method."""

    ProcessError = ProcessError
    BufferTooShort = BufferTooShort
    TimeoutError = TimeoutError
    AuthenticationError = AuthenticationError

    _name: str | None = None
    Process: ClassVar[type[process.BaseProcess]]

    current_process = staticmethod(process.current_process)
    parent_process = staticmethod(process.parent_process)
    active_children = staticmethod(process.active_children)

    def cpu_count(self) -> int:
        """Return the number of CPUs of the machine.

        Raises:
            NotImplementedError: the number cannot be determined.
        """
        count = os.cpu_count()
        if count is None:
            msg = "cannot determine number of cpus"
            raise NotImplementedError(msg)
        return count

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
    ) -> pool.Pool:
        """A pool of worker processes of this context (``corral.pool.Pool``).

        ``task_timeout``, ``max_memory_per_child`` and ``isolate_failures`` are
        corral's additions (see ``corral.pool.Pool``).

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
        )

    @overload
    def get_context(self, method: Literal["fork"]) -> ForkContext: ...
    @overload
    def get_context(self, method: Literal["spawn"]) -> SpawnContext: ...
    @overload
    def get_context(self, method: Literal["forkserver"]) -> ForkServerContext: ...
    @overload
    def get_context(self, method: str | None = None) -> BaseContext: ...
    def get_context(self, method: str | None = None) -> BaseContext:
        """Return the context of a start method ('fork', 'spawn', 'forkserver').

        Raises:
            ValueError: the method is unknown or not available on this platform.
        """
        if method is None:
            return self
        try:
            ctx = _concrete_contexts[method]
        except KeyError:
            msg = f"cannot find context for {method!r}"
            raise ValueError(msg) from None
        ctx._check_available()
        return ctx

    @overload
    def get_start_method(self, allow_none: Literal[False] = False) -> str: ...
    @overload
    def get_start_method(self, allow_none: bool) -> str | None: ...
    def get_start_method(self, allow_none: bool = False) -> str | None:
        """Return the start method's name ('fork', 'spawn' or 'forkserver')."""
        return self._name

    def set_start_method(self, method: str | None, force: bool = False) -> None:
        msg = "cannot set start method of concrete context"
        raise ValueError(msg)

    def get_all_start_methods(self) -> list[str]:
        """Return the start methods available here, the default first."""
        return _all_start_methods()

    @property
    def reducer(self) -> Any:
        """The module or ``AbstractReducer`` used to pickle objects for this context."""
        return globals().get("reduction")

    @reducer.setter
    def reducer(self, reduction: Any) -> None:
        globals()["reduction"] = reduction

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

    def _check_available(self) -> None:
        pass


class Process(process.BaseProcess):
    """A process started with the default context's start method."""

    _start_method = None

    @staticmethod
    def _Popen(process_obj: process.BaseProcess) -> Any:
        return _default_context.get_context().Process._Popen(process_obj)


class DefaultContext(BaseContext):
    """The context behind the top-level ``corral`` functions."""

    Process = Process

    def __init__(self, context: BaseContext) -> None:
        self._default_context = context
        self._actual_context: BaseContext | None = None

    @overload
    def get_context(self, method: Literal["fork"]) -> ForkContext: ...
    @overload
    def get_context(self, method: Literal["spawn"]) -> SpawnContext: ...
    @overload
    def get_context(self, method: Literal["forkserver"]) -> ForkServerContext: ...
    @overload
    def get_context(self, method: str | None = None) -> BaseContext: ...
    def get_context(self, method: str | None = None) -> BaseContext:
        """Return the context of a start method; with None, the default one (fixing it).

        Raises:
            ValueError: the method is unknown or not available on this platform.
        """
        if method is None:
            if self._actual_context is None:
                self._actual_context = self._default_context
            return self._actual_context
        return super().get_context(method)

    def set_start_method(self, method: str | None, force: bool = False) -> None:
        """Fix the start method of the default context.

        Raises:
            RuntimeError: it was already fixed (pass ``force=True`` to change it).
            ValueError: unknown method.
        """
        if self._actual_context is not None and not force:
            msg = "context has already been set"
            raise RuntimeError(msg)
        if method is None and force:
            self._actual_context = None
            return
        self._actual_context = self.get_context(method)

    @overload
    def get_start_method(self, allow_none: Literal[False] = False) -> str: ...
    @overload
    def get_start_method(self, allow_none: bool) -> str | None: ...
    def get_start_method(self, allow_none: bool = False) -> str | None:
        """Return the default start method; None if not fixed yet and allow_none."""
        if self._actual_context is None:
            if allow_none:
                return None
            self._actual_context = self._default_context
        return self._actual_context._name


class ForkProcess(process.BaseProcess):
    """A process started by forking this one (``_popen_fork``)."""

    _start_method = "fork"

    @staticmethod
    def _Popen(process_obj: process.BaseProcess) -> Any:
        from ._popen_fork import Popen

        return Popen(process_obj)


class SpawnProcess(process.BaseProcess):
    """A process started as a fresh interpreter (``_popen_spawn``)."""

    _start_method = "spawn"

    @staticmethod
    def _Popen(process_obj: process.BaseProcess) -> Any:
        from ._popen_spawn import Popen

        return Popen(process_obj)


class ForkServerProcess(process.BaseProcess):
    """A process forked by the forkserver (``_popen_forkserver``)."""

    _start_method = "forkserver"

    @staticmethod
    def _Popen(process_obj: process.BaseProcess) -> Any:
        from ._popen_forkserver import Popen

        return Popen(process_obj)


class ForkContext(BaseContext):
    _name = "fork"
    Process: ClassVar[type[ForkProcess]] = ForkProcess


class SpawnContext(BaseContext):
    _name = "spawn"
    Process: ClassVar[type[SpawnProcess]] = SpawnProcess


class ForkServerContext(BaseContext):
    _name = "forkserver"
    Process: ClassVar[type[ForkServerProcess]] = ForkServerProcess

    def _check_available(self) -> None:
        if not _reduction_module.HAVE_SEND_HANDLE:
            msg = "forkserver start method not available"
            raise ValueError(msg)


_concrete_contexts: dict[str, BaseContext] = {
    "fork": ForkContext(),
    "spawn": SpawnContext(),
    "forkserver": ForkServerContext(),
}


def _default_method() -> str:
    """The stdlib's default for this Python and platform."""
    if sys.platform == "darwin":
        return "spawn"
    if sys.version_info >= (3, 14) and _reduction_module.HAVE_SEND_HANDLE:
        return "forkserver"
    return "fork"


def _all_start_methods() -> list[str]:
    methods = ["fork", "spawn"]
    if _reduction_module.HAVE_SEND_HANDLE:
        methods.append("forkserver")
    default = _default_method()
    methods.remove(default)
    return [default, *methods]


_default_context = DefaultContext(_concrete_contexts[_default_method()])


def as_context(ctx: object, argument: str = "ctx") -> Any:
    """Return the context a public API taking a context argument should use.

    * ``None``: the default context's concrete context.
    * A corral context: itself.
    * A stdlib ``multiprocessing`` context (``multiprocessing.get_context(...)``)
      or a module standing for the default context (``multiprocessing``,
      ``corral``): corral's context of the same start method. Only its
      ``get_start_method()`` is read; the stdlib's machinery (its ``Process``,
      locks, authkeys) is never mixed with corral's.
    * Any other object with a ``Process`` attribute: a context of the caller's
      own making (the stdlib's tests pass a mock with a fake ``Process``), used
      as it is, as the stdlib would.

    Args:
        ctx: the object passed as the API's context.
        argument: the parameter's name, for the error message.

    Raises:
        TypeError: ctx is none of the above (a string, a number, ...).
        ValueError: its start method is unknown or not available here.
    """
    if ctx is None:
        return _default_context.get_context()
    if isinstance(ctx, BaseContext):
        return ctx
    if _is_stdlib_context(ctx):
        return _default_context.get_context(ctx.get_start_method())  # type: ignore[attr-defined]
    if getattr(ctx, "Process", None) is None:
        msg = (
            f"{argument} must be a multiprocessing context such as "
            f"corral.get_context('spawn') (or None), not {type(ctx).__name__} {ctx!r}"
        )
        raise TypeError(msg)
    return ctx


def _is_stdlib_context(ctx: object) -> bool:
    """A stdlib context, or a module whose functions are a default context's."""
    if isinstance(ctx, types.ModuleType):
        return callable(getattr(ctx, "get_start_method", None))
    # Matched by name: corral never imports the stdlib package.
    return any(
        cls.__module__ == "multiprocessing.context" and cls.__name__ == "BaseContext"
        for cls in type(ctx).__mro__
    )


def _force_start_method(method: str) -> None:
    """In a child: make the default context use the parent's start method."""
    _default_context._actual_context = _concrete_contexts[method]


# ---------------------------------------------------------------------------
# the Popen being launched, seen by reducers while the process object is pickled

_tls = threading.local()


def get_spawning_popen() -> Any:
    return getattr(_tls, "spawning_popen", None)


def set_spawning_popen(popen: Any) -> None:
    _tls.spawning_popen = popen


def assert_spawning(obj: object) -> None:
    """Raise unless obj is being pickled to start a child process.

    Raises:
        RuntimeError: obj may only be shared by passing it to a child at start.
    """
    if get_spawning_popen() is None:
        msg = (
            f"{type(obj).__name__} objects should only be shared between "
            "processes through inheritance"
        )
        raise RuntimeError(msg)


reduction = _reduction_module
