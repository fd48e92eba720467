"""A manager facing hostile or dying clients keeps serving; a dead manager fails fast.

Each hostile case runs against a live SyncManager on TCP loopback while a good
client keeps using it: the good client's calls must all succeed, and nothing
the bad client sent before authenticating may be unpickled (the payload would
create a marker file in the manager process if it were).
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import struct
import threading
import time

import psutil
import pytest

import corral
from corral.errors import ManagerConnectionError, RemoteError
from corral.managers import SyncManager

from .scenario import Scenario

KEY = b"manager-fault-key"
TIMEOUT = 30


class Boom:
    """Unpickling this creates the file named by ``path``: proof of unpickling."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def frame(payload: bytes) -> bytes:
    return struct.pack("!i", len(payload)) + payload


@pytest.fixture
def manager():
    m = SyncManager(address=("127.0.0.1", 0), authkey=KEY)
    m.start()
    yield m
    m.shutdown()
    m.join()  # drops the process object (and its exit sentinel) now


def good_calls(m: SyncManager, count: int = 20) -> None:
    """A fresh thread (so a fresh connection and handshake) using the manager."""
    errors: list[BaseException] = []

    def work():
        try:
            d = m.dict()
            for i in range(count):
                d[i] = i * i
            assert d[count - 1] == (count - 1) ** 2
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=work)
    started = time.monotonic()
    t.start()
    t.join(TIMEOUT)
    assert not t.is_alive(), "a good client was kept waiting"
    assert not errors, errors
    # Served at once, not after some handshake timeout.
    assert time.monotonic() - started < 5.0


BAD_BEFORE_AUTH = [
    ("garbage", b"\x00\x00\x00\x05hello-garbage-garbage", False),
    ("absurd-length", struct.pack("!i", 2**31 - 1) + b"x", False),
    ("negative-length", struct.pack("!i", -7), False),
    ("truncated-frame", struct.pack("!i", 100) + b"short", True),
    ("pickle-instead-of-answer", None, False),  # a Boom pickle, built per test
    ("closes-at-once", b"", True),
    ("silent", b"", False),
]


@pytest.mark.parametrize(
    ("payload", "close"), [c[1:] for c in BAD_BEFORE_AUTH], ids=[c[0] for c in BAD_BEFORE_AUTH]
)
def test_bad_client_before_authentication(manager, tmp_path, payload, close):
    marker = tmp_path / "unpickled"
    if payload is None:
        payload = frame(pickle.dumps(Boom(str(marker))))
    bad = socket.create_connection(manager.address)
    try:
        bad.sendall(payload)
        if close:
            bad.close()
        good_calls(manager)
    finally:
        bad.close()
    good_calls(manager)
    assert not marker.exists()


def test_wrong_authkey_is_refused_and_others_served(manager):
    wrong = SyncManager(address=manager.address, authkey=b"not the key")
    with pytest.raises(corral.AuthenticationError):
        wrong.connect()
    good_calls(manager)


def test_authenticated_garbage_gets_an_error_reply_and_the_connection_survives(manager):
    conn = corral.connection.Client(manager.address, authkey=KEY)
    with conn:
        conn.send_bytes(b"\x00not a pickle at all")
        kind, text = pickle.loads(conn.recv_bytes())
        assert kind == "error" and "cannot decode the request" in text
        conn.send_bytes(pickle.dumps(("no-such-request", 1)))
        kind, text = pickle.loads(conn.recv_bytes())
        assert kind == "error" and "not a manager request" in text
        conn.send_bytes(pickle.dumps(("call", "ffff", "x", (), {})))
        kind, text = pickle.loads(conn.recv_bytes())
        assert kind == "error" and "no shared object" in text
        conn.send_bytes(pickle.dumps(("ping",)))
        assert pickle.loads(conn.recv_bytes()) == ("ok", None)
    good_calls(manager)


