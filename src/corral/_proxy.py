"""Proxies: the client side of a manager.

A proxy holds a ``Token`` (typeid, manager address, ident) and forwards
method calls to the manager through a ``_Channel``: one connection per
thread per manager, opened on first use and shared by every proxy of that
manager in the thread (reset in a forked child).

References: a proxy owns one reference to its object in the server. It takes
it when built (``incref``) or adopts one that was taken for it (the server
takes one for each proxy in a reply, so nothing is released while the reply
travels); it drops it when collected, or at exit. A decref that comes while
its thread's connection is mid-call (a finalizer run by the garbage collector)
is kept and sent before that connection's next request.

Inside the manager's own process, a proxy of that manager (a proxy stored in a
managed list, say) talks to the server's table directly.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import weakref
from collections.abc import Sequence
from typing import Any

from . import _manager_wire as wire
from . import process, util
from ._listener import Client
from ._spawning import get_spawning_popen
from ._wire import Connection
from .errors import ManagerConnectionError, RemoteError, attach_remote_traceback

__all__ = ("AutoProxy", "BaseProxy", "MakeProxyType", "RebuildProxy", "Token")

# typeid -> the proxy type last registered for it (by any manager class): the
# type of proxies returned through method_to_typeid when the proxy has no manager.
proxy_types: dict[str, Any] = {}


class Token:
    """Identifies a shared object: its typeid, its manager's address, its id there."""

    __slots__ = ("address", "id", "typeid")

    def __init__(self, typeid: str, address: Any, id: str) -> None:
        self.typeid, self.address, self.id = typeid, address, id

    def __getstate__(self) -> tuple[str, Any, str]:
        return (self.typeid, self.address, self.id)

    def __setstate__(self, state: tuple[str, Any, str]) -> None:
        self.typeid, self.address, self.id = state

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(typeid={self.typeid!r}, "
            f"address={self.address!r}, id={self.id!r})"
        )


# -- channels: this process's connections to managers ---------------------------


class _Line:
    """One thread's connection to a manager, and whether a request is on it."""

    __slots__ = ("__weakref__", "busy", "conn", "lock", "spin")

    def __init__(self) -> None:
        self.conn: Connection | None = None
        self.spin: wire.SpinWait | None = None
        self.busy = False
        # Reentrant: a finalizer run by the garbage collector inside a
        # ``with line.lock`` block may make a request on this line.
        self.lock = threading.RLock()


