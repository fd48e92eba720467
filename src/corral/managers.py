"""Managers: a server process owns Python objects; other processes use them via proxies.

The stdlib's ``multiprocessing.managers``, name for name. Where things live:

- ``managers.py`` (here): ``BaseManager`` (start, connect, shutdown, register),
  ``SyncManager`` and its registered types, ``SharedMemoryManager``.
- ``_manager_server.py``: the server (object table, one thread per client).
- ``_proxy.py``: ``BaseProxy``, ``AutoProxy``, tokens, per-thread connections.
- ``_proxy_types.py``: the proxies of SyncManager's types, ``Namespace``,
  ``Value``, ``Array``.
- ``_manager_wire.py``: the requests and replies, and the two serializers.

Beyond the stdlib: authentication is done for several clients side by side
(a silent client blocks nobody); a lost manager raises
``ManagerConnectionError`` rather than hanging; a manager process exits when
its parent dies, even by SIGKILL; exceptions from shared objects keep their
remote traceback (as ``__cause__``); proxies of a manager stored inside its
own containers keep working.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from . import _manager_wire as wire
from . import _proxy, process, reduction, util
from ._lifeline import on_parent_death

# Names importable from here, as from the stdlib's module ("X as X": re-exported).
from ._manager_server import Server as Server
from ._manager_server import public_methods as public_methods
from ._proxy import AutoProxy as AutoProxy
from ._proxy import BaseProxy as BaseProxy
from ._proxy import MakeProxyType as MakeProxyType
from ._proxy import RebuildProxy as RebuildProxy
from ._proxy import Token as Token
from ._proxy_types import AcquirerProxy as AcquirerProxy
from ._proxy_types import Array as Array
from ._proxy_types import BarrierProxy as BarrierProxy
from ._proxy_types import ConditionProxy as ConditionProxy
from ._proxy_types import EventProxy as EventProxy
from ._proxy_types import IteratorProxy as IteratorProxy
from ._proxy_types import Namespace as Namespace
from ._proxy_types import NamespaceProxy as NamespaceProxy
from ._proxy_types import PoolProxy as PoolProxy
from ._proxy_types import Value as Value
from ._proxy_types import ValueProxy as ValueProxy
from ._typevars import T as _T
from .errors import ManagerConnectionError as ManagerConnectionError
from .errors import ProcessError, attach_remote_traceback, format_exception_text
from .errors import RemoteError as RemoteError

# The generic proxies and SyncManager's registered methods, as a type checker
# sees them (_sync_types declares what MakeProxyType and register make).
if TYPE_CHECKING:
    from typing_extensions import Self

    from ._sync_types import ArrayProxy as ArrayProxy
    from ._sync_types import BaseListProxy as BaseListProxy
    from ._sync_types import DictProxy as DictProxy
    from ._sync_types import ListProxy as ListProxy
    from ._sync_types import SyncManagerMethods as _SyncManagerMethods
    from .shared_memory import ShareableList as _ShareableList
    from .shared_memory import SharedMemory as _SharedMemory
else:
    from ._proxy_types import ArrayProxy as ArrayProxy
    from ._proxy_types import BaseListProxy as BaseListProxy
    from ._proxy_types import DictProxy as DictProxy
    from ._proxy_types import ListProxy as ListProxy

    _SyncManagerMethods = object

__all__ = (
    "BaseManager",
    "BaseProxy",
    "SharedMemoryManager",
    "SyncManager",
    "Token",
)


def _reduce_view_as_list(view: Any) -> tuple[type[list[Any]], tuple[list[Any]]]:
    return list, (list(view),)


# Dict views (a DictProxy's keys(), values(), items()) are sent as lists, as by
# the stdlib, whose managers module registers the same for every pickle: a view
# cannot be pickled, and a list is what a caller in another process can use.
# (Registered as a type plain pickle refuses: the fast path stays plain pickle.)
_view_types: tuple[type, ...] = (type({}.keys()), type({}.values()), type({}.items()))
for _view_type in _view_types:
    reduction._register_refused(_view_type, _reduce_view_as_list)
del _view_type, _view_types


class State:
    """A manager's lifecycle: INITIAL, then STARTED, then SHUTDOWN."""

    __slots__ = ("value",)
    INITIAL = 0
    STARTED = 1
    SHUTDOWN = 2

    def __init__(self) -> None:
        self.value = State.INITIAL


