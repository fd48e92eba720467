"""Recipe: one big NumPy array, many tasks (docs/guide.md, "NumPy arrays").

``pool.share(array)`` copies the array into shared memory once; every task that
gets the handle receives a read-only NumPy view of it (no pickling, no copy per
task). Arrays passed or returned as plain arguments also travel through shared
memory, one copy each way.

Run: python examples/share_arrays.py
"""

from __future__ import annotations

import numpy as np

import corral


def window_mean(data: np.ndarray, start: int, stop: int) -> float:
    """The mean of ``data[start:stop]`` (``data`` is the shared array itself)."""
    return float(data[start:stop].mean())


def is_read_only(data: np.ndarray) -> bool:
    """A shared array cannot be written: copy it first to change it."""
    try:
        data[0] = 0.0
    except ValueError:
        return True
    return False


def scaled(block: np.ndarray) -> np.ndarray:
    """A new array: results come back through shared memory too."""
    return block * 2.0


def main() -> None:
    data = np.random.default_rng(0).random(4_000_000)
    windows = [(start, start + 500_000) for start in range(0, len(data), 500_000)]
    with corral.Pool(2) as pool:
        handle = pool.share(data)  # one copy into shared memory
        means = pool.starmap(window_mean, [(handle, a, b) for a, b in windows])
        read_only = pool.apply(is_read_only, (handle,))
        handle.release()  # or let the pool free it when it ends
        blocks = pool.map(scaled, np.array_split(data, 4))
    assert np.allclose(means, [data[a:b].mean() for a, b in windows])
    assert np.array_equal(np.concatenate(blocks), data * 2.0)
    print(f"{len(means)} window means from one shared array; read-only in the task: {read_only}")
    print(f"{len(blocks)} blocks scaled and returned: {sum(b.size for b in blocks)} values")


if __name__ == "__main__":
    main()
