"""Functions, classes and modules a child cannot import, pickled by value with cloudpickle.

``reduction.ForkingPickler`` is the stdlib's C pickler: data keeps its type
across the boundary and what the stdlib cannot pickle fails with the stdlib's
error. Only a function or class that cannot be pickled by reference (a lambda,
a closure, a local class, a ``__main__`` definition the child cannot
re-import) and modules come here: ``reduce`` pickles that one object with
cloudpickle and returns a reduction that unpickles those bytes on the other
side.

cloudpickle is imported on the first such object, never by ``import corral``
(it costs more than importing all of ``multiprocessing``). Inside a by-value
function, the objects it refers to (globals, closure cells, defaults) pickle as
everywhere else: cloudpickle's own reducers are kept only for what a function
or class is made of (code, cells, modules, descriptors, ...), not for data the
stdlib refuses (open files would otherwise arrive as ``StringIO`` snapshots,
dict views as dict views), and the reducers registered with
``ForkingPickler.register`` apply first.
"""

from __future__ import annotations

import collections
import copyreg
import io
import pickle
import types
import weakref

TYPE_CHECKING = False  # typing is not imported at run time (import speed)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

__all__ = ("reduce",)

# Data types cloudpickle reduces but the stdlib refuses to pickle: they keep the
# stdlib's behaviour inside by-value functions too (copyreg's entries, if any).
_DATA_TYPES = frozenset(
    {
        io.TextIOWrapper,
        memoryview,
        types.MappingProxyType,
        weakref.WeakSet,
        type({}.keys()),
        type({}.values()),
        type({}.items()),
        type(collections.OrderedDict().keys()),
        type(collections.OrderedDict().values()),
        type(collections.OrderedDict().items()),
    }
)

_pickler_class: Any = None
_function_parts_table: dict[Any, Any] = {}


def _make_pickler_class() -> Any:
    """cloudpickle's pickler, with its reducers for data types left out."""
    global _pickler_class
    import cloudpickle

    for type_, reducer in cloudpickle.Pickler.dispatch_table.items():
        if type_ in _DATA_TYPES or copyreg.dispatch_table.get(type_) is reducer:
            continue
        _function_parts_table[type_] = reducer

    class _ByValuePickler(cloudpickle.Pickler):
        def __init__(self, file: Any, protocol: int, extra_reducers: Mapping[type, Any]) -> None:
            # The C pickler reads dispatch_table once, in __init__: set it first.
            # A dict, not a ChainMap: the C pickler looks every object's type up
            # in it, and a ChainMap lookup is a Python call (and a KeyError).
            table = copyreg.dispatch_table.copy()
            table.update(_function_parts_table)
            table.update(extra_reducers)
            self.dispatch_table = table
            super().__init__(file, protocol)

    _pickler_class = _ByValuePickler
    return _pickler_class


def reduce(
    obj: object, protocol: int, extra_reducers: Mapping[type, Any]
) -> tuple[Callable[[bytes], Any], tuple[bytes]]:
    """Return a reduction that rebuilds ``obj`` (function, class, module) from its value.

    Raises:
        TypeError, pickle.PicklingError: something ``obj`` refers to cannot be
            pickled (the stdlib's error for that object).
    """
    pickler_class = _pickler_class or _make_pickler_class()
    buf = io.BytesIO()
    pickler_class(buf, protocol, extra_reducers).dump(obj)
    # The bytes refer to cloudpickle's rebuilders: the receiver imports
    # cloudpickle while unpickling them, and only then.
    return pickle.loads, (buf.getvalue(),)
