"""Shared memory for ``Value``, ``Array`` and ``Barrier``: an arena allocator.

An *arena* is a region of shared memory mapped ``MAP_SHARED``: on Linux a
``memfd`` (anonymous: it has no name in /dev/shm at any moment, so nothing can
be left behind, even when every process is SIGKILLed), elsewhere a temporary
file unlinked as soon as it is created. Children get an arena by inheriting the
mapping (fork) or a duplicate of its file descriptor (spawn, forkserver;
``Arena`` pickles only while a process is being started).

``BufferWrapper(size)`` takes a block from an arena and gives it back when the
wrapper is garbage-collected in the process that made it (children never free
the parent's blocks). Blocks are 16-byte aligned; small blocks share 1 MiB
arenas (first fit, neighbours merged on free), a block larger than that gets an
arena of its own, unmapped when the block is freed. A forked child starts a
heap of its own, so parent and child never hand out the same bytes.
"""

from __future__ import annotations

import bisect
import mmap
import os
import sys
import threading
import weakref
from collections import deque
from typing import Any

from . import _spawning, reduction
from ._anonymous_memory import anonymous_fd

__all__ = ("Arena", "BufferWrapper", "Heap")

_ALIGNMENT = 16
_ARENA_SIZE = 1 << 20


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


class Arena:
    """A region of shared memory that blocks are taken from.

    Args:
        size: bytes (a multiple of the page size is best).
        fd: an existing descriptor of that many bytes (when rebuilt in a child).
    """

    def __init__(self, size: int, fd: int = -1) -> None:
        self.size = size
        if fd == -1:
            fd = anonymous_fd(size, "corral-heap")
        self.fd = fd
        self.buffer = mmap.mmap(fd, size)
        self._finalizer = weakref.finalize(self, _close_arena, self.buffer, fd)

    def __reduce__(self) -> Any:
        _spawning.assert_spawning(self)
        return _rebuild_arena, (self.size, reduction.DupFd(self.fd))


def _close_arena(buffer: mmap.mmap, fd: int) -> None:
    try:
        buffer.close()
    except BufferError:
        pass  # a view into it is still alive somewhere; the OS frees it at exit
    os.close(fd)


def _rebuild_arena(size: int, token: Any) -> Arena:
    return Arena(size, token.detach())


class Heap:
    """The process's allocator of shared blocks (one per process: ``BufferWrapper._heap``)."""

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        # Per shared arena: its free (start, size) ranges sorted by start.
        self._free: dict[Arena, list[tuple[int, int]]] = {}
        self._allocated: dict[Arena, int] = {}  # bytes handed out, per arena
        self._pending_frees: deque[tuple[Arena, int, int]] = deque()

    def malloc(self, size: int) -> tuple[Arena, int, int]:
        """A block of at least ``size`` bytes: (arena, start, size).

        Raises:
            ValueError: ``size`` is negative.
            OverflowError: ``size`` does not fit in a C ssize_t.
        """
        if size < 0:
            msg = f"Size {size:n} out of range"
            raise ValueError(msg)
        if sys.maxsize <= size:
            msg = f"Size {size:n} too large"
            raise OverflowError(msg)
        if os.getpid() != self._pid:
            self.__init__()  # type: ignore[misc]  # a forked child: a heap of its own
        size = _round_up(max(size, 1), _ALIGNMENT)
        with self._lock:
            self._free_pending()
            if size > _ARENA_SIZE // 2:
                arena = Arena(_round_up(size, mmap.PAGESIZE))
                self._allocated[arena] = size
                return arena, 0, size
            for arena, ranges in self._free.items():
                block = self._take(arena, ranges, size)
                if block is not None:
                    return block
            arena = Arena(_ARENA_SIZE)
            ranges = [(0, _ARENA_SIZE)]
            self._free[arena] = ranges
            self._allocated[arena] = 0
            block = self._take(arena, ranges, size)
            assert block is not None
            return block

    def _take(self, arena: Arena, ranges: list[tuple[int, int]], size: int) -> Any:
        for i, (start, length) in enumerate(ranges):
            if length >= size:
                if length == size:
                    del ranges[i]
                else:
                    ranges[i] = (start + size, length - size)
                self._allocated[arena] += size
                return arena, start, size
        return None

    def free(self, block: tuple[Arena, int, int]) -> None:
        """Give a block back (in the process that allocated it; elsewhere nothing happens).

        May run from the garbage collector in any thread, even one inside
        ``malloc``: then it is queued and done by the next ``malloc``.
        """
        if os.getpid() != self._pid:
            return
        if not self._lock.acquire(blocking=False):
            self._pending_frees.append(block)
            return
        try:
            self._free_pending()
            self._give_back(*block)
        finally:
            self._lock.release()

    def _free_pending(self) -> None:
        while self._pending_frees:
            self._give_back(*self._pending_frees.popleft())

    def _give_back(self, arena: Arena, start: int, size: int) -> None:
        ranges = self._free.get(arena)
        if ranges is None:  # a block with an arena of its own
            self._allocated.pop(arena, None)
            return
        self._allocated[arena] -= size
        i = bisect.bisect(ranges, (start, size))
        if i < len(ranges) and start + size == ranges[i][0]:  # merge with the next
            size += ranges[i][1]
            del ranges[i]
        if i > 0 and ranges[i - 1][0] + ranges[i - 1][1] == start:  # and the previous
            start, size = ranges[i - 1][0], ranges[i - 1][1] + size
            del ranges[i - 1]
            i -= 1
        ranges.insert(i, (start, size))
        if self._allocated[arena] == 0 and len(self._free) > 1:
            del self._free[arena]  # an idle arena beyond the first: unmap it
            del self._allocated[arena]


class BufferWrapper:
    """A block of shared memory, freed when this object is garbage-collected.

    Pickles (while a process is being started) with its arena, so a child sees
    the same bytes.
    """

    _heap = Heap()

    def __init__(self, size: int) -> None:
        block = BufferWrapper._heap.malloc(size)
        self._state = (block, size)
        weakref.finalize(self, BufferWrapper._heap.free, block)

    def __reduce__(self) -> Any:
        _spawning.assert_spawning(self)
        (arena, start, _block_size), size = self._state
        return _rebuild_wrapper, (arena, start, size)

    def create_memoryview(self) -> memoryview:
        """A view of exactly the bytes asked for."""
        (arena, start, _block_size), size = self._state
        return memoryview(arena.buffer)[start : start + size]


def _rebuild_wrapper(arena: Arena, start: int, size: int) -> BufferWrapper:
    wrapper = BufferWrapper.__new__(BufferWrapper)
    wrapper._state = ((arena, start, size), size)  # not freed here: the creator frees it
    return wrapper