def _check_initial(state: State, what: str = "server") -> None:
    if state.value == State.STARTED:
        msg = f"Already started {what}"
        raise ProcessError(msg)
    if state.value == State.SHUTDOWN:
        msg = "Manager has shut down"
        raise ProcessError(msg)


class BaseManager:
    """Starts (or connects to) a manager server and creates shared objects in it.

    Args:
        address: where the server listens: ``(host, port)`` for TCP (port 0
            picks one; ``('', port)`` accepts remote clients), a path for a
            Unix socket; None picks a private Unix socket.
        authkey: the key clients must prove they know (default: this
            process's ``current_process().authkey``).
        serializer: 'pickle' (default) or 'xmlrpclib'.
        ctx: the context whose Process runs the server (default context).
        shutdown_timeout: seconds ``shutdown()`` waits for the server process
            before terminating it (then killing it).
        ssl_context: TLS for the server and its clients (corral's addition):
            a server-side ``ssl.SSLContext`` for ``get_server()``, a
            client-side one for ``connect()``, or a pair
            ``(server_context, client_context)`` for ``start()``, which runs
            the server and connects to it. Proxies in processes forked after
            ``start()``/``connect()`` use the client context too; a spawned
            process connects a manager object with the client context first.

    Raises:
        ValueError: unknown serializer; an ssl_context of the wrong side.
        TypeError: authkey is not bytes; ssl_context is not an SSLContext.
    """

    _registry: dict[str, tuple[Any, Any, Any, Any]] = {}
    _Server: type[Server] = Server

    def __init__(
        self,
        address: Any = None,
        authkey: bytes | None = None,
        serializer: str = "pickle",
        ctx: Any = None,
        *,
        shutdown_timeout: float = 1.0,
        ssl_context: Any = None,
    ) -> None:
        if authkey is None:
            authkey = process.current_process().authkey
        if not isinstance(authkey, bytes):
            msg = f"authkey should be a byte string, not {type(authkey).__name__}"
            raise TypeError(msg)
        wire.codec(serializer)  # a bad name fails here, not in the server
        from .context import as_context

        ctx = as_context(ctx)
        self._address = address
        self._authkey = process.AuthenticationString(authkey)
        self._state = State()
        self._serializer = serializer
        self._ctx = ctx
        self._shutdown_timeout = shutdown_timeout
        self._tls_server, self._tls_client = _split_ssl_context(ssl_context)
        self._process: Any = None
        self._channel: Any = None  # this process's connections to the server, once running

    @property
    def address(self) -> Any:
        """The server's address (known once started or given)."""
        return self._address

    # -- lifecycle ----------------------------------------------------------------

    def get_server(self) -> Server:
        """A Server for this manager's registry, to run in this process with ``serve_forever()``.

        Raises:
            ProcessError: the manager was already started or shut down.
        """
        _check_initial(self._state)
        return self._make_server()

    def _make_server(self) -> Server:
        return self._Server(
            self._registry,
            self._address,
            self._authkey,
            self._serializer,
            ssl_context=self._tls_server,
        )

    def connect(self) -> None:
        """Use a server that runs elsewhere (at ``address``, with ``authkey``).

        Raises:
            ManagerConnectionError: nobody serves at address.
            AuthenticationError: the server refused our authkey.
        """
        _proxy.request_once(
            self._address, self._authkey, self._serializer, (wire.PING,), tls=self._tls_client
        )
        if self._tls_client is not None:
            _proxy.tls_contexts[_proxy._address_key(self._address)] = self._tls_client
        self._channel = _proxy.channel(self._address, self._authkey, self._serializer)
        self._state.value = State.STARTED

    def start(
        self, initializer: Callable[..., object] | None = None, initargs: Sequence[Any] = ()
    ) -> None:
        """Start the server in a new process; ``initializer(*initargs)`` runs there first.

        The server process exits when ``shutdown()`` is called, when this
        manager is collected or the program exits, and when this process
        dies (even by SIGKILL).

        Raises:
            ProcessError: already started or shut down.
            TypeError: initializer is not callable.
            OSError: the server cannot listen at ``address`` (in use...);
                whatever the initializer raised, with its remote traceback.
        """
        _check_initial(self._state)
        if initializer is not None and not callable(initializer):
            msg = "initializer must be a callable"
            raise TypeError(msg)
        if (self._tls_server is None) != (self._tls_client is None):
            msg = (
                "start() runs the server and connects to it: give "
                "ssl_context=(server_context, client_context)"
            )
            raise ValueError(msg)
        if self._tls_server is not None and self._ctx.get_start_method() != "fork":
            msg = (
                "an SSLContext cannot be sent to a spawn or forkserver process: start a "
                "TLS manager with the fork context, or run get_server().serve_forever() "
                "in a process that makes its own context"
            )
            raise ValueError(msg)
        reader, writer = self._ctx.Pipe(duplex=False)
        self._process = self._ctx.Process(
            target=type(self)._run_server,
            args=(
                self._registry,
                self._address,
                self._authkey,
                self._serializer,
                writer,
                initializer,
                tuple(initargs),
                os.getpid(),
                self._tls_server,
            ),
        )
        ident = ":".join(str(i) for i in self._process._identity)
        self._process.name = f"{type(self).__name__}-{ident}"
        self._process.start()
        writer.close()
        try:
            kind, value, *tb = reader.recv()
        except EOFError:
            self._process.join()
            msg = (
                f"the manager process exited ({self._process.exitcode}) before it "
                f"started serving; see its stderr"
            )
            raise ProcessError(msg) from None
        finally:
            reader.close()
        if kind != "ok":
            self._process.join()
            raise attach_remote_traceback(value, tb[0])
        self._address = value
        if self._tls_client is not None:
            _proxy.tls_contexts[_proxy._address_key(value)] = self._tls_client
        self._channel = _proxy.channel(value, self._authkey, self._serializer)
        self._state.value = State.STARTED
        self.shutdown = util.Finalize(
            self,
            type(self)._finalize_manager,
            args=(
                self._process,
                self._address,
                self._authkey,
                self._state,
                self._serializer,
                self._shutdown_timeout,
            ),
            exitpriority=0,
        )

    @classmethod
    def _run_server(
        cls,
        registry: dict[str, Any],
        address: Any,
        authkey: bytes,
        serializer: str,
        writer: Any,
        initializer: Callable[..., object] | None,
        initargs: tuple[Any, ...],
        parent_pid: int,
        ssl_context: Any = None,
    ) -> None:
        """The manager process: make the server, report its address, serve."""
        # Ctrl-C goes to the whole group; the parent decides when we stop.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if initializer is not None:
                initializer(*initargs)
            server = cls._Server(registry, address, authkey, serializer, ssl_context=ssl_context)
        except BaseException as exc:
            writer.send(("error", exc, format_exception_text(exc)))
            writer.close()
            raise SystemExit(1) from None
        writer.send(("ok", server.address))
        writer.close()
        on_parent_death(parent_pid, server.stop)
        util.info(f"manager serving at {server.address!r}")
        server.serve_forever()

    @staticmethod
    def _finalize_manager(
        proc: Any,
        address: Any,
        authkey: bytes,
        state: State,
        serializer: str,
        shutdown_timeout: float,
    ) -> None:
        """Ask the server to stop; terminate (then kill) it if it does not in time."""
        if proc.is_alive():
            util.info("sending shutdown message to manager")
            try:
                _proxy.request_once(address, authkey, serializer, (wire.SHUTDOWN,))
            except Exception as exc:
                util.debug(f"manager shutdown request failed: {exc!r}")
            proc.join(timeout=shutdown_timeout)
            if proc.is_alive():
                util.info("manager still alive: terminating it")
                proc.terminate()
                proc.join(timeout=shutdown_timeout)
                if proc.is_alive():
                    util.info("manager still alive after terminate: killing it")
                    proc.kill()
                    proc.join()
        state.value = State.SHUTDOWN
        _proxy.close_channels(address)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the manager process to exit."""
        if self._process is not None:
            self._process.join(timeout)
            if not self._process.is_alive():
                self._process = None

    def __enter__(self) -> Self:
        if self._state.value == State.INITIAL:
            self.start()
        if self._state.value != State.STARTED:
            _check_initial(self._state)
            msg = "Unable to start server"
            raise ProcessError(msg)
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()  # set by start()

    # -- requests -------------------------------------------------------------------

    def _request(self, message: tuple[Any, ...]) -> Any:
        if self._state.value == State.INITIAL:
            msg = "the manager is not running: call start() or connect() first"
            raise ValueError(msg)
        if self._state.value == State.SHUTDOWN:
            msg = f"the manager at {self._address!r} has shut down; start a new one"
            raise ManagerConnectionError(msg)
        return _proxy.unwrap(self._channel.request(message))

    def _create(self, typeid: str, /, *args: Any, **kwds: Any) -> tuple[Token, tuple[str, ...]]:
        """Create a shared object; return its token and exposed methods (one reference taken)."""
        ident, exposed = self._request((wire.CREATE, typeid, args, kwds))
        return Token(typeid, self._address, ident), tuple(exposed)

    def _debug_info(self) -> str:
        """A description of the shared objects and their reference counts."""
        info: str = self._request((wire.INFO,))
        return info

    def _number_of_objects(self) -> int:
        """How many shared objects the server holds."""
        count: int = self._request((wire.COUNT,))
        return count

    @classmethod
    def register(
        cls,
        typeid: str,
        callable: Callable[..., Any] | None = None,
        proxytype: Any = None,
        exposed: Sequence[str] | None = None,
        method_to_typeid: dict[str, str] | None = None,
        create_method: bool = True,
    ) -> None:
        """Declare a type the manager can create and share.

        Args:
            typeid: the name of the shared type (and of the creating method).
            callable: creates the object in the server; None on a client that
                only connects to a server which has it.
            proxytype: the proxy class (default: AutoProxy, whose methods are
                the exposed ones).
            exposed: the methods proxies may call (default: the proxy's
                ``_exposed_``, else all public methods).
            method_to_typeid: methods whose result is returned as a new proxy
                of the given typeid.
            create_method: add a method named ``typeid`` to the manager class.

        Raises:
            TypeError: a method_to_typeid key or value is not a string.
        """
        if "_registry" not in cls.__dict__:
            cls._registry = dict(cls._registry)  # each subclass has its own
        if proxytype is None:
            proxytype = AutoProxy
        exposed = exposed or getattr(proxytype, "_exposed_", None)
        method_to_typeid = method_to_typeid or getattr(proxytype, "_method_to_typeid_", None)
        if method_to_typeid:
            for key, value in list(method_to_typeid.items()):
                if not (isinstance(key, str) and isinstance(value, str)):
                    msg = f"{key!r} is not a string"
                    raise TypeError(msg)
        cls._registry[typeid] = (callable, exposed, method_to_typeid, proxytype)
        _proxy.proxy_types[typeid] = proxytype
        if create_method:
            setattr(cls, typeid, _creator(typeid, proxytype))


def _split_ssl_context(ssl_context: Any) -> tuple[Any, Any]:
    """(server-side, client-side) contexts from a BaseManager's ssl_context argument."""
    if ssl_context is None:
        return None, None
    from . import _tls

    if isinstance(ssl_context, tuple) and len(ssl_context) == 2:
        server, client = ssl_context
        _tls.check_context(server, server_side=True)
        _tls.check_context(client, server_side=False)
        return server, client
    import ssl

    if not isinstance(ssl_context, ssl.SSLContext):
        msg = (
            f"ssl_context must be an ssl.SSLContext or a (server, client) pair of them, "
            f"not {type(ssl_context).__name__}"
        )
        raise TypeError(msg)
    if ssl_context.protocol == ssl.PROTOCOL_TLS_CLIENT:
        return None, ssl_context
    if ssl_context.protocol == ssl.PROTOCOL_TLS_SERVER:
        return ssl_context, None
    return ssl_context, ssl_context  # a generic context serves both sides


