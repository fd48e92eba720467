"""Listener and Client in one process (threads play the peers)."""

from __future__ import annotations

import os
import socket
import threading

import pytest

import corral
from corral.connection import Client, Listener


def _in_thread(fn):
    result: dict = {}

    def run():
        try:
            result["value"] = fn()
        except BaseException as exc:
            result["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    return t, result


@pytest.mark.parametrize("family", ["AF_UNIX", "AF_INET"])
@pytest.mark.parametrize("authkey", [None, b"secret"])
def test_accept_and_talk(family, authkey):
    with Listener(family=family, authkey=authkey) as listener:

        def client():
            with Client(listener.address, family=family, authkey=authkey) as conn:
                conn.send(["hello", 1])
                return conn.recv()

        t, result = _in_thread(client)
        with listener.accept() as conn:
            assert conn.recv() == ["hello", 1]
            conn.send("welcome")
        t.join(timeout=10)
        assert result == {"value": "welcome"}
        if family == "AF_INET":
            assert listener.last_accepted[0] == "127.0.0.1"


def test_address_families_and_types():
    assert corral.connection.address_type(("localhost", 1)) == "AF_INET"
    assert corral.connection.address_type("/tmp/x") == "AF_UNIX"
    assert corral.connection.address_type(r"\\.\pipe\x") == "AF_PIPE"
    with pytest.raises(ValueError, match="unrecognized"):
        corral.connection.address_type(12)
    with pytest.raises(ValueError, match="not recognized"):
        Listener(family="AF_PIPE")
    with pytest.raises(TypeError, match="authkey should be a byte string"):
        Listener(authkey="text")


def test_unix_listener_removes_its_socket_file():
    listener = Listener(family="AF_UNIX")
    path = listener.address
    assert os.path.exists(path)
    listener.close()
    assert not os.path.exists(path)
    with pytest.raises(OSError, match="closed"):
        listener.accept()


def test_abstract_unix_address():
    name = "\0corral-test-" + os.urandom(6).hex()
    with Listener(name) as listener:
        t, result = _in_thread(lambda: Client(name).close())
        listener.accept().close()
        t.join(timeout=10)
        assert "error" not in result


def test_inet_port_zero_gets_a_real_port():
    with Listener(("127.0.0.1", 0)) as listener:
        host, port = listener.address
        assert host == "127.0.0.1" and port > 0


def test_wrong_authkey_fails_on_both_sides():
    with Listener(authkey=b"right") as listener:
        t, result = _in_thread(lambda: Client(listener.address, authkey=b"wrong"))
        with pytest.raises(corral.AuthenticationError, match="digest received was wrong"):
            listener.accept()
        t.join(timeout=10)
        assert isinstance(result["error"], corral.AuthenticationError)
        assert "rejected" in str(result["error"])


def test_client_with_key_against_listener_without_key_fails():
    with Listener() as listener:
        t, result = _in_thread(lambda: Client(listener.address, authkey=b"key"))
        with listener.accept() as conn:
            conn.send_bytes(b"not a challenge")
            t.join(timeout=10)
        assert isinstance(result["error"], corral.AuthenticationError)


def test_refused_connection():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        Client(("127.0.0.1", port))
