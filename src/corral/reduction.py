"""How objects cross process boundaries: the pickler, and reducers for fds, sockets, connections.

Everything corral sends goes through ``_dumps``:

1. Plain ``pickle.dumps`` with protocol 5: C speed, functions and classes by
   reference. Used as long as no reducer was registered with
   ``ForkingPickler.register`` (a registered reducer must win over the type's
   own pickling, which only the slower path honours).
2. If that fails, or the pickle refers to ``__main__`` while ``__main__`` is a
   script a child cannot re-import (interactive session, ``python -c``), the
   ``ForkingPickler``: the same C pickler with the registered reducers
   (sockets, ...), where a function or class that cannot be pickled by
   reference (lambda, closure, local definition, such a ``__main__``) and
   modules go *by value*, with cloudpickle (``_by_value``). Everything else
   pickles as with the stdlib: same types on arrival, same errors.
3. If that fails too: ``SerializationError`` (a ``TypeError`` and a
   ``pickle.PicklingError``), whose message is the pickle module's followed by
   the part of the object that cannot be pickled
   (``obj.args[1].lock -> <_thread.lock ...>``). Other exceptions (raised by an
   object's ``__reduce__``, say) propagate unchanged, as with the stdlib.

File descriptors inside pickled objects (``DupFd``) travel with the child's
start when pickled during ``Process.start()``, and otherwise through the
resource sharer, a thread that hands a duplicate to the authenticated peer
over a Unix socket (``SCM_RIGHTS``).
"""

from __future__ import annotations

import array
import copyreg
import io
import os
import pickle
import socket
import sys
import threading
import types
from collections import ChainMap

from . import _spawning
from .errors import SerializationError

TYPE_CHECKING = False  # typing is not imported at run time (import speed)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

__all__ = (
    "HAVE_SEND_HANDLE",
    "AbstractReducer",
    "DupFd",
    "ForkingPickler",
    "dump",
    "recv_handle",
    "recvfds",
    "register",
    "send_handle",
    "sendfds",
)

PROTOCOL = pickle.HIGHEST_PROTOCOL
HAVE_SEND_HANDLE = (
    hasattr(socket, "CMSG_LEN")
    and hasattr(socket, "SCM_RIGHTS")
    and hasattr(socket.socket, "sendmsg")
)

# Set once a reducer is registered: from then on the fast path pickles with a
# dispatch table that includes the registered reducers (_plain_dumps).
_custom_reducers_registered = False


class ForkingPickler(pickle.Pickler):
    """The pickler used for everything sent to another process.

    The stdlib's C pickler with the reducers registered with ``register``;
    functions and classes a child cannot import by name (lambdas, closures,
    local and ``__main__`` definitions) and modules go by value (cloudpickle).
    """

    _extra_reducers: dict[type, Callable[[Any], Any]] = {}

    def __init__(self, file: Any, protocol: int | None = None, **kwargs: Any) -> None:
        self._protocol = PROTOCOL if protocol is None else protocol
        # The C pickler reads dispatch_table once, in __init__: set it first. A
        # dict (as the stdlib's): a ChainMap lookup, done for every object, is a
        # Python call.
        table = copyreg.dispatch_table.copy()
        table.update(self._extra_reducers)
        self.dispatch_table = table
        super().__init__(file, self._protocol, **kwargs)

    def reducer_override(self, obj: Any) -> Any:
        """By value for modules and for functions and classes not importable by name."""
        kind = type(obj)
        if kind is _FunctionType or issubclass(kind, type):
            if _pickles_by_reference(obj):
                return NotImplemented
        elif kind is not _ModuleType:
            return NotImplemented
        from . import _by_value  # imports cloudpickle: only when something needs it

        return _by_value.reduce(obj, self._protocol, self._extra_reducers)

    @classmethod
    def register(cls, type: type, reduce: Callable[[Any], Any]) -> None:
        """Use ``reduce(obj)`` to pickle objects of ``type``, for every send."""
        global _custom_reducers_registered
        cls._extra_reducers[type] = reduce
        _custom_reducers_registered = True

    @classmethod
    def dumps(cls, obj: Any, protocol: int | None = None) -> bytes:
        """Pickle obj as corral sends it (see the module docstring).

        Raises:
            SerializationError: obj (or a part of it) cannot be pickled.
        """
        if protocol is None or protocol == PROTOCOL:
            return _dumps(obj)
        return _slow_dumps(obj, protocol)

    loads = staticmethod(pickle.loads)