def _creator(typeid: str, proxytype: Any) -> Callable[..., Any]:
    def create(self: BaseManager, /, *args: Any, **kwds: Any) -> Any:
        token, exposed = self._create(typeid, *args, **kwds)
        return proxytype(
            token,
            self._serializer,
            manager=self,
            authkey=self._authkey,
            exposed=exposed,
            incref=False,  # adopts the reference CREATE took
        )

    create.__name__ = create.__qualname__ = typeid
    create.__doc__ = f"Create a shared {typeid!r} object in the manager and return its proxy."
    return create


# -- SyncManager -------------------------------------------------------------------------


def _pool(*args: Any, **kwds: Any) -> Any:
    from .pool import Pool

    return Pool(*args, **kwds)


class SyncManager(BaseManager, _SyncManagerMethods):
    """A manager with the synchronization types, ``list``, ``dict``, ``Namespace``, ``Pool``.

    ``corral.Manager()`` returns a started one.
    """


SyncManager.register("Queue", queue.Queue)
SyncManager.register("JoinableQueue", queue.Queue)
SyncManager.register("Event", threading.Event, EventProxy)
SyncManager.register("Lock", threading.Lock, AcquirerProxy)
SyncManager.register("RLock", threading.RLock, AcquirerProxy)
SyncManager.register("Semaphore", threading.Semaphore, AcquirerProxy)
SyncManager.register("BoundedSemaphore", threading.BoundedSemaphore, AcquirerProxy)
SyncManager.register("Condition", threading.Condition, ConditionProxy)
SyncManager.register("Barrier", threading.Barrier, BarrierProxy)
SyncManager.register("Pool", _pool, PoolProxy)
SyncManager.register("list", list, ListProxy)
SyncManager.register("dict", dict, DictProxy)
SyncManager.register("Value", Value, ValueProxy)
SyncManager.register("Array", Array, ArrayProxy)
SyncManager.register("Namespace", Namespace, NamespaceProxy)
# Types returned by methods of the proxies above.
SyncManager.register("Iterator", proxytype=IteratorProxy, create_method=False)
SyncManager.register("AsyncResult", create_method=False)


