"""The HMAC challenge/response handshake, wire-compatible with the stdlib.

One side *delivers* a challenge: ``#CHALLENGE#`` + ``{sha256}`` + 40 random
bytes. The other *answers* with ``{sha256}`` + HMAC(authkey, challenge). The
challenger replies ``#WELCOME#`` or ``#FAILURE#``. A connection is authenticated
when each side has challenged the other (server first).

Compatibility: Python <= 3.11 sends a bare 20-byte challenge and answers with a
bare 16-byte HMAC-MD5; that form is accepted in both roles, so a stdlib peer of
any supported version interoperates. corral itself always challenges with
SHA-256.

The steps are written once, as generators that yield ``(frame_to_send,
wants_reply)`` and receive the peer's reply; ``run_blocking`` drives them on a
``Connection`` and ``PendingHandshake`` drives them on a non-blocking socket
inside ``Listener.accept()``. Nothing received here is ever unpickled.
"""

from __future__ import annotations

import hmac
import os
import socket
import struct
from collections.abc import Generator
from typing import Any, NoReturn

from .errors import AuthenticationError

CHALLENGE = b"#CHALLENGE#"
WELCOME = b"#WELCOME#"
FAILURE = b"#FAILURE#"
#: Random bytes in a challenge (the stdlib's modern length).
MESSAGE_LENGTH = 40
#: Longest frame accepted during the handshake; a longer header ends it.
MAX_FRAME = 256
DIGEST = "sha256"
_ALLOWED_DIGESTS = frozenset({b"md5", b"sha256", b"sha384", b"sha3_256", b"sha3_384"})
_MAX_DIGEST_NAME = max(len(d) for d in _ALLOWED_DIGESTS)
_LEGACY_CHALLENGE_LENGTH = 20
_LEGACY_RESPONSE_LENGTH = 16

Steps = Generator[tuple[bytes | None, bool], bytes | None, None]


def check_authkey_type(authkey: object) -> None:
    if not isinstance(authkey, bytes):
        msg = f"Authkey must be bytes, not {type(authkey)!s}"
        raise ValueError(msg)


def _split_digest(message: bytes) -> tuple[str, bytes]:
    """Return (digest name, payload); the name is '' for the legacy MD5 form."""
    if len(message) in (_LEGACY_CHALLENGE_LENGTH, _LEGACY_RESPONSE_LENGTH):
        return "", message
    if message.startswith(b"{"):
        end = message.find(b"}", 1, _MAX_DIGEST_NAME + 2)
        if end > 0 and message[1:end] in _ALLOWED_DIGESTS:
            return message[1:end].decode("ascii"), message[end + 1 :]
    msg = (
        "unsupported message length, missing digest prefix, "
        f"or unsupported digest: message={message[:64]!r}"
    )
    raise AuthenticationError(msg)


def make_response(authkey: bytes, message: bytes) -> bytes:
    """The answer to a challenge message (the part after ``#CHALLENGE#``)."""
    name, _ = _split_digest(message)
    if not name:
        return hmac.new(authkey, message, "md5").digest()
    mac = hmac.new(authkey, message, name).digest()
    return b"{" + name.encode("ascii") + b"}" + mac


def verify_response(authkey: bytes, message: bytes, response: bytes) -> bool:
    """True if response proves knowledge of authkey for our challenge message."""
    try:
        name, mac = _split_digest(response)
    except AuthenticationError:
        return False
    expected = hmac.new(authkey, message, name or "md5").digest()
    return hmac.compare_digest(expected, mac)


def deliver_steps(authkey: bytes) -> Steps:
    message = b"{" + DIGEST.encode("ascii") + b"}" + os.urandom(MESSAGE_LENGTH)
    response = yield CHALLENGE + message, True
    if not verify_response(authkey, message, response or b""):
        yield FAILURE, False
        msg = "digest received was wrong"
        raise AuthenticationError(msg)
    yield WELCOME, False


def answer_steps(authkey: bytes) -> Steps:
    challenge = yield None, True
    if not challenge or not challenge.startswith(CHALLENGE):
        msg = f"Protocol error, expected challenge: message={(challenge or b'')[:64]!r}"
        raise AuthenticationError(msg)
    reply = yield make_response(authkey, challenge[len(CHALLENGE) :]), True
    if reply != WELCOME:
        msg = "digest sent was rejected"
        raise AuthenticationError(msg)


def no_steps() -> Steps:
    """No authkey handshake (a TLS listener without an authkey)."""
    return
    yield  # a generator that ends at once


def server_steps(authkey: bytes) -> Steps:
    yield from deliver_steps(authkey)
    yield from answer_steps(authkey)


def client_steps(authkey: bytes) -> Steps:
    yield from answer_steps(authkey)
    yield from deliver_steps(authkey)