_FunctionType = types.FunctionType
_ModuleType = types.ModuleType
_MISSING = object()
_SINGLETON_TYPES = (type(None), type(NotImplemented), type(...))


def _pickles_by_reference(obj: Any) -> bool:
    """Whether the child finds obj (a function or class) by module and name, as pickle does.

    Not for a ``__main__`` the child cannot re-import, nor for a module that is
    not imported here (cloudpickle decides the same way).
    """
    if obj in _SINGLETON_TYPES:
        return True  # pickle has a reduction for these, though builtins lacks the names
    module_name = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module_name, str) or not isinstance(qualname, str):
        return True  # pickle searches for it, or reports what it cannot find
    module = sys.modules.get(module_name)
    if module is None:
        return False
    if module_name == "__main__" and not (
        _main_reimportable if module is _main_module else _check_main(module)
    ):
        return False
    found: Any = module
    for name in qualname.split("."):
        try:
            found = getattr(found, name, _MISSING)
        except Exception:  # a module __getattr__ or descriptor that raises
            return False
        if found is _MISSING:
            return False
    return found is obj


register = ForkingPickler.register


def _register_refused(type: type, reduce: Callable[[Any], Any]) -> None:
    """``register`` for a type plain pickle refuses (sockets, dict views).

    The fast path fails on such an object and the slow path applies the
    reducer, so the fast path can keep plain ``pickle.dumps``.
    """
    ForkingPickler._extra_reducers[type] = reduce


# The fast path's table: the stdlib's reducers, then the registered ones first.
_plain_dispatch_table = ChainMap(ForkingPickler._extra_reducers, copyreg.dispatch_table)
_pickler_of_thread = threading.local()


def dump(obj: Any, file: Any, protocol: int | None = None) -> None:
    """Pickle obj to a binary file, as corral sends it."""
    file.write(ForkingPickler.dumps(obj, protocol))


# Objects whose pickle cannot refer to __main__: no need to scan it.
_PLAIN_TYPES = frozenset({bytes, bytearray, str, int, float, bool, type(None)})

# Whether children can re-import __main__ (it has a file or a module spec),
# cached per module object: a failed getattr on a module costs a formatted
# AttributeError (about 1 us), too much to pay on every send.
_main_module: Any = None
_main_reimportable = True


def _check_main(main: Any) -> bool:
    global _main_module, _main_reimportable
    _main_module = main
    _main_reimportable = main is None or bool(
        getattr(main, "__file__", None) or getattr(main, "__spec__", None)
    )
    return _main_reimportable


def _plain_dumps(obj: Any) -> bytes:
    """Plain (C) pickle, applying the reducers registered with ``register``.

    With reducers registered, a pickler per thread is kept and reused: making
    one per call cost as much as the pickling of a small task.
    """
    if not _custom_reducers_registered:
        return pickle.dumps(obj, PROTOCOL, buffer_callback=in_band)
    kept = _pickler_of_thread.__dict__.pop("kept", None)  # absent while in use (re-entry)
    if kept is None:
        buf = io.BytesIO()
        pickler = pickle.Pickler(buf, PROTOCOL, buffer_callback=in_band)
        pickler.dispatch_table = _plain_dispatch_table
        kept = (pickler, buf)
    pickler, buf = kept
    try:
        pickler.dump(obj)
        return buf.getvalue()
    finally:
        buf.seek(0)
        buf.truncate()
        pickler.clear_memo()
        _pickler_of_thread.kept = kept


