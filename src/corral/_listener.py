"""``Listener`` and ``Client``: authenticated connections over Unix and TCP sockets.

Authentication is the stdlib's HMAC challenge/response, in both directions
(see ``_handshake.py``). ``Listener.accept()`` runs the handshakes of several
clients side by side with a deadline each, so a client that connects and then
says nothing cannot keep the others out.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import time
from typing import Any

from . import _handshake, _tls, util
from ._wire import Connection, _ms, _poll_fd

__all__ = (
    "Client",
    "Listener",
    "address_type",
    "answer_challenge",
    "arbitrary_address",
    "deliver_challenge",
)

#: Seconds a client may take to complete the authentication handshake in accept().
HANDSHAKE_TIMEOUT = 20.0

families = ["AF_INET"]
if hasattr(socket, "AF_UNIX"):
    families.append("AF_UNIX")
default_family = "AF_UNIX" if "AF_UNIX" in families else "AF_INET"


def address_type(address: Any) -> str:
    """Return 'AF_INET', 'AF_UNIX' or 'AF_PIPE' for an address."""
    if isinstance(address, tuple):
        return "AF_INET"
    if isinstance(address, str) and address.startswith("\\\\"):
        return "AF_PIPE"
    if isinstance(address, (str, bytes)):
        return "AF_UNIX"
    msg = f"address type of {address!r} unrecognized"
    raise ValueError(msg)


def arbitrary_address(family: str) -> Any:
    """Return an unused address of the family (a private path for AF_UNIX)."""
    if family == "AF_INET":
        return ("localhost", 0)
    if family == "AF_UNIX":
        return os.path.join(util.get_temp_dir(), f"listener-{os.urandom(8).hex()}")
    msg = "unrecognized family"
    raise ValueError(msg)


def _validate_family(family: str) -> None:
    if sys.platform != "win32" and family == "AF_PIPE":
        msg = f"Family {family} is not recognized."
        raise ValueError(msg)
    if family not in families and family != "AF_PIPE" and not hasattr(socket, family):
        msg = f"Family {family} is not recognized."
        raise ValueError(msg)


def _check_authkey(authkey: Any) -> None:
    if authkey is not None and not isinstance(authkey, bytes):
        msg = "authkey should be a byte string"
        raise TypeError(msg)


class Listener:
    """A socket that accepts connections from ``Client``, optionally authenticated.

    Args:
        address: ``(host, port)`` for AF_INET, a path (or, on Linux, an
            abstract name starting with NUL) for AF_UNIX; None picks a free one.
        family: 'AF_INET' or 'AF_UNIX'; by default deduced from address.
        backlog: the listen() backlog.
        authkey: if given, every client must pass the HMAC handshake with the
            same key before ``accept()`` returns it.
        handshake_timeout: seconds a client has to complete the handshake
            (corral's addition; the stdlib waits forever).
        ssl_context: a server-side ``ssl.SSLContext``: connections are TLS
            sessions (the authkey handshake then runs inside them). corral's
            addition.

    Raises:
        ValueError: unknown family or address type; a client-side ssl_context.
        TypeError: authkey is not bytes; ssl_context is not an SSLContext.
    """

    def __init__(
        self,
        address: Any = None,
        family: str | None = None,
        backlog: int = 1,
        authkey: bytes | None = None,
        *,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        ssl_context: Any = None,
    ) -> None:
        family = family or (address and address_type(address)) or default_family
        _validate_family(family)
        address = address or arbitrary_address(family)
        _check_authkey(authkey)
        if ssl_context is not None:
            _tls.check_context(ssl_context, server_side=True)
        self._ssl_context = ssl_context
        self._family = family
        self._socket: socket.socket | None = socket.socket(getattr(socket, family))
        self._unlink: util.Finalize | None = None
        try:
            if os.name == "posix":
                self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.setblocking(False)
            self._socket.bind(address)
            self._socket.listen(backlog)
            self._address = self._socket.getsockname()
        except OSError:
            self._socket.close()
            self._socket = None
            raise
        if family == "AF_UNIX" and not util.is_abstract_socket_namespace(address):
            self._unlink = util.Finalize(self, os.unlink, args=(address,), exitpriority=0)
        self._authkey = authkey
        self._handshake_timeout = handshake_timeout
        self._last_accepted: Any = None
        self._pending: list[_handshake.PendingHandshake] = []

    def accept(self) -> Connection:
        """Wait for a client and return the connection to it.

        With an authkey, clients are authenticated side by side: the first to
        pass is returned, those still in progress wait for the next call.

        Raises:
            AuthenticationError: a client failed the handshake (wrong key,
                garbage, truncated or oversized frames, or silence past
                ``handshake_timeout``). Other clients are unaffected.
            OSError: the listener is closed.
        """
        if self._socket is None:
            msg = "listener is closed"
            raise OSError(msg)
        if self._authkey is None and self._ssl_context is None:
            sock, self._last_accepted = self._accept_socket()
            return _connection_from_socket(sock)
        return self._accept_authenticated()

    def _accept_socket(self) -> tuple[socket.socket, Any]:
        # The listening socket is non-blocking (for _accept_authenticated): wait here.
        while True:
            try:
                sock, addr = self._socket.accept()  # type: ignore[union-attr]
            except BlockingIOError:
                _poll_fd(self._socket.fileno(), None)  # type: ignore[union-attr]
                continue
            sock.setblocking(True)
            return sock, addr

    def _accept_authenticated(self) -> Connection:
        listener = self._socket
        assert listener is not None
        while True:
            now = time.monotonic()
            for pending in list(self._pending):
                if pending.deadline <= now:
                    self._pending.remove(pending)
                    pending.fail_timeout(self._handshake_timeout)
            poller = select.poll()
            poller.register(listener.fileno(), select.POLLIN)
            by_fd = {}
            for pending in self._pending:
                poller.register(pending.fileno(), select.POLLIN)
                by_fd[pending.fileno()] = pending
            if self._pending:
                nearest = min(p.deadline for p in self._pending)
                events = poller.poll(max(0, _ms(nearest - time.monotonic())))
            else:
                events = poller.poll()
            for fd, _ in events:
                if fd == listener.fileno():
                    self._start_handshake()
                    continue
                pending = by_fd[fd]
                try:
                    done = pending.on_readable()
                except BaseException:
                    self._pending.remove(pending)
                    raise
                if done:
                    self._pending.remove(pending)
                    self._last_accepted = pending.address
                    if self._ssl_context is not None:
                        return _tls.TLSConnection(pending.take_socket())
                    return _connection_from_socket(pending.take_socket())

    def _start_handshake(self) -> None:
        try:
            sock, addr = self._socket.accept()  # type: ignore[union-attr]
        except BlockingIOError:
            return
        steps = (
            _handshake.no_steps()
            if self._authkey is None
            else _handshake.server_steps(self._authkey)
        )
        pending = _handshake.PendingHandshake(
            sock,
            addr,
            steps,
            time.monotonic() + self._handshake_timeout,
            tls_context=self._ssl_context,
        )
        try:
            pending.begin()
        except BaseException:
            sock.close()
            raise
        self._pending.append(pending)

    def close(self) -> None:
        """Stop listening and remove the socket file (AF_UNIX)."""
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()
            for pending in self._pending:
                pending.close()
            self._pending.clear()
            unlink, self._unlink = self._unlink, None
            if unlink is not None:
                unlink()

    @property
    def address(self) -> Any:
        """The address the listener is bound to (with the real port for port 0)."""
        return self._address

    @property
    def last_accepted(self) -> Any:
        """The address of the peer last returned by ``accept()``."""
        return self._last_accepted

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} address={self._address!r} family={self._family}>"


def _connection_from_socket(sock: socket.socket) -> Connection:
    return Connection(sock.detach())


def Client(
    address: Any,
    family: str | None = None,
    authkey: bytes | None = None,
    *,
    ssl_context: Any = None,
) -> Connection:
    """Connect to a ``Listener`` and return the connection.

    ``ssl_context`` (a client-side ``ssl.SSLContext``, corral's addition)
    makes the connection a TLS session; the server's certificate is checked
    as the context says (the host of a TCP address is the expected name).

    Raises:
        AuthenticationError: the handshake failed (wrong key on either side).
        ConnectionRefusedError, FileNotFoundError: nobody listens there.
        ssl.SSLError: the TLS handshake failed (certificate not trusted...).
    """
    family = family or address_type(address)
    _validate_family(family)
    _check_authkey(authkey)
    if ssl_context is not None:
        _tls.check_context(ssl_context, server_side=False)
    sock = socket.socket(getattr(socket, family))
    try:
        sock.setblocking(True)
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    if ssl_context is not None:
        try:
            conn: Connection = _tls.wrap_client(sock, ssl_context, address)
        except BaseException:
            sock.close()
            raise
    else:
        conn = _connection_from_socket(sock)
    if authkey is not None:
        try:
            _handshake.run_blocking(conn, _handshake.client_steps(authkey))
        except BaseException:
            conn.close()
            raise
    return conn


def deliver_challenge(connection: Connection, authkey: bytes) -> None:
    """Challenge the peer to prove it knows authkey (the server's first half).

    Raises:
        AuthenticationError: the peer's answer is wrong.
    """
    _handshake.check_authkey_type(authkey)
    _handshake.run_blocking(connection, _handshake.deliver_steps(authkey))


def answer_challenge(connection: Connection, authkey: bytes) -> None:
    """Answer the peer's challenge with authkey (the client's first half).

    Raises:
        AuthenticationError: the peer rejected the answer, or sent no challenge.
    """
    _handshake.check_authkey_type(authkey)
    _handshake.run_blocking(connection, _handshake.answer_steps(authkey))
