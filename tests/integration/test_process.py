"""The Process API under every start method."""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

import pytest

import corral
from tests.integration import helpers

TIMEOUT = 60


def start(ctx, target, *args, **kwargs):
    p = ctx.Process(target=target, args=args, kwargs=kwargs)
    p.start()
    return p


def test_target_args_kwargs_and_identity(ctx):
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=helpers.report, args=(w, 1, "two"), kwargs={"k": [3]}, name="worker")
    assert p.name == "worker" and p.pid is None and p.exitcode is None
    p.start()
    w.close()
    info = r.recv()
    p.join(TIMEOUT)
    r.close()
    assert info["args"] == (1, "two") and info["kwargs"] == {"k": [3]}
    assert info["pid"] == p.pid == p.ident != os.getpid()
    assert info["name"] == "worker"
    assert info["parent_pid"] == os.getpid()
    assert info["parent_name"] == "MainProcess"
    assert info["authkey"] == bytes(corral.current_process().authkey)
    assert info["start_method"] == ctx.get_start_method()
    assert p.exitcode == 0
    assert not p.is_alive()


def test_default_names_count_up(ctx):
    a, b = ctx.Process(target=int), ctx.Process(target=int)
    assert a.name.endswith(str(a._identity[-1]))
    assert b._identity[-1] == a._identity[-1] + 1


@pytest.mark.parametrize(
    ("target", "args", "code"),
    [
        (helpers.exit_with, (7,), 7),
        (helpers.exit_with, (None,), 0),
        (helpers.exit_with, ("message",), 1),
        (helpers.raise_error, (), 1),
        (helpers.kill_self, (signal.SIGKILL,), -signal.SIGKILL),
        (helpers.kill_self, (signal.SIGTERM,), -signal.SIGTERM),
    ],
    ids=["exit-7", "exit-none", "exit-str", "exception", "sigkill", "sigterm"],
)
def test_exit_codes(ctx, target, args, code):
    p = start(ctx, target, *args)
    p.join(TIMEOUT)
    assert p.exitcode == code


def test_terminate_and_kill(ctx):
    for method, sig in (("terminate", signal.SIGTERM), ("kill", signal.SIGKILL)):
        r, w = ctx.Pipe()
        p = start(ctx, helpers.announce_then_wait, r)
        assert w.poll(TIMEOUT) and w.recv() == "waiting"  # in the target, past start-up
        assert p.is_alive()
        getattr(p, method)()
        p.join(TIMEOUT)
        assert p.exitcode == -sig
        assert f"exitcode=-{signal.Signals(sig).name}" in repr(p)
        r.close()
        w.close()


def test_join_timeout_and_sentinel(ctx):
    r, w = ctx.Pipe()
    p = start(ctx, helpers.wait_for, r)
    p.join(0.05)
    assert p.exitcode is None and p.is_alive()
    assert corral.connection.wait([p.sentinel], timeout=0) == []
    w.send("go")
    assert corral.connection.wait([p.sentinel], timeout=TIMEOUT) == [p.sentinel]
    p.join(TIMEOUT)
    assert p.exitcode == 0
    r.close()
    w.close()


def test_repr_states(ctx):
    p = ctx.Process(target=int, name="r")
    assert "initial" in repr(p)
    p.start()
    p.join(TIMEOUT)
    assert "stopped" in repr(p) and "exitcode=0" in repr(p)
    p.close()
    assert "closed" in repr(p)


def test_errors_like_the_stdlib(ctx):
    p = ctx.Process(target=int)
    with pytest.raises(AssertionError, match="can only join a started process"):
        p.join()
    with pytest.raises(ValueError, match="process not started"):
        p.sentinel  # noqa: B018
    p.start()
    with pytest.raises(AssertionError, match="cannot start a process twice"):
        p.start()
    p.join(TIMEOUT)
    p.close()
    with pytest.raises(ValueError, match="process object is closed"):
        p.is_alive()
    with pytest.raises(ValueError, match="process object is closed"):
        p.start()


def test_close_running_process_raises(ctx):
    r, w = ctx.Pipe()
    p = start(ctx, helpers.wait_for, r)
    with pytest.raises(ValueError, match="Cannot close a process while it is still running"):
        p.close()
    w.send("go")
    p.join(TIMEOUT)
    p.close()
    r.close()
    w.close()