# -- SharedMemoryManager ---------------------------------------------------------------

TRACK_SEGMENT = "track_segment"
RELEASE_SEGMENT = "release_segment"
LIST_SEGMENTS = "list_segments"


class SharedMemoryServer(Server):
    """A Server that also unlinks the shared memory segments it was told to track."""

    def __init__(self, *args: Any, **kwds: Any) -> None:
        super().__init__(*args, **kwds)
        self.segment_names: list[str] = []
        self._handlers[TRACK_SEGMENT] = self._track_segment
        self._handlers[RELEASE_SEGMENT] = self._release_segment
        self._handlers[LIST_SEGMENTS] = self._list_segments

    def _track_segment(self, name: str) -> tuple[Any, ...]:
        self.segment_names.append(name)
        return (wire.OK, None)

    def _release_segment(self, name: str) -> tuple[Any, ...]:
        if name in self.segment_names:
            self.segment_names.remove(name)
            _unlink_segment(name)
        return (wire.OK, None)

    def _list_segments(self) -> tuple[Any, ...]:
        return (wire.OK, list(self.segment_names))

    def release_resources(self) -> None:
        """Unlink every tracked segment."""
        for name in self.segment_names[:]:
            self._release_segment(name)


def _unlink_segment(name: str) -> None:
    from .shared_memory import SharedMemory

    try:
        segment = SharedMemory(name)
    except FileNotFoundError:
        return
    segment.close()
    segment.unlink()


