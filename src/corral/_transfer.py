"""Big buffers between a pool's engine and its workers: shared memory passed by descriptor.

A task (or a result) whose pickle holds protocol-5 buffers of ``MIN_SIZE``
bytes or more (NumPy arrays, ``pickle.PickleBuffer``) does not push them
through the worker's socket. They are copied once into a *segment*, an
anonymous shared-memory file (``memfd``), whose descriptor crosses the socket
beside the message (``SCM_RIGHTS``); the message keeps only the small pickle
and where each buffer sits. The receiver maps the segment and unpickles with
views into the mapping: no copy on that side. A message whose pickle itself is
big (large ``bytes`` or ``str`` pickle in band) puts the pickle in the segment
too; unpickling copies those objects out once.

Nothing has a name, so nothing can be left behind: the kernel frees a segment
when the last descriptor and mapping of it are gone, whoever was killed.

**Segments are reused.** On the machines we measured, fresh shared-memory
pages cost more than the copy itself (4 KiB pages: allocating them made a
64 MiB write 3-5x slower than ``memcpy``, and setting up the page tables of a
fresh 64 MiB mapping cost about as much as copying it). So both sides keep
their mappings: the sender (``Outbox``) writes into a segment the receiver has
finished with, and the receiver keeps its mapping of each segment it has seen
(by inode), so that a reused segment costs neither side a page fault.
The first 64 bytes of a segment say who holds it (``_READER``, an i32):
0 free, -1 sent and not yet mapped, or the pid of the process whose objects
still use its buffers. The receiver's buffers are ctypes arrays over the
mapping with a finalizer: when the last object using a message's buffers is
gone, the field goes back to 0. A sender also reuses a segment whose reader
has died. Task arguments stay *owned* by the engine until the task is settled
(a task that was sent to a worker that died before starting it is sent again,
with the same segment).

Buffers a receiver gets are writable views (``MAP_SHARED``): the segment is
its alone until those objects are gone. Objects placed with ``share()`` are
mapped read-only in every worker and never reused (see ``Shared``).
"""

from __future__ import annotations

import array
import ctypes
import errno
import mmap
import os
import pickle
import struct
import sys
import threading
import weakref
from collections import OrderedDict
from typing import Any, Generic

from . import reduction
from ._anonymous_memory import anonymous_fd
from ._typevars import T as _T

__all__ = ("MIN_SIZE", "Outbox", "Shared", "open_views", "outbox")

# Buffers of at least this many bytes leave the pickle; a pickle of at least
# this many bytes goes into the segment too.
MIN_SIZE = 1 << 20
_ALIGN = 64
_HEADER = 64  # bytes at the start of a segment: the _READER field, then padding
_READER = struct.Struct("i")
_FREE, _IN_FLIGHT = 0, -1
# The sender keeps at most this much in free segments; a bigger one is never kept.
_OUTBOX_BYTES = 256 << 20
# A receiver keeps at most this much mapped for reuse.
_MAPPED_BYTES = 256 << 20
# Segments a process may have in flight (owned by tasks not yet settled) before
# more big messages go in band: each holds a descriptor and a copy of its data.
_IN_FLIGHT_BYTES = 2 << 30


