"""Managers and proxies under every start method: shared types, references, remote use."""

from __future__ import annotations

import copy
import gc
import multiprocessing
import multiprocessing.managers
import os
import threading

import pytest

import corral
from corral.errors import ManagerConnectionError, RemoteError, RemoteTraceback
from corral.managers import BaseManager, BaseProxy, SharedMemoryManager, SyncManager

TIMEOUT = 60
KEY = b"manager-test-key"


# -- child targets (module level: importable under spawn and forkserver) --------------


def update_shared(d, lst, ns, value, lock, event):
    with lock:
        d["child"] = os.getpid()
        lst.append("from child")
        ns.seen = True
        value.value += 1
    event.set()


def read_nested(outer, conn):
    inner = outer[0]  # a proxy stored inside a managed list
    inner["written by child"] = True
    conn.send((type(inner).__name__, inner["k"]))
    conn.close()


def take_from_queue(q, conn):
    conn.send("ready")  # the proxy is set up (unpickled, or re-referenced after fork)
    try:
        conn.send(("got", q.get(timeout=TIMEOUT)))
    except Exception as exc:
        conn.send(("raised", type(exc).__name__, str(exc)))
    conn.close()


def put_through_remote(address, authkey, serializer, value):
    class Client(BaseManager):
        pass

    Client.register("get_queue")
    m = Client(address=address, authkey=authkey, serializer=serializer)
    m.connect()
    m.get_queue().put(value)


class Counter:
    def __init__(self, start=0):
        self.n = start

    def bump(self, by=1):
        self.n += by
        return self.n

    def fail(self):
        raise KeyError("no such thing")

    def child(self):
        return Counter(self.n * 10)

    def _private(self):
        return "hidden"

    def unpicklable(self):
        return threading.Lock()


class CounterManager(BaseManager):
    pass


CounterManager.register("Counter", Counter, method_to_typeid={"child": "Counter"})


_shared_queue = None


def shared_queue():
    global _shared_queue
    if _shared_queue is None:
        import queue

        _shared_queue = queue.Queue()
    return _shared_queue


class QueueServer(BaseManager):
    pass


QueueServer.register("get_queue", callable=shared_queue)


def serve_queue(address, authkey, serializer, ready):
    server = QueueServer(address=address, authkey=authkey, serializer=serializer).get_server()
    ready.send(server.address)
    ready.close()
    server.serve_forever()


# -- the SyncManager types ---------------------------------------------------------------


def test_shared_types_seen_from_a_child(ctx):
    with ctx.Manager() as m:
        d, lst, ns = m.dict(), m.list([1]), m.Namespace(a=1)
        value, lock, event = m.Value("i", 0), m.Lock(), m.Event()
        p = ctx.Process(target=update_shared, args=(d, lst, ns, value, lock, event))
        p.start()
        assert event.wait(TIMEOUT)
        p.join(TIMEOUT)
        assert p.exitcode == 0
        assert d["child"] == p.pid
        assert lst[:] == [1, "from child"]
        assert ns.seen is True and ns.a == 1
        assert value.value == 1
        assert repr(value._getvalue()) == "Value('i', 1)"


def test_nested_proxy_keeps_working_in_another_process(ctx):
    with ctx.Manager() as m:
        outer = m.list()
        inner = m.dict({"k": "v"})
        outer.append(inner)
        del inner
        gc.collect()
        r, w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=read_nested, args=(outer, w))
        p.start()
        w.close()
        assert r.recv() == ("DictProxy", "v")
        p.join(TIMEOUT)
        assert outer[0]["written by child"] is True
        r.close()


