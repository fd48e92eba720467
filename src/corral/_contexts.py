"""The ground floor of the contexts: start methods, the default context, ``Process``.

``get_context('fork' | 'spawn' | 'forkserver')`` returns a context whose
factories (``ctx.Process``, ``ctx.Pipe``, ...) all use that start method; the
top-level ``corral`` module is the *default* context, whose method is fixed by
``set_start_method`` or on first use. The context decides *which* start method;
``_popen_*`` decides *how* a child is started.

The layers below the front ends (synchronize, heap, sharedctypes, queues, the
Popens, ``_spawn``, ``process``) import this module, not the public
``corral.context``, which re-exports every name of it where the stdlib has it.
It imports only ``process``, ``reduction``, ``errors`` and ``_factories`` (the
factory methods, which import the upper layers when called). The classes say
``corral.context`` as their module, where users and pickle find them.
"""

from __future__ import annotations

import os
import sys
import types

from . import process
from . import reduction as _reduction_module
from ._factories import ContextFactories
from .errors import AuthenticationError, BufferTooShort, ProcessError, TimeoutError

TYPE_CHECKING = False  # typing is not imported at run time (import speed)
if TYPE_CHECKING:
    from typing import Any, ClassVar, Literal, overload
else:

    def overload(fn: Any) -> Any:
        """typing.overload without importing typing: the last definition wins."""
        return fn


__all__ = (
    "BaseContext",
    "DefaultContext",
    "ForkContext",
    "ForkProcess",
    "ForkServerContext",
    "ForkServerProcess",
    "Process",
    "SpawnContext",
    "SpawnProcess",
    "as_context",
)

_PUBLIC_MODULE = "corral.context"


class BaseContext(ContextFactories):
    """The factories and settings of one start method."""

    __module__ = _PUBLIC_MODULE

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

    def _check_available(self) -> None:
        pass


# The factories are BaseContext's methods for users (``corral.Lock`` prints as
# ``<bound method BaseContext.Lock ...>``, as the stdlib's does).
for _name, _factory in vars(ContextFactories).items():
    if callable(_factory) and not _name.startswith("_"):
        _factory.__qualname__ = f"BaseContext.{_name}"
del _name, _factory


class Process(process.BaseProcess):
    """A process started with the default context's start method."""

    __module__ = _PUBLIC_MODULE

    _start_method = None

    @staticmethod
    def _Popen(process_obj: process.BaseProcess) -> Any:
        return _default_context.get_context().Process._Popen(process_obj)


class DefaultContext(BaseContext):
    """The context behind the top-level ``corral`` functions."""

    __module__ = _PUBLIC_MODULE

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

    __module__ = _PUBLIC_MODULE

    _start_method = "fork"

    @staticmethod
    def _Popen(process_obj: process.BaseProcess) -> Any:
        from ._popen_fork import Popen

        return Popen(process_obj)


class SpawnProcess(process.BaseProcess):
    """A process started as a fresh interpreter (``_popen_spawn``)."""

    __module__ = _PUBLIC_MODULE

    _start_method = "spawn"

    @staticmethod
    def _Popen(process_obj: process.BaseProcess) -> Any:
        from ._popen_spawn import Popen

        return Popen(process_obj)


class ForkServerProcess(process.BaseProcess):
    """A process forked by the forkserver (``_popen_forkserver``)."""

    __module__ = _PUBLIC_MODULE

    _start_method = "forkserver"

    @staticmethod
    def _Popen(process_obj: process.BaseProcess) -> Any:
        from ._popen_forkserver import Popen

        return Popen(process_obj)


class ForkContext(BaseContext):
    __module__ = _PUBLIC_MODULE
    _name = "fork"
    Process: ClassVar[type[ForkProcess]] = ForkProcess


class SpawnContext(BaseContext):
    __module__ = _PUBLIC_MODULE
    _name = "spawn"
    Process: ClassVar[type[SpawnProcess]] = SpawnProcess


class ForkServerContext(BaseContext):
    __module__ = _PUBLIC_MODULE
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


reduction = _reduction_module