def _dumps(obj: Any, _modules: dict[str, Any] = sys.modules) -> bytes:
    if type(obj) in _PLAIN_TYPES:  # no reducer, no __main__ reference: plain C pickle
        return pickle.dumps(obj, PROTOCOL)
    try:
        try:
            data = _plain_dumps(obj)
        except ReadOnlyBuffer:
            raise
        except Exception:
            pass
        else:
            main = _modules.get("__main__")
            reimportable = _main_reimportable if main is _main_module else _check_main(main)
            if reimportable or b"__main__" not in data:
                return data
        return _slow_dumps(obj, PROTOCOL, in_band)
    except ReadOnlyBuffer:
        return dumps_as_stdlib(obj)


class ReadOnlyBuffer(Exception):
    """(Internal) pickling met a read-only buffer of an object such as a NumPy array.

    With protocol 5 such an object arrives read-only; the stdlib (protocol 4)
    gives a writable copy. ``dumps_as_stdlib`` pickles the message that way.
    """


# Exporters whose PickleBuffer arrives as bytes/bytearray with protocol 5, as
# their user asked by wrapping them: nothing to make writable.
_PLAIN_EXPORTERS = (bytes, bytearray, memoryview, array.array, type(None))


def check_writable(buffer: pickle.PickleBuffer) -> None:
    """Raise ``ReadOnlyBuffer`` for a read-only buffer of an object that is not bytes-like."""
    view = memoryview(buffer)
    if view.readonly and not isinstance(view.obj, _PLAIN_EXPORTERS):
        raise ReadOnlyBuffer


def in_band(buffer: pickle.PickleBuffer) -> bool:
    """The ``buffer_callback`` of in-band pickles: every buffer in band, read-only ones checked."""
    check_writable(buffer)
    return True


def dumps_as_stdlib(obj: Any) -> bytes:
    """Pickle with the stdlib's protocol (4 before 3.14): read-only arrays arrive writable.

    An object that only protocol 5 can pickle (a ``PickleBuffer``) keeps protocol 5.
    """
    try:
        return _slow_dumps(obj, pickle.DEFAULT_PROTOCOL)
    except Exception:
        return _slow_dumps(obj, PROTOCOL)


class _BufferCollector:
    """A pickler's ``buffer_callback``: buffers of ``min_size`` bytes or more stay out of band."""

    __slots__ = ("buffers", "min_size")

    def __init__(self, min_size: int) -> None:
        self.min_size = min_size
        self.buffers: list[memoryview] = []

    def reset(self) -> None:
        self.buffers.clear()

    def __call__(self, buffer: pickle.PickleBuffer) -> bool:
        check_writable(buffer)
        try:
            view = buffer.raw()
        except BufferError:  # not contiguous: pickle copies it into the stream
            return True
        if view.nbytes < self.min_size:
            return True
        self.buffers.append(view)
        return False


def dumps_with_buffers(obj: Any, min_size: int) -> tuple[bytes, list[memoryview]]:
    """Pickle obj as ``_dumps`` does, keeping large buffers out of the pickle.

    Buffers that objects hand to pickle protocol 5 (``pickle.PickleBuffer``:
    NumPy arrays, ``PickleBuffer(bytearray)``...) of ``min_size`` bytes or more
    are not copied into the pickle; they are returned, in order, as flat
    byte views of the objects' own memory, for ``pickle.loads(data,
    buffers=...)`` on the other side.

    Raises:
        SerializationError: obj (or a part of it) cannot be pickled.
    """
    if type(obj) in _PLAIN_TYPES:  # no buffers: the collector would only cost time
        return pickle.dumps(obj, PROTOCOL), []
    try:
        return _dumps_with_buffers(obj, min_size)
    except ReadOnlyBuffer:  # as the stdlib: it arrives writable (and in band)
        return dumps_as_stdlib(obj), []


