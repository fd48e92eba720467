"""``share()`` on the Dask backend: an object scattered once into the cluster.

``DaskShared`` is a ``corral.Shared`` whose object sits in the workers' memory
(``client.scatter``, never hashed: two equal objects are two entries). A task's
arguments are pickled with ``collecting()`` active: each handle met there adds
its Dask key to the task, which the engine passes to ``_run`` as a dependency
(``TaskRef``), so Dask moves the object to the worker once and hands it in; the
handle unpickles there as ``shared_value(index)``: the object rebuilt for the
task as the local pool rebuilds it (pickled in the worker with its buffers out
of band, unpickled on read-only views of them): a NumPy array arrives
read-only, on the memory the worker holds (no copy); an object without buffers
(a list, a dict) or a bytearray arrives as the task's own copy, so a task's
mutations never reach the next task or the cluster's object.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import cloudpickle

from .._transfer import SharedElsewhere

_T = TypeVar("_T")

# In the caller: the keys of the handles met while pickling one task. In a
# worker: the objects Dask resolved those keys to, while the task is unpickled.
_collect = threading.local()


@contextmanager
def collecting() -> Iterator[list[str]]:
    """Collect the keys of the handles pickled in this thread inside the block."""
    keys: list[str] = []
    _collect.keys = keys
    try:
        yield keys
    finally:
        _collect.keys = None


@contextmanager
def resolving(values: tuple[Any, ...]) -> Iterator[None]:
    """(In a worker) give the handles unpickled inside the block their objects."""
    _collect.values = values
    _collect.rebuilt = {}
    try:
        yield
    finally:
        _collect.values = None
        _collect.rebuilt = None


def shared_value(index: int) -> Any:
    """(In a worker) the object of the task's ``index``-th shared handle."""
    values = getattr(_collect, "values", None)
    if values is None:
        msg = (
            "a corral shared handle of the Dask backend was unpickled outside a corral task; "
            "pass it only in the arguments of tasks of the pool that shared it"
        )
        raise RuntimeError(msg)
    rebuilt: dict[int, Any] = _collect.rebuilt
    if index not in rebuilt:  # one object per handle per task, as locally
        rebuilt[index] = _read_only_rebuild(values[index])
    return rebuilt[index]


def _read_only_rebuild(obj: Any) -> Any:
    """``obj`` pickled and unpickled with its buffers out of band, read-only (not copied)."""
    buffers: list[memoryview] = []

    def out_of_band(buffer: pickle.PickleBuffer) -> bool:
        try:
            view = buffer.raw()
        except BufferError:  # not contiguous: in the pickle
            return True
        buffers.append(view.toreadonly())
        return False

    # cloudpickle: the object may be of a class the user's __main__ sent by value.
    payload = cloudpickle.dumps(obj, protocol=5, buffer_callback=out_of_band)
    return pickle.loads(payload, buffers=buffers)


class DaskShared(SharedElsewhere[_T]):
    """What ``share()`` returns on the Dask backend: an object held by the cluster.

    Passed anywhere in the arguments of the pool's tasks, it arrives in the
    worker as the object itself, fetched from the cluster (once per worker that
    needs it) and rebuilt for each task: a NumPy array read-only on the
    worker's memory, anything else the task's own copy. ``get()`` fetches it
    here. ``release()``, the pool's end, or the last reference to the handle
    going away frees it on the cluster; tasks already submitted with it still
    get it.
    """

    __slots__ = ("_future", "_key")

    def __init__(self, future: Any, description: str) -> None:
        super().__init__(description)
        self._future: Any = future
        self._key = str(future.key)

    def get(self) -> _T:
        """The object, fetched from the cluster.

        Raises:
            ValueError: the handle was released.
        """
        future = self._future
        if self._released or future is None:
            raise ValueError(self._released_message())
        value: _T = future.result()
        return value

    def release(self) -> None:
        """Free the object on the cluster (once tasks already submitted with it are done)."""
        with self._lock:
            self._released = True
            future, self._future = self._future, None
        if future is not None:
            try:
                future.release()
            except Exception:  # the client is closed: the cluster dropped it already
                pass

    def __reduce__(self) -> Any:
        keys = getattr(_collect, "keys", None)
        if keys is None:
            msg = (
                "a corral shared handle of the Dask backend can only be passed in the "
                "arguments of tasks of the pool or executor that shared it"
            )
            raise TypeError(msg)
        if self._released:
            raise ValueError(self._released_message())
        if self._key not in keys:
            keys.append(self._key)
        return shared_value, (keys.index(self._key),)

    def __repr__(self) -> str:
        state = "released" if self._released else "live"
        return f"<corral.Shared {self.description} on Dask ({state})>"

    def __del__(self) -> None:
        self.release()
