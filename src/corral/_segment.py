"""Big messages in shared memory: one named POSIX segment per message, mapped by its receiver.

A message whose pickle keeps large protocol-5 buffers out of band
(``reduction.dumps_with_buffers``: NumPy arrays, ``pickle.PickleBuffer``...),
or whose pickle is too big for its channel, is written to a segment of its
own; only the segment's name crosses the queue or the connection. Layout
(offsets in bytes, little-endian)::

    0    u64 buffers   how many out-of-band buffers follow the pickle
    8    u64 length    bytes of the pickle
    16   per buffer: u64 offset, u64 length, u64 kind
    ...  the pickle, then each buffer, each starting on a 64-byte boundary

The sender writes with ``write()`` into the segment's file (no mapping: the
kernel allocates and fills the pages in one pass, about twice as fast as
faulting in a fresh mapping and copying into it). The receiver opens the
segment, unlinks the name at once (from then on the pages live only as long as
its mapping), maps it shared and unpickles with the buffers as views into the
mapping: no copy. The mapping is released when the last object using it (a
NumPy array's ``base``...) is freed. Arrays arrive writable when they were
writable, as the stdlib's do; writes go to the receiver's pages only (nobody
else maps them any more).

Buffers whose exporter is a plain ``bytes``/``bytearray``/``memoryview``/
``array``/``mmap`` (a bare ``PickleBuffer`` that a user made) arrive as
``bytes`` (read-only source) or ``bytearray`` (writable), copied once out of
the mapping, as they arrive in band with the stdlib; buffers of other types
(NumPy...) are rebuilt by their own type from the view.

Every name is first handed to a resource tracker (``resource_tracker.hand_over``)
and only then created, so a sender killed at any moment leaves nothing the
tracker does not remove when its processes end; the receiver tells the same
tracker when it has unlinked the name.
"""

from __future__ import annotations

import array
import mmap
import os
import pickle
import secrets
import struct
from typing import Any

from . import reduction, resource_tracker
from ._wire import write_all
from .errors import MessageLostError

__all__ = ("Loaded", "SegmentRef", "discard", "load", "read", "write")

_HEAD = struct.Struct("<QQ")  # buffers, pickle length
_SPAN = struct.Struct("<QQQ")  # offset, length, kind
_ALIGN = 64
_VIEW, _BYTES, _BYTEARRAY = 0, 1, 2
# Exporters whose PickleBuffer arrives in band as bytes/bytearray with the stdlib.
_PLAIN_EXPORTERS = (bytes, bytearray, memoryview, array.array, mmap.mmap, type(None))
_ZEROS = bytes(_ALIGN)


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) & ~(_ALIGN - 1)


def write(prefix: str, data: bytes, buffers: list[memoryview], tracker_fd: int | None) -> str:
    """Write a pickle and its out-of-band buffers to a new segment; return its name.

    The name is handed to the tracker behind ``tracker_fd`` before the segment
    exists. Raises whatever creating or filling the segment raises (``OSError``:
    /dev/shm is full...), after removing it.
    """
    import _posixshmem

    pieces: list[Any] = []
    spans = []
    pos = _aligned(_HEAD.size + _SPAN.size * len(buffers))
    pieces.append(_ZEROS[: pos - _HEAD.size - _SPAN.size * len(buffers)])
    pieces.append(data)
    end = pos + len(data)
    for view in buffers:
        start = _aligned(end)
        if start > end:
            pieces.append(_ZEROS[: start - end])
        kind = _VIEW
        if isinstance(view.obj, _PLAIN_EXPORTERS):
            kind = _BYTES if view.readonly else _BYTEARRAY
        spans.append(_SPAN.pack(start, view.nbytes, kind))
        pieces.append(view)
        end = start + view.nbytes
    pieces[0:0] = [_HEAD.pack(len(buffers), len(data)), *spans]
    while True:
        name = f"/{prefix}{secrets.token_hex(8)}"
        resource_tracker.hand_over(name, "shared_memory", tracker_fd)
        try:
            fd = _posixshmem.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
        except FileExistsError:  # someone else's: not ours to remove
            resource_tracker.taken_over(name, "shared_memory", tracker_fd)
            continue
        except BaseException:
            resource_tracker.taken_over(name, "shared_memory", tracker_fd)
            raise
        break
    try:
        _write_all(fd, pieces)
    except BaseException:
        discard(name, tracker_fd)
        raise
    finally:
        os.close(fd)
    return name


