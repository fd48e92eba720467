"""Connection, Pipe and wait within one process (no child processes)."""

from __future__ import annotations

import array
import os
import socket
import struct
import threading

import pytest

import corral
from corral.connection import Connection, Pipe, wait


@pytest.fixture(params=[True, False], ids=["duplex", "oneway"])
def pipe(request):
    a, b = Pipe(duplex=request.param)
    # For one-way pipes a is the reader and b the writer, as the stdlib.
    yield b, a
    a.close()
    b.close()


def test_send_recv_objects(pipe):
    sender, receiver = pipe
    objects = [None, 1, "text", b"bytes", [1, 2, {"a": (3, 4)}], 2**100, 1.5]
    for obj in objects:
        sender.send(obj)
    assert [receiver.recv() for _ in objects] == objects


def test_send_bytes_with_offset_and_size(pipe):
    sender, receiver = pipe
    sender.send_bytes(b"0123456789", 2, 5)
    assert receiver.recv_bytes() == b"23456"
    sender.send_bytes(array.array("i", [1, 2, 3]), 4)  # offset in bytes
    assert receiver.recv_bytes() == array.array("i", [2, 3]).tobytes()
    sender.send_bytes(b"")
    assert receiver.recv_bytes() == b""


@pytest.mark.parametrize(
    ("offset", "size", "message"),
    [
        (-1, None, "offset is negative"),
        (11, None, "buffer length < offset"),
        (0, -1, "size is negative"),
        (5, 6, "buffer length < offset \\+ size"),
    ],
)
def test_send_bytes_bad_range(pipe, offset, size, message):
    sender, _ = pipe
    with pytest.raises(ValueError, match=message):
        sender.send_bytes(b"0123456789", offset, size)


def test_recv_bytes_into(pipe):
    sender, receiver = pipe
    buf = array.array("i", [0] * 5)
    sender.send_bytes(array.array("i", [7, 8]))
    assert receiver.recv_bytes_into(buf, 4) == 8  # bytes, as the stdlib
    assert list(buf) == [0, 7, 8, 0, 0]


def test_recv_bytes_into_too_short_carries_message(pipe):
    sender, receiver = pipe
    sender.send_bytes(b"x" * 40)
    with pytest.raises(corral.BufferTooShort) as info:
        receiver.recv_bytes_into(bytearray(10))
    assert info.value.args[0] == b"x" * 40


def test_recv_bytes_into_bad_offset(pipe):
    _, receiver = pipe
    with pytest.raises(ValueError, match="negative offset"):
        receiver.recv_bytes_into(bytearray(4), -1)
    with pytest.raises(ValueError, match="offset too large"):
        receiver.recv_bytes_into(bytearray(4), 5)


def test_recv_bytes_maxlength_breaks_the_connection(pipe):
    sender, receiver = pipe
    sender.send_bytes(b"x" * 100)
    with pytest.raises(OSError, match="bad message length"):
        receiver.recv_bytes(10)
    # The rest of the message is still in the stream: the end can no longer be read.
    with pytest.raises(OSError):
        receiver.recv_bytes()


def test_recv_bytes_negative_maxlength(pipe):
    _, receiver = pipe
    with pytest.raises(ValueError, match="negative maxlength"):
        receiver.recv_bytes(-1)


def test_eof_after_peer_closes(pipe):
    sender, receiver = pipe
    sender.send("last")
    sender.close()
    assert receiver.recv() == "last"
    with pytest.raises(EOFError):
        receiver.recv()


def test_eof_in_the_middle_of_a_message_is_an_error():
    r, w = Pipe(duplex=False)
    os.write(w.fileno(), struct.pack("!i", 100) + b"partial")
    w.close()
    with pytest.raises(OSError, match="end of file during message"):
        r.recv_bytes()
    r.close()


def test_poll(pipe):
    sender, receiver = pipe
    assert receiver.poll() is False
    assert receiver.poll(0.01) is False
    sender.send(1)
    assert receiver.poll(None) is True
    assert receiver.recv() == 1
    assert receiver.poll(0) is False


def test_one_way_pipe_directions():
    r, w = Pipe(duplex=False)
    assert (r.readable, r.writable, w.readable, w.writable) == (True, False, False, True)
    with pytest.raises(OSError, match="connection is read-only"):
        r.send(1)
    with pytest.raises(OSError, match="connection is write-only"):
        w.recv()
    with pytest.raises(OSError, match="connection is write-only"):
        w.poll()
    r.close()
    w.close()


def test_closed_connection_raises_and_close_is_idempotent():
    a, b = Pipe()
    a.close()
    a.close()
    assert a.closed
    for call in (lambda: a.send(1), a.recv, a.poll, a.fileno, lambda: a.send_bytes(b"")):
        with pytest.raises(OSError, match="handle is closed"):
            call()
    b.close()


def test_context_manager_closes():
    a, b = Pipe()
    with a, b:
        a.send("x")
        assert b.recv() == "x"
    assert a.closed and b.closed


def test_constructor_validation():
    with pytest.raises(ValueError, match="invalid handle"):
        Connection(-1)
    with pytest.raises(ValueError, match="at least one of"):
        Connection(0, readable=False, writable=False)


def test_many_small_messages_arrive_in_order(pipe):
    sender, receiver = pipe
    count = 5000

    def produce():
        for i in range(count):
            sender.send(i)

    t = threading.Thread(target=produce)
    t.start()
    assert [receiver.recv() for _ in range(count)] == list(range(count))
    t.join(timeout=30)