def _dumps_with_buffers(obj: Any, min_size: int) -> tuple[bytes, list[memoryview]]:
    if min_size >= _PROBE_MIN and not _custom_reducers_registered:
        # Most messages hold no big buffer: try without making a collector.
        try:
            data = pickle.dumps(obj, PROTOCOL, buffer_callback=_probe)
        except ReadOnlyBuffer:
            raise
        except Exception:
            pass  # a big buffer (_BigBuffer), or something only the slow path pickles
        else:
            main = sys.modules.get("__main__")
            reimportable = _main_reimportable if main is _main_module else _check_main(main)
            if reimportable or b"__main__" not in data:
                return data, []
    collector = _BufferCollector(min_size)
    data = dumps_out_of_band(obj, collector)
    return data, collector.buffers


def dumps_out_of_band(obj: Any, buffer_callback: Callable[[pickle.PickleBuffer], Any]) -> bytes:
    """``_dumps`` with a protocol-5 ``buffer_callback`` (falsy answer: the buffer stays out).

    ``buffer_callback`` may be called again for the same buffers when the
    fast path fails and the slow one runs: it must forget what it kept when
    ``reset()`` is called on it, if it has that method. It may raise
    ``ReadOnlyBuffer`` (``check_writable``), which is passed on.

    Raises:
        SerializationError: obj (or a part of it) cannot be pickled.
    """
    if type(obj) in _PLAIN_TYPES:
        return pickle.dumps(obj, PROTOCOL)
    try:
        if not _custom_reducers_registered:
            data = pickle.dumps(obj, PROTOCOL, buffer_callback=buffer_callback)
        else:
            buf = io.BytesIO()
            pickler = pickle.Pickler(buf, PROTOCOL, buffer_callback=buffer_callback)
            pickler.dispatch_table = _plain_dispatch_table
            pickler.dump(obj)
            data = buf.getvalue()
    except ReadOnlyBuffer:
        raise
    except Exception:
        pass
    else:
        main = sys.modules.get("__main__")
        reimportable = _main_reimportable if main is _main_module else _check_main(main)
        if reimportable or b"__main__" not in data:
            return data
    reset = getattr(buffer_callback, "reset", None)
    if reset is not None:
        reset()
    return _slow_dumps(obj, PROTOCOL, buffer_callback)


class _BigBuffer(Exception):
    """Raised by ``_probe``: the object has a buffer that may go out of band."""


_PROBE_MIN = 1 << 16


def _probe(buffer: pickle.PickleBuffer) -> bool:
    """``buffer_callback`` of the first try: in band, unless the buffer may be big enough."""
    check_writable(buffer)
    try:
        size = buffer.raw().nbytes
    except BufferError:
        return True
    if size < _PROBE_MIN:
        return True
    raise _BigBuffer


def _slow_dumps(obj: Any, protocol: int, buffer_callback: Any = None) -> bytes:
    buf = io.BytesIO()
    try:
        ForkingPickler(buf, protocol, buffer_callback=buffer_callback).dump(obj)
    except (pickle.PicklingError, TypeError) as exc:
        if isinstance(exc, SerializationError):
            raise
        raise SerializationError(_describe_failure(obj, exc)) from exc
    return buf.getvalue()


_loads = pickle.loads


# ---------------------------------------------------------------------------
# naming the part that cannot be pickled


def _picklable(obj: Any) -> bool:
    try:
        ForkingPickler(io.BytesIO(), PROTOCOL).dump(obj)
    except (pickle.PicklingError, TypeError):
        return False
    except Exception:
        return True  # fails for another reason: not the culprit we look for
    return True


def _parts(obj: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, dict):
        for key, value in list(obj.items())[:1000]:
            yield f"{path}[{key!r}]", value
    elif isinstance(obj, (list, tuple)):
        for index, value in enumerate(obj[:1000]):
            yield f"{path}[{index}]", value
    elif isinstance(obj, (set, frozenset)):
        for value in list(obj)[:1000]:
            yield f"{path}{{...}}", value
    else:
        state = getattr(obj, "__dict__", None)
        if isinstance(state, dict):
            for name, value in list(state.items())[:1000]:
                yield f"{path}.{name}", value