def _in_flight_segments() -> int:
    """At most an eighth of the descriptors this process may open, and 128."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 32
    if soft == resource.RLIM_INFINITY:
        return 128
    return max(4, min(128, soft // 8))


_MAX_FDS = 253  # descriptors one message may carry (Linux's SCM_MAX_FD)
_GRANULE = 1 << 16  # segment sizes are rounded up to this (64 KiB)
_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)  # Linux >= 5.14


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) & ~(_ALIGN - 1)


def _populate(fd: int, mm: mmap.mmap, size: int) -> bool:
    """Allocate a new segment's pages and map them in ``mm``; False where that is missing."""
    try:
        os.posix_fallocate(fd, 0, size)  # an error here, not SIGBUS later, if memory is short
        mm.madvise(_MADV_POPULATE_WRITE)
    except (OSError, ValueError, AttributeError):
        return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Segment:
    """The sender's side of one segment: its descriptor and a mapping kept for reuse."""

    __slots__ = ("__weakref__", "fd", "fresh", "mm", "owned", "pid", "size")

    def __init__(self, size: int) -> None:
        self.pid = os.getpid()
        self.owned = False
        self.size = size = -(-size // _GRANULE) * _GRANULE  # close sizes can reuse it
        self.fd = -1
        fd = anonymous_fd(size, "corral-transfer")
        try:
            self.mm = mmap.mmap(fd, size)
            # One that may be reused gets all its pages now, mapped here, in two
            # system calls: faulting them in one by one on the first copy costs
            # several times more. A one-off is written with pwrite, which makes
            # its pages without mapping them.
            self.fresh = size > _OUTBOX_BYTES or not _populate(fd, self.mm, size)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.owned = False  # the sender may send it again (a task not yet settled)

    def reusable(self) -> bool:
        reader = _READER.unpack_from(self.mm, 0)[0]
        if reader == _FREE:
            return True
        if reader == _IN_FLIGHT:
            return False
        return not _alive(reader)

    def mark_in_flight(self) -> None:
        _READER.pack_into(self.mm, 0, _IN_FLIGHT)

    def write(self, parts: list[memoryview]) -> list[tuple[int, int]]:
        """Copy ``parts`` in, 64-byte aligned after the header; return their (offset, length)."""
        spans = []
        mm = self.mm
        offset = _HEADER
        for view in parts:
            n = view.nbytes
            if self.fresh:  # pwrite makes the pages without a page fault for each
                done = 0
                while done < n:
                    done += os.pwrite(self.fd, view[done:], offset + done)
            else:  # its pages exist and are mapped here: a plain copy is fastest
                mm[offset : offset + n] = view
            spans.append((offset, n))
            offset = _aligned(offset + n)
        self.fresh = False
        return spans

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)
            try:
                self.mm.close()
            except BufferError:
                pass  # a view of it is still alive: it is unmapped when that goes

    def __del__(self) -> None:
        self.close()