def run_blocking(conn: Any, steps: Steps) -> None:
    """Drive handshake steps on a blocking ``Connection``."""
    reply: bytes | None = None
    while True:
        try:
            frame, wants_reply = steps.send(reply)
        except StopIteration:
            return
        if frame is not None:
            conn.send_bytes(frame)
        reply = conn.recv_bytes(MAX_FRAME) if wants_reply else None


class PendingHandshake:
    """The server side of one client's handshake, driven by readiness events.

    Reads exactly the bytes of each frame (never past it), so whatever the
    client sends after the handshake stays in the socket for the Connection.
    """

    def __init__(
        self,
        sock: socket.socket,
        address: Any,
        steps: Steps,
        deadline: float,
        tls_context: Any = None,
    ) -> None:
        self._sock: socket.socket | None = sock
        self.address = address
        self.deadline = deadline
        self._steps = steps
        self._fd = sock.fileno()
        self._buf = bytearray()
        self._need = 4  # bytes still missing from the current header or body
        self._in_body = False
        self._tls_context = tls_context
        self._tls_pending = False
        self._would_block: tuple[type[BaseException], ...] = (BlockingIOError,)

    def fileno(self) -> int:
        return self._fd

    def begin(self) -> None:
        """Send the first frame(s) of the server's side."""
        self._sock.setblocking(False)  # type: ignore[union-attr]
        if self._tls_context is None:
            self._advance(None)
            return
        import ssl

        # TLS first (without blocking), then the authkey handshake inside it.
        self._would_block = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
        self._sock = self._tls_context.wrap_socket(
            self._sock, server_side=True, do_handshake_on_connect=False
        )
        self._tls_pending = True
        self._continue_tls()

    def _continue_tls(self) -> bool:
        """Go on with the TLS handshake; True once it and the steps are complete."""
        try:
            self._sock.do_handshake()  # type: ignore[union-attr]
        except self._would_block:
            return False
        except OSError as exc:  # ssl.SSLError is an OSError
            self._fail(f"the TLS handshake failed: {exc}", exc)
        self._tls_pending = False
        return self._advance(None)

    def _advance(self, reply: bytes | None) -> bool:
        """Feed a reply to the steps; return True when the handshake is complete."""
        while True:
            try:
                frame, wants_reply = self._steps.send(reply)
            except StopIteration:
                return True
            except AuthenticationError as exc:
                self._fail(str(exc), exc)
            except BaseException:
                self.close()
                raise
            if frame is not None:
                self._send_frame(frame)
            if wants_reply:
                return False
            reply = None

    def _send_frame(self, frame: bytes) -> None:
        data = struct.pack("!i", len(frame)) + frame
        try:
            sent = self._sock.send(data)  # type: ignore[union-attr]
        except OSError as exc:
            self._fail(f"could not send to the client: {exc}", exc)
        if sent != len(data):  # a fresh socket's buffer holds far more than this
            self._fail("the client does not read its handshake")

    def on_readable(self) -> bool:
        """Read what has arrived; return True once the client is authenticated.

        Raises:
            AuthenticationError: the client failed, closed, or sent a bad frame.
        """
        if self._tls_pending:
            if self._continue_tls():
                self._sock.setblocking(True)  # type: ignore[union-attr]
                return True
            return False
        # A TLS socket may hold decrypted bytes the fd no longer signals: read on.
        while True:
            if self._read_some():
                self._sock.setblocking(True)  # type: ignore[union-attr]
                return True
            pending = getattr(self._sock, "pending", None)
            if pending is None or not pending():
                return False

    def _read_some(self) -> bool:
        try:
            chunk = self._sock.recv(self._need)  # type: ignore[union-attr]
        except self._would_block:
            return False
        except OSError as exc:
            self._fail(f"connection error during the handshake: {exc}", exc)
        if not chunk:
            self._fail("the client closed the connection during the handshake")
        self._buf += chunk
        self._need -= len(chunk)
        if self._need:
            return False
        if not self._in_body:
            (length,) = struct.unpack("!i", self._buf)
            if length < 0 or length > MAX_FRAME:
                self._fail(
                    f"the client sent a frame header of {length} bytes "
                    f"(at most {MAX_FRAME} are allowed before authentication)"
                )
            self._buf.clear()
            self._in_body, self._need = True, length
            if length:
                return False
        frame = bytes(self._buf)
        self._buf.clear()
        self._in_body, self._need = False, 4
        return self._advance(frame)

    def fail_timeout(self, timeout: float) -> None:
        self._fail(f"the client did not complete the handshake within {timeout:g} s")

    def _fail(self, reason: str, cause: BaseException | None = None) -> NoReturn:
        self.close()
        who = repr(self.address) if self.address else "a local (AF_UNIX) client"
        msg = f"authentication of {who} failed: {reason}"
        raise AuthenticationError(msg) from cause

    def take_socket(self) -> socket.socket:
        sock, self._sock = self._sock, None
        assert sock is not None
        return sock

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        self._steps.close()
