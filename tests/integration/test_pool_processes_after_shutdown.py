"""Workers reached through ``pool._pool`` / ``executor._processes`` stay joinable after shutdown.

Code written for the stdlib keeps these Process objects and joins them once the
pool is gone; the stdlib never closes them. corral releases a reaped worker's
fds without closing the object, so ``join()``, ``is_alive()`` and ``exitcode``
keep working and nothing leaks.
"""

from __future__ import annotations

import pytest

from corral.futures import ProcessPoolExecutor
from tests.conftest import _open_fds

pytestmark = pytest.mark.timeout(60)


def square(x):
    return x * x


def _check_ended(procs):
    assert procs
    for proc in procs:
        proc.join(timeout=30)
        assert not proc.is_alive()
        assert isinstance(proc.exitcode, int)
        assert "closed" not in repr(proc)


@pytest.mark.parametrize("wait", [True, False], ids=["wait", "nowait"])
def test_executor_workers_stay_joinable_after_shutdown(ctx, wait):
    fds_before = _open_fds()
    executor = ProcessPoolExecutor(2, mp_context=ctx)
    assert list(executor.map(square, range(8))) == [x * x for x in range(8)]
    procs = list(executor._processes.values())
    executor.shutdown(wait=wait)
    _check_ended(procs)
    if wait:
        # Reaped workers hold no fd, although their objects are still alive here.
        assert _open_fds() - fds_before == set()
        assert all(proc.exitcode == 0 for proc in procs)


def test_executor_workers_stay_joinable_after_a_with_block(ctx):
    with ProcessPoolExecutor(2, mp_context=ctx) as executor:
        assert executor.submit(square, 3).result(timeout=30) == 9
        procs = list(executor._processes.values())
    _check_ended(procs)


@pytest.mark.parametrize("end", ["close", "terminate"])
def test_pool_workers_stay_joinable_after_the_pool_is_joined(ctx, end):
    fds_before = _open_fds()
    pool = ctx.Pool(2)
    assert pool.map(square, range(8)) == [x * x for x in range(8)]
    procs = list(pool._pool)
    getattr(pool, end)()
    pool.join()
    _check_ended(procs)
    assert _open_fds() - fds_before == set()


def test_pool_workers_stay_joinable_after_a_with_block(ctx):
    with ctx.Pool(2) as pool:
        assert pool.apply(square, (4,)) == 16
        procs = list(pool._pool)
    _check_ended(procs)
