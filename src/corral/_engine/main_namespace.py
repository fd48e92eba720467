"""One ``__main__`` namespace per cluster worker process for functions sent by value.

A cluster worker cannot import the user's script, so the script's functions
travel by value (cloudpickle), and each pickle rebuilds them with a fresh dict
for their globals. The stdlib's pattern of an initializer that sets a global
which tasks then read (``def init(v): global G; G = v``) would then write into
one dict and read from another: silently ``None`` or a ``NameError``. In a
local pool both functions share the child's ``__main__`` module.

``adopt(fn)`` gives a by-value ``__main__`` function (and the by-value
``__main__`` functions among its globals) the worker's one namespace for the
script: names the namespace already holds keep their value there (what an
initializer or an earlier task set wins over the snapshot a later pickle
carries, as in a worker whose ``__main__`` was run once), new names are added.
Functions whose globals are a real module's (anything imported by name) are
returned unchanged, as are other objects. Classes defined in the script keep
the globals they arrived with.

A namespace belongs to one pool (``scope``): a Dask worker serves every
client of its cluster, and two programs (or two runs of an edited script)
must not see each other's globals. ``forget(scope)`` drops it when the pool
ends.
"""

from __future__ import annotations

import builtins
import sys
import types
from typing import Any

__all__ = ("adopt", "forget")

_namespaces: dict[str, dict[str, Any]] = {}  # pool -> the script's namespace there


def _script_namespace(scope: str) -> dict[str, Any]:
    namespace = _namespaces.get(scope)
    if namespace is None:
        namespace = {"__name__": "__main__", "__builtins__": builtins}
        namespace = _namespaces.setdefault(scope, namespace)
    return namespace


def forget(scope: str, **_: Any) -> None:
    """Drop pool ``scope``'s namespace (its globals are freed with it)."""
    _namespaces.pop(scope, None)


def _is_by_value_main(fn: types.FunctionType) -> bool:
    globals_ = fn.__globals__
    if globals_.get("__name__") != "__main__":
        return False
    main = sys.modules.get("__main__")
    return main is None or globals_ is not vars(main)


def _rebind(fn: types.FunctionType, namespace: dict[str, Any]) -> types.FunctionType:
    new = types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__qualname__ = fn.__qualname__
    new.__doc__ = fn.__doc__
    new.__annotations__ = fn.__annotations__
    new.__dict__.update(fn.__dict__)
    return new


def adopt(obj: Any, scope: str = "") -> Any:
    """``obj`` with pool ``scope``'s ``__main__`` namespace if it is a by-value script function."""
    if not isinstance(obj, types.FunctionType) or not _is_by_value_main(obj):
        return obj
    namespace = _script_namespace(scope)
    arrived = obj.__globals__
    if arrived is namespace:
        return obj
    for name, value in arrived.items():
        if name in namespace:
            continue
        if isinstance(value, types.FunctionType) and value.__globals__ is arrived:
            value = _rebind(value, namespace)
        namespace[name] = value
    return _rebind(obj, namespace)