class Outbox:
    """A process's segments for sending, reused once their receivers are done with them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[Segment] = []
        self._free_bytes = 0
        self._owned = 0  # segments owned by messages not yet settled
        self._owned_bytes = 0
        self._limit = _in_flight_segments()

    def write(self, parts: list[memoryview]) -> tuple[Segment, list[tuple[int, int]]]:
        """Copy ``parts`` into a segment (reused or new), owned by the caller until ``release``.

        Raises:
            OSError: no shared memory could be had (ENOMEM/ENOSPC).
        """
        need = _HEADER
        for view in parts:
            need = _aligned(need + view.nbytes)
        need = -(-need // _GRANULE) * _GRANULE
        with self._lock:
            if self._owned >= self._limit or self._owned_bytes + need > _IN_FLIGHT_BYTES:
                msg = "too many big messages in flight; this one goes in band"
                raise OSError(errno.EMFILE, msg)
            self._owned += 1
            self._owned_bytes += need
        try:
            segment = self._take(need)
            if segment is None:
                segment = Segment(need)
        except BaseException:
            self._disown(need)
            raise
        segment.owned = True
        segment.mark_in_flight()
        return segment, segment.write(parts)

    def _disown(self, size: int) -> None:
        with self._lock:
            self._owned -= 1
            self._owned_bytes -= size

    def _take(self, need: int) -> Segment | None:
        with self._lock:
            best = None
            for segment in self._free:
                fits = need <= segment.size <= 4 * need
                if fits and (best is None or segment.size < best.size) and segment.reusable():
                    best = segment
            if best is not None:
                self._free.remove(best)
                self._free_bytes -= best.size
            return best

    def release(self, segment: Segment) -> None:
        """The sender will not send ``segment`` again: keep it for reuse, or let it go."""
        if segment.pid != os.getpid():
            return  # a forked child's copy of its parent's message: not this outbox's
        if segment.owned:
            segment.owned = False
            self._disown(segment.size)
        if segment.size > _OUTBOX_BYTES:
            segment.close()
            return
        with self._lock:
            self._free.append(segment)
            self._free_bytes += segment.size
            while self._free_bytes > _OUTBOX_BYTES:
                oldest = self._free.pop(0)
                self._free_bytes -= oldest.size
                oldest.close()

    def clear(self) -> None:
        with self._lock:
            free, self._free = self._free, []
            self._free_bytes = 0
        for segment in free:
            segment.close()


_outbox: Outbox | None = None
_outbox_pid = 0
_users = 0  # engines of this process that may send or receive big buffers
_users_lock = threading.Lock()


def engine_started() -> None:
    """An engine that uses segments started (see ``engine_finished``)."""
    global _users
    with _users_lock:
        _users += 1


def engine_finished() -> None:
    """An engine finished: once none is left, unmap and close what is kept for reuse."""
    global _users
    with _users_lock:
        _users -= 1
        if _users > 0:
            return
    if _outbox is not None and _outbox_pid == os.getpid():
        _outbox.clear()
    with _mapped_lock:
        _mapped.clear()  # mappings still in use stay until their objects are gone
        _senders.clear()


def outbox() -> Outbox:
    """This process's outbox (a forked child starts with an empty one)."""
    global _outbox, _outbox_pid
    pid = os.getpid()
    if _outbox is None or _outbox_pid != pid:
        _outbox, _outbox_pid = Outbox(), pid
    return _outbox


# ----------------------------------------------------------------- encoding


class Outgoing:
    """What a message sends beside its pickle: its own segment and the shared objects it uses."""

    __slots__ = ("segment", "shared")

    def __init__(self, segment: Segment | None, shared: list[Shared]) -> None:
        self.segment = segment
        self.shared = shared  # each pinned while pickled (Shared.__reduce__) until released

    def fds(self) -> list[int]:
        """The descriptors to send, in the order the receiver takes them; marks the segment sent."""
        fds = []
        if self.segment is not None:
            self.segment.mark_in_flight()
            fds.append(self.segment.fd)
        fds.extend(handle._fd_for_sending() for handle in self.shared)
        return fds

    def release(self) -> None:
        if self.segment is not None and self.segment.owned:
            outbox().release(self.segment)
        self.segment = None
        shared, self.shared = self.shared, []
        for handle in shared:
            handle._unpin()

    def __del__(self) -> None:
        self.release()  # a message dropped unsettled (cancelled, pool stopped)


# Exporters whose PickleBuffer a receiver gets as bytes (read-only) or bytearray,
# as an in-band protocol-5 pickle gives them; other buffers arrive as views.
_PLAIN_EXPORTERS = (bytes, bytearray, memoryview, array.array, type(None))
_VIEW, _BYTES, _BYTEARRAY = 0, 1, 2


class _Encoder:
    """A thread's ``buffer_callback`` while it pickles a message (reused: one per thread).

    Keeps buffers of ``MIN_SIZE`` bytes or more out of band (with what they
    should arrive as), and the ``Shared`` handles met (``active``: a task's
    arguments are being pickled). A read-only buffer of an array raises
    ``reduction.ReadOnlyBuffer``: the message is then pickled as the stdlib does.
    """

    __slots__ = ("active", "buffers", "kinds", "shared")

    def __init__(self) -> None:
        self.active = False
        self.buffers: list[memoryview] | None = None
        self.kinds: list[int] = []
        self.shared: list[Shared[Any]] | None = None

    def __call__(self, buffer: pickle.PickleBuffer) -> bool:
        try:
            view = buffer.raw()
        except BufferError:  # not contiguous: pickle copies it into the stream
            reduction.check_writable(buffer)
            return True
        plain = isinstance(view.obj, _PLAIN_EXPORTERS)
        if view.readonly and not plain:
            raise reduction.ReadOnlyBuffer
        if view.nbytes < MIN_SIZE:
            return True
        if self.buffers is None:
            self.buffers = []
            self.kinds = []
        self.buffers.append(view)
        self.kinds.append(_VIEW if not plain else _BYTES if view.readonly else _BYTEARRAY)
        return False

    def reset(self) -> None:
        _unpin_all(self.shared)  # the slow path pickles (and pins) them again
        self.buffers = None
        self.shared = None