def _describe_failure(obj: Any, exc: BaseException) -> str:
    path, culprit = "obj", obj
    for _depth in range(12):
        for part_path, part in _parts(culprit, path):
            if not _picklable(part):
                path, culprit = part_path, part
                break
        else:
            break
    text = repr(culprit)
    if len(text) > 120:
        text = text[:117] + "..."
    where = f"{path} -> {text}" if path != "obj" else text
    # The pickle module's message first, as the stdlib's: code may match on it.
    return (
        f"{exc}: {where} ({type(culprit).__module__}.{type(culprit).__qualname__}) "
        "cannot be sent to another process. Pass picklable data instead, "
        "or create this object inside the child."
    )


# ---------------------------------------------------------------------------
# file descriptors


def sendfds(sock: socket.socket, fds: list[int]) -> None:
    """Send file descriptors over a Unix socket (with a one-byte count check)."""
    payload = array.array("i", fds)
    sock.sendmsg([bytes([len(payload) % 256])], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, payload)])


def recvfds(sock: socket.socket, size: int) -> list[int]:
    """Receive up to ``size`` file descriptors sent by ``sendfds``.

    Raises:
        EOFError: the peer closed the socket.
        RuntimeError: the message does not carry the announced descriptors.
    """
    fds = array.array("i")
    flags = getattr(socket, "MSG_CMSG_CLOEXEC", 0)
    msg, ancdata, _flags, _addr = sock.recvmsg(1, socket.CMSG_SPACE(fds.itemsize * size), flags)
    if not msg and not ancdata:
        raise EOFError
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    if not msg or not fds or len(fds) % 256 != msg[0]:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        msg_text = (
            f"expected file descriptors with the message, received {len(fds)} "
            f"(announced: {msg[0] if msg else 'nothing'})"
        )
        raise RuntimeError(msg_text)
    return list(fds)


def send_handle(conn: Any, handle: int, destination_pid: int) -> None:
    """Send the file descriptor ``handle`` over a socket-based ``Connection``."""
    with socket.fromfd(conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sendfds(sock, [handle])


def recv_handle(conn: Any) -> int:
    """Receive a file descriptor sent by ``send_handle``."""
    with socket.fromfd(conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        return recvfds(sock, 1)[0]


def DupFd(fd: int) -> Any:
    """Return a picklable token that gives the receiving process a duplicate of fd."""
    popen = _spawning.get_spawning_popen()
    if popen is not None:
        return popen.DupFd(popen.duplicate_for_child(fd))
    if HAVE_SEND_HANDLE:
        from . import _resource_sharer

        return _resource_sharer.DupFd(fd)
    msg = "SCM_RIGHTS appears not to be available"
    raise ValueError(msg)


# ---------------------------------------------------------------------------
# reducers for connections and sockets


def reduce_connection(conn: Any) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    token = DupFd(conn.fileno())
    return rebuild_connection, (token, conn.readable, conn.writable)


def rebuild_connection(token: Any, readable: bool, writable: bool) -> Any:
    from .connection import Connection

    return Connection(token.detach(), readable, writable)


def _reduce_socket(sock: socket.socket) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    token = DupFd(sock.fileno())
    return _rebuild_socket, (token, sock.family, sock.type, sock.proto)


def _rebuild_socket(token: Any, family: int, kind: int, proto: int) -> socket.socket:
    return socket.socket(family, kind, proto, fileno=token.detach())


_register_refused(socket.socket, _reduce_socket)


class AbstractReducer:
    """Base for a custom reducer installed with ``ctx.reducer = ...``.

    Subclasses override what they change; the defaults are this module's.
    """

    ForkingPickler = ForkingPickler
    register = register
    dump = dump
    send_handle = send_handle
    recv_handle = recv_handle
    DupFd = DupFd
    sendfds = sendfds
    recvfds = recvfds

    def __init__(self, *args: Any) -> None:
        pass