def test_daemon_flag(ctx):
    p = ctx.Process(target=int, daemon=True)
    assert p.daemon
    p.daemon = False
    assert not p.daemon
    p.start()
    with pytest.raises(AssertionError, match="process has already started"):
        p.daemon = True
    p.join(TIMEOUT)


def test_daemon_cannot_have_children(ctx):
    r, w = ctx.Pipe()
    p = ctx.Process(target=helpers.try_start_from_daemon, args=(w,), daemon=True)
    p.start()
    assert r.recv() == ("AssertionError", "daemonic processes are not allowed to have children")
    p.join(TIMEOUT)
    r.close()
    w.close()


def test_grandchild_sees_its_own_parent(ctx):
    r, w = ctx.Pipe()
    p = start(ctx, helpers.start_grandchild, w)
    info = r.recv()
    assert r.recv() == 0
    p.join(TIMEOUT)
    assert info["parent_pid"] == p.pid
    assert info["identity"][:-1] == p._identity
    r.close()
    w.close()


def test_subclass_overriding_run(ctx):
    r, w = ctx.Pipe()
    p = helpers.SUBCLASSES[ctx.get_start_method()](w, 42)
    p.start()
    assert r.recv() == ("subclass", 42, type(p).__name__)
    p.join(TIMEOUT)
    assert p.exitcode == 0
    r.close()
    w.close()


def test_lambda_and_closure_targets(ctx):
    r, w = ctx.Pipe()
    offset = 100

    def closure(x):
        w.send(x + offset)

    for target in (closure, lambda x: w.send(x * 2)):
        p = start(ctx, target, 21)
        assert r.recv() in (121, 42)
        p.join(TIMEOUT)
        assert p.exitcode == 0
    r.close()
    w.close()


def test_active_children_and_reaping(ctx):
    r, w = ctx.Pipe()
    p = start(ctx, helpers.wait_for, r)
    assert p in corral.active_children()
    w.send("go")
    p.join(TIMEOUT)
    assert p not in corral.active_children()
    r.close()
    w.close()


def test_connection_and_socket_passed_at_start(ctx):
    a, b = ctx.Pipe()
    s1, s2 = socket.socketpair()
    p = start(ctx, helpers.echo_forever, b)
    q = start(ctx, helpers.socket_upper, s2)
    a.send({"x": 1})
    assert a.recv() == {"x": 1}
    s1.sendall(b"over the socket")
    assert s1.recv(100) == b"OVER THE SOCKET"
    a.send(None)
    p.join(TIMEOUT)
    q.join(TIMEOUT)
    assert (p.exitcode, q.exitcode) == (0, 0)
    for obj in (a, b, s1, s2):
        obj.close()


def test_connection_sent_over_a_pipe_after_start(ctx):
    """A connection pickled outside start() travels through the resource sharer."""
    from corral import _resource_sharer

    control_parent, control_child = ctx.Pipe()
    inner_parent, inner_child = ctx.Pipe()
    p = start(ctx, helpers.receive_connection_then_message, control_child)
    control_parent.send(inner_child)
    inner_parent.send("via the resource sharer")
    assert control_parent.recv() == "via the resource sharer"
    p.join(TIMEOUT)
    assert p.exitcode == 0
    for conn in (control_parent, control_child, inner_parent, inner_child):
        conn.close()
    _resource_sharer.stop()


def test_process_in_thread_and_nested_process(ctx):
    import threading

    results = []

    def run():
        p = start(ctx, helpers.exit_with, 5)
        p.join(TIMEOUT)
        results.append(p.exitcode)

    t = threading.Thread(target=run)
    t.start()
    t.join(TIMEOUT)
    assert results == [5]


def test_child_waits_for_its_non_daemon_threads(ctx):
    r, w = ctx.Pipe()
    p = start(ctx, helpers.non_daemon_thread_then_return, w)
    assert r.recv() == "thread finished"
    p.join(TIMEOUT)
    assert p.exitcode == 0
    r.close()
    w.close()


