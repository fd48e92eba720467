"""Pool, ThreadPool and ProcessPoolExecutor: the stdlib API, under every start method."""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import threading
import time

import pytest

import corral
import corral.dummy
from corral.futures import ProcessPoolExecutor
from corral.pool import ThreadPool

pytestmark = pytest.mark.timeout(60)


def square(x):
    return x * x


def add(a, b):
    return a + b


def fail(x):
    raise ValueError(f"bad {x}")


def test_pool_calls(ctx):
    with ctx.Pool(2) as pool:
        assert pool.apply(square, (7,)) == 49
        assert pool.map(square, range(20)) == [i * i for i in range(20)]
        assert pool.starmap(add, [(1, 2), (3, 4)]) == [3, 7]
        assert list(pool.imap(square, range(10), chunksize=3)) == [i * i for i in range(10)]
        assert sorted(pool.imap_unordered(square, range(10))) == [i * i for i in range(10)]
        got = []
        r = pool.map_async(square, range(5), callback=got.append)
        assert r.get(30) == [0, 1, 4, 9, 16] and r.successful()
        r.wait(30)
        assert got == [[0, 1, 4, 9, 16]]
        closure_base = 10
        assert pool.map(lambda x: x + closure_base, [1, 2]) == [11, 12]


def test_pool_errors(ctx):
    pool = ctx.Pool(1)
    errors = []
    r = pool.apply_async(fail, (1,), error_callback=errors.append)
    with pytest.raises(ValueError, match="bad 1") as info:
        r.get(30)
    assert isinstance(info.value.__cause__, corral.pool.RemoteTraceback)
    assert isinstance(errors[0], ValueError) and not r.successful()
    with pytest.raises(ValueError, match="bad 3"):
        pool.map(fail, [3])
    it = pool.imap(fail, [4, 5])
    with pytest.raises(ValueError, match="bad 4"):
        next(it)
    with pytest.raises(ValueError, match="bad 5"):
        next(it)
    assert pool.apply_async(square, (2,)).get(30) == 4  # the pool lives on
    pool.close()
    with pytest.raises(ValueError, match="Pool not running"):
        pool.apply_async(square, (1,))
    pool.join()


def test_pool_validation():
    with pytest.raises(ValueError):
        corral.Pool(0)
    with pytest.raises(TypeError):
        corral.Pool(1, initializer=3)
    with pytest.raises(ValueError):
        corral.Pool(1, maxtasksperchild=0)


def test_get_timeout_and_terminate_fails_pending(ctx):
    pool = ctx.Pool(1)
    r = pool.apply_async(time.sleep, (30,))
    with pytest.raises(corral.TimeoutError):
        r.get(0.05)
    pool.terminate()
    pool.join()
    with pytest.raises(corral.BrokenProcessPool):
        r.get(10)


def test_imap_reads_an_endless_input_lazily(ctx):
    with ctx.Pool(2) as pool:
        results = pool.imap(square, itertools.count(), chunksize=1)
        assert [next(results) for _ in range(100)] == [i * i for i in range(100)]


def test_many_single_item_submissions_from_a_feed_thread_all_arrive():
    # Regression: a lost engine wake-up left imap(chunksize=1) waiting forever
    # after a few hundred items when the feed thread raced the engine thread.
    with corral.get_context("fork").Pool(2) as pool:
        for _ in range(3):
            assert sum(pool.imap(square, range(5000), chunksize=1)) == sum(
                i * i for i in range(5000)
            )


def _engine_settled(engine):
    # Every worker has said READY (only ready workers are parked), and two
    # requests in a row: the engine has finished the step in which it handled
    # the first (and parked its idle workers) when the second runs.
    deadline = time.monotonic() + 30
    while not all(w.ready for w in engine._workers.values()):
        assert time.monotonic() < deadline, "the workers never became ready"
        done = threading.Event()
        engine._call_soon(done.set)
        assert done.wait(10)
    for _ in range(2):
        done = threading.Event()
        engine._call_soon(done.set)
        assert done.wait(10)


def test_apply_on_an_idle_pool_bypasses_the_engine_thread(ctx):
    with ctx.Pool(2) as pool:
        assert pool.apply(square, (3,)) == 9
        engine = pool._engine
        _engine_settled(engine)
        assert len(engine._parked) == 2

        def no_engine(task):
            raise AssertionError("apply went through the engine thread")

        engine.submit = no_engine
        assert [pool.apply(square, (i,)) for i in range(50)] == [i * i for i in range(50)]
        with pytest.raises(ValueError, match="bad 2") as info:
            pool.apply(fail, (2,))
        assert isinstance(info.value.__cause__, corral.pool.RemoteTraceback)
        del engine.submit
        # Queued work takes the parked workers back; apply then queues as usual.
        results = [pool.apply_async(square, (i,)) for i in range(100)]
        assert pool.apply(square, (12,)) == 144
        assert [r.get(30) for r in results] == [i * i for i in range(100)]


def test_future_result_runs_its_queued_task_directly(ctx):
    with ProcessPoolExecutor(2, mp_context=ctx) as ex:
        assert ex.submit(square, 3).result(30) == 9
        engine = ex._engine
        _engine_settled(engine)
        assert len(engine._parked) == 2
        # Queue tasks without waking the engine: only result() can run them.
        engine.submit = engine._incoming.append
        assert [ex.submit(square, i).result(10) for i in range(20)] == [i * i for i in range(20)]
        error = ex.submit(fail, 7).exception(10)
        assert isinstance(error, ValueError) and "bad 7" in str(error)
        del engine.submit
        engine._wake()  # the engine now drops the tasks that ran directly
        futures = [ex.submit(square, i) for i in range(50)]
        assert len(list(cf.as_completed(futures, timeout=30))) == 50
        assert sorted(f.result() for f in futures) == sorted(i * i for i in range(50))


