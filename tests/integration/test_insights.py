"""``pool.insights()`` / ``executor.insights()`` on real workers (issue 16)."""

from __future__ import annotations

import os
import re
import threading
import time

import pytest

import corral
from corral.errors import TaskTimeoutError, WorkerLostError
from corral.pool import ThreadPool

pytestmark = pytest.mark.timeout(90)


def nap(x):
    time.sleep(0.05)  # the work being measured
    return x


def length(data):
    return len(data)


def die(_):
    os._exit(3)


def hang(_):
    time.sleep(30)


def block(_=None):
    threading.Event().wait()  # until its task_timeout stops the worker


def work_then_die(seconds):
    time.sleep(seconds)  # the work that is lost with the worker
    os._exit(3)


def _pid_in(error: BaseException) -> int:
    found = re.search(r"worker process (\d+)", str(error))
    assert found, error
    return int(found.group(1))


def _row(insights, pid):
    (row,) = [w for w in insights.workers if w.pid == pid]
    return row


def test_counts_and_times_per_worker(ctx):
    with ctx.Pool(2) as pool:
        assert pool.map(nap, range(20), chunksize=2) == list(range(20))
        insights = pool.insights()
    assert insights.backend == "process"
    assert insights.tasks == 10 and insights.items == 20
    assert sum(w.tasks for w in insights.workers) == 10
    assert 20 * 0.05 <= insights.busy < 20 * 0.05 + 5  # the naps, and not much more
    assert all(w.state == "running" and w.pid for w in insights.workers)
    assert all(w.startup > 0 for w in insights.workers)
    assert insights.bytes_in > 0 and insights.bytes_out > 0
    assert insights.pickling > 0 and insights.unpickling > 0
    assert "total" in str(insights)


def test_bytes_moved_and_the_share_advice():
    data = b"x" * (12 << 20)
    with corral.Pool(1) as pool:
        for _ in range(2):
            assert pool.apply(length, (data,)) == len(data)
        insights = pool.insights()
    assert insights.bytes_in >= 2 * len(data)
    assert any("pool.share(obj)" in line for line in insights.advice())


def test_tiny_chunks_get_advice():
    with corral.Pool(2) as pool:
        pool.map(abs, range(2000), chunksize=1)
        insights = pool.insights()
    assert insights.tasks == 2000
    assert any(line.startswith("chunks are too small") for line in insights.advice())


def test_idle_workers_get_advice():
    with corral.Pool(4) as pool:
        for i in range(3):  # one task at a time for four workers
            pool.apply(nap, (i,))
            pool.apply(time.sleep, (0.1,))
        insights = pool.insights()
    assert any(line.startswith("workers were idle") for line in insights.advice())


def test_restarts_and_their_reasons(ctx):
    with ctx.Pool(1, maxtasksperchild=2) as pool:
        with pytest.raises(WorkerLostError):
            pool.apply(die, (0,))
        with pytest.raises(TaskTimeoutError):
            pool.apply(hang, (0,), task_timeout=0.5)
        pool.map(abs, range(4), chunksize=1)  # 4 tasks: a recycling after every 2
        insights = pool.insights()
    assert insights.restarts.get("crashed") == 1
    assert insights.restarts.get("task_timeout") == 1
    assert insights.restarts.get("recycled", 0) >= 1
    states = [w.state for w in insights.workers]
    assert "crashed" in states and "task_timeout" in states
    assert insights.tasks >= 4
    advice = insights.advice()
    assert any("died and were replaced" in line for line in advice)
    assert any("task_timeout" in line for line in advice)


def test_thread_pool_insights():
    with ThreadPool(2) as pool:
        pool.map(nap, range(4), chunksize=1)
        insights = pool.insights()
    assert insights.backend == "thread"
    assert insights.tasks == 4 and insights.busy >= 0.2
    assert insights.bytes_in == 0  # objects are passed as they are


def test_executor_insights(ctx):
    with corral.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        assert ex.insights().tasks == 0  # nothing started yet
        assert [f.result(30) for f in [ex.submit(nap, i) for i in range(6)]] == list(range(6))
        insights = ex.insights()
    assert insights.tasks == 6 and insights.busy >= 0.3


def test_a_timeout_shows_at_once_and_its_time_is_busy(ctx):
    # The engine records the end (and the task's running time) before it fails the task.
    with ctx.Pool(2) as pool:
        for n in (1, 2):
            with pytest.raises(TaskTimeoutError) as caught:
                pool.apply(block, (0,), task_timeout=0.5)
            insights = pool.insights()
            row = _row(insights, _pid_in(caught.value))
            assert row.state == "task_timeout"
            assert row.lost == 1 and row.busy >= 0.5
            assert insights.restarts.get("task_timeout") == n
            assert insights.lost == n and insights.busy >= 0.5 * n
            assert sum(w.state == "running" for w in insights.workers) <= 2
            assert f"{n} task(s) ran past task_timeout" in str(insights)


def test_hung_tasks_are_not_idleness(ctx):
    # Two tasks hang on the two workers until their timeout: the workers were busy.
    with ctx.Pool(2) as pool:
        pending = [pool.apply_async(block, (i,), task_timeout=0.5) for i in range(2)]
        for result in pending:
            with pytest.raises(TaskTimeoutError):
                result.get(timeout=30)
        insights = pool.insights()
    assert insights.lost == 2 and insights.busy >= 1.0
    assert insights.idle < insights.busy
    assert not any(line.startswith("workers were idle") for line in insights.advice())


def test_a_lost_worker_shows_at_once_with_its_work(ctx):
    with ctx.Pool(2) as pool:
        pool.apply(abs, (1,))  # a worker is ready: the next call is likely a direct one
        with pytest.raises(WorkerLostError) as caught:
            pool.apply(work_then_die, (0.3,))
        insights = pool.insights()
        row = _row(insights, _pid_in(caught.value))
        assert row.state == "crashed" and row.lost == 1
        assert row.busy >= 0.25  # its task ran 0.3 s before the worker died
        assert insights.restarts.get("crashed") == 1


def test_recycled_workers_end_with_their_last_result(ctx):
    with ctx.Pool(2, maxtasksperchild=2) as pool:
        for n in range(1, 4):
            assert pool.map(abs, range(8), chunksize=1) == list(range(8))
            insights = pool.insights()
            states = [w.state for w in insights.workers]
            assert states.count("running") == 2, str(insights)
            # (not == 8 * n: a worker whose next task was taken back sends its
            # counters with the next result or RETIRING, possibly after the map's end)
            assert 0 < insights.tasks <= 8 * n
            assert insights.restarts.get("recycled") == states.count("recycled")
