"""ctypes objects in shared memory: ``Value``, ``Array``, ``RawValue``, ``RawArray``.

The memory comes from ``corral.heap`` (anonymous shared memory, freed when the
last reference in the creating process goes). A child sees the same bytes when
the object is passed to it as a ``Process`` argument (any start method); other
pickling raises ``RuntimeError``, as in the stdlib.

``Value``/``Array`` wrap the object with a lock (a new ``RLock`` by default,
``lock=False`` for none, or a lock of your own): ``get_lock()``, ``get_obj()``,
``with v:``, and ``.value`` / item access taken under the lock.
"""

from __future__ import annotations

import ctypes
import weakref
from collections.abc import Iterable
from typing import Any, Generic, overload

from . import _contexts, _spawning, heap, reduction
from ._typevars import T as _T  # a value's or item's type: int for c_int

__all__ = ("Array", "RawArray", "RawValue", "Value", "copy", "synchronized")


typecode_to_type: dict[str, Any] = {
    "c": ctypes.c_char,
    "u": ctypes.c_wchar,
    "b": ctypes.c_byte,
    "B": ctypes.c_ubyte,
    "h": ctypes.c_short,
    "H": ctypes.c_ushort,
    "i": ctypes.c_int,
    "I": ctypes.c_uint,
    "l": ctypes.c_long,
    "L": ctypes.c_ulong,
    "q": ctypes.c_longlong,
    "Q": ctypes.c_ulonglong,
    "f": ctypes.c_float,
    "d": ctypes.c_double,
}


def _ctype(typecode_or_type: Any) -> Any:
    if isinstance(typecode_or_type, str):
        try:
            return typecode_to_type[typecode_or_type]
        except KeyError:
            msg = f"unknown typecode {typecode_or_type!r}; use one of {''.join(typecode_to_type)}"
            raise TypeError(msg) from None
    return typecode_or_type


def _new_value(type_: Any) -> Any:
    """An object of ctypes type ``type_`` over a fresh, zeroed shared block."""
    wrapper = heap.BufferWrapper(ctypes.sizeof(type_))
    obj = _rebuild_ctype(type_, wrapper, None)
    ctypes.memset(ctypes.addressof(obj), 0, ctypes.sizeof(obj))
    return obj


def RawValue(typecode_or_type: Any, *args: Any) -> Any:
    """A ctypes object in shared memory, without a lock, initialised with ``args``."""
    obj = _new_value(_ctype(typecode_or_type))
    obj.__init__(*args)
    return obj


def RawArray(typecode_or_type: Any, size_or_initializer: Any) -> Any:
    """A ctypes array in shared memory, without a lock.

    ``size_or_initializer``: a length (zero-filled) or a sequence to copy.

    Raises:
        TypeError: an item does not fit the type (a nested list, say).
    """
    type_ = _ctype(typecode_or_type)
    if isinstance(size_or_initializer, int):
        return _new_value(type_ * size_or_initializer)
    items = list(size_or_initializer)
    array = _new_value(type_ * len(items))
    array.__init__(*items)
    return array


def Value(typecode_or_type: Any, *args: Any, lock: Any = True, ctx: Any = None) -> Any:
    """A ctypes object in shared memory, with a lock (``lock=False``: a raw one)."""
    obj = RawValue(typecode_or_type, *args)
    return _locked(obj, lock, ctx)


def Array(
    typecode_or_type: Any, size_or_initializer: Any, *, lock: Any = True, ctx: Any = None
) -> Any:
    """A ctypes array in shared memory, with a lock (``lock=False``: a raw one)."""
    obj = RawArray(typecode_or_type, size_or_initializer)
    return _locked(obj, lock, ctx)


def _locked(obj: Any, lock: Any, ctx: Any) -> Any:
    if lock is False:
        return obj
    if lock in (True, None):
        lock = _contexts.as_context(ctx).RLock()
    if not hasattr(lock, "acquire"):
        msg = f"{lock!r} has no method 'acquire'"
        raise AttributeError(msg)
    return synchronized(obj, lock, ctx=ctx)


def copy(obj: Any) -> Any:
    """A new shared ctypes object holding a copy of ``obj``'s bytes."""
    new = _new_value(type(obj))
    ctypes.pointer(new)[0] = obj
    return new


def synchronized(obj: Any, lock: Any = None, ctx: Any = None) -> Any:
    """Wrap a shared ctypes object so that its values are read and written under ``lock``."""
    if isinstance(obj, SynchronizedBase):
        msg = "object already synchronized"
        raise TypeError(msg)
    ctx = _contexts.as_context(ctx)
    if isinstance(obj, ctypes._SimpleCData):
        return Synchronized(obj, lock, ctx)
    if isinstance(obj, ctypes.Array):
        if obj._type_ is ctypes.c_char:
            return SynchronizedString(obj, lock, ctx)
        return SynchronizedArray(obj, lock, ctx)
    return _structure_wrapper(type(obj))(obj, lock, ctx)