def test_queue_condition_barrier_semaphore_array():
    with corral.Manager() as m:
        q = m.Queue()
        q.put([1, 2])
        assert q.get(timeout=TIMEOUT) == [1, 2]
        cond = m.Condition()
        with cond:
            assert cond.wait_for(lambda: True, timeout=1) is True
            assert cond.wait(0.01) is False
        barrier = m.Barrier(1)
        assert barrier.parties == 1 and barrier.wait(TIMEOUT) == 0 and not barrier.broken
        sem = m.BoundedSemaphore(1)
        assert sem.acquire(timeout=1) is True
        sem.release()
        with pytest.raises(ValueError):
            sem.release()
        arr = m.Array("d", [0.5, 1.5])
        arr[0] = 2.5
        assert len(arr) == 2 and arr[0] == 2.5


def test_pool_in_the_manager():
    with corral.Manager() as m:
        pool = m.Pool(2)
        assert pool.map(abs, [-1, -2, 3]) == [1, 2, 3]
        assert pool.apply_async(abs, (-5,)).get(TIMEOUT) == 5
        assert sorted(pool.imap_unordered(abs, [-1, -2])) == [1, 2]
        pool.terminate()


def _exercise(m):
    """The same operations on a manager's dict and list; returns what each gave."""
    d = m.dict({"a": 1, "b": 2})
    lst = m.list([3, 1, 2])
    out = []
    out.append(("len", len(d), "a" in d, "z" in d, sorted(d), d.get("z", 0)))
    d["c"] = 3
    d.update({"d": 4}, e=5)
    out.append(("popitem-setdefault", d.setdefault("a", 9), d.pop("e"), d.copy()))
    out.append(("items", sorted(d.items()), sorted(d.keys()), sorted(d.values())))
    out.append(("eq", d == d, d == d.copy(), d != {}, str(d)))
    lst += [4]
    lst *= 2
    lst.sort()
    out.append(("list", lst[:], lst[1:3], len(lst), lst.count(1), lst.index(2), 2 in lst))
    out.append(("arith", lst + [9], [0] + lst[:], lst * 1, str(lst)))  # noqa: RUF005  (the proxy operators)
    del lst[0]
    lst.reverse()
    out.append(("after", lst[:], lst.pop(), list(reversed(lst[:]))))
    for bad in (lambda: d["missing"], lambda: lst[100], lambda: lst.remove(42)):
        try:
            bad()
        except Exception as exc:
            out.append(("raised", type(exc).__name__))
    return out


def test_dict_and_list_proxies_behave_as_the_stdlib_ones():
    with multiprocessing.Manager() as theirs, corral.Manager() as ours:
        assert _exercise(ours) == _exercise(theirs)


def test_iterating_a_dict_proxy_gives_its_keys():
    with corral.Manager() as m:
        d = m.dict({"x": 1, "y": 2})
        assert sorted(d) == ["x", "y"]
        assert sorted(iter(d)) == ["x", "y"]


# -- proxies: references, copies, errors -------------------------------------------------


def test_objects_are_released_when_their_last_proxy_goes():
    with corral.Manager() as m:
        base = m._number_of_objects()
        d = m.dict()
        copied = copy.copy(d)  # a second proxy, a second reference
        assert m._number_of_objects() == base + 1
        del d
        gc.collect()
        copied["still"] = "there"
        assert copy.deepcopy(copied) == {"still": "there"}
        del copied
        gc.collect()
        assert m._number_of_objects() == base


def test_remote_exception_keeps_type_and_traceback():
    with CounterManager() as m:
        c = m.Counter(1)
        assert c.bump() == 2
        with pytest.raises(KeyError, match="no such thing") as info:
            c.fail()
        cause = info.value.__cause__
        assert isinstance(cause, RemoteTraceback)
        assert "in fail" in str(cause) and 'raise KeyError("no such thing")' in str(cause)
        # framed as a pool's remote traceback (and the stdlib's): one format everywhere
        assert str(cause).startswith('\n"""\nTraceback (most recent call last):\n')
        assert str(cause).endswith('"""')


