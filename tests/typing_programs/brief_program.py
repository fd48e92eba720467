"""The 20-line program of issue 13: every top-level factory, results used as typed values."""

from __future__ import annotations

import corral


def square(x: int) -> int:
    return x * x


def main() -> None:
    ctx = corral.get_context("spawn")
    queue: corral.queues.Queue[int] = corral.Queue()
    queue.put(3)
    total: int = queue.get(timeout=10)
    with corral.Pool(2) as pool:
        total += sum(pool.map(square, range(10)))
    with corral.ProcessPoolExecutor(2, mp_context=ctx) as executor:
        total += executor.submit(square, 4).result(timeout=10)
    with corral.Manager() as manager:
        shared = manager.dict({"total": total})
        total = shared["total"]
    print(total + 1)


if __name__ == "__main__":
    main()
