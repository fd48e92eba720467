"""Issue 14: big buffers in shared memory survive kills on either side and leave nothing.

Each scenario runs in its own session with a hard timeout; faults are
injected at exact points of a transfer (after a segment is written, while a
receiver holds mapped views), and every check ends with "no process left".
Segments are memfds, which have no name: the checks also look at /dev/shm.
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.conftest import START_METHODS
from tests.robustness.scenario import Scenario, run

pytestmark = pytest.mark.timeout(120)

COMMON = """
import gc
import numpy as np
from corral import _transfer

N = 2 * _transfer.MIN_SIZE // 8  # float64 items: above the threshold

def transfer_mappings():
    with open("/proc/self/maps") as f:
        return sum("corral-transfer" in line for line in f)

def die_after_writing_result(n):
    original = _transfer.Outbox.write
    def write_then_die(self, parts):
        original(self, parts)  # the result is in shared memory; the worker dies before sending
        os.kill(os.getpid(), signal.SIGKILL)
    _transfer.Outbox.write = write_then_die
    return np.ones(n)

def die_holding_argument(a):
    assert not a.base is None  # a view of the mapped segment
    os.kill(os.getpid(), signal.SIGKILL)

def produce(n):
    return np.ones(n)

def consume(a):
    return float(a.sum())
"""

WORKER_KILLED = (
    COMMON
    + """
if __name__ == "__main__":
    ctx = corral.get_context(sys.argv[1])
    a = np.ones(N)
    with ctx.Pool(2) as pool:
        jobs = []
        for i in range(9):
            if i % 3 == 1:
                jobs.append(pool.apply_async(die_after_writing_result, (N,)))
                jobs.append(pool.apply_async(die_holding_argument, (a,)))
            else:
                jobs.append(pool.apply_async(produce, (N,)))
                jobs.append(pool.apply_async(consume, (a,)))
        outcomes = []
        for job in jobs:
            try:
                value = job.get(60)
            except corral.WorkerLostError:
                outcomes.append("lost")
            else:
                outcomes.append("ok" if float(np.sum(value)) == N else "wrong")
            del job
        say("outcomes", *outcomes)
        for _ in range(3):  # segments whose reader died are reused
            back = pool.apply(produce, (N,))
            say("after", pool.apply(consume, (a,)) == N, float(back.sum()) == N)
    del jobs, value, back
    gc.collect()
    say("mapped", transfer_mappings())
"""
)


@pytest.mark.parametrize("method", START_METHODS)
def test_workers_killed_mid_transfer_fail_only_their_task(tmp_path, method):
    shm_before = set(os.listdir("/dev/shm"))
    code, out, err = run(tmp_path, WORKER_KILLED, method, timeout=100)
    assert code == 0, err
    lines = out.splitlines()
    expected = ["ok", "ok", "lost", "lost", "ok", "ok"] * 3
    assert lines[0].split() == ["outcomes", *expected], out
    assert lines[1:4] == ["after True True"] * 3, out
    assert lines[4] == "mapped 0", out
    assert set(os.listdir("/dev/shm")) <= shm_before


PARENT_KILLED = (
    COMMON
    + """
if __name__ == "__main__":
    where = sys.argv[2]
    pool = corral.get_context(sys.argv[1]).Pool(2)
    say("workers", *[p.pid for p in pool._pool])
    if where == "sending":  # the argument is in shared memory, not yet sent
        original = _transfer.Outbox.write
        def write_then_die(self, parts):
            original(self, parts)
            os.kill(os.getpid(), signal.SIGKILL)
        _transfer.Outbox.write = write_then_die
        pool.apply(consume, (np.ones(N),))
    else:  # the result arrived: the engine is mapping it
        original = _transfer.open_views
        def map_then_die(*args):
            views = original(*args)
            os.kill(os.getpid(), signal.SIGKILL)
        _transfer.open_views = map_then_die
        pool.apply(produce, (N,))
    say("not reached")
"""
)


@pytest.mark.parametrize("where", ["sending", "receiving"])
@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_parent_killed_mid_transfer_leaves_nothing(tmp_path, method, where):
    shm_before = set(os.listdir("/dev/shm"))
    scenario = Scenario(tmp_path, PARENT_KILLED, method, where)
    scenario.wait_for_line("workers")
    code, out, _err = scenario.finish(timeout=60)  # also: every worker is gone
    assert code == -signal.SIGKILL, out
    assert "not reached" not in out
    assert set(os.listdir("/dev/shm")) <= shm_before


FEW_FILES = (
    COMMON
    + """
import resource
if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))  # a small but common limit
    a = np.ones(N)
    with corral.get_context(sys.argv[1]).Pool(2) as pool:
        jobs = [pool.apply_async(consume, (a,)) for _ in range(600)]  # queued: far above 256
        say("all", all(job.get(120) == N for job in jobs))
        say("after", pool.apply(consume, (a,)) == N)
"""
)


def test_many_queued_big_tasks_do_not_exhaust_file_descriptors(tmp_path):
    code, out, err = run(tmp_path, FEW_FILES, "fork", timeout=110)
    assert code == 0, err
    assert out.splitlines() == ["all True", "after True"], out
