"""The executor's futures: a slimmer condition that must behave like threading.Condition."""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time

import pytest

from corral._future import _Future, _FutureCondition

pytestmark = pytest.mark.timeout(30)


def test_wait_times_out_and_keeps_the_lock():
    cond = _FutureCondition()
    with cond:
        start = time.monotonic()
        assert cond.wait(0.05) is False
        assert time.monotonic() - start >= 0.04
        assert cond._lock._is_owned()
        assert cond.wait(0) is False


def test_wait_without_the_lock_raises():
    with pytest.raises(RuntimeError, match="un-acquired"):
        _FutureCondition().wait(0)


def test_notify_wakes_one_waiter_and_notify_all_the_rest():
    cond = _FutureCondition()
    woken: list[bool] = []
    first_woken = threading.Event()

    def waiter(started):
        with cond:
            started.set()
            woken.append(cond.wait(10))
        first_woken.set()

    threads = []
    for _ in range(3):
        started = threading.Event()
        thread = threading.Thread(target=waiter, args=(started,))
        thread.start()
        assert started.wait(10)
        with cond:  # acquirable only once that waiter released it inside wait()
            pass
        threads.append(thread)
    with cond:
        assert len(cond._waiters) == 3
        cond.notify(1)
    assert first_woken.wait(10)
    with cond:
        assert woken == [True] and len(cond._waiters) == 2
        cond.notify_all()
    for thread in threads:
        thread.join(10)
    assert woken == [True, True, True]


def test_wait_under_a_recursively_held_lock_restores_the_depth():
    cond = _FutureCondition()
    with cond, cond:
        assert cond.wait(0.01) is False
    assert cond.acquire(False)  # fully released after two exits
    cond.release()


def test_future_works_with_wait_and_as_completed():
    futures = [_Future() for _ in range(5)]
    assert isinstance(futures[0], cf.Future)

    def finish():
        for i, f in enumerate(futures):
            f.set_running_or_notify_cancel()
            f.set_result(i)

    threading.Timer(0.05, finish).start()
    done, pending = cf.wait(futures, timeout=10)
    assert not pending and {f.result() for f in done} == set(range(5))
    assert sorted(f.result(1) for f in cf.as_completed(futures, timeout=10)) == list(range(5))
    late = _Future()
    with pytest.raises(cf.TimeoutError):
        late.result(0.01)
    assert late.cancel() and late.cancelled()