def test_authenticated_absurd_frame_closes_only_that_connection(manager):
    conn = corral.connection.Client(manager.address, authkey=KEY)
    sock = socket.socket(fileno=os.dup(conn.fileno()))
    conn.close()
    with sock:
        sock.sendall(struct.pack("!i", -5))
        sock.settimeout(TIMEOUT)
        assert sock.recv(10) == b""  # the server hung up on it
    good_calls(manager)


def send_half_a_request_and_die(address, authkey):
    conn = corral.connection.Client(address, authkey=authkey)
    os.write(conn.fileno(), struct.pack("!i", 1000) + b"only ten b")
    os.kill(os.getpid(), signal.SIGKILL)


def test_client_killed_mid_request(manager):
    p = corral.get_context("fork").Process(
        target=send_half_a_request_and_die, args=(manager.address, KEY)
    )
    p.start()
    p.join(TIMEOUT)
    assert p.exitcode == -signal.SIGKILL
    good_calls(manager)


def hammer(d, lock, worker, count):
    for i in range(count):
        d[f"{worker}-{i}"] = i
        assert d[f"{worker}-{i}"] == i
    with lock:
        d["done"] = d.get("done", 0) + 1


def test_many_clients_at_once(manager):
    ctx = corral.get_context("fork")
    d, lock = manager.dict(), manager.Lock()
    workers = [ctx.Process(target=hammer, args=(d, lock, w, 100)) for w in range(8)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(TIMEOUT)
        assert p.exitcode == 0
    assert d["done"] == 8
    assert len(d) == 8 * 100 + 1


def test_killed_manager_fails_fast():
    m = corral.Manager()
    d, q = m.dict(), m.Queue()
    d["x"] = 1
    os.kill(m._process.pid, signal.SIGKILL)
    m._process.join(TIMEOUT)
    with pytest.raises(ManagerConnectionError):
        d["x"]
    with pytest.raises(ManagerConnectionError):
        q.get(timeout=1)
    with pytest.raises((ManagerConnectionError, RemoteError)):
        m.dict()
    m.shutdown()  # nothing to stop any more: returns at once


MANAGER_PARENT = """
if __name__ == "__main__":
    corral.set_start_method(sys.argv[1])
    m = corral.Manager()
    d = m.dict()
    d["alive"] = True
    print("manager", m._process.pid, flush=True)
    threading.Event().wait(60)
"""


@pytest.mark.parametrize("method", corral.get_all_start_methods())
def test_manager_does_not_outlive_a_killed_parent(tmp_path, method):
    scenario = Scenario(tmp_path, MANAGER_PARENT, method)
    line = scenario.wait_for_line("manager")
    manager_proc = psutil.Process(int(line.split()[1]))
    os.kill(scenario.proc.pid, signal.SIGKILL)
    scenario.proc.wait(10)
    _gone, alive = psutil.wait_procs([manager_proc], timeout=5.0)
    for proc in alive:
        proc.kill()
    assert not alive, "the manager outlived its parent by more than 5 s"
    scenario.finish(timeout=10)


SHM_PARENT = """
from corral.managers import SharedMemoryManager
if __name__ == "__main__":
    smm = SharedMemoryManager()
    smm.start()
    shm = smm.SharedMemory(4096)
    print("segment", shm.name, smm._process.pid, flush=True)
    threading.Event().wait(60)
"""


def test_shared_memory_released_when_the_parent_is_killed(tmp_path):
    scenario = Scenario(tmp_path, SHM_PARENT)
    _, name, pid = scenario.wait_for_line("segment").split()
    path = f"/dev/shm/{name.lstrip('/')}"
    assert os.path.exists(path)
    os.kill(scenario.proc.pid, signal.SIGKILL)
    scenario.proc.wait(10)
    psutil.wait_procs([psutil.Process(int(pid))], timeout=5.0)
    scenario.finish(timeout=10)
    deadline = time.monotonic() + 5
    while os.path.exists(path) and time.monotonic() < deadline:
        threading.Event().wait(0.05)  # the resource tracker may be the one to unlink it
    assert not os.path.exists(path)
