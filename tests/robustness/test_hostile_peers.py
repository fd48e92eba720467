"""A listener facing clients that misbehave keeps serving the good ones.

Table: what the bad client sends, and the error ``accept()`` must raise for it.
Each case puts a bad client first and a good client second: the good client
must still be served, nothing from the bad one is ever unpickled, and the
bad client's failure is reported as AuthenticationError naming the cause.
"""

from __future__ import annotations

import os
import pickle
import re
import socket
import struct
import threading
import time

import pytest

import corral
from corral.connection import Client, Listener

KEY = b"listener-key"


UNPICKLED = threading.Event()


def _mark_unpickled() -> None:
    UNPICKLED.set()


class Boom:
    """Unpickling this would set UNPICKLED: proof that nothing was unpickled."""

    def __reduce__(self):
        return (_mark_unpickled, ())


def frame(payload: bytes) -> bytes:
    return struct.pack("!i", len(payload)) + payload


BAD_CLIENTS = [
    # (id, bytes the bad client sends after connecting, then close?, error regex)
    ("garbage", b"\x00\x00\x00\x05hello-garbage-garbage", False, "digest received was wrong"),
    ("absurd-length", struct.pack("!i", 2**31 - 1) + b"x", False, "frame header of 2147483647"),
    ("negative-length", struct.pack("!i", -7), False, "frame header of -7"),
    # A client that is gone may be noticed while sending it the challenge.
    (
        "truncated-frame",
        struct.pack("!i", 100) + b"short",
        True,
        "closed the connection|could not send",
    ),
    ("pickle-instead-of-answer", frame(pickle.dumps(Boom())), False, "digest received was wrong"),
    ("closes-at-once", b"", True, "closed the connection|could not send"),
]


@pytest.mark.parametrize(
    ("payload", "close", "error"), [c[1:] for c in BAD_CLIENTS], ids=[c[0] for c in BAD_CLIENTS]
)
def test_bad_client_then_good_client(payload, close, error):
    UNPICKLED.clear()
    with Listener(("127.0.0.1", 0), authkey=KEY, handshake_timeout=5) as listener:
        bad = socket.create_connection(listener.address)
        bad.sendall(payload)
        if close:
            bad.close()
        good_result: dict = {}

        def good_client():
            with Client(listener.address, authkey=KEY) as conn:
                conn.send("from the good client")
                good_result["reply"] = conn.recv()

        served = None
        failures = []
        t = threading.Thread(target=good_client)
        t.start()
        deadline = time.monotonic() + 20
        while served is None and time.monotonic() < deadline:
            try:
                conn = listener.accept()
            except corral.AuthenticationError as exc:
                failures.append(str(exc))
                continue
            with conn:
                served = conn.recv()
                conn.send("ok")
        t.join(timeout=10)
        bad.close()
        assert served == "from the good client"
        assert good_result == {"reply": "ok"}
        assert any(re.search(error, f) for f in failures), failures
        assert not UNPICKLED.is_set()


def test_silent_client_does_not_block_others_and_times_out():
    with Listener(("127.0.0.1", 0), authkey=KEY, handshake_timeout=1.5) as listener:
        silent = socket.create_connection(listener.address)
        t = threading.Thread(target=lambda: Client(listener.address, authkey=KEY).close())
        t.start()
        started = time.monotonic()
        listener.accept().close()  # the good client, while the silent one waits
        assert time.monotonic() - started < 1.0
        t.join(timeout=10)
        with pytest.raises(corral.AuthenticationError, match=r"within 1\.5 s"):
            listener.accept()
        silent.close()


def test_many_clients_at_once():
    with Listener(("127.0.0.1", 0), authkey=KEY, backlog=64) as listener:
        count = 40
        results = []

        def client(i):
            with Client(listener.address, authkey=KEY) as conn:
                conn.send(i)
                results.append(conn.recv())

        threads = [threading.Thread(target=client, args=(i,)) for i in range(count)]
        for t in threads:
            t.start()
        for _ in range(count):
            with listener.accept() as conn:
                conn.send(conn.recv() * 2)
        for t in threads:
            t.join(timeout=10)
        assert sorted(results) == [2 * i for i in range(count)]


def _running_forkserver():
    """The forkserver context and its server, started by one child."""
    from corral import _forkserver

    ctx = corral.get_context("forkserver")
    p = ctx.Process(target=int)
    p.start()
    p.join(timeout=30)
    return ctx, _forkserver._forkserver


def test_forkserver_refuses_requests_without_the_key():
    """A process that reaches the forkserver socket but lacks its key gets no fork."""

    ctx, server = _running_forkserver()
    address = server._address
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(address)
        conn = corral.connection.Connection(sock.detach())
        with pytest.raises(corral.AuthenticationError):
            corral.connection.answer_challenge(conn, b"not the server key")
        conn.close()
    # The server is still alive and serves legitimate requests.
    q = ctx.Process(target=int)
    q.start()
    q.join(timeout=30)
    assert q.exitcode == 0


def test_forkserver_client_refused_after_sending_its_fds_forks_nothing():
    """Clients send their fds before the verdict: a wrong key still gets no child, and an error."""
    import psutil

    from corral import _forkserver

    ctx, server = _running_forkserver()
    children_before = {c.pid for c in psutil.Process(server._pid).children()}
    r, w = os.pipe()
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(server._address)
            conn = corral.connection.Connection(os.dup(sock.fileno()))
            try:
                with pytest.raises((corral.AuthenticationError, EOFError, OSError)) as caught:
                    _forkserver._answer_and_send_fds(conn, sock, b"not the server key", [r])
            finally:
                conn.close()
        assert not isinstance(caught.value, EOFError), "the server gave no verdict"
        assert {c.pid for c in psutil.Process(server._pid).children()} <= children_before
    finally:
        os.close(r)
        os.close(w)
    q = ctx.Process(target=int)
    q.start()
    q.join(timeout=30)
    assert q.exitcode == 0
