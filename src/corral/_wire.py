"""Framed, picklable messages over one file descriptor: ``Connection``, ``Pipe``, ``wait``.

Wire format (the stdlib's, so corral and ``multiprocessing`` talk to each other):
a message is a 4-byte big-endian signed length and the payload; a payload of
2 GiB or more is announced by a length of -1 followed by an 8-byte unsigned
length. ``send``/``recv`` carry pickles made by ``corral.reduction``.

Reads take exactly one message's bytes (header, then body) and never more:
several processes may read one end under a lock, and whatever follows this
message belongs to whoever reads next. See docs/architecture.md for the
designs that were measured and dropped.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Generic, NoReturn

from . import _buffers, reduction
from ._typevars import RecvT as _RecvT
from ._typevars import SendT as _SendT
from .errors import BufferTooShort

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ("Connection", "Pipe", "wait")

# From this size on, a message is received straight into the object returned.
_LARGE = 1 << 16
# Messages this small are sent with their header in one write().
_SMALL = 1 << 14
# os.read/os.write move at most this much per call on Linux.
_MAX_IO = 0x7FFFF000
_IOV_MAX = 1024  # iovecs per writev (Linux's IOV_MAX)

_dumps = reduction._dumps
_dumps_with_buffers = reduction.dumps_with_buffers
# Buffers of this size or more (NumPy arrays...) travel in a shared-memory
# segment (``_segment``) when the peer is on this machine; see docs/performance.md.
_OUT_OF_BAND = 1 << 20
_loads = reduction._loads
_header_i = struct.Struct("!i")
_header_q = struct.Struct("!Q")
_pack_i = _header_i.pack
_unpack_i = _header_i.unpack


class Connection(Generic[_SendT, _RecvT]):
    """One end of a connection: a pipe end or a connected socket, by file descriptor.

    ``send``/``recv`` move picklable objects, ``send_bytes``/``recv_bytes``
    move raw bytes. A closed connection raises ``OSError("handle is closed")``;
    using a read-only end for writing (or the reverse) raises ``OSError``.
    ``Connection[int, str]`` tells a type checker what this end sends and
    receives (both ``Any`` by default).
    """

    _handle: int | None = None
    # Whether the peer maps the same /dev/shm: a pipe or a Unix socket (None: not looked yet).
    _local: bool | None = None

    def __init__(self, handle: int, readable: bool = True, writable: bool = True) -> None:
        handle = handle.__index__()
        if handle < 0:
            msg = "invalid handle"
            raise ValueError(msg)
        if not readable and not writable:
            msg = "at least one of `readable` and `writable` must be True"
            raise ValueError(msg)
        self._handle = handle
        self._readable = readable
        self._writable = writable

    def __del__(self, _close: Any = os.close) -> None:
        # os.close is bound at definition: this may run during interpreter
        # teardown, after the module's globals have been set to None.
        if self._handle is not None:
            try:
                _close(self._handle)
            except OSError:
                pass
            self._handle = None

    # -- state -----------------------------------------------------------------

    def _check_closed(self) -> None:
        if self._handle is None:
            msg = "handle is closed"
            raise OSError(msg)

    def _check_readable(self) -> None:
        if not self._readable:
            msg = "connection is write-only"
            raise OSError(msg)

    def _check_writable(self) -> None:
        if not self._writable:
            msg = "connection is read-only"
            raise OSError(msg)

    def _bad_message_length(self) -> None:
        if self._writable:
            self._readable = False
        else:
            self.close()
        msg = "bad message length"
        raise OSError(msg)

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._handle is None

    @property
    def readable(self) -> bool:
        return self._readable

    @property
    def writable(self) -> bool:
        return self._writable

    def fileno(self) -> int:
        """The file descriptor of the connection."""
        self._check_closed()
        return self._handle  # type: ignore[return-value]

    def close(self) -> None:
        """Close the connection; later calls do nothing."""
        if self._handle is not None:
            handle, self._handle = self._handle, None
            os.close(handle)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> Any:
        return reduction.reduce_connection(self)

    # -- sending ----------------------------------------------------------------

    def send_bytes(self, buf: Any, offset: int = 0, size: int | None = None) -> None:
        """Send ``buf[offset:offset+size]`` (in bytes) as one message.

        Raises:
            ValueError: offset or size is negative or past the end of buf.
        """
        self._check_closed()
        self._check_writable()
        if offset == 0 and size is None and type(buf) is bytes:
            self._send_bytes(buf)  # the common case, without a memoryview
            return
        view = memoryview(buf)
        if view.itemsize > 1:
            view = view.cast("B")
        n = view.nbytes
        if offset < 0:
            msg = "offset is negative"
            raise ValueError(msg)
        if n < offset:
            msg = "buffer length < offset"
            raise ValueError(msg)
        if size is None:
            size = n - offset
        elif size < 0:
            msg = "size is negative"
            raise ValueError(msg)
        elif offset + size > n:
            msg = "buffer length < offset + size"
            raise ValueError(msg)
        self._send_bytes(view[offset : offset + size])

    def send(self, obj: _SendT) -> None:
        """Pickle obj and send it as one message.

        Large buffers (NumPy arrays, ``pickle.PickleBuffer``) of 1 MiB or more
        travel in a shared-memory segment when the connection is a pipe or a
        Unix socket; the message is then a small pickle that maps the segment
        when unpickled (see docs/architecture.md, "Big messages").

        Raises:
            corral.SerializationError: obj cannot be pickled; the message names
                the part that failed. Nothing was sent.
        """
        if self._handle is None:
            self._check_closed()
        if not self._writable:
            self._check_writable()
        data, buffers = _dumps_with_buffers(obj, _OUT_OF_BAND)
        if buffers:
            data = self._out_of_band(obj, data, buffers)
        self._send_bytes(data)

    def _out_of_band(self, obj: Any, data: bytes, buffers: list[memoryview]) -> bytes:
        """The message for a pickle with big buffers: a segment's if the peer can map it."""
        local = self._local
        if local is None:
            local = self._local = _shares_memory(self._handle)  # type: ignore[arg-type]
        if not local:
            return _dumps(obj)  # all in band, as the stdlib sends it
        from . import _segment

        return _segment.wire_message(data, buffers)

    def _send_bytes(self, buf: Any) -> None:
        n = len(buf)
        if n < _SMALL:
            # Header and payload in one write: one syscall, one record, one wake-up.
            data = _pack_i(n) + buf
            written = os.write(self._handle, data)  # type: ignore[arg-type]
            if written != n + 4:
                self._write_all(memoryview(data)[written:])
            return
        header = _pack_i(-1) + _header_q.pack(n) if n > 0x7FFFFFFF else _pack_i(n)
        self._write_all(memoryview(header), memoryview(buf).cast("B"))

    def _write_all(self, *views: memoryview) -> None:
        write_all(self._handle, views)  # type: ignore[arg-type]

    # -- receiving --------------------------------------------------------------

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        """Receive one message as bytes.

        Raises:
            EOFError: the other end is closed and nothing is left to read.
            OSError: the message is longer than maxlength (the connection can
                no longer be read), or the peer closed it mid-message.
        """
        fd = self._handle
        if fd is None:
            self._check_closed()
        if not self._readable:
            self._check_readable()
        if maxlength is not None and maxlength < 0:
            msg = "negative maxlength"
            raise ValueError(msg)
        # Fast path: the header, then the body, each in one read.
        header = os.read(fd, 4)  # type: ignore[arg-type]
        if len(header) == 4:
            (size,) = _unpack_i(header)
            if 0 <= size < _LARGE and (maxlength is None or size <= maxlength):
                data = os.read(fd, size)  # type: ignore[arg-type]
                if len(data) == size:
                    return data
                return bytes(self._read_body(data, size))
        buf = self._recv_bytes(maxlength, header=header)
        if buf is None:
            self._bad_message_length()
        return bytes(buf)  # type: ignore[arg-type]

    def recv_bytes_into(self, buf: Any, offset: int = 0) -> int:
        """Receive one message into a writable buffer at byte ``offset``.

        Returns:
            The message size in bytes.

        Raises:
            BufferTooShort: the message does not fit; ``e.args[0]`` is the message.
            ValueError: offset is negative or past the end of buf.
        """
        self._check_closed()
        self._check_readable()
        with memoryview(buf) as view:
            itemsize = view.itemsize
            bytesize = itemsize * len(view)
            if offset < 0:
                msg = "negative offset"
                raise ValueError(msg)
            if offset > bytesize:
                msg = "offset too large"
                raise ValueError(msg)
            data = self._recv_bytes()
            assert data is not None  # no maxsize: never None
            size = len(data)
            if bytesize - offset < size:
                raise BufferTooShort(bytes(data))
            view.cast("B")[offset : offset + size] = data
            return size

    def recv(self) -> _RecvT:
        """Receive one message and unpickle it.

        Raises:
            EOFError: the other end is closed and nothing is left to read.
        """
        fd = self._handle
        if fd is None:
            self._check_closed()
        if not self._readable:
            self._check_readable()
        # Fast path: the header, then the body, each in one read.
        header = os.read(fd, 4)  # type: ignore[arg-type]
        if len(header) == 4:
            (size,) = _unpack_i(header)
            if 0 <= size < _LARGE:
                data = os.read(fd, size)  # type: ignore[arg-type]
                if len(data) == size:
                    return _loads(data)
                return _loads(self._read_body(data, size))
        message = self._recv_bytes(header=header)
        assert message is not None  # no maxsize: never None
        return _loads(message)

    def _recv_bytes(
        self, maxsize: int | None = None, header: bytes = b""
    ) -> bytes | bytearray | None:
        """Receive one message; None if it is longer than maxsize.

        Reads exactly the message's bytes and no more: several processes may
        share one end (as a queue's readers do), and bytes past this message
        belong to whoever reads next.
        """
        size = self._read_size(header)
        if maxsize is not None and size > maxsize:
            return None
        if size < _LARGE:
            data = os.read(self._handle, size)  # type: ignore[arg-type]
            if len(data) == size:
                return data
            return self._read_body(data, size)
        return self._read_body(b"", size)

    def _read_size(self, header: bytes) -> int:
        """The size of the next message, from its header (``header``: what was read of it)."""
        header = self._read_exactly(4, header, at_start=True)
        (size,) = _unpack_i(header)
        if size < 0:
            if size != -1:
                self._bad_message_length()
            (size,) = _header_q.unpack(self._read_exactly(8))
        return size

    def _read_exactly(self, count: int, have: bytes = b"", at_start: bool = False) -> bytes:
        """Return ``have`` completed to ``count`` bytes."""
        while len(have) < count:
            more = os.read(self._handle, count - len(have))  # type: ignore[arg-type]
            if not more:
                _raise_eof(at_start and not have)
            have += more
        return have

    def _read_body(self, have: bytes, size: int) -> bytes | bytearray:
        """Read the rest of a message whose first bytes are ``have``.

        Reads go straight into the object returned (see ``_buffers``), never
        past the end of the message.
        """
        try:
            data, view = _buffers.new_bytes(size)
        except MemoryError:
            self._bad_message_length()
        with view:
            view[: len(have)] = have
            got = len(have)
            fd = self._handle
            while got < size:
                n = os.readv(fd, [view[got : got + _MAX_IO]])  # type: ignore[arg-type]
                if n == 0:
                    _raise_eof(False)
                got += n
        return data

    def poll(self, timeout: float | None = 0.0) -> bool:
        """True if a message (or EOF) can be read without blocking.

        ``timeout`` None waits forever; a number waits at most that many seconds.
        """
        self._check_closed()
        self._check_readable()
        return _poll_fd(self._handle, timeout)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        state = "closed" if self._handle is None else f"fd={self._handle}"
        mode = ("r" if self._readable else "") + ("w" if self._writable else "")
        return f"<{type(self).__name__} {state} {mode}>"


