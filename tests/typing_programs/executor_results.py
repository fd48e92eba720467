"""``ProcessPoolExecutor``: ``submit`` checks its arguments and ``map`` yields typed results."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, as_completed

from typing_extensions import assert_type

import corral
from corral.futures import ProcessPoolExecutor


def power(base: int, exponent: int) -> int:
    return int(base**exponent)


def name_of(x: int) -> str:
    return str(x)


def main() -> None:
    with ProcessPoolExecutor(max_workers=2) as executor:
        future = executor.submit(power, 2, exponent=10)
        assert_type(future, Future[int])
        assert_type(future.result(timeout=10), int)
        assert_type(executor.map(name_of, [1, 2]), Iterator[str])
        assert_type(executor.map(power, [1, 2], [3, 4], timeout=10, chunksize=2), Iterator[int])
        assert_type(executor.map(power, [1, 2], [3, 4], chunksize="auto"), Iterator[int])
        for done in as_completed([executor.submit(name_of, 1)], timeout=10):
            assert_type(done.result(), str)
    executor2 = corral.ProcessPoolExecutor(2, mp_context=corral.get_context("forkserver"))
    assert_type(executor2.submit(name_of, 3), Future[str])
    executor2.shutdown(wait=True, cancel_futures=False)


if __name__ == "__main__":
    main()