def test_not_exposed_method_and_unpicklable_result_are_remote_errors():
    with CounterManager() as m:
        c = m.Counter()
        assert not hasattr(c, "_private")
        with pytest.raises(RemoteError, match="not exposed"):
            c._callmethod("_private")
        with pytest.raises(RemoteError, match="could not be sent back"):
            c.unpicklable()
        assert c.bump(5) == 5  # the connection is still good


def test_method_to_typeid_returns_a_new_proxy():
    with CounterManager() as m:
        c = m.Counter(4)
        child = c.child()
        assert isinstance(child, BaseProxy) and child.bump() == 41
        assert c.bump() == 5


def test_bad_serializer_and_creation_failure():
    with pytest.raises(ValueError, match="unknown serializer"):
        SyncManager(serializer="json")
    with corral.Manager() as m, pytest.raises(RemoteError, match="must be at least 1"):
        m.Pool(0)


def test_initializer_failure_is_raised_by_start():
    m = SyncManager()
    with pytest.raises(ZeroDivisionError) as info:
        m.start(divmod, (1, 0))
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert str(info.value.__cause__).startswith('\n"""\nTraceback (most recent call last):\n')


def test_address_in_use_is_raised_by_start():
    with SyncManager(address=("127.0.0.1", 0), authkey=KEY) as first:
        second = SyncManager(address=first.address, authkey=KEY)
        with pytest.raises(OSError, match="in use"):
            second.start()


def test_shutdown_makes_proxies_fail_fast():
    m = corral.Manager()
    d = m.dict()
    m.shutdown()
    with pytest.raises(ManagerConnectionError, match="has shut down"):
        d["x"] = 1
    with pytest.raises(ManagerConnectionError):
        m.list()
    # Both stdlib kinds of "gone" catch it.
    assert issubclass(ManagerConnectionError, EOFError)
    assert issubclass(ManagerConnectionError, ConnectionError)


def test_blocked_getter_in_a_child_fails_when_the_manager_shuts_down(ctx):
    m = ctx.Manager()
    q = m.Queue()
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=take_from_queue, args=(q, w))
    p.start()
    w.close()
    assert r.recv() == "ready"
    # Whether the child's get() reached the server before this or not, it must fail fast.
    m.shutdown()
    assert r.poll(TIMEOUT)
    kind, name, _ = r.recv()
    assert (kind, name) == ("raised", "ManagerConnectionError")
    p.join(TIMEOUT)
    r.close()


# -- remote managers -------------------------------------------------------------------


@pytest.mark.parametrize("serializer", ["pickle", "xmlrpclib"])
def test_remote_manager_over_tcp(serializer):
    ctx = corral.get_context("spawn")
    r, w = ctx.Pipe(duplex=False)
    server = ctx.Process(target=serve_queue, args=(("127.0.0.1", 0), KEY, serializer, w))
    server.start()
    w.close()
    address = r.recv()
    r.close()

    class Remote(BaseManager):
        pass

    Remote.register("get_queue")
    client = Remote(address=address, authkey=KEY, serializer=serializer)
    client.connect()
    putter = ctx.Process(target=put_through_remote, args=(address, KEY, serializer, ("hello", 1.5)))
    putter.start()
    putter.join(TIMEOUT)
    q = client.get_queue()
    got = q.get(timeout=TIMEOUT)
    # xmlrpclib has no tuples; the stdlib's gives a list too.
    assert got == (["hello", 1.5] if serializer == "xmlrpclib" else ("hello", 1.5))
    if serializer == "xmlrpclib":
        with pytest.raises(TypeError):
            q.put(len)  # a function cannot be marshalled: fails in the caller
    del q
    wrong = Remote(address=address, authkey=b"wrong key", serializer=serializer)
    with pytest.raises(corral.AuthenticationError):
        wrong.connect()
    other = "pickle" if serializer == "xmlrpclib" else "xmlrpclib"
    mismatched = Remote(address=address, authkey=KEY, serializer=other)
    with pytest.raises(RemoteError, match=f"server uses the '{serializer}' serializer"):
        mismatched.connect()
    corral.managers._proxy.request_once(address, KEY, serializer, ("shutdown",))
    server.join(TIMEOUT)
    assert server.exitcode == 0


