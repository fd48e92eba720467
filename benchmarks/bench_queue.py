"""Queue throughput, corral vs the stdlib: one producer process, one consumer process (fork).

Run: python benchmarks/bench_queue.py [--quick]

Each round: the parent puts N messages, a child gets them and reports; the
time runs from the first put to the child's report. Messages are bytes of the
given size (the 8-byte row sends an int). The ndarray rows send a 64 MiB NumPy
array that the child sums (so every page it got is read), beside ``arr.copy()``
of the same array in the same run (memcpy bandwidth).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import corral
from _harness import compare
from bench_pipe import throughput as pipe_throughput


def consume(q, count: int, done, use=None) -> None:
    get = q.get
    if use is None:
        for _ in range(count):
            get()
    else:
        for _ in range(count):
            use(get())
    done.send_bytes(b"ok")


def queue_throughput(mp, kind: str, payload, count: int, use=None) -> float:
    ctx = mp.get_context("fork")
    q = getattr(ctx, kind)()
    done_r, done_w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=consume, args=(q, count, done_w, use))
    p.start()
    put = q.put
    t0 = time.perf_counter()
    for _ in range(count):
        put(payload)
    done_r.recv_bytes()
    elapsed = time.perf_counter() - t0
    p.join()
    if kind != "SimpleQueue":
        q.close()
        q.join_thread()
    done_r.close()
    done_w.close()
    return count / elapsed


def main() -> list[dict]:
    quick = "--quick" in sys.argv
    rounds = 3 if quick else 5
    n = 30_000 if quick else 100_000
    big = 300 if quick else 1_000
    rows = []
    cases = [
        ("Queue", "1 KiB", b"x" * 1024, n),
        ("SimpleQueue", "1 KiB", b"x" * 1024, n),
        ("Pipe", "1 KiB", b"x" * 1024, n),
        ("Queue", "8 B", 12345678, n),
        ("SimpleQueue", "8 B", 12345678, n),
        ("Pipe", "8 B", 12345678, n),
        ("Queue", "1 MiB", b"x" * 2**20, big),
        ("SimpleQueue", "1 MiB", b"x" * 2**20, big),
        ("Pipe", "1 MiB", b"x" * 2**20, big),
    ]
    for kind, label, payload, count in cases:
        if kind == "Pipe":
            ours = lambda p=payload, c=count: pipe_throughput(corral, p, c, True)  # noqa: E731
            theirs = lambda p=payload, c=count: pipe_throughput(  # noqa: E731
                multiprocessing, p, c, True
            )
        else:
            ours = lambda k=kind, p=payload, c=count: queue_throughput(corral, k, p, c)  # noqa: E731
            theirs = lambda k=kind, p=payload, c=count: queue_throughput(  # noqa: E731
                multiprocessing, k, p, c
            )
        rows.append(
            compare(
                f"{kind} {label}, 1 producer -> 1 consumer, msgs/s",
                ours,
                theirs,
                rounds=rounds,
                unit="msg/s",
                higher_is_better=True,
            )
        )
    rows += ndarray_rows(quick)
    return rows


def ndarray_rows(quick: bool) -> list[dict]:
    """64 MiB NumPy arrays through Queue and SimpleQueue (MiB/s), and memcpy in the same run."""
    try:
        import numpy as np
    except ImportError:
        print("numpy missing: no ndarray rows")
        return []
    from bench_pipe import memcpy_bandwidth

    arr = np.ones(64 * 2**20 // 8)
    count = 4 if quick else 8
    rows = []
    for kind in ("Queue", "SimpleQueue"):
        rows.append(
            compare(
                f"{kind} 64 MiB ndarray (consumer sums), MiB/s",
                lambda k=kind: 64 * queue_throughput(corral, k, arr, count, np.sum),
                lambda k=kind: 64 * queue_throughput(multiprocessing, k, arr, count, np.sum),
                rounds=3 if quick else 5,
                unit="MiB/s",
                higher_is_better=True,
            )
        )
    memcpy = memcpy_bandwidth(arr)
    print(f"{'memcpy: arr.copy() of 64 MiB (reference)':<44} {memcpy:,.0f} MiB/s", flush=True)
    return rows


if __name__ == "__main__":
    if "--ndarray" in sys.argv:
        ndarray_rows("--quick" in sys.argv)
    else:
        main()
