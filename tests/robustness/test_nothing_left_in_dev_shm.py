"""Issue 4 "Lifetime": no semaphore or segment outlives its killed creator."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading

import psutil
import pytest

import corral
from corral import shared_memory
from tests.conftest import _not_foreign
from tests.robustness.scenario import Scenario

pytestmark = pytest.mark.timeout(60)

CREATOR = textwrap.dedent("""
    import threading, corral
    from corral import resource_tracker, shared_memory

    def child(lock, value, name, ready):
        attached = shared_memory.SharedMemory(name)  # a child using all of it
        ready.set()
        threading.Event().wait(60)

    if __name__ == "__main__":
        ctx = corral.get_context("spawn")  # spawn: semaphore names must live on
        lock = ctx.Lock()
        value = ctx.Value("i", 0)          # and a lock inside a Value
        ready = ctx.Event()
        shm = shared_memory.SharedMemory(create=True, size=100)
        worker = ctx.Process(target=child, args=(lock, value, shm.name, ready))
        worker.start()
        assert ready.wait(30)  # the child attached: now every process holds a name
        print("names", resource_tracker._tracker_pid, worker.pid, lock._semlock.name, shm.name,
              flush=True)
        threading.Event().wait(60)
""")


def _exists(name: str) -> bool:
    return os.path.exists("/dev/shm/" + name.lstrip("/"))


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs /dev/shm to look into")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_names_of_a_killed_process_group_are_removed(tmp_path, sig):
    scenario = Scenario(tmp_path, CREATOR)  # a file: spawn children re-import it
    try:
        line = scenario.wait_for_line("names")
        tracker_pid, child_pid, sem_name, shm_name = line.split()[1:]
        tracker, child = psutil.Process(int(tracker_pid)), psutil.Process(int(child_pid))
        assert _exists("sem." + sem_name.lstrip("/")) and _exists(shm_name)
        os.killpg(scenario.sid, sig)  # parent and child, as a terminal or a supervisor would
        scenario.proc.wait(10)
        child.wait(10)
        tracker.wait(10)  # it outlives the group, cleans up, and exits
        assert not _exists("sem." + sem_name.lstrip("/"))
        assert not _exists(shm_name)
        _code, _out, warning = scenario.finish(timeout=10)  # the tracker's line is on stderr
        assert re.search(r"\d+ leaked semaphore objects", warning), warning
        assert "1 leaked shared_memory objects" in warning, warning
    finally:
        if scenario.proc.poll() is None:
            scenario.kill()
            scenario.finish(timeout=10)


NORMAL_EXIT = textwrap.dedent("""
    import corral
    from corral import resource_tracker, shared_memory

    def child(lock, value, name):
        shared_memory.SharedMemory(name).close()

    if __name__ == "__main__":
        ctx = corral.get_context("spawn")
        lock, value = ctx.Lock(), ctx.Value("i", 0)
        shm = shared_memory.SharedMemory(create=True, size=100)  # never unlinked by hand
        worker = ctx.Process(target=child, args=(lock, value, shm.name))
        worker.start()
        worker.join()
        print(resource_tracker._tracker_pid, lock._semlock.name, shm.name, flush=True)
""")


def test_a_normal_exit_cleans_up_without_a_warning(tmp_path):
    script = tmp_path / "creator.py"
    script.write_text(NORMAL_EXIT)
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, check=True
    )
    _tracker, sem_name, shm_name = result.stdout.split()
    assert not _exists("sem." + sem_name.lstrip("/")) and not _exists(shm_name)
    assert result.stderr == ""  # nothing leaked, so nothing to warn about


def create_while_killed_in_register(go, kind):
    """Create a semaphore or segment, and be SIGKILLed while registering its name."""
    from corral import resource_tracker

    def register_and_be_killed(name, rtype):
        go.send_bytes(b"registering")
        threading.Event().wait(30)  # the parent SIGKILLs us here

    resource_tracker.register = register_and_be_killed
    if kind == "semaphore":
        corral.get_context("forkserver").Lock()
    else:
        shared_memory.SharedMemory(create=True, size=4096)


@pytest.mark.parametrize("kind", ["semaphore", "shared_memory"])
def test_killed_while_registering_a_name_leaves_none(kind):
    """A name is registered with the tracker before it is created.

    So a process killed in between (a child terminated as it starts, which in
    a forkserver child is while its own tracker starts: milliseconds) leaves
    no name that no tracker knows of.
    """
    ctx = corral.get_context("forkserver")
    before = set(os.listdir("/dev/shm"))
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=create_while_killed_in_register, args=(w, kind))
    p.start()
    w.close()
    try:
        assert r.recv_bytes() == b"registering"
        os.kill(p.pid, signal.SIGKILL)
        p.join(30)
        left = _not_foreign(set(os.listdir("/dev/shm")) - before)
        assert left == set()
    finally:
        r.close()
        for name in _not_foreign(set(os.listdir("/dev/shm")) - before):  # ours only
            os.unlink(f"/dev/shm/{name}")