class _Channel:
    """This process's connections to one manager (one per thread)."""

    def __init__(self, address: Any, authkey: bytes, serializer: str, tls: Any = None) -> None:
        self.address = address
        self.authkey = authkey
        self._tls = tls
        self.codec = wire.codec(serializer)
        self._local = threading.local()
        self._lines: weakref.WeakSet[_Line] = weakref.WeakSet()
        self._closed = False
        self._pending_decrefs: list[str] = []
        self._pending_lock = threading.Lock()

    def _line(self) -> _Line:
        line: _Line | None = getattr(self._local, "line", None)
        if line is None:
            line = self._local.line = _Line()
            self._lines.add(line)
        return line

    def request(self, message: tuple[Any, ...]) -> Any:
        """Send one request and return the decoded reply.

        Raises:
            ManagerConnectionError: the manager is gone.
            AuthenticationError: the manager refused our key.
        """
        line = self._line()
        with line.lock:
            reentered = line.busy
            line.busy = True
        if reentered:
            # A signal handler or finalizer ran during a call in this thread:
            # that connection is mid-request, use a connection of our own.
            conn = self._connect()
            try:
                return self.decode(self._exchange(conn, message))
            finally:
                conn.close()
        try:
            if line.conn is None:
                line.conn = self._connect()
                line.spin = wire.SpinWait(line.conn.fileno())
            conn = line.conn
            try:
                if self._pending_decrefs:
                    self._flush_decrefs(conn)
                data = self._exchange(conn, message, line.spin)
            except ManagerConnectionError:
                line.conn = None
                conn.close()
                raise
        finally:
            line.busy = False
        # Decoded once the connection is free again: unpickling may build proxies.
        return self.decode(data)

    def close(self) -> None:
        """The manager shut down: close the idle connections, cut the busy ones.

        A busy connection is shut down rather than closed (its fd number must
        not be reused under the thread using it); that thread gets
        ManagerConnectionError and closes it.
        """
        self._closed = True
        for line in list(self._lines):
            with line.lock:
                conn = line.conn
                if conn is None or conn.closed:
                    continue
                if line.busy:
                    _cut(conn)
                else:
                    line.conn = None
                    conn.close()

    def decode(self, data: bytes) -> Any:
        """A reply's message.

        Raises:
            RemoteError: the bytes are not a reply in this channel's serializer.
        """
        try:
            return self.codec.loads(data)
        except Exception as exc:
            if data[:1] == b"\x80" and self.codec.name != "pickle":
                hint = "the server uses the 'pickle' serializer"
            elif data[:1] == b"<" and self.codec.name != "xmlrpclib":
                hint = "the server uses the 'xmlrpclib' serializer"
            else:
                hint = f"is the server's serializer {self.codec.name!r} too?"
            msg = f"cannot decode the manager's reply ({exc!r}): {hint}"
            raise RemoteError(msg) from exc

    def decref(self, ident: str) -> None:
        """Drop a reference; deferred if this thread's connection is mid-call."""
        if self._closed:
            return
        if self._line().busy:
            with self._pending_lock:
                self._pending_decrefs.append(ident)
            return
        self.request((wire.DECREF, [ident]))

    def _flush_decrefs(self, conn: Connection) -> None:
        with self._pending_lock:
            idents, self._pending_decrefs = self._pending_decrefs, []
        if idents:
            self._exchange(conn, (wire.DECREF, idents))

    def _connect(self) -> Connection:
        if self._closed:
            msg = f"the manager at {self.address!r} has shut down; its shared objects are gone"
            raise ManagerConnectionError(msg)
        tls = self._tls or tls_contexts.get(_address_key(self.address))
        try:
            return Client(self.address, authkey=self.authkey, ssl_context=tls)
        except (ConnectionRefusedError, FileNotFoundError) as exc:
            msg = (
                f"cannot connect to the manager at {self.address!r} ({exc.strerror}): "
                f"it has shut down or its process died; its shared objects are gone"
            )
            raise ManagerConnectionError(msg) from exc

    def _exchange(
        self, conn: Connection, message: tuple[Any, ...], spin: wire.SpinWait | None = None
    ) -> bytes:
        out = self.codec.dumps(message)
        try:
            conn.send_bytes(out)
            if spin is not None:
                spin.wait()
            return conn.recv_bytes()
        except (EOFError, OSError) as exc:
            msg = (
                f"lost the connection to the manager at {self.address!r} ({exc!r}): "
                f"it has shut down or its process died; its shared objects are gone"
            )
            raise ManagerConnectionError(msg) from exc


# Client-side SSL contexts of the managers that use TLS, by address: set by
# the manager objects that start or connect to them (inherited by fork; a
# spawned process connects a manager object of its own to set it).
tls_contexts: dict[Any, Any] = {}

# Kept alive by the proxies and managers that use them: a channel (and its
# connections) goes when nothing in this process refers to that manager any more.
_channels: weakref.WeakValueDictionary[tuple[Any, bytes, str], _Channel] = (
    weakref.WeakValueDictionary()
)
_channels_lock = threading.Lock()


def channel(address: Any, authkey: bytes, serializer: str) -> _Channel:
    """This process's channel to the manager at address (hold on to it while in use)."""
    key = (_address_key(address), bytes(authkey), serializer)
    found = _channels.get(key)
    if found is None:
        with _channels_lock:
            found = _channels.get(key)
            if found is None:
                found = _channels[key] = _Channel(address, authkey, serializer)
    return found


def close_channels(address: Any) -> None:
    """The manager at address shut down: close this process's connections to it."""
    key = _address_key(address)
    with _channels_lock:
        found = [chan for k, chan in _channels.items() if k[0] == key]
        for chan in found:
            del _channels[(key, bytes(chan.authkey), chan.codec.name)]
    for chan in found:
        chan.close()


def _cut(conn: Connection) -> None:
    try:
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _address_key(address: Any) -> Any:
    return tuple(address) if isinstance(address, list) else address


def _clear_channels_after_fork(_: object) -> None:
    _channels.clear()


class _ChannelsOwner:
    """Anchor for the after-fork hook (util keeps only weak references)."""


_owner = _ChannelsOwner()
util.register_after_fork(_owner, _clear_channels_after_fork)


