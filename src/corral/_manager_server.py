"""The manager server: owns the shared objects and answers their proxies.

One thread accepts clients (our ``Listener`` authenticates several side by
side, so a client that connects and says nothing keeps nobody out); each
authenticated connection then gets its own thread, which reads a request,
carries it out and replies, until the client goes away. A method that blocks
(``Lock.acquire``, ``Queue.get``) blocks only its own connection.

Nothing from a client is unpickled before it has passed the HMAC handshake.
After that, a request that cannot be decoded or makes no sense gets an ERROR
reply (a ``RemoteError`` on the client side) and the connection stays usable;
a broken frame (truncated, absurd length) closes only that connection.

Shared objects live in a table keyed by an ident, with a reference count per
ident: proxies take references (``incref``) and drop them (``decref``); the
object is released when the count reaches zero.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

from . import _manager_wire as wire
from . import process, util
from ._listener import Listener
from ._wire import Connection
from .errors import AuthenticationError, format_exception_text, short_repr

__all__ = ("Server", "public_methods")

# Method names a proxy may always call, exposed or not.
_GETVALUE = "#GETVALUE"
_ALWAYS = frozenset((_GETVALUE, "__str__", "__repr__"))

# The reply to SHUTDOWN; the connection's thread stops the server once it is sent.
_SHUTDOWN_REPLY = (wire.OK, None)

# Registry entries, as BaseManager.register stores them.
Registry = dict[str, tuple[Any, Any, Any, Any]]


def public_methods(obj: object) -> list[str]:
    """The names of obj's callable attributes that do not start with '_'."""
    return [name for name in dir(obj) if name[0] != "_" and callable(getattr(obj, name, None))]


class _Entry:
    __slots__ = ("exposed", "method_to_typeid", "obj", "typeid")

    def __init__(
        self, obj: Any, exposed: frozenset[str], method_to_typeid: Any, typeid: str
    ) -> None:
        self.obj = obj
        self.exposed = exposed
        self.method_to_typeid = method_to_typeid or {}
        self.typeid = typeid


