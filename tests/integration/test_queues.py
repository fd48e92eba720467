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


def put_many_then_exit(q, sizes, done_putting):
    for i, size in enumerate(sizes):
        q.put((i, bytes([i % 256]) * size))
    done_putting.set()  # put() never waited: the rest sits in this process's buffer


@pytest.mark.parametrize(
    "sizes",
    [[200_000] * 40, [3 * 2**20, 10, 600_000, 10, 2**21]],
    ids=["more-than-the-ring-holds", "out-of-band-mixed"],
)
def test_messages_beyond_the_ring_keep_order_and_are_flushed_before_exit(ctx, sizes):
    q = ctx.Queue()
    done_putting = ctx.Event()
    p = ctx.Process(target=put_many_then_exit, args=(q, sizes, done_putting))
    p.start()
    assert done_putting.wait(TIMEOUT)
    for i, size in enumerate(sizes):
        index, data = q.get(timeout=TIMEOUT)
        assert index == i
        assert data == bytes([i % 256]) * size
    p.join(TIMEOUT)
    assert p.exitcode == 0
    assert q.empty() and q.qsize() == 0
    q.close()
    q.join_thread()


def put_blocking(q, item, started):
    started.set()
    q.put(item)  # waits: the queue is full


def test_a_full_bounded_queue_blocks_put_until_a_get(ctx):
    q = ctx.Queue(2)
    q.put("a")
    q.put("b")
    assert q.full() and q.qsize() == 2
    started = ctx.Event()
    p = ctx.Process(target=put_blocking, args=(q, "c", started))
    p.start()
    assert started.wait(TIMEOUT)
    p.join(0.3)
    assert p.exitcode is None  # still waiting for room
    assert q.get(timeout=TIMEOUT) == "a"
    p.join(TIMEOUT)
    assert p.exitcode == 0
    assert [q.get(timeout=TIMEOUT), q.get(timeout=TIMEOUT)] == ["b", "c"]
    q.close()
    q.join_thread()


def test_a_bounded_queue_counts_messages_not_yet_in_the_ring(ctx):
    q = ctx.Queue(3)
    big = b"x" * 600_000  # two of these fill the ring: the third waits in the buffer
    for _ in range(3):
        q.put(big, timeout=TIMEOUT)
    assert q.qsize() == 3 and q.full()
    with pytest.raises(queue.Full):
        q.put_nowait(big)
    assert [len(q.get(timeout=TIMEOUT)) for _ in range(3)] == [600_000] * 3
    assert q.qsize() == 0
    q.close()
    q.join_thread()


def joinable_worker(q):
    while True:
        item = q.get(timeout=TIMEOUT)
        q.task_done()
        if item is None:
            return


def test_join_waits_for_task_done_from_other_processes(ctx):
    q = ctx.JoinableQueue()
    workers = [ctx.Process(target=joinable_worker, args=(q,)) for _ in range(2)]
    for w in workers:
        w.start()
    for i in range(200):
        q.put(i)
    q.join()
    assert q._ring.unfinished() == 0
    for _ in workers:
        q.put(None)
    for w in workers:
        w.join(TIMEOUT)
        assert w.exitcode == 0
    q.join()
    q.close()
    q.join_thread()


def test_threads_of_one_process_share_a_queue(ctx):
    q = ctx.Queue()
    results: list[int] = []

    def consumer():
        for _ in range(2000):
            results.append(q.get(timeout=TIMEOUT))

    threads = [threading.Thread(target=consumer) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(4000):
        q.put(i)
    for t in threads:
        t.join(TIMEOUT)
    assert sorted(results) == list(range(4000))
    q.close()
    q.join_thread()


def put_one(q, item):
    q.put(item)


@pytest.mark.parametrize("kind", ["Queue", "SimpleQueue"])
def test_a_big_message_outlives_the_producer_that_put_it(ctx, kind):
    q = getattr(ctx, kind)()
    big = bytes(range(256)) * 8192  # 2 MiB: travels out of band
    p = ctx.Process(target=put_one, args=(q, big))
    p.start()
    p.join(TIMEOUT)  # gone, with its resource tracker pipe, before anyone reads
    assert p.exitcode == 0
    assert q.get() == big
    q.close()
    if kind == "Queue":
        q.join_thread()


def drain_into(q, out):
    got = []
    while True:
        item = q.get()  # SimpleQueue.get takes no timeout; pytest's bounds the test
        if item is None:
            break
        got.append(item)
    out.put(got)


@pytest.mark.parametrize("kind", ["Queue", "SimpleQueue"])
def test_several_consumers_take_every_message_exactly_once(kind):
    ctx = corral.get_context("fork")
    q, out = getattr(ctx, kind)(), ctx.SimpleQueue()
    consumers = [ctx.Process(target=drain_into, args=(q, out)) for _ in range(3)]
    for c in consumers:
        c.start()
    sizes = [1, 100, 5000, 70_000]  # frames of every size wrap the ring many times
    count = 20_000
    for i in range(count):
        q.put((i, b"x" * sizes[i % len(sizes)]))
    for _ in consumers:
        q.put(None)
    received = [item for _ in consumers for item in out.get()]
    for c in consumers:
        c.join(TIMEOUT)
        assert c.exitcode == 0
    assert sorted(i for i, _ in received) == list(range(count))
    assert all(len(data) == sizes[i % len(sizes)] for i, data in received)
    if kind == "Queue":
        q.close()
        q.join_thread()
