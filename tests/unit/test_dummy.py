"""The thread-backed flavour (``corral.dummy``)."""

from __future__ import annotations

import threading

from corral import dummy


def test_pipe_poll_waits_for_data():
    r, w = dummy.Pipe(False)
    assert r.poll() is False
    assert r.poll(0.01) is False
    t = threading.Timer(0.05, w.send_bytes, args=(b"late",))
    t.start()
    assert r.poll(10) is True
    assert r.recv_bytes() == b"late"
    t.join(timeout=10)


def test_listener_and_client():
    with dummy.connection.Listener() as listener:
        client = dummy.connection.Client(listener.address)
        server = listener.accept()
        client.send("hi")
        assert server.recv() == "hi"


def test_process_is_a_thread_with_exitcode():
    results = []
    p = dummy.Process(target=results.append, args=(1,))
    assert p.exitcode is None
    p.start()
    p.join(timeout=10)
    assert results == [1] and p.exitcode == 0
    assert p not in dummy.active_children()
