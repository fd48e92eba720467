"""A context whose pools run on a cluster backend (``backend.get_context()``).

Code written against a context (``def run(ctx): with ctx.Pool() as pool: ...``)
runs on Ray or Dask when handed ``corral.backends.Ray().get_context()``: its
``Pool`` and a ``ProcessPoolExecutor(mp_context=ctx)`` run their tasks on the
cluster. What would have to live in this machine's processes and be shared
with the tasks (a ``Process``, queues, pipes, locks, shared values, managers)
raises ``NotOnBackendError`` when it is made, rather than working here and
failing on the cluster.
"""

from __future__ import annotations

from typing import Any, NoReturn

from . import process
from ._contexts import BaseContext
from .errors import NotOnBackendError

__all__ = ("BackendContext",)


def _refuse(backend: Any, what: str) -> NoReturn:
    name = getattr(backend, "name", backend)
    msg = (
        f"{what} cannot be made by a {name} backend context: it would live in this "
        f"machine's processes, which tasks on the {name} cluster cannot reach. Use "
        f"corral.get_context() for it, or pass data through task arguments and results"
    )
    raise NotOnBackendError(msg)


class _ClusterProcess(process.BaseProcess):
    """``ctx.Process`` of a backend context: making one raises ``NotOnBackendError``."""

    _backend: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _refuse(self._backend, "a Process")


class BackendContext(BaseContext):
    """A context for a cluster backend: ``Pool`` runs there, process objects are refused.

    ``get_start_method()`` returns the backend's name (``"ray"``, ``"dask"``);
    ``get_context(method)`` returns this machine's contexts as usual.
    """

    def __init__(self, backend: Any) -> None:
        self.corral_backend = backend  # read by Pool and ProcessPoolExecutor
        self._name = backend.name
        self.Process = type("Process", (_ClusterProcess,), {"_backend": backend})  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"<corral backend context {self.corral_backend!r}>"

    def _no(self, what: str) -> NoReturn:
        _refuse(self.corral_backend, what)

    def Pipe(self, duplex: bool = True) -> Any:
        self._no("a Pipe")

    def Lock(self) -> Any:
        self._no("a Lock")

    def RLock(self) -> Any:
        self._no("an RLock")

    def Condition(self, lock: Any = None) -> Any:
        self._no("a Condition")

    def Semaphore(self, value: int = 1) -> Any:
        self._no("a Semaphore")

    def BoundedSemaphore(self, value: int = 1) -> Any:
        self._no("a BoundedSemaphore")

    def Event(self) -> Any:
        self._no("an Event")

    def Barrier(self, parties: int, action: Any = None, timeout: Any = None) -> Any:
        self._no("a Barrier")

    def RawValue(self, typecode_or_type: Any, *args: Any) -> Any:
        self._no("a RawValue")

    def RawArray(self, typecode_or_type: Any, size_or_initializer: Any) -> Any:
        self._no("a RawArray")

    def Value(self, typecode_or_type: Any, *args: Any, lock: Any = True) -> Any:
        self._no("a Value")

    def Array(self, typecode_or_type: Any, size_or_initializer: Any, *, lock: Any = True) -> Any:
        self._no("an Array")

    def Queue(self, maxsize: int = 0) -> Any:
        self._no("a Queue")

    def JoinableQueue(self, maxsize: int = 0) -> Any:
        self._no("a JoinableQueue")

    def SimpleQueue(self) -> Any:
        self._no("a SimpleQueue")

    def Manager(self) -> Any:
        self._no("a Manager")
