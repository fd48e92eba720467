"""Named blocks of shared memory (``multiprocessing.shared_memory``).

``SharedMemory(name=None, create=False, size=0, *, track=True)`` creates a POSIX
shared memory segment or attaches to one by name. Names are the stdlib's
(``psm_`` and 8 hex digits), so a stdlib process can attach to a segment corral
made and the reverse.

Lifetime: only the process that *created* a segment tracks it (``track=True``,
the default, as in Python 3.13): if it has not called ``unlink()`` by the time
it exits, the segment is unlinked then. A process that merely attaches never
unlinks anything on exit, so a segment is never removed behind the back of the
processes still using it, and no "leaked shared_memory" warning is printed for
segments another process owns (two stdlib bugs before 3.13). ``track=False``
leaves unlinking entirely to the caller.

``ShareableList(sequence=None, *, name=None)``: a fixed-length list of ints,
floats, bools, strs, bytes and Nones in a ``SharedMemory`` block, in the
stdlib's byte layout, so either library reads the other's lists:

    count, offsets[0..n]            n + 2 signed 64-bit ints
    item data                       8 bytes per scalar; str/bytes in a slot of
                                    8 * (len // 8 + 1) bytes (see below)
    item formats                    8 bytes each (a struct format: "q", "d",
                                    "xxxxxxx?", "xxxxxx?x" for None, "<N>s")
    item kinds                      1 byte each: 0 as stored, 1 str, 2 bytes, 3 None

A str's slot is sized as the stdlib sizes it (by characters), except when its
UTF-8 bytes would not fit: the stdlib then cuts the text short, corral makes
the slot larger.
"""

from __future__ import annotations

import _posixshmem
import mmap
import os
import secrets
import struct
from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any, Generic

from . import resource_tracker
from ._typevars import T as _T  # the items' type, for a type checker

__all__ = ("ShareableList", "SharedMemory")

_USE_POSIX = True
_SHM_NAME_PREFIX = "/psm_"
_SHM_SAFE_NAME_LENGTH = 14  # with the prefix: short enough for macOS's 31-character limit
_O_CREX = os.O_CREAT | os.O_EXCL


def _make_filename() -> str:
    """A fresh segment name, prefix included."""
    digits = (_SHM_SAFE_NAME_LENGTH - len(_SHM_NAME_PREFIX)) // 2
    return _SHM_NAME_PREFIX + secrets.token_hex(digits)


