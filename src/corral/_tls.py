"""Connections over TLS: ``Listener``/``Client``/managers given an ``ssl.SSLContext``.

The frames are the same as on a plain ``Connection`` (4-byte length, payload);
they travel inside a TLS session instead of on the bare socket. The HMAC
authkey handshake still runs, inside the session: TLS proves the server's
identity (and the client's, with client certificates), the authkey proves
both know the key. ``ssl`` is imported only when TLS is used.

A TLS connection cannot be sent to another process (its session lives in
this one); pickling one raises ``TypeError``.
"""

from __future__ import annotations

import socket
from typing import Any

from ._wire import Connection, _header_q, _loads, _pack_i, _poll_fd, _raise_eof

__all__ = ("TLSConnection", "check_context", "wrap_client")

_CHUNK = 1 << 20


def check_context(context: Any, server_side: bool) -> None:
    """Check that context is an SSLContext for the given side.

    Raises:
        TypeError: not an ``ssl.SSLContext``.
        ValueError: a client-side context where a server-side one is needed
            (or the reverse).
    """
    import ssl

    if not isinstance(context, ssl.SSLContext):
        msg = f"ssl_context must be an ssl.SSLContext, not {type(context).__name__}"
        raise TypeError(msg)
    if server_side and context.protocol == ssl.PROTOCOL_TLS_CLIENT:
        msg = (
            "a listening side needs a server-side SSLContext "
            "(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH) or PROTOCOL_TLS_SERVER)"
        )
        raise ValueError(msg)
    if not server_side and context.protocol == ssl.PROTOCOL_TLS_SERVER:
        msg = (
            "a connecting side needs a client-side SSLContext "
            "(ssl.create_default_context() or PROTOCOL_TLS_CLIENT)"
        )
        raise ValueError(msg)


def wrap_client(sock: socket.socket, context: Any, address: Any) -> TLSConnection:
    """Run the TLS handshake as a client on a connected socket.

    The server's name for certificate checks is the host of a TCP address.

    Raises:
        ssl.SSLError (an OSError): the handshake failed (certificate refused...).
    """
    host = address[0] if isinstance(address, tuple) else None
    tls = context.wrap_socket(sock, server_hostname=host if context.check_hostname else None)
    return TLSConnection(tls)


class TLSConnection(Connection):
    """A ``Connection`` whose bytes travel in a TLS session (an ``ssl.SSLSocket``)."""

    _local = False  # big buffers stay in the session: the peer may be another machine

    def __init__(self, tls_socket: Any) -> None:
        tls_socket.setblocking(True)
        super().__init__(tls_socket.fileno())
        self._tls = tls_socket

    def __del__(self, _close: Any = None) -> None:
        tls = getattr(self, "_tls", None)
        if tls is not None:
            self._handle = None
            self._tls = None
            try:
                tls.close()
            except OSError:
                pass

    def close(self) -> None:
        """Close the TLS session and its socket; later calls do nothing."""
        if self._handle is not None:
            self._handle = None
            tls, self._tls = self._tls, None
            tls.close()

    def __reduce__(self) -> Any:
        msg = "a TLS connection cannot be sent to another process (its session lives in this one)"
        raise TypeError(msg)

    # -- I/O: the SSL socket instead of os.read/os.write ----------------------------

    def _send_bytes(self, buf: Any) -> None:
        n = len(buf)
        header = _pack_i(-1) + _header_q.pack(n) if n > 0x7FFFFFFF else _pack_i(n)
        if n < 1 << 14:
            self._tls.sendall(header + bytes(buf))
        else:
            self._tls.sendall(header)
            self._tls.sendall(buf)

    def _write_all(self, *views: memoryview) -> None:
        for view in views:
            self._tls.sendall(view)

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        """Receive one message as bytes (see ``Connection.recv_bytes``)."""
        self._check_closed()
        self._check_readable()
        if maxlength is not None and maxlength < 0:
            msg = "negative maxlength"
            raise ValueError(msg)
        buf = self._recv_bytes(maxlength)
        if buf is None:
            self._bad_message_length()
        return bytes(buf)  # type: ignore[arg-type]

    def recv(self) -> Any:
        """Receive one message and unpickle it (see ``Connection.recv``)."""
        self._check_closed()
        self._check_readable()
        return _loads(self._recv_bytes())  # type: ignore[arg-type]

    def _recv_bytes(
        self, maxsize: int | None = None, header: bytes = b""
    ) -> bytes | bytearray | None:
        size = self._read_size(header)
        if maxsize is not None and size > maxsize:
            return None
        return self._read_body(b"", size)

    def _read_exactly(self, count: int, have: bytes = b"", at_start: bool = False) -> bytes:
        while len(have) < count:
            more = self._tls.recv(count - len(have))
            if not more:
                _raise_eof(at_start and not have)
            have += more
        return have

    def _read_body(self, have: bytes, size: int) -> bytes | bytearray:
        # Grows as bytes arrive: a length header alone never allocates.
        data = bytearray(have)
        while len(data) < size:
            more = self._tls.recv(min(size - len(data), _CHUNK))
            if not more:
                _raise_eof(False)
            data += more
        return data

    def poll(self, timeout: float | None = 0.0) -> bool:
        """True if a message (or EOF) can be read without blocking."""
        self._check_closed()
        self._check_readable()
        if self._tls.pending():
            return True
        return _poll_fd(self._handle, timeout)  # type: ignore[arg-type]