class Server:
    """Serves the shared objects of one manager (``multiprocessing.managers.Server``).

    Args:
        registry: typeid -> (callable, exposed, method_to_typeid, proxytype),
            as built by ``BaseManager.register``.
        address: where to listen; None picks a free Unix socket path.
        authkey: the key every client must prove it knows.
        serializer: 'pickle' or 'xmlrpclib'.
        ssl_context: a server-side ``ssl.SSLContext``: clients connect over TLS.

    Raises:
        ValueError: unknown serializer.
        OSError: the address cannot be bound (in use, no permission).
    """

    def __init__(
        self,
        registry: Registry,
        address: Any,
        authkey: bytes,
        serializer: str,
        *,
        ssl_context: Any = None,
    ) -> None:
        if not isinstance(authkey, bytes):
            msg = f"authkey should be a byte string, not {type(authkey).__name__}"
            raise TypeError(msg)
        self.codec = wire.codec(serializer)
        self.registry = registry
        self.authkey = process.AuthenticationString(authkey)
        self.listener = Listener(
            address=address, backlog=128, authkey=authkey, ssl_context=ssl_context
        )
        self.address = self.listener.address
        self._entries: dict[str, _Entry] = {}
        self._refcounts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._spinner = threading.Lock()
        self._handlers: dict[str, Callable[..., tuple[Any, ...]]] = {
            wire.CALL: self.call,
            wire.CREATE: self._create,
            wire.INCREF: self._incref,
            wire.DECREF: self._decref,
            wire.METHODS: self._methods,
            wire.COUNT: self._count,
            wire.INFO: self._info,
            wire.PING: self._ping,
            wire.SHUTDOWN: self._shutdown,
        }

    # -- running --------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve clients until a client asks for shutdown, then exit the process.

        Like the stdlib's, it ends with ``sys.exit(0)``: a manager's server
        is the whole job of the process that runs it.
        """
        process.current_process()._manager_server = self  # type: ignore[attr-defined]
        threading.Thread(
            target=self._accept_loop, name="corral-manager-accept", daemon=True
        ).start()
        try:
            self._stopped.wait()
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            self.stop()
            self.release_resources()
        sys.exit(0)

    def stop(self) -> None:
        """Make ``serve_forever`` return (from any thread)."""
        self._stopped.set()

    def release_resources(self) -> None:
        """Hook for subclasses: the server stops serving and its process is about to exit."""

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                conn = self.listener.accept()
            except AuthenticationError as exc:
                util.info(f"manager: refused a client: {exc}")
                continue
            except OSError as exc:
                if self._stopped.is_set() or self.listener._socket is None:
                    return
                util.info(f"manager: accept failed: {exc}")
                self._stopped.wait(0.05)  # out of fds and the like: do not spin
                continue
            threading.Thread(
                target=self.serve_client, args=(conn,), name="corral-manager-client", daemon=True
            ).start()

    def serve_client(self, conn: Connection) -> None:
        """Answer the requests of one authenticated connection until it closes."""
        codec = self.codec
        spin = wire.SpinWait(conn.fileno())
        try:
            while not self._stopped.is_set():
                # One connection at a time waits awake for its client's next
                # request; the others sleep (spinners would fight for the GIL).
                if self._spinner.acquire(blocking=False):
                    try:
                        spin.wait()
                    finally:
                        self._spinner.release()
                try:
                    data = conn.recv_bytes()
                except (EOFError, OSError):
                    return
                try:
                    request = codec.loads(data)
                except Exception as exc:
                    reply: tuple[Any, ...] = (wire.ERROR, f"cannot decode the request: {exc!r}")
                    request = None
                else:
                    reply = self.handle(request)
                try:
                    out = self._encode_reply(reply, request)
                    conn.send_bytes(out)
                except OSError:
                    return
                if reply is _SHUTDOWN_REPLY:
                    self.stop()
                    return
        finally:
            conn.close()

    def _encode_reply(self, reply: tuple[Any, ...], request: Any) -> bytes:
        codec = self.codec
        if reply[0] == wire.RAISE and not codec.can_send_exceptions:
            reply = (wire.ERROR, reply[2])
        try:
            return codec.dumps(reply)
        except Exception as exc:
            what = "exception" if reply[0] == wire.RAISE else "result"
            method = request[2] if isinstance(request, tuple) and len(request) > 2 else "?"
            text = (
                f"the {what} of {method!r} could not be sent back with the "
                f"{codec.name!r} serializer: {exc!r}; return plain data from "
                f"shared objects' methods (or register the method in method_to_typeid "
                f"to get a proxy instead)"
            )
            if reply[0] == wire.RAISE:
                text += "\n" + reply[2]
            return codec.dumps((wire.ERROR, text))

    def handle(self, request: Any) -> tuple[Any, ...]:
        """Carry out one request and return the reply (never raises)."""
        try:
            handler = self._handlers[request[0]]
        except (TypeError, KeyError, IndexError):
            return (wire.ERROR, f"not a manager request: {short_repr(request)}")
        try:
            return handler(*request[1:])
        except TypeError as exc:
            return (wire.ERROR, f"malformed {request[0]!r} request: {exc}")

    # -- requests -------------------------------------------------------------

    def call(
        self, ident: str, methodname: str, args: Any = (), kwds: Any = None
    ) -> tuple[Any, ...]:
        """Call a method of a shared object; the reply kinds are those of ``handle``."""
        entry = self._entries.get(ident)
        if entry is None:
            return (wire.ERROR, _released(ident))
        if methodname not in entry.exposed and methodname not in _ALWAYS:
            return (
                wire.ERROR,
                f"method {methodname!r} of the shared {entry.typeid!r} object is not exposed "
                f"(exposed: {sorted(entry.exposed)}); add it to the proxy's _exposed_ or "
                f"to register(..., exposed=...)",
            )
        obj = entry.obj
        try:
            if methodname == _GETVALUE:
                result = obj
            elif methodname not in entry.exposed and methodname in ("__str__", "__repr__"):
                result = str(obj) if methodname == "__str__" else repr(obj)
            else:
                result = getattr(obj, methodname)(*args, **(kwds or {}))
        except BaseException as exc:
            return (wire.RAISE, exc, format_exception_text(exc))
        typeid = entry.method_to_typeid.get(methodname)
        if typeid is not None:
            try:
                new_ident, exposed = self.register_object(typeid, result)
            except Exception as exc:
                return (wire.RAISE, exc, format_exception_text(exc))
            return (wire.PROXY, typeid, new_ident, exposed)
        return (wire.OK, result)

    def register_object(self, typeid: str, obj: Any) -> tuple[str, tuple[str, ...]]:
        """Put obj in the table under a new reference; return its ident and exposed methods."""
        try:
            _, exposed, method_to_typeid, _ = self.registry[typeid]
        except KeyError:
            msg = f"typeid {typeid!r} is not registered with this manager's class"
            raise KeyError(msg) from None
        if exposed is None:
            exposed = public_methods(obj)
        exposed = tuple(exposed)
        ident = f"{id(obj):x}"
        with self._lock:
            self._entries[ident] = _Entry(obj, frozenset(exposed), method_to_typeid, typeid)
            self._refcounts[ident] = self._refcounts.get(ident, 0) + 1
        return ident, exposed

    def _create(self, typeid: str, args: Any = (), kwds: Any = None) -> tuple[Any, ...]:
        if typeid not in self.registry:
            return (wire.ERROR, f"typeid {typeid!r} is not registered with the manager's class")
        make = self.registry[typeid][0]
        try:
            if make is None:
                if kwds or len(args) != 1:
                    msg = f"typeid {typeid!r} has no callable: pass exactly the object to share"
                    raise ValueError(msg)
                obj = args[0]
            else:
                obj = make(*args, **(kwds or {}))
            return (wire.OK, self.register_object(typeid, obj))
        except BaseException as exc:
            # A RemoteError with the traceback, as the stdlib's (method calls
            # re-raise the exception's own type instead).
            return (wire.ERROR, f"creating a {typeid!r} failed:\n{format_exception_text(exc)}")

    def incref(self, ident: str) -> None:
        """Take one more reference to a shared object.

        Raises:
            KeyError: no object has this ident (it was released).
        """
        with self._lock:
            if ident not in self._refcounts:
                raise KeyError(_released(ident))
            self._refcounts[ident] += 1

    def decref(self, ident: str) -> None:
        """Drop one reference; the object is released when none are left."""
        released = None
        with self._lock:
            count = self._refcounts.get(ident)
            if count is None:
                return
            if count > 1:
                self._refcounts[ident] = count - 1
                return
            del self._refcounts[ident]
            released = self._entries.pop(ident, None)
        # Outside the lock: the object's finalizers may drop references themselves.
        del released

    def _incref(self, ident: str) -> tuple[Any, ...]:
        try:
            self.incref(ident)
        except KeyError as exc:
            return (wire.ERROR, exc.args[0])
        return (wire.OK, None)

    def _decref(self, idents: Any) -> tuple[Any, ...]:
        for ident in idents:
            self.decref(ident)
        return (wire.OK, None)

    def _methods(self, ident: str) -> tuple[Any, ...]:
        entry = self._entries.get(ident)
        if entry is None:
            return (wire.ERROR, _released(ident))
        return (wire.OK, tuple(sorted(entry.exposed)))

    def _count(self) -> tuple[Any, ...]:
        with self._lock:
            return (wire.OK, len(self._refcounts))

    def _info(self) -> tuple[Any, ...]:
        with self._lock:
            lines = [
                f"  {ident}:       refcount={count}\n    {short_repr(self._entries[ident].obj)}"
                for ident, count in self._refcounts.items()
                if ident in self._entries
            ]
        return (wire.OK, "\n".join(lines))

    def _ping(self) -> tuple[Any, ...]:
        return (wire.OK, None)

    def _shutdown(self) -> tuple[Any, ...]:
        return _SHUTDOWN_REPLY


def _released(ident: str) -> str:
    return (
        f"no shared object with id {ident!r} in this manager: it was released "
        f"(every proxy of it was deleted) or belongs to another manager"
    )