def _unpin_all(shared: list[Shared[Any]] | None) -> None:
    for handle in shared or ():
        handle._unpin()


_local = threading.local()  # .encoder; .received: descriptors of the message being unpickled


def _encoder() -> _Encoder:
    try:
        encoder: _Encoder = _local.encoder
    except AttributeError:
        encoder = _local.encoder = _Encoder()
    return encoder


def dumps(obj: Any, *, plain: bool = False) -> tuple[Any, Outgoing | None]:
    """Pickle ``obj`` for a worker channel: ``(bytes, None)`` or ``(big message, Outgoing)``.

    A big message is the tuple ``(pickle or None, spans, shared count)``; its
    descriptors (``Outgoing.fds()``) must travel with it. ``plain``: pickle
    as ``pickle.dumps`` does (results), not as corral sends tasks; a
    ``Shared`` handle cannot be in it. A message holding a read-only array is
    pickled with the stdlib's protocol, so that the array arrives writable as
    with the stdlib. Without shared memory to be had for its big buffers, the
    message is the whole pickle (bytes), as small ones are.

    Raises:
        SerializationError: obj (or a part of it) cannot be pickled.
        OSError: no shared memory for a message that also holds ``Shared`` handles.
    """
    encoder = _encoder()
    if plain and not encoder.active and encoder.buffers is None:  # a result: the fast path
        try:
            data = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL, buffer_callback=encoder)
        except reduction.ReadOnlyBuffer:
            encoder.buffers = None
            return _place(obj, _plain_as_stdlib(obj), [], [], [], plain)
        finally:
            buffers, encoder.buffers = encoder.buffers, None
        if buffers is None and len(data) < MIN_SIZE:
            return data, None
        return _place(obj, data, buffers or [], encoder.kinds if buffers else [], [], plain)
    outer = (
        (encoder.active, encoder.buffers, encoder.kinds, encoder.shared) if encoder.active else None
    )
    encoder.active = not plain
    encoder.buffers = encoder.shared = None
    try:
        try:
            if plain:  # results: plain pickle, as the stdlib's pools (no by-value functions)
                data = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL, buffer_callback=encoder)
            else:
                data = reduction.dumps_out_of_band(obj, encoder)
        except reduction.ReadOnlyBuffer:  # in band, with the stdlib's protocol
            _unpin_all(encoder.shared)
            encoder.buffers = encoder.shared = None
            data = _plain_as_stdlib(obj) if plain else reduction.dumps_as_stdlib(obj)
        buffers, kinds, shared = encoder.buffers, encoder.kinds, encoder.shared
    except BaseException:
        _unpin_all(encoder.shared)
        raise
    finally:
        if outer is None:
            encoder.active = False
            encoder.buffers = encoder.shared = None
        else:  # pickled from inside another message's pickling
            encoder.active, encoder.buffers, encoder.kinds, encoder.shared = outer
    if buffers is None and shared is None and len(data) < MIN_SIZE:
        return data, None
    return _place(obj, data, buffers or [], kinds if buffers else [], shared or [], plain)


def _plain_as_stdlib(obj: Any) -> bytes:
    try:
        return pickle.dumps(obj, pickle.DEFAULT_PROTOCOL)
    except Exception:  # only protocol 5 pickles it (a PickleBuffer)
        return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)


