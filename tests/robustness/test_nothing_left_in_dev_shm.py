"""Issue 4 "Lifetime": no semaphore or segment outlives its killed creator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

pytestmark = pytest.mark.timeout(60)

CREATOR = textwrap.dedent("""
    import threading, corral
    from corral import resource_tracker, shared_memory

    ctx = corral.get_context("spawn")  # spawn: semaphore names must live on
    lock = ctx.Lock()
    value = ctx.Value("i", 0)          # and a lock inside a Value
    shm = shared_memory.SharedMemory(create=True, size=100)
    print(resource_tracker._tracker_pid, lock._semlock.name, shm.name, flush=True)
    threading.Event().wait(60)
""")


def _exists(name: str) -> bool:
    return os.path.exists("/dev/shm/" + name.lstrip("/"))


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs /dev/shm to look into")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_names_of_a_killed_process_group_are_removed(sig):
    proc = subprocess.Popen(
        [sys.executable, "-c", CREATOR],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        tracker_pid, sem_name, shm_name = proc.stdout.readline().split()
        tracker = psutil.Process(int(tracker_pid))
        assert _exists("sem." + sem_name.lstrip("/")) and _exists(shm_name)
        os.killpg(proc.pid, sig)  # the whole group, as a terminal or a supervisor would
        proc.wait(10)
        tracker.wait(10)  # it outlives the group, cleans up, and exits
        assert not _exists("sem." + sem_name.lstrip("/"))
        assert not _exists(shm_name)
        warning = proc.stderr.read()  # the tracker's line, on the creator's stderr
        assert "2 leaked semaphore objects" in warning, warning
        assert "1 leaked shared_memory objects" in warning, warning
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_a_normal_exit_cleans_up_without_a_warning():
    code = CREATOR.replace("threading.Event().wait(60)", "")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    _tracker, sem_name, shm_name = result.stdout.split()
    assert not _exists("sem." + sem_name.lstrip("/")) and not _exists(shm_name)
    assert result.stderr == ""  # nothing leaked, so nothing to warn about