def test_large_messages_mixed_with_small(pipe):
    sender, receiver = pipe
    big = os.urandom(3 << 20)
    messages = [b"a", big, b"b", big[: (1 << 16) + 7], b""]

    def produce():
        for m in messages:
            sender.send_bytes(m)
        sender.send({"big": big})

    t = threading.Thread(target=produce)
    t.start()
    assert [receiver.recv_bytes() for _ in messages] == messages
    assert receiver.recv() == {"big": big}
    t.join(timeout=30)


@pytest.mark.slow
def test_message_larger_than_2_gib():
    size = (2 << 30) + 123
    payload = bytearray(size)
    payload[-1] = 7
    payload[0] = 3
    a, b = Pipe()

    def produce():
        a.send_bytes(payload)

    t = threading.Thread(target=produce)
    t.start()
    received = b.recv_bytes()
    t.join(timeout=120)
    assert len(received) == size
    assert received[0] == 3 and received[-1] == 7
    a.close()
    b.close()


def test_garbage_length_header_is_an_error_not_a_hang():
    r, w = Pipe(duplex=False)
    os.write(w.fileno(), struct.pack("!i", -5))
    with pytest.raises(OSError, match="bad message length"):
        r.recv_bytes()
    r.close()
    w.close()


def test_wait_returns_ready_objects():
    a, b = Pipe()
    c, d = Pipe(duplex=False)
    s1, s2 = socket.socketpair()
    rfd, wfd = os.pipe()
    assert wait([b, c, s2, rfd], timeout=0.05) == []
    a.send(1)
    s1.send(b"x")
    os.write(wfd, b"y")
    ready = wait([b, c, s2, rfd], timeout=5)
    assert set(map(id, ready)) == {id(b), id(s2), id(rfd)}
    d.close()
    assert c in wait([c], timeout=5)  # EOF counts as ready
    for obj in (a, b, c, s1, s2):
        obj.close()
    os.close(rfd)
    os.close(wfd)


def test_wait_after_partial_consumption():
    a, b = Pipe()
    a.send(1)
    a.send(2)
    assert b.recv() == 1  # message 2 is still waiting in the OS
    assert wait([b], timeout=0) == [b]
    assert b.poll()
    assert b.recv() == 2
    a.close()
    b.close()


def test_pickled_connection_gets_the_unread_messages():
    """Reading one message never takes bytes of the next: a clone gets them."""
    from corral.reduction import ForkingPickler

    a, b = Pipe()
    a.send("first")
    a.send("second")
    assert b.recv() == "first"
    clone = ForkingPickler.loads(ForkingPickler.dumps(b))
    assert clone.recv() == "second"
    for conn in (a, b, clone):
        conn.close()
    from corral import _resource_sharer

    _resource_sharer.stop()


def test_default_socket_timeout_does_not_leak_into_pipes():
    import socket as socket_module

    old = socket_module.getdefaulttimeout()
    socket_module.setdefaulttimeout(0.05)
    try:
        a, b = Pipe()
    finally:
        socket_module.setdefaulttimeout(old)
    assert os.get_blocking(a.fileno()) and os.get_blocking(b.fileno())
    t = threading.Thread(target=lambda: a.send("late"))
    t.start()
    assert b.recv() == "late"  # blocks as long as needed, no timeout
    t.join(timeout=10)
    a.close()
    b.close()


RECORD = 1 << 16  # corral._wire._LARGE: from this size on, bodies are read into the result


@pytest.mark.parametrize(
    "size", [0, 1, RECORD - 5, RECORD - 4, RECORD - 3, RECORD, RECORD + 1, 3 * RECORD + 5]
)
def test_messages_around_the_large_message_size(size):
    a, b = Pipe()
    payload = os.urandom(size)
    t = threading.Thread(
        target=lambda: [a.send_bytes(payload), a.send(payload), a.send_bytes(payload)]
    )
    t.start()
    assert b.recv_bytes() == payload
    assert b.recv() == payload
    into = bytearray(size + 3)
    assert b.recv_bytes_into(into, 3) == size
    assert into[3:] == payload
    t.join(timeout=30)
    a.close()
    b.close()


def test_a_big_message_cut_short_by_the_peer_closing_is_an_error():
    r, w = Pipe(duplex=False)
    os.write(w.fileno(), struct.pack("!i", RECORD + 100) + b"x" * (RECORD - 4))
    w.close()
    with pytest.raises(OSError, match="end of file during message"):
        r.recv_bytes()
    r.close()


def test_a_duplex_end_is_one_fd_that_reads_and_writes_like_the_stdlibs():
    # Code written for the stdlib writes raw frames to conn.fileno() and waits
    # on it for both directions (CPython's test_missing_fd_transfer does).
    a, b = Pipe()
    for mine, peer in ((a, b), (b, a)):
        os.write(mine.fileno(), struct.pack("!i", 5) + b"hello")
        assert wait([peer.fileno()], timeout=10) == [peer.fileno()]
        assert peer.recv_bytes() == b"hello"
        kind = socket.socket(fileno=os.dup(mine.fileno()))
        assert (kind.family, kind.type) == (socket.AF_UNIX, socket.SOCK_STREAM)
        kind.close()
    a.close()
    b.close()


def test_recv_handle_of_bytes_without_a_descriptor_is_a_runtime_error():
    from corral import reduction

    a, b = Pipe()
    os.write(a.fileno(), b"\0")
    assert b.poll(10)
    with pytest.raises(RuntimeError):
        reduction.recv_handle(b)
    a.close()
    b.close()
