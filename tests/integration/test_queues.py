"""Queues under every start method (the basics; issue 5 adds the robustness matrix)."""

from __future__ import annotations

import queue
import threading

import pytest

import corral

TIMEOUT = 60


def produce(q, count):
    for i in range(count):
        q.put(("item", i))


def consume_joinable(q, count):
    for _ in range(count):
        q.get(timeout=TIMEOUT)
        q.task_done()


@pytest.mark.parametrize("kind", ["Queue", "SimpleQueue", "JoinableQueue"])
def test_items_from_two_producers_all_arrive_in_per_producer_order(ctx, kind):
    q = getattr(ctx, kind)()
    producers = [ctx.Process(target=produce, args=(q, 500)) for _ in range(2)]
    for p in producers:
        p.start()
    got = [q.get() for _ in range(1000)]
    for p in producers:
        p.join(TIMEOUT)
        assert p.exitcode == 0
    assert sorted(got) == sorted([("item", i) for i in range(500)] * 2)
    firsts = [i for _, i in got]
    # Each producer's items keep their order: the sequence is a merge of two runs.
    assert sorted(firsts) == sorted(list(range(500)) * 2)
    q.close()
    if kind != "SimpleQueue":
        q.join_thread()


def test_timeouts_and_nowait(ctx):
    q = ctx.Queue(1)
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    q.put(1)
    with pytest.raises(queue.Full):
        q.put(2, timeout=0.05)
    with pytest.raises(queue.Full):
        q.put_nowait(2)
    assert q.full() and q.qsize() == 1
    assert q.get(timeout=TIMEOUT) == 1
    assert q.empty() and q.qsize() == 0
    q.close()
    q.join_thread()


def test_put_of_an_unpicklable_object_raises_in_the_caller(ctx):
    q = ctx.Queue()
    with pytest.raises(corral.errors.SerializationError, match="lock"):
        q.put(threading.Lock())
    q.put("still works")
    assert q.get(timeout=TIMEOUT) == "still works"
    sq = ctx.SimpleQueue()
    with pytest.raises(TypeError):
        sq.put(threading.Lock())
    sq.close()
    q.close()
    q.join_thread()


def test_use_after_close_raises(ctx):
    q = ctx.Queue()
    q.close()
    with pytest.raises(ValueError, match="is closed"):
        q.put(1)
    with pytest.raises(ValueError, match="is closed"):
        q.get()
    q.join_thread()


def test_joinable_queue(ctx):
    q = ctx.JoinableQueue()
    for i in range(20):
        q.put(i)
    p = ctx.Process(target=consume_joinable, args=(q, 20))
    p.start()
    q.join()
    p.join(TIMEOUT)
    assert p.exitcode == 0
    with pytest.raises(ValueError, match="too many times"):
        q.task_done()
    q.close()
    q.join_thread()


def test_generic_aliases():
    assert corral.queues.Queue[int].__origin__ is corral.queues.Queue
    assert corral.queues.SimpleQueue[int].__origin__ is corral.queues.SimpleQueue


def test_pickling_a_queue_outside_start_is_refused(ctx):
    q = ctx.Queue()
    with pytest.raises(RuntimeError, match="through inheritance"):
        corral.reduction.ForkingPickler.dumps(q)
    q.close()