def _place(
    obj: Any,
    data: bytes,
    buffers: list[memoryview],
    kinds: list[int],
    shared: list[Shared[Any]],
    plain: bool,
) -> tuple[Any, Outgoing | None]:
    """The big message of ``dumps``: buffers (and a big pickle) copied into a segment."""
    if len(shared) + 1 > _MAX_FDS:
        _unpin_all(shared)
        msg = (
            f"a task can use at most {_MAX_FDS - 1} shared object handles "
            f"(this one uses {len(shared)}); put the objects in one shared object"
        )
        raise ValueError(msg)
    segment = None
    spans: list[tuple[int, int, int]] = []
    header: bytes | None = data
    if buffers or len(data) >= MIN_SIZE:
        whole = len(data) >= MIN_SIZE
        parts = [memoryview(data), *buffers] if whole else buffers
        try:
            segment, places = outbox().write(parts)
        except OSError:
            if shared:
                _unpin_all(shared)
                raise
            # No shared memory to be had (ENOMEM, EMFILE...): the socket still works.
            if plain:
                return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL), None
            return reduction._dumps(obj), None
        kinds = [_VIEW, *kinds] if whole else kinds
        spans = [(offset, n, kind) for (offset, n), kind in zip(places, kinds, strict=True)]
        if whole:
            header = None  # the pickle is the segment's first span
    return (header, tuple(spans), len(shared)), Outgoing(segment, shared)


def size_of(message: Any) -> int:
    """Bytes a message from ``dumps`` stands for (its pickle and its buffers)."""
    if type(message) is bytes:
        return len(message)
    header, spans, _n = message
    return (len(header) if header is not None else 0) + sum(span[1] for span in spans)


def fd_count(message: Any) -> int:
    """How many descriptors travel with a message from ``dumps``."""
    if type(message) is bytes:
        return 0
    _header, spans, n_shared = message
    return (1 if spans else 0) + int(n_shared)


class Sending:
    """A big message in a worker's record, with what must travel beside it."""

    __slots__ = ("message", "outgoing")

    def __init__(self, message: Any, outgoing: Outgoing) -> None:
        self.message = message
        self.outgoing = outgoing


class Received:
    """A big message as it arrived, with its descriptors (closed if it is never loaded)."""

    __slots__ = ("fds", "message", "sender")

    def __init__(self, message: Any, fds: list[int], sender: int | None = None) -> None:
        self.message = message
        self.fds = fds
        self.sender = sender  # the pid that sent it, if known (see forget_sender)

    def load(self) -> Any:
        fds, self.fds = self.fds, []
        try:
            return loads(self.message, fds, self.sender)
        finally:
            for fd in fds:
                os.close(fd)

    def __del__(self) -> None:
        fds, self.fds = self.fds, []
        for fd in fds:
            os.close(fd)


def take_fds(message: Any, fds: Any, sender: int | None = None) -> Any:
    """``message`` itself, or a ``Received`` holding the descriptors it takes from ``fds``."""
    n = fd_count(message)
    if not n:
        return message
    return Received(message, [fds.popleft() for _ in range(n)], sender)


def loads(message: Any, fds: list[int], sender: int | None = None) -> Any:
    """Unpickle a message from ``dumps``, taking its descriptors (closed here) from ``fds``."""
    if type(message) is bytes:
        return pickle.loads(message)
    header, spans, n_shared = message
    own = fds.pop(0) if spans else -1
    shared_fds = [fds.pop(0) for _ in range(n_shared)]
    try:
        views: list[Any] = (
            open_views(own, tuple((offset, n) for offset, n, _kind in spans), sender)
            if spans
            else []
        )
        for i, (_offset, _n, kind) in enumerate(spans):
            if kind != _VIEW:  # a bare PickleBuffer of bytes-like data: as in band
                views[i] = bytes(views[i]) if kind == _BYTES else bytearray(views[i])
        if header is None:
            header = views.pop(0)
        previous = getattr(_local, "received", None)
        _local.received = shared_fds
        try:
            return pickle.loads(header, buffers=views)
        finally:
            _local.received = previous
    finally:
        for fd in shared_fds:
            os.close(fd)


