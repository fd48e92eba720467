"""corral and the stdlib side by side: same wire protocol, same errors for misuse."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection as stdlib_connection
import threading

import pytest

import corral
import corral.connection as corral_connection

KEY = b"shared-key"


@pytest.mark.parametrize(
    ("server", "client"),
    [
        (corral_connection, stdlib_connection),
        (stdlib_connection, corral_connection),
    ],
    ids=["corral-listener-stdlib-client", "stdlib-listener-corral-client"],
)
@pytest.mark.parametrize("family", ["AF_UNIX", "AF_INET"])
def test_authenticated_interop(server, client, family):
    with server.Listener(family=family, authkey=KEY) as listener:
        replies = []

        def run_client():
            with client.Client(listener.address, family=family, authkey=KEY) as conn:
                conn.send({"n": 1, "big": b"z" * 200_000})
                replies.append(conn.recv())
                conn.send_bytes(b"raw")

        t = threading.Thread(target=run_client)
        t.start()
        with listener.accept() as conn:
            assert conn.recv() == {"n": 1, "big": b"z" * 200_000}
            conn.send(("ok", 2))
            assert conn.recv_bytes() == b"raw"
        t.join(timeout=10)
        assert replies == [("ok", 2)]


@pytest.mark.parametrize(
    ("server", "client"),
    [
        (corral_connection, stdlib_connection),
        (stdlib_connection, corral_connection),
    ],
    ids=["corral-listener", "stdlib-listener"],
)
def test_wrong_key_interop(server, client):
    with server.Listener(authkey=KEY) as listener:
        errors = []

        def run_client():
            try:
                client.Client(listener.address, authkey=b"other")
            except Exception as exc:
                errors.append(exc)

        t = threading.Thread(target=run_client)
        t.start()
        with pytest.raises(Exception, match="digest") as info:
            listener.accept()
        t.join(timeout=10)
        assert type(info.value).__name__ == "AuthenticationError"
        assert type(errors[0]).__name__ == "AuthenticationError"


def _misuse(mp):
    """Misuse the Process API and collect (exception type, message) for each."""
    out = {}
    p = mp.get_context("fork").Process(target=int)
    for name, call in [("join-unstarted", p.join), ("close-unstarted", p.close)]:
        try:
            call()
            out[name] = None
        except Exception as exc:
            out[name] = (type(exc).__name__, str(exc))
    q = mp.get_context("fork").Process(target=int)
    q.start()
    try:
        q.start()
    except Exception as exc:
        out["start-twice"] = (type(exc).__name__, str(exc))
    q.join()
    q.close()
    try:
        q.is_alive()
    except Exception as exc:
        out["use-after-close"] = (type(exc).__name__, str(exc))
    try:
        mp.get_context("nope")
    except Exception as exc:
        out["bad-context"] = (type(exc).__name__, str(exc))
    try:
        mp.Process(group=1)
    except Exception as exc:
        out["group"] = (type(exc).__name__, str(exc))
    return out


def test_process_misuse_raises_like_the_stdlib():
    assert _misuse(corral) == _misuse(multiprocessing)


def test_pipe_misuse_raises_like_the_stdlib():
    def collect(mp):
        out = []
        r, w = mp.Pipe(duplex=False)
        for call in (
            lambda: r.send(1),
            lambda: w.recv(),
            lambda: w.send_bytes(b"x", -1),
            lambda: w.send_bytes(b"x", 0, 5),
        ):
            try:
                call()
            except Exception as exc:
                out.append((type(exc).__name__, str(exc)))
        r.close()
        try:
            r.recv()
        except Exception as exc:
            out.append((type(exc).__name__, str(exc)))
        w.close()
        return out

    assert collect(corral) == collect(multiprocessing)


def test_public_exception_hierarchy_matches():
    for name in ("ProcessError", "BufferTooShort", "TimeoutError", "AuthenticationError"):
        ours, theirs = getattr(corral, name), getattr(multiprocessing, name)
        assert [c.__name__ for c in ours.__mro__] == [c.__name__ for c in theirs.__mro__]