# --------------------------------------------------------------------- pickling


def _rebuild_ctype(type_: Any, wrapper: heap.BufferWrapper, length: int | None) -> Any:
    if length is not None:
        type_ = type_ * length
    if type_ not in reduction.ForkingPickler._extra_reducers:  # once per type
        reduction.ForkingPickler.register(type_, _reduce_ctype)
    obj = type_.from_buffer(wrapper.create_memoryview())
    obj._wrapper = wrapper  # the block lives as long as the object
    return obj


def _reduce_ctype(obj: Any) -> Any:
    _spawning.assert_spawning(obj)
    wrapper = obj._wrapper
    if isinstance(obj, ctypes.Array):
        return _rebuild_ctype, (obj._type_, wrapper, obj._length_)
    return _rebuild_ctype, (type(obj), wrapper, None)


# --------------------------------------------------------------------- wrappers


class SynchronizedBase:
    """A shared ctypes object and the lock that guards it."""

    def __init__(self, obj: Any, lock: Any = None, ctx: Any = None) -> None:
        self._obj = obj
        if lock is None:
            lock = _contexts.as_context(ctx).RLock()
        self._lock = lock
        self.acquire = lock.acquire
        self.release = lock.release

    def __enter__(self) -> Any:
        return self._lock.__enter__()

    def __exit__(self, *exc_info: object) -> Any:
        return self._lock.__exit__(*exc_info)

    def __reduce__(self) -> Any:
        _spawning.assert_spawning(self)
        return synchronized, (self._obj, self._lock)

    def get_obj(self) -> Any:
        """The raw ctypes object (no lock taken)."""
        return self._obj

    def get_lock(self) -> Any:
        return self._lock

    def __repr__(self) -> str:
        return f"<{type(self).__name__} wrapper for {self._obj}>"


def _locked_field(name: str) -> property:
    """A property reading and writing ``self._obj.<name>`` under the lock.

    It calls the lock's own acquire/release (C methods of the semaphore), not
    ``with``: the Python-level __enter__/__exit__ cost a third of a locked
    increment.
    """

    def get(self: SynchronizedBase) -> Any:
        self.acquire()
        try:
            return getattr(self._obj, name)
        finally:
            self.release()

    def set_(self: SynchronizedBase, value: Any) -> None:
        self.acquire()
        try:
            setattr(self._obj, name, value)
        finally:
            self.release()

    return property(get, set_, doc=f"{name!r}, read and written under the lock")


class Synchronized(SynchronizedBase, Generic[_T]):
    """A shared scalar: ``.value`` under the lock (``Synchronized[int]`` for a c_int)."""

    # Written out rather than _locked_field("value"): the attribute access
    # instead of getattr() keeps a locked increment at the stdlib's speed.
    @property
    def value(self) -> _T:
        self.acquire()
        try:
            value: _T = self._obj.value
            return value
        finally:
            self.release()

    @value.setter
    def value(self, new: _T) -> None:
        self.acquire()
        try:
            self._obj.value = new
        finally:
            self.release()


class SynchronizedArray(SynchronizedBase, Generic[_T]):
    """A shared array: ``len``, items and slices under the lock.

    ``SynchronizedArray[float]`` for a c_double array: items are ``float``,
    slices ``list[float]``.
    """

    def __len__(self) -> int:
        return len(self._obj)

    @overload
    def __getitem__(self, index: int) -> _T: ...
    @overload
    def __getitem__(self, index: slice) -> list[_T]: ...
    def __getitem__(self, index: Any) -> Any:
        self.acquire()
        try:
            return self._obj[index]
        finally:
            self.release()

    @overload
    def __setitem__(self, index: int, value: _T) -> None: ...
    @overload
    def __setitem__(self, index: slice, value: Iterable[_T]) -> None: ...
    def __setitem__(self, index: Any, value: Any) -> None:
        self.acquire()
        try:
            self._obj[index] = value
        finally:
            self.release()


class SynchronizedString(SynchronizedArray[bytes]):
    """A shared ``c_char`` array: also ``.value`` (up to the first NUL) and ``.raw``."""

    value = _locked_field("value")
    raw = _locked_field("raw")


_structure_wrappers: weakref.WeakKeyDictionary[Any, type] = weakref.WeakKeyDictionary()


def _structure_wrapper(struct_type: Any) -> type:
    """A Synchronized subclass with one locked property per field of ``struct_type``."""
    cls = _structure_wrappers.get(struct_type)
    if cls is None:
        fields = {name: _locked_field(name) for name, *_rest in struct_type._fields_}
        cls = type(f"Synchronized{struct_type.__name__}", (SynchronizedBase,), fields)
        _structure_wrappers[struct_type] = cls
    return cls
