"""The proxy types of ``SyncManager``, and the plain objects it shares.

Proxies forward exactly the methods the stdlib's do (the same ``_exposed_``
lists), so code that checks ``hasattr`` or subclasses them sees the same API.
"""

from __future__ import annotations

import array
import time
import types
from collections.abc import Callable
from typing import Any, Generic

from ._proxy import BaseProxy, MakeProxyType
from ._typevars import T as _T  # a ValueProxy's value, for a type checker

__all__ = (
    "AcquirerProxy",
    "Array",
    "ArrayProxy",
    "BarrierProxy",
    "BaseListProxy",
    "ConditionProxy",
    "DictProxy",
    "EventProxy",
    "IteratorProxy",
    "ListProxy",
    "Namespace",
    "NamespaceProxy",
    "PoolProxy",
    "Value",
    "ValueProxy",
)


# -- the objects a SyncManager creates (besides builtins and threading's) ---------


class Namespace:
    """A bag of attributes: ``Namespace(a=1).a``; its repr lists the public ones, sorted."""

    def __init__(self, /, **kwds: Any) -> None:
        self.__dict__.update(kwds)

    def __repr__(self) -> str:
        shown = sorted(
            f"{name}={value!r}" for name, value in self.__dict__.items() if name[0] != "_"
        )
        return f"{type(self).__name__}({', '.join(shown)})"


class Value:
    """A value with ``get``/``set`` and a ``value`` property (the manager's ``Value``).

    ``typecode`` is kept for the repr; the value is not converted. ``lock`` is
    accepted for the stdlib's signature (calls to a manager are serialized per
    connection, not across them: use a manager Lock to make updates atomic).
    """

    def __init__(self, typecode: str, value: Any, lock: Any = True) -> None:
        self._typecode = typecode
        self._value = value

    def get(self) -> Any:
        return self._value

    def set(self, value: Any) -> None:
        self._value = value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._typecode!r}, {self._value!r})"

    value = property(get, set)


def Array(typecode: str, sequence: Any, lock: Any = True) -> array.array[Any]:
    """An ``array.array(typecode, sequence)`` (the manager's ``Array``)."""
    return array.array(typecode, sequence)


# -- proxies ---------------------------------------------------------------------------


class IteratorProxy(BaseProxy):
    """Proxy of an iterator or generator."""

    _exposed_ = ("__next__", "send", "throw", "close")

    def __iter__(self) -> IteratorProxy:
        return self

    def __next__(self, *args: Any) -> Any:
        return self._callmethod("__next__", args)

    def send(self, *args: Any) -> Any:
        return self._callmethod("send", args)

    def throw(self, *args: Any) -> Any:
        return self._callmethod("throw", args)

    def close(self, *args: Any) -> Any:
        return self._callmethod("close", args)


class AcquirerProxy(BaseProxy):
    """Proxy of a Lock, RLock, Semaphore or BoundedSemaphore (a context manager too)."""

    _exposed_: tuple[str, ...] = ("acquire", "release")

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        args = (blocking,) if timeout is None else (blocking, timeout)
        return self._callmethod("acquire", args)

    def release(self) -> None:
        return self._callmethod("release")

    def __enter__(self) -> bool:
        return self._callmethod("acquire")

    def __exit__(self, *exc: object) -> None:
        return self._callmethod("release")


class ConditionProxy(AcquirerProxy):
    """Proxy of a Condition; ``wait_for`` runs the predicate in the caller."""

    _exposed_ = ("acquire", "release", "wait", "notify", "notify_all")

    def wait(self, timeout: float | None = None) -> bool:
        return self._callmethod("wait", (timeout,))

    def notify(self, n: int = 1) -> None:
        return self._callmethod("notify", (n,))

    def notify_all(self) -> None:
        return self._callmethod("notify_all")

    def wait_for(self, predicate: Callable[[], _T], timeout: float | None = None) -> _T:
        """Wait until predicate() is true (checked here, after each wakeup) or timeout."""
        result = predicate()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not result:
            remaining = None
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
            self.wait(remaining)
            result = predicate()
        return result


class EventProxy(BaseProxy):
    """Proxy of an Event."""

    _exposed_ = ("is_set", "set", "clear", "wait")

    def is_set(self) -> bool:
        return self._callmethod("is_set")

    def set(self) -> None:
        return self._callmethod("set")

    def clear(self) -> None:
        return self._callmethod("clear")

    def wait(self, timeout: float | None = None) -> bool:
        return self._callmethod("wait", (timeout,))


