"""Big buffers through shared memory (issue 14): queues and connections under every start method.

A message with large protocol-5 buffers (NumPy arrays, ``pickle.PickleBuffer``)
travels in a segment of its own and the receiver gets NumPy arrays as views of
the segment's mapping (no copy); bare ``PickleBuffer`` objects arrive as the
stdlib's ``bytes``/``bytearray``. Each test checks what arrives, its type and
writability, and where an array's memory lives.
"""

from __future__ import annotations

import os
import pickle
import threading

import pytest

import corral
from corral.connection import Client, Listener

np = pytest.importorskip("numpy", reason="the big-buffer tests send NumPy arrays")

TIMEOUT = 60
MiB = 1 << 20


def mapped_from_segment(array) -> bool:
    """Whether the array's memory is a mapping of a corral segment (zero-copy receive)."""
    address = array.__array_interface__["data"][0]
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if start <= address < end:
                return len(fields) > 5 and "/dev/shm/corral-" in fields[5]
    return False


def payload():
    """One message mixing small and big parts of every buffer kind.

    No read-only array: a message holding one is pickled as the stdlib does
    (in band, so it arrives writable); test_big_buffers checks that.
    """
    return {
        "small": list(range(10)),
        "array": np.arange(4 * MiB // 8, dtype=np.float64),
        "small array": np.arange(100, dtype=np.int32),
        "bytes": b"b" * (2 * MiB),
        "bytearray": bytearray(b"a" * (2 * MiB)),
        "picklebuffer": pickle.PickleBuffer(bytearray(b"p" * (2 * MiB))),
        "readonly picklebuffer": pickle.PickleBuffer(b"r" * (2 * MiB)),
        "view of an array": pickle.PickleBuffer(memoryview(np.ones(MiB // 8))),
        "text": "t" * (2 * MiB),
    }


def describe(message) -> dict:
    """What arrived: type, writability and (for arrays) where the memory lives."""
    out = {}
    for key, value in message.items():
        entry = {"type": type(value).__name__}
        if isinstance(value, np.ndarray):
            entry["writeable"] = value.flags.writeable
            entry["mapped"] = mapped_from_segment(value)
            entry["sum"] = float(value.sum())
        elif isinstance(value, (bytes, bytearray, str)):
            entry["len"] = len(value)
        out[key] = entry
    return out


def expected() -> dict:
    """The description of payload() as received: the stdlib's types, arrays mapped."""
    sent = payload()
    return {
        "small": {"type": "list"},
        "array": {
            "type": "ndarray",
            "writeable": True,
            "mapped": True,
            "sum": float(sent["array"].sum()),
        },
        "small array": {
            "type": "ndarray",
            "writeable": True,
            "mapped": False,
            "sum": float(sent["small array"].sum()),
        },
        "bytes": {"type": "bytes", "len": 2 * MiB},
        "bytearray": {"type": "bytearray", "len": 2 * MiB},
        "picklebuffer": {"type": "bytearray", "len": 2 * MiB},
        "readonly picklebuffer": {"type": "bytes", "len": 2 * MiB},
        "view of an array": {"type": "bytearray", "len": MiB},
        "text": {"type": "str", "len": 2 * MiB},
    }


def assert_equal_payload(got) -> None:
    sent = payload()
    assert got.keys() == sent.keys()
    for key, value in sent.items():
        if isinstance(value, np.ndarray):
            assert np.array_equal(got[key], value), key
        elif isinstance(value, pickle.PickleBuffer):
            assert bytes(got[key]) == bytes(value.raw()), key
        else:
            assert got[key] == value, key


# -- targets (module level: importable under spawn and forkserver) -------------


def echo_queue(inbox, outbox):
    message = inbox.get(timeout=TIMEOUT) if hasattr(inbox, "qsize") else inbox.get()
    outbox.put(describe(message))
    outbox.put(message)
    if hasattr(inbox, "task_done"):
        inbox.task_done()


def send_payload(conn):
    conn.send(payload())
    conn.send("after")
    conn.close()


def receive_and_describe(conn, report):
    report.send(describe(conn.recv()))
    report.send(conn.recv())


def put_payload(q):
    q.put(payload())


def get_and_report(q, report):
    report.send(describe(q.get()))


# -- queues --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Queue", "SimpleQueue", "JoinableQueue"])
def test_queue_round_trip_maps_arrays_and_keeps_types(ctx, kind):
    inbox, outbox = getattr(ctx, kind)(), getattr(ctx, kind)()
    p = ctx.Process(target=echo_queue, args=(inbox, outbox))
    p.start()
    inbox.put(payload())
    in_child = outbox.get(timeout=TIMEOUT) if kind != "SimpleQueue" else outbox.get()
    back = outbox.get(timeout=TIMEOUT) if kind != "SimpleQueue" else outbox.get()
    if kind == "JoinableQueue":
        inbox.join()
    p.join(TIMEOUT)
    assert p.exitcode == 0
    assert in_child == expected()
    assert describe(back) == expected()
    assert_equal_payload(back)
    for q in (inbox, outbox):
        q.close()
        if kind != "SimpleQueue":
            q.join_thread()


def test_queue_between_siblings(ctx):
    """One child puts, a sibling (not its descendant) gets."""
    q = ctx.Queue()
    r, w = ctx.Pipe(duplex=False)
    getter = ctx.Process(target=get_and_report, args=(q, w))
    putter = ctx.Process(target=put_payload, args=(q,))
    getter.start()
    putter.start()
    w.close()
    assert r.poll(TIMEOUT)
    assert r.recv() == expected()
    for p in (putter, getter):
        p.join(TIMEOUT)
        assert p.exitcode == 0
    r.close()
    q.close()
    q.join_thread()


def test_small_messages_and_small_arrays_stay_in_the_ring(monkeypatch):
    from corral import _segment

    made = []
    write = _segment.write
    monkeypatch.setattr(_segment, "write", lambda *a: made.append(a[0]) or write(*a))
    q = corral.SimpleQueue()
    for obj in (b"x" * 1024, 8, np.ones(1000), [np.ones(1000)] * 3):
        q.put(obj)
        got = q.get()
        assert type(got) is type(obj)
    assert made == []
    q.put(np.ones(MiB // 8))  # 1 MiB: a segment
    assert mapped_from_segment(q.get())
    assert made == ["corral-q-"]


def test_the_mapping_is_released_with_the_last_array():
    q = corral.SimpleQueue()
    q.put(np.ones(MiB))
    got = q.get()
    view = got[10:20]
    del got
    assert mapped_from_segment(view)
    address = view.__array_interface__["data"][0]
    del view
    with open("/proc/self/maps") as maps:
        assert not any(
            int(line.split("-")[0], 16) <= address < int(line.split()[0].split("-")[1], 16)
            and "/dev/shm/corral-" in line
            for line in maps
        )


@pytest.mark.slow
def test_one_gibibyte_through_a_queue():
    """1 GiB in one message (2 GiB of memory at the peak: the array and its segment)."""
    q = corral.Queue()
    big = np.full(1 << 27, 7, dtype=np.int64)
    q.put(big)
    got = q.get(timeout=TIMEOUT)
    assert got.shape == big.shape and got.dtype == big.dtype
    assert mapped_from_segment(got)
    assert int(got[:: 1 << 12].sum()) == 7 * (1 << 15)
    assert got[-1] == 7
    del got, big
    q.close()
    q.join_thread()


# -- connections ---------------------------------------------------------------


@pytest.mark.parametrize("duplex", [True, False], ids=["duplex", "one-way"])
def test_pipe_from_a_child_maps_arrays_and_keeps_types(ctx, duplex):
    r, w = ctx.Pipe(duplex=duplex)
    p = ctx.Process(target=send_payload, args=(w,))
    p.start()
    w.close()
    assert r.poll(TIMEOUT)
    got = r.recv()
    assert describe(got) == expected()
    assert_equal_payload(got)
    assert r.recv() == "after"
    p.join(TIMEOUT)
    assert p.exitcode == 0
    r.close()


def test_pipe_to_a_child(ctx):
    r, w = ctx.Pipe(duplex=False)
    report_r, report_w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=receive_and_describe, args=(r, report_w))
    p.start()
    r.close()
    report_w.close()
    w.send(payload())
    w.send("after")
    assert report_r.poll(TIMEOUT)
    assert report_r.recv() == expected()
    assert report_r.recv() == "after"
    p.join(TIMEOUT)
    assert p.exitcode == 0
    w.close()
    report_r.close()


def test_pipe_between_siblings(ctx):
    r, w = ctx.Pipe(duplex=False)
    report_r, report_w = ctx.Pipe(duplex=False)
    receiver = ctx.Process(target=receive_and_describe, args=(r, report_w))
    sender = ctx.Process(target=send_payload, args=(w,))
    receiver.start()
    sender.start()
    for conn in (r, w, report_w):
        conn.close()
    assert report_r.poll(TIMEOUT)
    assert report_r.recv() == expected()
    assert report_r.recv() == "after"
    for p in (sender, receiver):
        p.join(TIMEOUT)
        assert p.exitcode == 0
    report_r.close()


def test_a_spawned_child_may_exit_before_its_big_message_is_read(ctx):
    """The segment is handed to the parent's tracker: it outlives the child."""
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=send_payload, args=(w,))
    p.start()
    w.close()
    p.join(TIMEOUT)  # before reading anything: the old in-band send blocked here
    assert p.exitcode == 0
    got = r.recv()
    assert describe(got) == expected()
    assert r.recv() == "after"
    r.close()


@pytest.mark.parametrize("family", ["AF_UNIX", "AF_INET"])
def test_listener_and_client(family):
    """Through a Unix socket the arrays are mapped; through TCP everything stays in band."""
    with Listener(family=family, authkey=b"key") as listener:
        sent = threading.Event()

        def client():
            with Client(listener.address, family=family, authkey=b"key") as conn:
                conn.send(payload())
                conn.recv()  # keep the connection until the peer has read
            sent.set()

        thread = threading.Thread(target=client)
        thread.start()
        with listener.accept() as conn:
            got = conn.recv()
            conn.send("done")
        thread.join(TIMEOUT)
        assert sent.is_set()
    want = expected()
    if family == "AF_INET":
        want["array"]["mapped"] = False
    assert describe(got) == want
    assert_equal_payload(got)


def test_a_stdlib_connection_that_imports_corral_reads_a_big_message():
    from multiprocessing.connection import Connection as StdlibConnection

    r, w = os.pipe()
    reader = StdlibConnection(r, writable=False)
    writer = corral.connection.Connection(w, readable=False)
    received = []
    thread = threading.Thread(target=lambda: received.append(reader.recv()))
    thread.start()
    writer.send(payload())
    thread.join(TIMEOUT)
    assert describe(received[0]) == expected()
    reader.close()
    writer.close()


def test_memoryview_is_refused_like_the_stdlib_and_picklebuffer_carries_it():
    q = corral.SimpleQueue()
    view = memoryview(np.ones(MiB))
    with pytest.raises(TypeError, match=r"cannot pickle .?memoryview.? object"):
        q.put(view)
    q.put(pickle.PickleBuffer(view))
    got = q.get()
    assert type(got) is bytearray and got == bytes(view)


def test_a_stdlib_peer_that_cannot_import_corral_gets_module_not_found(tmp_path):
    """What docs/architecture.md promises: the error names corral; nothing else breaks."""
    import subprocess
    import sys

    from corral import _segment, resource_tracker

    code = (
        "import sys\n"
        "from multiprocessing.connection import Connection\n"
        "try:\n"
        "    Connection(int(sys.argv[1]), writable=False).recv()\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    r, w = os.pipe()
    # -S: no site-packages, so no corral (nor numpy) in the reader.
    reader = subprocess.Popen(
        [sys.executable, "-S", "-c", code, str(r)],
        pass_fds=(r,),
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    os.close(r)
    before = set(os.listdir("/dev/shm"))
    with corral.connection.Connection(w, readable=False) as writer:
        writer.send(pickle.PickleBuffer(bytearray(2 * MiB)))
    out, _ = reader.communicate(timeout=TIMEOUT)
    assert out.strip() == "ModuleNotFoundError No module named 'corral'"
    left = [n for n in set(os.listdir("/dev/shm")) - before if n.startswith("corral-c-")]
    assert len(left) == 1  # removed when this program ends; here, by hand
    _segment.discard("/" + left[0], resource_tracker.message_tracker()[0])