def test_parent_sentinel_fires_when_parent_dies(ctx, tmp_path):
    """A child's parent_process().join() returns when the parent is gone."""
    from tests.conftest import run_script

    root = str(Path(__file__).resolve().parents[2])
    code = f"""
    import os, sys
    sys.path.insert(0, {root!r})
    import corral
    from tests.integration import helpers
    if __name__ == "__main__":
        ctx = corral.get_context({ctx.get_start_method()!r})
        r, w = ctx.Pipe()
        p = ctx.Process(target=helpers.watch_parent, args=(w,))
        p.start()
        print(r.recv(), p.pid, flush=True)
        os._exit(0)   # the parent vanishes without joining
    """
    result = run_script(tmp_path, code, timeout=60)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().split()
    assert line[:2] == ["('alive',", "True)"]
    child = int(line[2])
    import psutil

    try:
        proc = psutil.Process(child)
        proc.wait(timeout=30)
    except psutil.NoSuchProcess:
        pass
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"


def test_cpu_count_and_start_methods():
    assert corral.cpu_count() == os.cpu_count()
    assert set(corral.get_all_start_methods()) == {"fork", "spawn", "forkserver"}
    assert corral.get_all_start_methods()[0] == __import__("multiprocessing").get_start_method()
    assert sys.platform == "linux"


def _locked_reader(conn, lock, results, count):
    for _ in range(count):
        with lock:
            msg = conn.recv()
        results.send(msg)


@pytest.mark.parametrize("duplex", [True, False], ids=["duplex", "oneway"])
def test_several_processes_share_one_reading_end(ctx, duplex):
    """Readers sharing one end under a lock each get whole messages, none lost."""
    reader, writer = ctx.Pipe(duplex=duplex)  # one-way: (receiving end, sending end)
    lock = ctx.Lock()
    results_r, results_w = ctx.Pipe(duplex=False)
    per_reader, readers = 300, 3
    procs = [
        start(ctx, _locked_reader, reader, lock, results_w, per_reader) for _ in range(readers)
    ]
    sent = [("msg", i, b"x" * (i % 5000)) for i in range(per_reader * readers)]
    import threading

    feeder = threading.Thread(target=lambda: [writer.send(msg) for msg in sent])
    feeder.start()
    got = [results_r.recv() for _ in sent]
    feeder.join(TIMEOUT)
    for p in procs:
        p.join(TIMEOUT)
        assert p.exitcode == 0
    assert sorted(got) == sorted(sent)
    for conn in (reader, writer, results_r, results_w):
        conn.close()


def test_child_unlinks_names_it_registered_at_exit(ctx):
    """A child's exit sequence unlinks what it registered (forked children register it lazily)."""
    r, w = ctx.Pipe(duplex=False)
    p = start(ctx, helpers.register_segment_and_return, w)
    assert r.poll(TIMEOUT)
    name = r.recv()
    p.join(TIMEOUT)
    assert p.exitcode == 0
    assert not os.path.exists("/dev/shm" + name)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_join_from_one_thread_while_another_reaps(monkeypatch, method):
    # A pool's engine thread reaps its workers while user code may join the
    # same Process objects (pool._pool). The thread that loses the waitpid()
    # race must see the exit code the other one is about to publish, never
    # "still alive". The reaper is held between its waitpid() and publishing.
    import threading

    ctx = corral.get_context(method)
    proc = ctx.Process(target=int)
    proc.start()
    real_waitpid = os.waitpid
    reaped = threading.Event()
    joiner_done = threading.Event()
    reaper = threading.current_thread()

    def slow_waitpid(pid, flags):
        result = real_waitpid(pid, flags)
        if threading.current_thread() is reaper and result[0] == pid:
            reaped.set()
            joiner_done.wait(1.0)  # the joiner runs in this window (or waits for us)
        return result

    seen = {}

    def joiner():
        assert reaped.wait(30)
        proc.join(30)
        seen["alive"] = proc.is_alive()
        seen["exitcode"] = proc.exitcode
        joiner_done.set()

    monkeypatch.setattr(os, "waitpid", slow_waitpid)
    thread = threading.Thread(target=joiner)
    thread.start()
    # This thread reaps as a pool's engine does: once the child has ended.
    assert corral.connection.wait([proc.sentinel], 30)
    assert proc._popen.poll() == 0
    thread.join(30)
    assert seen == {"alive": False, "exitcode": 0}