class BarrierProxy(BaseProxy):
    """Proxy of a Barrier."""

    _exposed_ = ("__getattribute__", "wait", "abort", "reset")

    def wait(self, timeout: float | None = None) -> int:
        return self._callmethod("wait", (timeout,))

    def abort(self) -> None:
        return self._callmethod("abort")

    def reset(self) -> None:
        return self._callmethod("reset")

    @property
    def parties(self) -> int:
        return self._callmethod("__getattribute__", ("parties",))

    @property
    def n_waiting(self) -> int:
        return self._callmethod("__getattribute__", ("n_waiting",))

    @property
    def broken(self) -> bool:
        return self._callmethod("__getattribute__", ("broken",))


class NamespaceProxy(BaseProxy):
    """Proxy of a Namespace: public attributes live in the manager."""

    _exposed_ = ("__getattribute__", "__setattr__", "__delattr__")

    def __getattr__(self, key: str) -> Any:
        if key[0] == "_":
            return object.__getattribute__(self, key)
        return object.__getattribute__(self, "_callmethod")("__getattribute__", (key,))

    def __setattr__(self, key: str, value: Any) -> None:
        if key[0] == "_":
            object.__setattr__(self, key, value)
            return
        object.__getattribute__(self, "_callmethod")("__setattr__", (key, value))

    def __delattr__(self, key: str) -> None:
        if key[0] == "_":
            object.__delattr__(self, key)
            return
        object.__getattribute__(self, "_callmethod")("__delattr__", (key,))


class ValueProxy(BaseProxy, Generic[_T]):
    """Proxy of a Value: ``get()``, ``set(v)`` and the ``value`` property.

    ``ValueProxy[int]`` holds an int.
    """

    _exposed_ = ("get", "set")

    def get(self) -> _T:
        value: _T = self._callmethod("get")
        return value

    def set(self, value: _T) -> None:
        return self._callmethod("set", (value,))

    value = property(get, set)


BaseListProxy = MakeProxyType(
    "BaseListProxy",
    (
        "__add__", "__contains__", "__delitem__", "__getitem__", "__len__",
        "__mul__", "__reversed__", "__rmul__", "__setitem__",
        "append", "count", "extend", "index", "insert", "pop", "remove",
        "reverse", "sort", "__imul__",
    ),
)  # fmt: skip


class ListProxy(BaseListProxy):  # type: ignore[valid-type,misc]
    """Proxy of a list; ``+=`` and ``*=`` change the shared list in place."""

    def __iadd__(self, value: Any) -> ListProxy:
        self._callmethod("extend", (value,))
        return self

    def __imul__(self, value: Any) -> ListProxy:
        self._callmethod("__imul__", (value,))
        return self


DictProxy = MakeProxyType(
    "DictProxy",
    (
        "__contains__", "__delitem__", "__getitem__", "__iter__", "__len__",
        "__setitem__", "clear", "copy", "get", "items",
        "keys", "pop", "popitem", "setdefault", "update", "values",
    ),
)  # fmt: skip
DictProxy._method_to_typeid_ = {"__iter__": "Iterator"}  # type: ignore[attr-defined]


ArrayProxy = MakeProxyType("ArrayProxy", ("__len__", "__getitem__", "__setitem__"))

# DictProxy[str, int] and the like in annotations evaluated at run time (the
# stdlib's are subscriptable from 3.13; _sync_types.pyi types them for checkers).
for _proxy_type in (DictProxy, ListProxy, ArrayProxy):
    _proxy_type.__class_getitem__ = classmethod(types.GenericAlias)  # type: ignore[attr-defined]
del _proxy_type


BasePoolProxy = MakeProxyType(
    "PoolProxy",
    (
        "apply", "apply_async", "close", "imap", "imap_unordered", "join",
        "map", "map_async", "starmap", "starmap_async", "terminate",
    ),
)  # fmt: skip
BasePoolProxy._method_to_typeid_ = {  # type: ignore[attr-defined]
    "apply_async": "AsyncResult",
    "map_async": "AsyncResult",
    "starmap_async": "AsyncResult",
    "imap": "Iterator",
    "imap_unordered": "Iterator",
}


class PoolProxy(BasePoolProxy):  # type: ignore[valid-type,misc]
    """Proxy of a Pool living in the manager; leaving ``with`` terminates it."""

    def __enter__(self) -> PoolProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()