class SharedMemoryManager(BaseManager):
    """A manager whose ``SharedMemory`` and ``ShareableList`` segments are unlinked at shutdown.

    The segments are created in the caller's process and tracked by the
    server, which unlinks them when it stops (``shutdown()``, the end of a
    ``with`` block, or the death of the process that started it).
    """

    _Server = SharedMemoryServer

    def __init__(self, *args: Any, **kwds: Any) -> None:
        from . import resource_tracker

        resource_tracker.ensure_running()
        super().__init__(*args, **kwds)

    def get_server(self) -> Server:
        """A SharedMemoryServer for this manager (see ``BaseManager.get_server``)."""
        _check_initial(self._state, "SharedMemoryServer")
        return self._make_server()

    def SharedMemory(self, size: int) -> _SharedMemory:
        """A new ``SharedMemory`` segment of size bytes, unlinked at the manager's shutdown."""
        from .shared_memory import SharedMemory

        segment = SharedMemory(None, create=True, size=size)
        self._track(segment)
        return segment

    def ShareableList(self, sequence: Iterable[_T] | None) -> _ShareableList[_T]:
        """A new ``ShareableList`` of sequence, unlinked at the manager's shutdown."""
        from .shared_memory import ShareableList

        shareable = ShareableList(sequence)
        self._track(shareable.shm)
        return shareable

    def _track(self, segment: Any) -> None:
        try:
            self._request((TRACK_SEGMENT, segment.name))
        except BaseException:
            segment.close()
            segment.unlink()
            raise
