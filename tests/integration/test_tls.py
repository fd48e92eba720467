"""TLS on Listener/Client and on managers, with a CA and certificate made by the test."""

from __future__ import annotations

import pickle
import ssl
import threading

import pytest
import trustme

import corral
from corral.connection import Client, Listener
from corral.managers import BaseManager, SyncManager

KEY = b"tls-test-key"
TIMEOUT = 30


@pytest.fixture(scope="module")
def contexts():
    """(server context, client context trusting the test CA, client context trusting nothing)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    stranger = ssl.create_default_context()
    stranger.load_verify_locations(cadata=trustme.CA().cert_pem.bytes().decode())
    return server, client, stranger


def serve_one(listener: Listener, results: list) -> threading.Thread:
    def run():
        try:
            with listener.accept() as conn:
                results.append(conn.recv())
                conn.send_bytes(b"y" * 300_000)
        except Exception as exc:
            results.append(exc)

    t = threading.Thread(target=run)
    t.start()
    return t


def failing_client(address, ssl_context, errors: list) -> threading.Thread:
    """A client (TLS with ssl_context, or plain) whose connection fails, into errors."""

    def run():
        try:
            Client(address, authkey=KEY, ssl_context=ssl_context)
        except (OSError, EOFError, corral.AuthenticationError) as exc:  # ssl.SSLError is OSError
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    return t


def good_exchange(listener: Listener, client_ctx) -> list:
    """A trusted TLS client sends "good" and reads the reply; what the listener received."""
    results: list = []
    served = serve_one(listener, results)
    with Client(listener.address, authkey=KEY, ssl_context=client_ctx) as conn:
        conn.send("good")
        conn.recv_bytes()
    served.join(TIMEOUT)
    return results


def test_listener_and_client_over_tls(contexts):
    server_ctx, client_ctx, _ = contexts
    with Listener(("127.0.0.1", 0), authkey=KEY, ssl_context=server_ctx) as listener:
        results: list = []
        t = serve_one(listener, results)
        with Client(listener.address, authkey=KEY, ssl_context=client_ctx) as conn:
            assert type(conn).__name__ == "TLSConnection"
            conn.send({"hello": "tls"})
            assert conn.poll(TIMEOUT)
            assert conn.recv_bytes() == b"y" * 300_000
            with pytest.raises(TypeError, match="cannot be sent to another process"):
                pickle.dumps(conn)
        t.join(TIMEOUT)
        assert results == [{"hello": "tls"}]


def test_untrusted_server_certificate_is_refused_and_the_listener_goes_on(contexts):
    server_ctx, client_ctx, stranger = contexts
    with Listener(("127.0.0.1", 0), authkey=KEY, ssl_context=server_ctx) as listener:
        errors: list = []
        t = failing_client(listener.address, stranger, errors)
        with pytest.raises(corral.AuthenticationError, match="TLS handshake failed"):
            listener.accept()
        t.join(TIMEOUT)
        assert len(errors) == 1 and "certificate verify failed" in str(errors[0])
        assert good_exchange(listener, client_ctx) == ["good"]


def test_plain_client_against_a_tls_listener_fails_without_blocking_others(contexts):
    server_ctx, client_ctx, _ = contexts
    with Listener(
        ("127.0.0.1", 0), authkey=KEY, ssl_context=server_ctx, handshake_timeout=1.0
    ) as listener:
        plain_errors: list = []
        plain = failing_client(listener.address, None, plain_errors)
        assert good_exchange(listener, client_ctx) == ["good"]
        with pytest.raises(corral.AuthenticationError):
            listener.accept()  # the plain client: timed out or refused
        plain.join(TIMEOUT)
        assert len(plain_errors) == 1


def test_contexts_of_the_wrong_side_are_refused_at_the_call(contexts):
    server_ctx, client_ctx, _ = contexts
    with pytest.raises(ValueError, match="server-side"):
        Listener(("127.0.0.1", 0), ssl_context=client_ctx)
    with pytest.raises(ValueError, match="client-side"):
        Client(("127.0.0.1", 1), ssl_context=server_ctx)
    with pytest.raises(TypeError, match="SSLContext"):
        Listener(("127.0.0.1", 0), ssl_context="cert.pem")
    with pytest.raises(ValueError, match="server_context, client_context"):
        SyncManager(ssl_context=server_ctx).start()
    with pytest.raises(ValueError, match="spawn or forkserver"):
        SyncManager(ssl_context=(server_ctx, client_ctx), ctx=corral.get_context("spawn")).start()


def fill(d):
    d["child"] = "over tls"


def test_manager_over_tls(contexts):
    server_ctx, client_ctx, stranger = contexts
    fork = corral.get_context("fork")
    with SyncManager(
        address=("127.0.0.1", 0), authkey=KEY, ssl_context=(server_ctx, client_ctx), ctx=fork
    ) as m:
        d = m.dict()
        p = fork.Process(target=fill, args=(d,))
        p.start()
        p.join(TIMEOUT)
        assert d.copy() == {"child": "over tls"}

        class Remote(BaseManager):
            pass

        Remote.register("dict")
        remote = Remote(address=m.address, authkey=KEY, ssl_context=client_ctx)
        remote.connect()
        rd = remote.dict()
        rd["k"] = 1
        assert rd.copy() == {"k": 1}
        untrusting = Remote(address=m.address, authkey=KEY, ssl_context=stranger)
        with pytest.raises(ssl.SSLError):
            untrusting.connect()
        other_thread = threading.Thread(target=fill, args=(d,))  # a new connection
        other_thread.start()
        other_thread.join(TIMEOUT)
        assert d["child"] == "over tls"
