"""Shared ctypes, corral vs the stdlib (issue 4).

Run: python benchmarks/bench_shared.py [--quick]

- locked increments of a shared Value('i') by 2 processes (fork), time per increment
- creating and freeing 10,000 small Values in one process
- a child attaching to a 64 MiB SharedMemory and summing it with NumPy (if installed)
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import corral
from _harness import compare

QUICK = "--quick" in sys.argv


def _add(value, times):
    for _ in range(times):
        with value.get_lock():
            value.value += 1


def locked_increments(mp, per_process):
    ctx = mp.get_context("fork")
    value = ctx.Value("i", 0)
    procs = [ctx.Process(target=_add, args=(value, per_process)) for _ in range(2)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - t0
    if value.value != 2 * per_process:
        raise AssertionError(f"lost increments: {value.value} != {2 * per_process}")
    return elapsed / (2 * per_process)


def create_and_free_values(mp, count):
    gc.collect()
    t0 = time.perf_counter()
    values = [mp.Value("i", i) for i in range(count)]
    del values
    gc.collect()
    return time.perf_counter() - t0


def _sum_block(mp_shared_memory, name, size, out):
    import numpy as np

    t0 = time.perf_counter()
    shm = mp_shared_memory.SharedMemory(name)
    total = int(np.frombuffer(shm.buf, dtype=np.uint8, count=size).sum(dtype=np.uint64))
    elapsed = time.perf_counter() - t0
    del total
    shm.close()
    out.send(elapsed)


def attach_and_sum(mp, shared_memory, size):
    """Bytes per second a child attaches to and sums a block with NumPy."""
    ctx = mp.get_context("fork")
    shm = shared_memory.SharedMemory(create=True, size=size)
    try:
        shm.buf[:] = b"\x01" * size
        reader, writer = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_sum_block, args=(shared_memory, shm.name, size, writer))
        p.start()
        elapsed = reader.recv()
        p.join()
        return size / elapsed
    finally:
        shm.close()
        shm.unlink()


def main():
    rounds = 3 if QUICK else 5
    per_process = 20_000 if QUICK else 100_000
    compare(
        f"with lock: value += 1, 2 processes x {per_process:,}",
        lambda: locked_increments(corral, per_process),
        lambda: locked_increments(multiprocessing, per_process),
        rounds,
    )
    compare(
        "create and free 10,000 Value('i')",
        lambda: create_and_free_values(corral, 10_000),
        lambda: create_and_free_values(multiprocessing, 10_000),
        rounds,
    )
    try:
        import numpy  # noqa: F401  (optional: only this benchmark needs it)
    except ImportError:
        print("numpy not installed: the SharedMemory sum is skipped")
    else:
        import multiprocessing.shared_memory as stdlib_shared_memory

        import corral.shared_memory as corral_shared_memory

        compare(
            "child attaches to 64 MiB SharedMemory, NumPy sum",
            lambda: attach_and_sum(corral, corral_shared_memory, 64 << 20),
            lambda: attach_and_sum(multiprocessing, stdlib_shared_memory, 64 << 20),
            rounds,
            unit="B/s",
            higher_is_better=True,
        )
    shm = sorted(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else []
    print(f"/dev/shm entries after the runs: {len(shm)}")


if __name__ == "__main__":
    main()