def request_once(
    address: Any, authkey: bytes, serializer: str, message: tuple[Any, ...], tls: Any = None
) -> Any:
    """Send one request on a new connection and return the reply's value.

    ``tls`` is the client SSL context to use (default: the one registered
    for address, if any).

    Raises:
        ManagerConnectionError, AuthenticationError, RemoteError: as ``unwrap``.
    """
    chan = _Channel(address, authkey, serializer, tls)
    conn = chan._connect()
    try:
        return unwrap(chan.decode(chan._exchange(conn, message)))
    finally:
        conn.close()


def unwrap(reply: Any, make_proxy: Any = None) -> Any:
    """The value of a reply, or raise what it reports.

    Raises:
        the method's own exception (its remote traceback as ``__cause__``),
        or RemoteError for a failed request.
    """
    kind = reply[0]
    if kind == wire.OK:
        return reply[1]
    if kind == wire.PROXY and make_proxy is not None:
        return make_proxy(*reply[1:])
    if kind == wire.RAISE:
        exc = reply[1]
        raise attach_remote_traceback(exc, reply[2])
    if kind == wire.ERROR:
        raise RemoteError(reply[1])
    msg = f"unexpected reply from the manager: {reply!r}"
    raise RemoteError(msg)


def _default_authkey(manager: Any) -> bytes:
    """The key of a proxy given none: its manager's, else this process's."""
    return manager._authkey if manager is not None else process.current_process().authkey


def _local_server(address: Any) -> Any:
    """The manager server running in this process at address, if any."""
    server = getattr(process.current_process(), "_manager_server", None)
    if server is not None and _address_key(server.address) == _address_key(address):
        return server
    return None


# -- proxies ---------------------------------------------------------------------


