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

``ShareableList`` is not provided yet.
"""

from __future__ import annotations

import _posixshmem
import mmap
import os
import secrets
from typing import Any

from . import resource_tracker

__all__ = ("SharedMemory",)

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
                    self._fd = _posixshmem.shm_open(candidate, flags, mode=0o600)
                except FileExistsError:
                    continue
                name = candidate
                break
        else:
            name = "/" + name
            self._fd = _posixshmem.shm_open(name, flags, mode=0o600)
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
            raise
        self._size = size
        self._buf = memoryview(self._mmap)
        if create and track:
            resource_tracker.register(name, "shared_memory")

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
            os.close(self._fd)
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
