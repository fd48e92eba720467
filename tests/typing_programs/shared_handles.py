"""Share-once handles are generic: ``share(obj)`` gives a ``Shared`` of obj's type."""

from __future__ import annotations

from typing_extensions import assert_type

import corral
from corral import Shared
from corral.pool import Pool


def total(values: list[float]) -> float:
    return sum(values)


def use(pool: Pool, executor: corral.ProcessPoolExecutor) -> None:
    handle = pool.share([1.0, 2.0])
    assert_type(handle, Shared[list[float]])
    assert_type(handle.get(), list[float])
    assert_type(pool.apply(total, (handle,)), float)
    from_executor = executor.share({"a": 1})
    assert_type(from_executor, Shared[dict[str, int]])
    released: bool = handle.released
    print(released)
    handle.release()