class BaseProxy:
    """Base class of proxies: forwards ``_callmethod`` to the shared object.

    Args:
        token: the shared object's Token.
        serializer: 'pickle' or 'xmlrpclib', as the manager's.
        manager: the manager that created it, if in this process.
        authkey: the manager's key (default: the manager's, else this
            process's ``authkey``).
        exposed: used by AutoProxy; ignored here.
        incref: True takes a new reference; False adopts one already taken
            for this proxy (a manager's reply carries one).
        manager_owned: the proxy takes and drops no reference at all.
    """

    _exposed_: Sequence[str] | None = None
    _method_to_typeid_: dict[str, str] | None = None
    _isauto = False

    def __init__(
        self,
        token: Token,
        serializer: str,
        manager: Any = None,
        authkey: bytes | None = None,
        exposed: Sequence[str] | None = None,
        incref: bool = True,
        manager_owned: bool = False,
    ) -> None:
        if authkey is None:
            authkey = _default_authkey(manager)
        self._token = token
        self._id = token.id
        self._serializer = serializer
        self._manager = manager
        self._authkey = process.AuthenticationString(authkey)
        self._owned_by_manager = manager_owned
        self._server = _local_server(token.address)
        self._channel = (
            None if self._server is not None else channel(token.address, self._authkey, serializer)
        )
        self._close: util.Finalize | None = None
        if not manager_owned:
            if incref:
                self._incref()
            self._arm_finalizer()
        util.register_after_fork(self, BaseProxy._after_fork)

    def _callmethod(
        self, methodname: str, args: tuple[Any, ...] = (), kwds: dict[str, Any] | None = None
    ) -> Any:
        """Call methodname(*args, **kwds) on the shared object and return the result.

        Raises:
            the method's exception, with the server-side traceback as ``__cause__``;
            RemoteError: the method is not exposed, or the object was released;
            ManagerConnectionError: the manager is gone.
        """
        request = (wire.CALL, self._id, methodname, args, kwds or {})
        if self._server is not None:
            reply = self._server.handle(request)
        else:
            reply = self._channel.request(request)  # type: ignore[union-attr]
        return unwrap(reply, self._proxy_from_reply) if reply[0] != wire.OK else reply[1]

    def _proxy_from_reply(self, typeid: str, ident: str, exposed: Sequence[str]) -> Any:
        if self._manager is not None and typeid in self._manager._registry:
            proxytype = self._manager._registry[typeid][-1]
        else:
            proxytype = proxy_types.get(typeid, AutoProxy)
        token = Token(typeid, self._token.address, ident)
        return proxytype(
            token,
            self._serializer,
            manager=self._manager,
            authkey=self._authkey,
            exposed=exposed,
            incref=False,
        )

    def _getvalue(self) -> Any:
        """A copy of the shared object (pickled over from the manager)."""
        return self._callmethod("#GETVALUE")

    def _incref(self) -> None:
        if self._server is not None:
            self._server.incref(self._id)
        else:
            unwrap(self._channel.request((wire.INCREF, self._id)))  # type: ignore[union-attr]

    def _arm_finalizer(self) -> None:
        self._close = util.Finalize(
            self,
            BaseProxy._decref,
            args=(self._id, self._server, self._channel),
            exitpriority=10,
        )

    @staticmethod
    def _decref(ident: str, server: Any, chan: _Channel | None) -> None:
        try:
            if server is not None:
                server.decref(ident)
            elif chan is not None:
                chan.decref(ident)
        except Exception as exc:  # the manager is gone: nothing left to release
            util.debug(f"decref of {ident} failed: {exc!r}")

    def _after_fork(self) -> None:
        self._manager = None
        self._server = _local_server(self._token.address)
        self._channel = (
            None
            if self._server is not None
            else channel(self._token.address, self._authkey, self._serializer)
        )
        if not self._owned_by_manager:
            try:
                self._incref()
            except Exception as exc:
                util.info(f"proxy {self._token!r}: incref after fork failed: {exc!r}")
                return
            self._arm_finalizer()

    def __reduce__(self) -> Any:
        kwds: dict[str, Any] = {}
        if get_spawning_popen() is not None:
            kwds["authkey"] = self._authkey
        server = self._server
        if server is not None and not self._owned_by_manager:
            # Sent from the manager's own process (a reply): take the
            # reference the receiving proxy will adopt.
            server.incref(self._id)
            kwds["incref"] = False
        if self._isauto:
            kwds["exposed"] = self._exposed_
            return (RebuildProxy, (AutoProxy, self._token, self._serializer, kwds))
        return (RebuildProxy, (type(self), self._token, self._serializer, kwds))

    def __deepcopy__(self, memo: Any) -> Any:
        return self._getvalue()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} object, typeid {self._token.typeid!r} at {id(self):#x}>"

    def __str__(self) -> str:
        """The shared object's repr, fetched from the manager."""
        try:
            return self._callmethod("__repr__")
        except Exception:
            return repr(self)[:-1] + "; '__str__()' failed>"


def RebuildProxy(func: Any, token: Token, serializer: str, kwds: dict[str, Any]) -> Any:
    """Unpickle a proxy: build it with ``func`` (its type, or AutoProxy)."""
    return func(token, serializer, **kwds)


_proxy_type_cache: dict[tuple[str, tuple[str, ...]], type] = {}


def MakeProxyType(name: str, exposed: Sequence[str], _cache: Any = None) -> type:
    """A BaseProxy subclass named name with one forwarding method per exposed name."""
    exposed = tuple(exposed)
    key = (name, exposed)
    found = _proxy_type_cache.get(key)
    if found is not None:
        return found
    # Named after the caller's module, so that pickle finds the type by name there.
    namespace: dict[str, Any] = {
        "_exposed_": exposed,
        "__module__": sys._getframe(1).f_globals.get("__name__", __name__),
    }
    for meth in exposed:
        namespace[meth] = _forwarder(meth)
    made = type(name, (BaseProxy,), namespace)
    _proxy_type_cache[key] = made
    return made


def _forwarder(meth: str) -> Any:
    def forward(self: BaseProxy, /, *args: Any, **kwds: Any) -> Any:
        return self._callmethod(meth, args, kwds)

    forward.__name__ = meth
    return forward


def AutoProxy(
    token: Token,
    serializer: str,
    manager: Any = None,
    authkey: bytes | None = None,
    exposed: Sequence[str] | None = None,
    incref: bool = True,
    manager_owned: bool = False,
) -> BaseProxy:
    """A proxy whose methods are the shared object's exposed ones (asked of the server)."""
    if exposed is None:
        if authkey is None:
            authkey = _default_authkey(manager)
        server = _local_server(token.address)
        if server is not None:
            reply = server.handle((wire.METHODS, token.id))
        else:
            reply = channel(token.address, authkey, serializer).request((wire.METHODS, token.id))
        exposed = unwrap(reply)
    proxy_type = MakeProxyType(f"AutoProxy[{token.typeid}]", exposed)
    proxy = proxy_type(
        token,
        serializer,
        manager=manager,
        authkey=authkey,
        incref=incref,
        manager_owned=manager_owned,
    )
    proxy._isauto = True
    return proxy