def test_engine_dispatch_and_direct_calls_never_share_a_worker(ctx):
    # Regression: the engine dispatched to a worker a caller had borrowed; the
    # two tasks' records crossed and both futures waited forever.
    with ProcessPoolExecutor(2, mp_context=ctx) as ex:
        for _ in range(20):
            futures = [ex.submit(square, i) for i in range(100)]
            assert [f.result(30) for f in futures] == [i * i for i in range(100)]
    with ctx.Pool(2) as pool:
        for _ in range(20):
            pending = [pool.apply_async(square, (i,)) for i in range(50)]
            assert pool.apply(square, (7,)) == 49
            assert [r.get(30) for r in pending] == [i * i for i in range(50)]


def test_apply_with_a_task_timeout_is_still_enforced(ctx):
    with ctx.Pool(1) as pool:
        assert pool.apply(square, (2,)) == 4
        with pytest.raises(corral.TaskTimeoutError):
            pool.apply(time.sleep, (30,), task_timeout=0.2)
        assert pool.apply(square, (5,)) == 25


def test_thread_pool_terminate_does_not_wait_for_busy_threads():
    release = threading.Event()
    pool = ThreadPool(2)
    threads = list(pool._pool)
    result = pool.map_async(lambda _: release.wait(60), range(100), chunksize=1)
    pool.terminate()
    pool.join()  # returns although both threads are still inside a task
    assert not release.is_set()
    with pytest.raises(corral.BrokenProcessPool):
        result.get(10)
    release.set()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()  # the abandoned threads ran nothing more


def test_imap_keeps_big_inputs_in_flight_within_its_byte_budget():
    item = 256 * 1024  # 32 MiB of budget: about 128 such items in flight, not 1024
    produced = consumed = most_in_flight = 0

    def items():
        nonlocal produced, most_in_flight
        for _ in range(400):
            produced += 1
            most_in_flight = max(most_in_flight, produced - consumed)
            yield bytes(item)

    with corral.get_context("fork").Pool(2) as pool:
        for size in pool.imap(len, items()):
            assert size == item
            consumed += 1
    assert consumed == 400
    assert most_in_flight <= 128 + 16


@pytest.mark.parametrize("make_pool", [ThreadPool, corral.dummy.Pool])
def test_thread_pools_imap_every_item(make_pool):
    with make_pool(2) as pool:
        assert list(pool.imap(square, range(50))) == [i * i for i in range(50)]
        assert sorted(pool.imap_unordered(square, range(50), chunksize=3)) == [
            i * i for i in range(50)
        ]

        def broken_input():
            yield from range(5)
            raise ZeroDivisionError("input broke")

        it = pool.imap(square, broken_input())
        assert [next(it) for _ in range(5)] == [0, 1, 4, 9, 16]
        with pytest.raises(ZeroDivisionError, match="input broke"):
            next(it)


def test_thread_pool_passes_objects_by_reference():
    lock = threading.Lock()
    with ThreadPool(2) as pool:
        assert pool.map(lambda obj: obj is lock, [lock, lock]) == [True, True]
    with corral.dummy.Pool(2) as pool:
        assert pool.map(square, [3]) == [9]


def test_executor_api(ctx):
    with ProcessPoolExecutor(2, mp_context=ctx) as ex:
        futures = [ex.submit(square, i) for i in range(50)]
        assert sorted(f.result() for f in cf.as_completed(futures, timeout=30)) == [
            i * i for i in range(50)
        ]
        done, _ = cf.wait([ex.submit(add, 1, b=2)], timeout=30)
        assert done.pop().result() == 3
        assert list(ex.map(add, range(5), range(5), chunksize=2)) == [0, 2, 4, 6, 8]
        with pytest.raises(ValueError):
            ex.submit(fail, 9).result(30)
        assert ex.submit(lambda: 5).result(30) == 5
        bad = ex.submit(square, threading.Lock())
        with pytest.raises(corral.errors.SerializationError):
            bad.result(0)
    with pytest.raises(RuntimeError):
        ex.submit(square, 1)


def test_executor_shutdown_cancel_and_kill(ctx):
    ex = ProcessPoolExecutor(1, mp_context=ctx)
    running = ex.submit(time.sleep, 30)
    queued = [ex.submit(square, i) for i in range(5)]
    ex.kill_workers()
    with pytest.raises(corral.BrokenProcessPool):
        running.result(10)
    for f in queued:
        assert f.cancelled() or isinstance(f.exception(10), corral.BrokenProcessPool)


def test_executor_validation():
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        ProcessPoolExecutor(0)
    with pytest.raises(TypeError):
        ProcessPoolExecutor(1, initializer=5)
    with pytest.raises(ValueError, match="chunksize"):
        ProcessPoolExecutor(1).map(square, [1], chunksize=0)
    assert issubclass(corral.futures.BrokenProcessPool, cf.BrokenExecutor)
    assert issubclass(corral.WorkerLostError, corral.BrokenProcessPool)
