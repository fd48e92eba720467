"""``progress=`` on map-like calls, ``corral.as_completed`` and ``insights()`` are typed."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future

from typing_extensions import assert_type

import corral
from corral.futures import ProcessPoolExecutor
from corral.pool import AsyncResult


def double(x: int) -> int:
    return 2 * x


def main() -> None:
    counts: list[int] = []
    with corral.Pool(2) as pool:
        assert_type(pool.map(double, [1, 2], progress=True), list[int])
        assert_type(pool.map_async(double, [1, 2], progress=counts.append).get(10), list[int])
        for item in pool.imap_unordered(double, range(4), progress=lambda n: None):
            assert_type(item, int)
        results = [pool.apply_async(double, (i,)) for i in range(3)]
        for done in corral.as_completed(results, timeout=10, progress=True):
            assert_type(done, AsyncResult[int])
        insights = pool.insights()
        assert_type(insights, corral.Insights)
        assert_type(insights.workers[0], corral.WorkerInsight)
        assert_type(insights.advice(), list[str])
        print(insights.summary())
    with ProcessPoolExecutor(2) as executor:
        futures = [executor.submit(double, i) for i in range(3)]
        for future in corral.as_completed(futures, progress=counts.append):
            assert_type(future, Future[int])
        assert_type(executor.map(double, [1], progress=True), Iterator[int])
        assert_type(executor.insights().tasks, int)


if __name__ == "__main__":
    main()
