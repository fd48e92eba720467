"""``Insights``: totals, the printable summary and each piece of advice (issue 16)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from corral import Insights, WorkerInsight
from corral._engine.insights import of_handle

pytestmark = pytest.mark.timeout(30)


def _only(advice: list[str], start: str) -> str:
    matching = [line for line in advice if line.startswith(start)]
    assert len(matching) == 1, advice
    return matching[0]


def test_a_healthy_pool_gets_no_advice():
    insights = Insights("process", tasks=200, items=200, busy=20.0, idle=1.0, startup=0.1)
    assert insights.advice() == []
    assert "advice: nothing stands out" in insights.summary()


def test_tiny_tasks_get_a_chunksize():
    # 10,000 chunks of 10 items, 0.1 ms of work each: 10 ms of work needs 100x more items.
    insights = Insights("process", tasks=10_000, items=100_000, busy=1.0)
    line = _only(insights.advice(), "chunks are too small")
    assert "0.10 ms of work per task (10 items)" in line
    assert "chunksize=1000" in line


def test_big_arguments_point_to_share():
    insights = Insights("process", tasks=4, items=4, busy=8.0, bytes_in=4 * 50_000_000)
    assert "50 MB per task" in _only(insights.advice(), "arguments of")
    assert "pool.share(obj)" in _only(insights.advice(), "arguments of")


def test_big_results():
    insights = Insights("process", tasks=2, items=2, busy=8.0, bytes_out=2 * 20_000_000)
    assert "20 MB per task" in _only(insights.advice(), "results of")


def test_pickling_that_outweighs_the_work():
    insights = Insights("process", tasks=10, items=10, busy=1.0, pickling=0.8, unpickling=0.6)
    assert "1.40 s against 1.00 s" in _only(insights.advice(), "pickling and unpickling")


def test_idle_workers():
    workers = tuple(WorkerInsight(i, 100 + i, "running") for i in range(4))
    insights = Insights("process", workers=workers, tasks=8, items=8, busy=4.0, idle=6.0)
    line = _only(insights.advice(), "workers were idle 60% of the time")
    assert "too few tasks for 4 workers" in line


def test_slow_start_up():
    insights = Insights("process", tasks=4, items=4, busy=0.5, startup=3.0)
    assert "3.0 s starting" in _only(insights.advice(), "workers spent")


def test_restarts():
    insights = Insights(
        "process",
        tasks=100,
        items=100,
        busy=100.0,
        restarts={"crashed": 2, "task_timeout": 1, "recycled": 50},
    )
    advice = insights.advice()
    assert _only(advice, "2 worker(s) died")
    assert _only(advice, "1 task(s) ran past task_timeout")
    assert _only(advice, "workers were recycled 50 times")
    assert "restarts: crashed 2, recycled 50, task_timeout 1" in str(insights)


def test_the_summary_has_a_row_per_worker_and_a_total():
    workers = (
        WorkerInsight(0, 11, "running", tasks=3, items=30, busy=1.5),
        WorkerInsight(1, 12, "crashed", tasks=1, items=10, busy=0.5),
    )
    text = Insights("process", workers=workers, tasks=4, items=40, busy=2.0).summary()
    lines = text.splitlines()
    assert lines[0].startswith("corral insights (process backend, 1 live workers, 4 tasks")
    assert any(line.split()[:3] == ["0", "11", "running"] for line in lines)
    assert any(line.split()[:3] == ["1", "12", "crashed"] for line in lines)
    assert any(line.split()[:3] == ["total", "4", "40"] for line in lines)


def _handle(**numbers):
    base = dict(
        worker_id=0,
        pid=10,
        created_at=100.0,
        ready_at=100.5,
        ended_at=None,
        counters=None,
        result_unpickle_ns=0,
        lost=0,
        lost_busy=0.0,
    )
    return SimpleNamespace(**{**base, **numbers})


def test_a_lost_task_s_time_is_busy_not_idle():
    # Ready at 100.5, its task ran 2 s and timed out at 102.5 (no counters ever came).
    ended = of_handle(_handle(ended_at=102.5, lost=1, lost_busy=2.0), "task_timeout", 102.5)
    assert ended.busy == 2.0 and ended.idle == 0.0 and ended.lost == 1
    assert ended.lifetime == 2.5 and ended.state == "task_timeout"


def test_lost_tasks_in_the_totals_and_the_summary():
    workers = (WorkerInsight(0, 11, "task_timeout", busy=1.0, lost=1),)
    insights = Insights("process", workers=workers, tasks=3, items=3, busy=1.5, lost=1)
    assert str(insights).splitlines()[0].endswith("3 tasks, 3 items, 1 lost)")
    assert "lost" not in str(Insights("process", tasks=3, items=3)).splitlines()[0]


def test_no_idle_advice_when_as_many_tasks_were_lost_as_finished():
    # Two hung tasks on a pool of two, one at a time: the other worker waited.
    workers = tuple(WorkerInsight(i, 100 + i, "running") for i in range(2))
    hung = Insights(
        "process",
        workers=workers,
        tasks=1,
        busy=2.0,
        idle=2.1,
        lost=2,
        restarts={"task_timeout": 2},
    )
    assert not [line for line in hung.advice() if line.startswith("workers were idle")]
    assert _only(hung.advice(), "2 task(s) ran past task_timeout")
    many = Insights("process", workers=workers, tasks=20, busy=2.0, idle=2.1, lost=2)
    assert _only(many.advice(), "workers were idle")