# ----------------------------------------------------------------- receiving

_mapped: OrderedDict[tuple[int, int, bool], mmap.mmap] = OrderedDict()
_mapped_bytes = 0
_mapped_lock = threading.Lock()
_senders: dict[tuple[int, int, bool], int] = {}  # which process sent a kept segment
_array_types: dict[int, Any] = {}


def _map(fd: int, readonly: bool, sender: int | None = None) -> mmap.mmap:
    """This process's mapping of the segment ``fd`` refers to (kept for reuse)."""
    global _mapped_bytes
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino, readonly)
    if sender is not None:
        _senders[key] = sender
    with _mapped_lock:
        mm = _mapped.get(key)
        if mm is not None and not mm.closed and len(mm) == st.st_size:
            _mapped.move_to_end(key)
            return mm
        prot = mmap.PROT_READ if readonly else mmap.PROT_READ | mmap.PROT_WRITE
        mm = mmap.mmap(fd, st.st_size, mmap.MAP_SHARED, prot)
        # A shared object's mapping (read-only) is not kept: it lives as long as
        # the objects built on it, so release() frees the memory once they are
        # gone. A message segment's is kept while its sender may reuse it.
        if not readonly and st.st_size <= _MAPPED_BYTES // 2:
            _mapped[key] = mm
            _mapped_bytes += st.st_size
            while _mapped_bytes > _MAPPED_BYTES:
                old_key, old = _mapped.popitem(last=False)
                _senders.pop(old_key, None)
                _mapped_bytes -= len(old)  # unmapped once no view of it is left
        return mm


def forget_sender(pid: int) -> None:
    """The process ``pid`` has died: it will not send its segments again, so stop keeping them."""
    global _mapped_bytes
    with _mapped_lock:
        for key in [k for k, sender in _senders.items() if sender == pid]:
            del _senders[key]
            old = _mapped.pop(key, None)
            if old is not None:
                _mapped_bytes -= len(old)


def _forget_mappings() -> None:
    global _mapped_bytes, _mapped_lock, _users, _users_lock
    _mapped.clear()
    _senders.clear()
    _mapped_bytes = 0
    _mapped_lock = threading.Lock()
    _users = 0
    _users_lock = threading.Lock()


class _Readers:
    """Counts a message's live buffers; the last one gone frees the segment for its sender."""

    __slots__ = ("left", "mm", "pid")

    def __init__(self, mm: mmap.mmap, n: int) -> None:
        self.mm = mm
        self.left = [None] * n
        self.pid = os.getpid()

    def __call__(self) -> None:
        left = self.left
        left.pop()
        # A forked child's copies of the objects are not the receiver's: the
        # parent may still use the segment.
        if not left and not self.mm.closed and os.getpid() == self.pid:
            _READER.pack_into(self.mm, 0, _FREE)


def open_views(
    fd: int, spans: tuple[tuple[int, int], ...], sender: int | None = None
) -> list[memoryview]:
    """Writable views of a received segment's spans; closes ``fd``.

    The segment is marked in use by this process until every view (and every
    object made on one) is gone.
    """
    try:
        mm = _map(fd, readonly=False, sender=sender)
    finally:
        os.close(fd)
    _READER.pack_into(mm, 0, os.getpid())
    readers = _Readers(mm, len(spans))
    views = []
    for offset, length in spans:
        kind = _array_types.get(length)
        if kind is None:
            kind = _array_types[length] = ctypes.c_char * length
            if len(_array_types) > 256:
                _array_types.clear()
        region = kind.from_buffer(mm, offset)
        weakref.finalize(region, readers)
        views.append(memoryview(region).cast("B"))
    return views


