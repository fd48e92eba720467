"""Serialization: fast path, cloudpickle fallback, registered reducers, fd passing."""

from __future__ import annotations

import os
import pickle
import socket
import threading

import pytest

import corral
from corral import reduction
from corral.errors import SerializationError
from corral.reduction import ForkingPickler


def roundtrip(obj):
    return pickle.loads(reduction._dumps(obj))


def module_level(x):
    return x + 1


def test_plain_objects_use_plain_pickle():
    data = reduction._dumps({"a": [1, 2.5, b"x"]})
    assert data == pickle.dumps({"a": [1, 2.5, b"x"]}, reduction.PROTOCOL)
    assert roundtrip(module_level)(1) == 2


def test_lambdas_closures_and_local_classes_go_by_value():
    offset = 10

    def closure(x):
        return x + offset

    class Local:
        def method(self):
            return "local"

    assert roundtrip(lambda x: x * 3)(2) == 6
    assert roundtrip(closure)(1) == 11
    assert roundtrip(Local)().method() == "local"
    assert roundtrip(Local()).method() == "local"


def test_unpicklable_object_error_names_the_part():
    payload = {"ok": 1, "bad": [1, threading.Lock()]}
    with pytest.raises(SerializationError, match=r"obj\['bad'\]\[1\] -> <unlocked _thread.lock"):
        reduction._dumps(payload)
    with pytest.raises(TypeError):  # also a TypeError, as the stdlib raises
        reduction._dumps(threading.Lock())
    with pytest.raises(pickle.PicklingError):
        reduction._dumps(threading.Lock())


def test_error_names_an_attribute():
    class Holder:
        def __init__(self):
            self.lock = threading.Lock()

    with pytest.raises(SerializationError, match=r"obj\.lock -> "):
        reduction._dumps(Holder())


def test_registered_reducer_wins_over_default_pickling(monkeypatch):
    class Point:
        def __init__(self, x):
            self.x = x

    monkeypatch.setattr(reduction, "_custom_reducers_registered", False)
    monkeypatch.setattr(ForkingPickler, "_extra_reducers", dict(ForkingPickler._extra_reducers))
    ForkingPickler.register(Point, lambda p: (str, (f"Point({p.x})",)))
    assert reduction._custom_reducers_registered
    assert roundtrip(Point(3)) == "Point(3)"
    assert ForkingPickler.loads(ForkingPickler.dumps(Point(4))) == "Point(4)"


def test_forking_pickler_instance_api():
    import io

    buf = io.BytesIO()
    ForkingPickler(buf).dump(lambda: "by value")
    assert pickle.loads(buf.getvalue())() == "by value"
    buf = io.BytesIO()
    reduction.dump([1, 2], buf)
    assert pickle.loads(buf.getvalue()) == [1, 2]


def test_sendfds_recvfds_roundtrip():
    a, b = socket.socketpair()
    r, w = os.pipe()
    reduction.sendfds(a, [r, w])
    got = reduction.recvfds(b, 2)
    assert len(got) == 2
    os.write(got[1], b"through a passed fd")
    assert os.read(r, 100) == b"through a passed fd"
    assert not os.get_inheritable(got[0])  # MSG_CMSG_CLOEXEC
    for fd in (r, w, *got):
        os.close(fd)
    a.close()
    b.close()


def test_recvfds_eof():
    a, b = socket.socketpair()
    a.close()
    with pytest.raises(EOFError):
        reduction.recvfds(b, 1)
    b.close()


def test_send_handle_after_buffered_messages():
    """An fd sent between messages arrives with its own record."""
    a, b = corral.Pipe()
    r, w = os.pipe()
    a.send("before")
    reduction.send_handle(a, w, os.getpid())
    a.send("after")
    assert b.recv() == "before"
    fd = reduction.recv_handle(b)
    assert b.recv() == "after"
    os.write(fd, b"ok")
    assert os.read(r, 2) == b"ok"
    for x in (r, w, fd):
        os.close(x)
    a.close()
    b.close()


def test_socket_pickled_through_the_resource_sharer():
    from corral import _resource_sharer

    s1, s2 = socket.socketpair()
    clone = pickle.loads(reduction._dumps(s2))
    s1.sendall(b"ping")
    assert clone.recv(4) == b"ping"
    for s in (s1, s2, clone):
        s.close()
    _resource_sharer.stop()


def test_abstract_reducer_defaults():
    reducer = reduction.AbstractReducer()
    assert reducer.ForkingPickler is ForkingPickler
    assert corral.get_context().reducer is reduction


class _Reduced:
    def __init__(self, x):
        self.x = x


def test_registered_reducers_keep_the_plain_pickle_fast_path():
    # Registering a reducer (sharedctypes does, for every shared ctypes type)
    # must not send everything down the slower cloudpickle path afterwards.
    ForkingPickler.register(_Reduced, lambda r: (str, (f"reduced {r.x}",)))
    assert pickle.loads(reduction._plain_dumps(_Reduced(5))) == "reduced 5"
    assert pickle.loads(reduction._plain_dumps([_Reduced(1), 2])) == ["reduced 1", 2]
    assert ForkingPickler.loads(ForkingPickler.dumps(lambda: 7))() == 7  # slow path still there