def write_all(fd: int, views: Iterable[memoryview]) -> None:
    """Write every byte of ``views`` (byte-format memoryviews) to the blocking ``fd``, in order.

    One ``writev`` per round (at most ``_IOV_MAX`` views), a single view in
    ``os.write`` pieces of at most ``_MAX_IO`` bytes; a short write resumes
    where it stopped.

    Raises:
        OSError: the write failed (the peer is gone: ``BrokenPipeError``).
    """
    pending = [v for v in views if v.nbytes]
    while pending:
        if len(pending) > 1:
            written = os.writev(fd, pending[:_IOV_MAX])
        else:
            written = os.write(fd, pending[0][:_MAX_IO])
        while written:
            first = pending[0]
            if written >= first.nbytes:
                written -= first.nbytes
                pending.pop(0)
            else:
                pending[0] = first[written:]
                written = 0


def _shares_memory(fd: int) -> bool:
    """Whether the peer of fd is on this machine for sure: a pipe or a Unix socket."""
    import stat

    mode = os.fstat(fd).st_mode
    if stat.S_ISFIFO(mode):
        return True
    if not stat.S_ISSOCK(mode):
        return False
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return False
    with sock:
        return sock.family == socket.AF_UNIX


def _raise_eof(clean: bool) -> NoReturn:
    if clean:
        raise EOFError
    msg = "got end of file during message"
    raise OSError(msg)