# ----------------------------------------------------------------- share once


class Shared(Generic[_T]):
    """A handle to an object placed once in shared memory by ``Pool.share``/``Executor.share``.

    Pass the handle (anywhere inside a task's arguments) instead of the object:
    each task gets the object itself, rebuilt on read-only views of the shared
    memory, so a big NumPy array is neither copied nor pickled per task. In the
    process that made it, ``get()`` returns such a view too. The memory is
    released with ``release()``, when the pool that made it ends, or when the
    last reference to the handle is gone, whichever comes first.

    A handle can be passed only in the tasks of pools and executors of the
    process that made it (not through a ``Queue`` or ``Connection``).
    ``Shared[T]`` is the handle of an object of type ``T``.
    """

    __slots__ = (
        "__weakref__",
        "_fd",
        "_lock",
        "_pins",
        "_released",
        "_segment",
        "_spans",
        "description",
    )

    def __init__(self, obj: _T) -> None:
        self._lock = threading.Lock()
        self._segment: Segment | None = None
        self._fd = -1
        self._pins = 0  # messages not yet settled that use it
        self._released = True
        obj = _contiguous(obj)
        collector = _ShareCollector()
        data = reduction.dumps_out_of_band(obj, collector)
        parts = [memoryview(data), *collector.buffers]
        size = _HEADER
        for view in parts:
            size = _aligned(size + view.nbytes)
        # A free segment of the outbox has its pages already: writing is a plain copy.
        segment = outbox()._take(size) or Segment(size)
        try:
            self._spans = tuple(segment.write(parts))
        except BaseException:
            segment.close()
            raise
        self._segment = segment
        self._fd = segment.fd
        self._released = False
        self.description = f"{type(obj).__name__} of {sum(v.nbytes for v in parts)} bytes"

    def get(self) -> _T:
        """The object, rebuilt on read-only views of the shared memory.

        Raises:
            ValueError: the handle was released.
        """
        if self._released:
            raise ValueError(self._released_message())
        value: _T = _rebuild(os.dup(self._fd), self._spans)
        return value

    def release(self) -> None:
        """Give the shared memory back (see the class docstring).

        Tasks already submitted with the handle still get the object; new
        ones raise ``ValueError`` at the call. Workers still using objects
        built on it keep their mapping until those are gone.
        """
        with self._lock:
            self._released = True
            if self._pins:
                return  # the last of those tasks frees it
            segment, self._segment = self._segment, None
            self._fd = -1
        if segment is not None:
            segment.close()  # never reused: workers may still hold objects built on it

    @property
    def released(self) -> bool:
        """Whether ``release()`` was called (or the pool that made it ended)."""
        return self._released

    def _pin(self) -> None:
        with self._lock:
            self._pins += 1

    def _unpin(self) -> None:
        with self._lock:
            self._pins -= 1
            if self._pins or not self._released:
                return
            segment, self._segment = self._segment, None
            self._fd = -1
        if segment is not None:
            segment.close()

    def _fd_for_sending(self) -> int:
        return self._fd  # valid while a message that uses it is pinned

    def _released_message(self) -> str:
        return f"this shared object ({self.description}) was released; share it again"

    def __reduce__(self) -> Any:
        encoder = _encoder()
        if not encoder.active:
            msg = (
                "a corral shared object handle can only be passed in the arguments of tasks "
                "of a pool or executor of the process that made it, not pickled otherwise "
                "(a Process started by fork gets the handle itself: call its get())"
            )
            raise TypeError(msg)
        shared = encoder.shared
        if shared is None:
            shared = encoder.shared = []
        index = len(shared)
        for i, handle in enumerate(shared):
            if handle is self:
                index = i
                break
        else:
            with self._lock:  # released, or pinned for this message: never both
                if self._released:
                    raise ValueError(self._released_message())
                self._pins += 1
            shared.append(self)
        return (_resolve, (index, self._spans))

    def __repr__(self) -> str:
        state = "released" if self.released else "live"
        return f"<corral.Shared {getattr(self, 'description', '?')} ({state})>"

    def __del__(self) -> None:
        segment, self._segment = self._segment, None  # nothing pins it any more
        if segment is not None:
            segment.close()