class SharedMemory:
    """A named block of shared memory.

    Args:
        name: the segment to attach to, or to create; None with ``create=True``
            makes up a fresh name.
        create: create the segment (it must not exist yet).
        size: bytes, when creating; ignored when attaching (the segment's size).
        track: unlink the segment at exit if this process created it and did
            not unlink it.

    Raises:
        ValueError: ``size`` is negative, zero when creating, or ``name`` is
            None without ``create``.
        FileExistsError: ``create=True`` and the name is taken.
        FileNotFoundError: attaching to a name that does not exist.
    """

    _fd = -1
    _mmap: mmap.mmap | None = None
    _buf: memoryview | None = None
    # __del__ may run during interpreter teardown, after module globals are gone.
    _close_fd = staticmethod(os.close)

    def __init__(
        self, name: str | None = None, create: bool = False, size: int = 0, *, track: bool = True
    ) -> None:
        if not size >= 0:
            msg = "'size' must be a positive integer"
            raise ValueError(msg)
        if create and size == 0:
            msg = "'size' must be a positive number different from zero"
            raise ValueError(msg)
        if name is None and not create:
            msg = "'name' can only be None if create=True"
            raise ValueError(msg)
        self._track = track
        flags = (_O_CREX | os.O_RDWR) if create else os.O_RDWR
        if name is None:
            while True:
                candidate = _make_filename()
                try:
                    self._fd = self._open(candidate, flags, create and track)
                except FileExistsError:
                    continue
                name = candidate
                break
        else:
            name = "/" + name
            self._fd = self._open(name, flags, create and track)
        self._name = name
        try:
            if create:
                os.ftruncate(self._fd, size)
            size = os.fstat(self._fd).st_size
            self._mmap = mmap.mmap(self._fd, size)
        except BaseException:
            self._release()
            if create:
                _posixshmem.shm_unlink(name)
                if track:
                    resource_tracker.unregister(name, "shared_memory")
            raise
        self._size = size
        self._buf = memoryview(self._mmap)

    @staticmethod
    def _open(name: str, flags: int, tracked: bool) -> int:
        """shm_open, with a segment to create registered with the tracker first.

        Registered before it exists, so that a process killed just after
        creating it leaves no name behind.
        """
        if tracked:
            resource_tracker.register(name, "shared_memory")
        try:
            return _posixshmem.shm_open(name, flags, mode=0o600)
        except BaseException:
            if tracked:
                resource_tracker.unregister(name, "shared_memory")
            raise

    @property
    def buf(self) -> memoryview:
        """The segment's bytes (None once closed)."""
        return self._buf  # type: ignore[return-value]

    @property
    def name(self) -> str:
        """The name to attach to the segment with (no leading slash)."""
        return self._name[1:] if self._name.startswith("/") else self._name

    @property
    def size(self) -> int:
        return self._size

    def close(self) -> None:
        """Stop using the segment in this process (it goes on existing)."""
        self._release()

    def unlink(self) -> None:
        """Remove the segment's name; the memory goes when the last user closes it.

        Raises:
            FileNotFoundError: it was unlinked already.
        """
        _posixshmem.shm_unlink(self._name)
        if self._track:
            resource_tracker.unregister(self._name, "shared_memory")

    def _release(self) -> None:
        if self._buf is not None:
            self._buf.release()
            self._buf = None
        if self._mmap is not None:
            self._mmap.close()
            self._mmap = None
        if self._fd >= 0:
            self._close_fd(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        try:
            self._release()
        except (OSError, BufferError):
            pass  # a view of buf is still alive elsewhere; the OS frees it at exit

    def __reduce__(self) -> Any:
        return type(self), (self.name, False, self.size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, size={self.size})"


_SLOT = 8
_ENCODING = "utf8"
_SCALAR_FORMATS: dict[type, str] = {
    int: "q",
    float: "d",
    bool: "xxxxxxx?",
    type(None): "xxxxxx?x",
}
_AS_STORED, _STR, _BYTES, _NONE = 0, 1, 2, 3
_DECODERS = {
    _AS_STORED: lambda raw: raw,
    _STR: lambda raw: raw.rstrip(b"\0").decode(_ENCODING),
    _BYTES: lambda raw: raw.rstrip(b"\0"),
    _NONE: lambda _raw: None,
}


def _kind(value: Any) -> int:
    if isinstance(value, str):
        return _STR
    if isinstance(value, bytes):
        return _BYTES
    if value is None:
        return _NONE
    return _AS_STORED


def _encoded(value: Any) -> Any:
    return value.encode(_ENCODING) if isinstance(value, str) else value


def _scalar_format(value: Any) -> str:
    try:
        return _SCALAR_FORMATS[type(value)]
    except KeyError:
        msg = (
            "a ShareableList holds int, float, bool, str, bytes and None items, "
            f"not {type(value).__name__}"
        )
        raise TypeError(msg) from None


def _slot_format(value: Any) -> str:
    if isinstance(value, (str, bytes)):
        size = _SLOT * (len(value) // _SLOT + 1)  # the stdlib's rule (characters for a str)
        encoded = len(_encoded(value))
        if encoded > size:  # non-ASCII text the stdlib would cut short: make room
            size = _SLOT * (encoded // _SLOT + 1)
        return f"{size}s"
    return _scalar_format(value)


class ShareableList(Generic[_T]):
    """A fixed-length list in shared memory (see the module docstring for its layout).

    Args:
        sequence: the items of a new list (a new block is created).
        name: with ``sequence``, the name of the new block; alone, the block
            of an existing list to attach to.

    Raises:
        TypeError: an item is not an int, float, bool, str, bytes or None.
    """

    def __init__(self, sequence: Iterable[_T] | None = None, *, name: str | None = None) -> None:
        if name is None or sequence is not None:
            items = list(sequence or ())
            formats = [_slot_format(item) for item in items]
            offsets = [0]
            for fmt in formats:
                offsets.append(offsets[-1] + (int(fmt[:-1]) if fmt[-1] == "s" else _SLOT))
            count = len(items)
            size = _SLOT * (count + 2) + offsets[-1] + _SLOT * count + count
            self.shm = SharedMemory(name, create=True, size=size)
            self._count, self._offsets = count, offsets
            buf = self.shm.buf
            struct.pack_into(f"{count + 2}q", buf, 0, count, *offsets)
            for position, (item, fmt) in enumerate(zip(items, formats, strict=True)):
                self._store(position, fmt, item, buf)
        else:
            self.shm = SharedMemory(name)
            (count,) = struct.unpack_from("q", self.shm.buf, 0)
            self._count = count
            self._offsets = list(struct.unpack_from(f"{count + 1}q", self.shm.buf, _SLOT))

    # Where the regions start.
    @property
    def _data_start(self) -> int:
        return _SLOT * (self._count + 2)

    @property
    def _formats_start(self) -> int:
        return self._data_start + self._offsets[-1]

    @property
    def _kinds_start(self) -> int:
        return self._formats_start + _SLOT * self._count

    def _position(self, position: int, message: str) -> int:
        if position < 0:
            position += self._count
        if not 0 <= position < self._count:
            raise IndexError(message)
        return position

    def _get_packing_format(self, position: int) -> str:
        """The struct format of one item (the stdlib's name: its tests call it)."""
        position = self._position(position, "Requested position out of range.")
        (raw,) = struct.unpack_from("8s", self.shm.buf, self._formats_start + _SLOT * position)
        return str(raw.rstrip(b"\0").decode(_ENCODING))

    def _store(self, position: int, fmt: str, value: Any, buf: Any) -> None:
        struct.pack_into("8s", buf, self._formats_start + _SLOT * position, fmt.encode(_ENCODING))
        struct.pack_into("b", buf, self._kinds_start + position, _kind(value))
        struct.pack_into(fmt, buf, self._data_start + self._offsets[position], _encoded(value))

    def __getitem__(self, position: int) -> _T:
        position = self._position(position, "index out of range")
        buf = self.shm.buf
        (raw,) = struct.unpack_from(
            self._get_packing_format(position), buf, self._data_start + self._offsets[position]
        )
        (kind,) = struct.unpack_from("b", buf, self._kinds_start + position)
        return _DECODERS[kind](raw)

    def __setitem__(self, position: int, value: _T) -> None:
        """Store ``value`` in place.

        Raises:
            IndexError: no such position.
            ValueError: a str/bytes longer than the slot it was created with.
            TypeError: an unsupported type.
        """
        position = self._position(position, "assignment index out of range")
        if isinstance(value, (str, bytes)):
            room = self._offsets[position + 1] - self._offsets[position]
            if len(_encoded(value)) > room:
                msg = "bytes/str item exceeds available storage"
                raise ValueError(msg)
            fmt = f"{room}s"
        else:
            fmt = _scalar_format(value)
        self._store(position, fmt, value, self.shm.buf)

    def __len__(self) -> int:
        return int(struct.unpack_from("q", self.shm.buf, 0)[0])

    def __iter__(self) -> Iterator[_T]:
        return (self[position] for position in range(self._count))

    def __reduce__(self) -> Any:
        return partial(type(self), name=self.shm.name), ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self)}, name={self.shm.name!r})"

    @property
    def format(self) -> str:
        """The struct formats of all items, concatenated."""
        return "".join(self._get_packing_format(i) for i in range(self._count))

    def count(self, value: _T) -> int:
        """How many items equal ``value``."""
        return sum(value == item for item in self)

    def index(self, value: _T) -> int:
        """The first position holding ``value``.

        Raises:
            ValueError: no item equals it.
        """
        for position, item in enumerate(self):
            if value == item:
                return position
        msg = f"{value!r} not in this container"
        raise ValueError(msg)