def test_remote_manager_listening_on_all_interfaces():
    with SyncManager(address=("", 0), authkey=KEY) as m:
        _host, port = m.address
        assert port > 0

        class Remote(BaseManager):
            pass

        Remote.register("dict")
        remote = Remote(address=("127.0.0.1", port), authkey=KEY)
        remote.connect()
        d = remote.dict()
        d["from"] = "remote"
        assert d._getvalue() == {"from": "remote"}
        assert m._number_of_objects() == 1


# -- SharedMemoryManager ---------------------------------------------------------------


def test_shared_memory_manager_unlinks_its_segments_at_shutdown():
    with SharedMemoryManager() as smm:
        shm = smm.SharedMemory(64)
        sl = smm.ShareableList([1, "two", 3.0])
        names = {shm.name, sl.shm.name}
        assert all(os.path.exists(f"/dev/shm/{n.lstrip('/')}") for n in names)
        assert sl[1] == "two"
        shm.close()
        sl.shm.close()
    assert not any(os.path.exists(f"/dev/shm/{n.lstrip('/')}") for n in names)


def test_manager_types_interoperate_with_stdlib_names():
    assert set(multiprocessing.managers.__all__) <= set(dir(corral.managers))
    for name in ("ListProxy", "DictProxy", "Namespace", "RemoteError", "AutoProxy", "Server"):
        assert hasattr(corral.managers, name), name


def _result_types(m):
    """The type of what each dict, list, Namespace, Value and Array method returns."""
    d = m.dict({"a": 1, "nested": {"x": [1]}, "lst": [1, 2]})
    lst = m.list([3, {"k": "v"}, (1, 2)])
    ns = m.Namespace(number=1, items=[1], mapping={"a": 1})
    calls = {
        "dict.keys": d.keys,
        "dict.values": d.values,
        "dict.items": d.items,
        "dict.copy": d.copy,
        "dict.get": lambda: d.get("nested"),
        "dict.get default": lambda: d.get("missing"),
        "dict.__getitem__": lambda: d["lst"],
        "dict.setdefault": lambda: d.setdefault("nested", None),
        "dict.__len__": lambda: len(d),
        "dict.__contains__": lambda: "a" in d,
        "dict.__str__": lambda: str(d),
        "dict.pop": lambda: d.pop("a"),
        "dict.popitem": d.popitem,
        "dict.__iter__": lambda: iter(d),
        "list.__getitem__": lambda: lst[1],
        "list.__getitem__ tuple": lambda: lst[2],
        "list slice": lambda: lst[0:2],
        "list.__add__": lambda: lst + [1],  # noqa: RUF005  (the proxy operator)
        "list.__mul__": lambda: lst * 2,
        "list.count": lambda: lst.count(3),
        "list.index": lambda: lst.index(3),
        "list.pop": lst.pop,
        "Namespace attribute": lambda: ns.mapping,
        "Namespace list": lambda: ns.items,
        "Namespace int": lambda: ns.number,
        "Value": lambda: m.Value("i", 3).value,
        "Array slice": lambda: m.Array("i", [1, 2])[:],
        "Array item": lambda: m.Array("i", [1, 2])[0],
    }
    return {name: type(call()).__name__ for name, call in calls.items()}


_stdlib_result_types: dict[str, str] = {}


def test_proxy_results_have_the_stdlib_types(ctx):
    if not _stdlib_result_types:
        with multiprocessing.Manager() as theirs:
            _stdlib_result_types.update(_result_types(theirs))
    with ctx.Manager() as ours:
        assert _result_types(ours) == _stdlib_result_types
    assert _stdlib_result_types["dict.values"] == "list"