class SharedElsewhere(Shared[_T]):
    """Base of the handles whose object is not in a segment of this engine.

    A thread pool's (the object itself) and a cluster backend's (the object in
    the cluster's store): they are ``corral.Shared`` for the user and the type
    checker, and leave the segment state empty.
    """

    __slots__ = ()

    def __init__(self, description: str) -> None:
        self._lock = threading.Lock()
        self._segment = None
        self._fd = -1
        self._pins = 0
        self._released = False
        self._spans = ()
        self.description = description


class SharedInProcess(SharedElsewhere[_T]):
    """``share()`` of a thread pool: the workers are threads, so the object itself is shared."""

    __slots__ = ("_obj",)

    def __init__(self, obj: _T) -> None:
        super().__init__(type(obj).__name__)
        self._obj: Any = obj

    def get(self) -> _T:
        if self._released:
            raise ValueError(self._released_message())
        value: _T = self._obj
        return value

    def release(self) -> None:
        self._released = True
        self._obj = None

    def __reduce__(self) -> Any:
        msg = "a thread pool's shared object handle cannot be pickled"
        raise TypeError(msg)


def resolve_in_process(args: Any, depth: int = 2) -> Any:
    """(Thread workers) ``args`` with ``SharedInProcess`` handles replaced by their object.

    Handles are looked for in ``args`` and in the tuples and lists directly in
    it (a call's arguments, a map's items, a starmap's argument tuples).
    """
    kind = type(args)
    if kind is SharedInProcess:
        return args.get()
    if depth and (kind is tuple or kind is list):
        return kind(resolve_in_process(a, depth - 1) for a in args)
    if depth and kind is dict:
        return {k: resolve_in_process(a, depth - 1) for k, a in args.items()}
    return args


class _ShareCollector:
    """``buffer_callback`` of ``Shared``: every contiguous buffer out of band, read-only or not."""

    __slots__ = ("buffers",)

    def __init__(self) -> None:
        self.buffers: list[memoryview] = []

    def __call__(self, buffer: pickle.PickleBuffer) -> bool:
        try:
            self.buffers.append(buffer.raw())
        except BufferError:  # not contiguous: in the pickle
            return True
        return False

    def reset(self) -> None:
        self.buffers.clear()


def _contiguous(obj: Any) -> Any:
    """A NumPy array that is not contiguous (a slice with a step) as a contiguous copy.

    Only contiguous arrays can be shared as views: the others would be
    pickled whole and copied out again for every task.
    """
    numpy = sys.modules.get("numpy")
    if numpy is None or not isinstance(obj, numpy.ndarray):
        return obj
    if obj.flags.c_contiguous or obj.flags.f_contiguous:
        return obj
    return numpy.ascontiguousarray(obj)


def _resolve(index: int, spans: tuple[tuple[int, int], ...]) -> Any:
    """(In the receiver) the object a ``Shared`` handle stands for."""
    received = getattr(_local, "received", None)
    if received is None or index >= len(received):
        msg = "a corral shared object handle arrived without its shared memory"
        raise TypeError(msg)
    return _rebuild(os.dup(received[index]), spans)


def _rebuild(fd: int, spans: tuple[tuple[int, int], ...]) -> Any:
    try:
        mm = _map(fd, readonly=True)
    finally:
        os.close(fd)
    whole = memoryview(mm)
    views = [whole[offset : offset + length] for offset, length in spans]
    return pickle.loads(views[0], buffers=views[1:])


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_mappings)
