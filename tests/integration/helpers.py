"""Module-level targets for child processes (importable under spawn and forkserver)."""

from __future__ import annotations

import os
import signal
import sys
import threading

import corral


def report(conn, *args, **kwargs):
    me = corral.current_process()
    parent = corral.parent_process()
    conn.send(
        {
            "args": args,
            "kwargs": kwargs,
            "pid": os.getpid(),
            "name": me.name,
            "daemon": me.daemon,
            "authkey": bytes(me.authkey),
            "parent_pid": parent.pid,
            "parent_name": parent.name,
            "start_method": corral.get_start_method(),
            "identity": me._identity,
        }
    )
    conn.close()


def exit_with(code):
    sys.exit(code)


def raise_error():
    raise ValueError("boom in child")


def kill_self(sig):
    os.kill(os.getpid(), sig)


def wait_for(event_conn):
    event_conn.recv()


def announce_then_wait(conn):
    """Say "waiting" once inside the target (signals sent after it land here), then wait."""
    conn.send("waiting")
    conn.recv()


def echo_forever(conn):
    while True:
        msg = conn.recv()
        if msg is None:
            return
        conn.send(msg)


def send_fd_contents(conn, fd_conn):
    """Read a line from the fd carried by fd_conn (a pickled socket/connection)."""
    conn.send(fd_conn.recv())


def start_grandchild(conn):
    ctx = corral.get_context(corral.get_start_method())
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=report, args=(w, "grandchild"))
    p.start()
    w.close()
    conn.send(r.recv())
    p.join(30)
    conn.send(p.exitcode)


def try_start_from_daemon(conn):
    p = corral.Process(target=int)
    try:
        p.start()
    except AssertionError as exc:
        conn.send(("AssertionError", str(exc)))
    else:
        p.join()
        conn.send(None)


def watch_parent(conn):
    """Report whether the parent sentinel fires once the parent is gone."""
    parent = corral.parent_process()
    conn.send(("alive", parent.is_alive()))
    conn.close()
    parent.join(timeout=30)
    # Exit code tells the test whether join returned because the parent died.
    os._exit(0 if not parent.is_alive() else 3)


def non_daemon_thread_then_return(conn):
    def later():
        conn.send("thread finished")

    gate = threading.Event()
    t = threading.Thread(target=lambda: (gate.wait(10), later()))
    t.start()
    gate.set()


def receive_connection_then_message(control):
    inner = control.recv()  # a Connection pickled after this process started
    control.send(inner.recv())


def socket_upper(sock):
    data = sock.recv(100)
    sock.sendall(data.upper())
    sock.close()


class _Reporter:
    """run() overridden; extra state set in __init__ travels with the object."""

    def __init__(self, conn, value):
        super().__init__()
        self.conn = conn
        self.value = value

    def run(self):
        self.conn.send(("subclass", self.value, type(self).__name__))
        self.conn.close()


class ForkSubclass(_Reporter, corral.get_context("fork").Process):
    pass


class SpawnSubclass(_Reporter, corral.get_context("spawn").Process):
    pass


class ForkServerSubclass(_Reporter, corral.get_context("forkserver").Process):
    pass


SUBCLASSES = {"fork": ForkSubclass, "spawn": SpawnSubclass, "forkserver": ForkServerSubclass}


SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}


def register_segment_and_return(conn):
    """Register a /dev/shm name with the resource tracker, report it, and return (not unlinking)."""
    import _posixshmem

    from corral import resource_tracker

    name = f"/corral-test-{os.getpid()}"
    resource_tracker.register(name, "shared_memory")
    os.close(_posixshmem.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    conn.send(name)
