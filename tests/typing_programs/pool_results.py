"""Pool results are generic: the type of ``func``'s result reaches the caller."""

from __future__ import annotations

from typing_extensions import assert_type

import corral
import corral.dummy
from corral.pool import AsyncResult, IMapIterator, Pool, ThreadPool


def square(x: int) -> int:
    return x * x


def describe(x: int, label: str) -> str:
    return f"{label}{x}"


def on_result(value: int) -> None:
    print(value)


def on_error(exc: BaseException) -> None:
    print(exc)


def use(pool: Pool) -> None:
    assert_type(pool.map(square, [1, 2]), list[int])
    assert_type(pool.map(square, range(3), chunksize=2), list[int])
    assert_type(pool.map(square, range(3), chunksize="auto"), list[int])
    assert_type(pool.starmap_async(describe, [(1, "a")], "auto").get(10), list[str])
    assert_type(pool.imap_unordered(square, range(3), chunksize="auto"), IMapIterator[int])
    assert_type(pool.starmap(describe, [(1, "a"), (2, "b")]), list[str])
    assert_type(pool.apply(square, (3,)), int)
    assert_type(pool.apply(describe, (3,), {"label": "x"}), str)
    assert_type(pool.imap(square, range(3)), IMapIterator[int])
    assert_type(pool.imap_unordered(square, range(3), 2), IMapIterator[int])
    pending = pool.apply_async(square, (4,), callback=on_result, error_callback=on_error)
    assert_type(pending, AsyncResult[int])
    assert_type(pending.get(timeout=10), int)
    pending.wait(1.0)
    ready: bool = pending.ready() and pending.successful()
    print(ready)
    many = pool.map_async(square, [1, 2, 3])
    assert_type(many.get(10), list[int])
    starred = pool.starmap_async(describe, [(1, "a")])
    assert_type(starred.get(10), list[str])
    for value in pool.imap(square, [1, 2]):
        assert_type(value, int)


def main() -> None:
    with corral.Pool(processes=2, maxtasksperchild=10) as pool:
        use(pool)
    pool2 = corral.Pool(2, task_timeout=30.0, max_memory_per_child=1 << 30)
    assert_type(pool2, Pool)
    assert_type(pool2.map(square, [1], task_timeout=5), list[int])
    pool2.close()
    pool2.join()
    with ThreadPool(2) as threads:
        assert_type(threads.map(square, [1, 2]), list[int])
    with corral.dummy.Pool(2) as dummy_pool:
        assert_type(dummy_pool.apply(square, (1,)), int)
    ctx_pool = corral.get_context("fork").Pool(1)
    assert_type(ctx_pool.apply(square, (2,)), int)
    ctx_pool.terminate()


if __name__ == "__main__":
    main()