def _write_all(fd: int, pieces: list[Any]) -> None:
    write_all(fd, [memoryview(p).cast("B") for p in pieces])


def read(name: str, tracker_fd: int | None) -> Any:
    """Open the segment ``name``, remove its name, and unpickle the message it holds.

    Raises:
        MessageLostError: no such segment (its sender's program ended before
            it was read, and the tracker removed it).
        Whatever unpickling the message raises.
    """
    import _posixshmem

    try:
        fd = _posixshmem.shm_open(name, os.O_RDWR, mode=0o600)
    except FileNotFoundError:
        msg = (
            f"the shared-memory segment {name} holding a big message is gone: the program "
            "that sent it ended (its resource tracker removed it) before this process read "
            "it. Keep the sending program alive until the message is received."
        )
        raise MessageLostError(msg) from None
    try:
        try:
            _posixshmem.shm_unlink(name)
        except FileNotFoundError:
            pass
        resource_tracker.taken_over(name, "shared_memory", tracker_fd)
        mem = mmap.mmap(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    count, length = _HEAD.unpack_from(mem)
    view = memoryview(mem)
    buffers: list[Any] = []
    mapped = False
    for i in range(count):
        start, size, kind = _SPAN.unpack_from(mem, _HEAD.size + i * _SPAN.size)
        piece = view[start : start + size]
        if kind == _VIEW:
            buffers.append(piece)
            mapped = True
        else:
            buffers.append(bytes(piece) if kind == _BYTES else bytearray(piece))
            piece.release()
    start = _aligned(_HEAD.size + _SPAN.size * count)
    with view[start : start + length] as pickled:
        obj = pickle.loads(pickled, buffers=buffers)
    view.release()
    if not mapped:
        mem.close()
    # Otherwise the views in ``buffers`` keep the mapping until the last user is freed.
    return obj


def discard(name: str, tracker_fd: int | None) -> None:
    """Remove a segment whose message will never be delivered."""
    import _posixshmem

    try:
        _posixshmem.shm_unlink(name)
    except FileNotFoundError:
        pass
    resource_tracker.taken_over(name, "shared_memory", tracker_fd)


class Loaded:
    """What ``Ring.take`` returns for a message that came through a segment: the object."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj


# -- connections: the message is an ordinary pickle that opens the segment -----


def load(name: str, tracker: int | None) -> Any:
    """Unpickling a ``SegmentRef``: the message in segment ``name``.

    ``tracker`` identifies the tracker the sender handed the name to (its
    pid); told that the name is gone if this process writes to the same one.
    Any process that can import corral can call it, a stdlib
    ``multiprocessing.Connection.recv()`` included.

    Raises:
        MessageLostError: see ``read``.
    """
    return read(name, resource_tracker.fd_of(tracker))


class SegmentRef:
    """A message sent through a segment, as it crosses a connection: a few dozen bytes."""

    __slots__ = ("name", "tracker")

    def __init__(self, name: str, tracker: int | None) -> None:
        self.name = name
        self.tracker = tracker

    def __reduce__(self) -> tuple[Any, ...]:
        return load, (self.name, self.tracker)


def wire_message(data: bytes, buffers: list[memoryview]) -> bytes:
    """Put a message with big buffers in a segment; return the pickle that stands for it."""
    fd, tracker = resource_tracker.message_tracker()
    name = write("corral-c-", data, buffers, fd)
    return pickle.dumps(SegmentRef(name, tracker), reduction.PROTOCOL)
