"""``pool.insights()`` / ``executor.insights()`` on real workers (issue 16)."""

from __future__ import annotations

import os
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