def _poll_fd(fd: int, timeout: float | None) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    if timeout is None:
        return bool(poller.poll())
    return bool(poller.poll(max(0, _ms(timeout))))


def _ms(seconds: float) -> int:
    # Round up, so a positive timeout never becomes a zero-length poll.
    return int(-(-seconds * 1000 // 1))


def Pipe(duplex: bool = True) -> tuple[Connection, Connection]:
    """Return a pair of connected ``Connection`` objects.

    With ``duplex`` (the default) both ends can send and receive: a Unix
    stream socket pair, as in the stdlib, so each end's ``fileno()`` is one fd
    that reads and writes (and carries file descriptors for
    ``reduction.send_handle``). Otherwise the first end only receives and the
    second only sends (an OS pipe). Reads never take bytes beyond the message
    they return, so several processes may share one end, as with the stdlib.
    """
    if duplex:
        return stream_pair()
    r, w = os.pipe()
    reader = Connection(r, writable=False)
    return reader, Connection(w, readable=False)


def stream_pair() -> tuple[Connection, Connection]:
    """A duplex pair over one stream socket pair (``Pipe()``; pool workers' channels)."""
    s1, s2 = socket.socketpair()
    s1.settimeout(None)  # blocking, whatever socket.setdefaulttimeout says
    s2.settimeout(None)
    return Connection(s1.detach()), Connection(s2.detach())


def wait(object_list: Iterable[Any], timeout: float | None = None) -> list[Any]:
    """Wait until one or more of the objects is ready; return the ready ones.

    Objects are connections, sockets, or integer file descriptors such as
    ``Process.sentinel``. Ready means readable: data, EOF, or a finished
    process. Returns an empty list when ``timeout`` seconds pass first.
    """
    objects = list(object_list)
    poller = select.poll()
    by_fd: dict[int, list[Any]] = {}
    for obj in objects:
        fd = obj if isinstance(obj, int) else obj.fileno()
        if fd not in by_fd:
            by_fd[fd] = []
            poller.register(fd, select.POLLIN)
        by_fd[fd].append(obj)
    if timeout is None:
        events = poller.poll()
    else:
        deadline = time.monotonic() + timeout
        while True:
            events = poller.poll(max(0, _ms(deadline - time.monotonic())))
            if events or time.monotonic() >= deadline:
                break
    ready_fds = {fd for fd, _ in events}
    return [obj for obj in objects if (obj if isinstance(obj, int) else obj.fileno()) in ready_fds]
