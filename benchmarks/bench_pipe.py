"""Pipe throughput and latency, corral vs the stdlib, between two processes (fork).

Run: python benchmarks/bench_pipe.py
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import corral
from _harness import compare


def consume(conn, count: int, done, use=None) -> None:
    for _ in range(count):
        obj = conn.recv()
        if use is not None:
            use(obj)
    done.send(b"ok")


def echo(conn, count: int) -> None:
    for _ in range(count):
        conn.send_bytes(conn.recv_bytes())


def throughput(mp, payload, count: int, duplex: bool, use=None) -> float:
    r, w = mp.Pipe(duplex=duplex)
    done_r, done_w = mp.Pipe(duplex=False)
    p = mp.get_context("fork").Process(target=consume, args=(r, count, done_w, use))
    p.start()
    t0 = time.perf_counter()
    for _ in range(count):
        w.send(payload)
    done_r.recv_bytes()
    elapsed = time.perf_counter() - t0
    p.join()
    for c in (r, w, done_r, done_w):
        c.close()
    return count / elapsed


def bytes_throughput(mp, size: int, count: int) -> float:
    r, w = mp.Pipe(duplex=True)
    p = mp.get_context("fork").Process(target=echo, args=(r, count))
    p.start()
    payload = b"x" * size
    t0 = time.perf_counter()
    for _ in range(count):
        w.send_bytes(payload)
        w.recv_bytes()
    elapsed = time.perf_counter() - t0
    p.join()
    r.close()
    w.close()
    return 2 * count * size / elapsed / 2**20


def latency(mp, count: int) -> float:
    r, w = mp.Pipe()
    p = mp.get_context("fork").Process(target=echo, args=(r, count))
    p.start()
    t0 = time.perf_counter()
    for _ in range(count):
        w.send_bytes(b"x")
        w.recv_bytes()
    elapsed = time.perf_counter() - t0
    p.join()
    r.close()
    w.close()
    return elapsed / count


def raw_pipe(count: int, size: int) -> float:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        left = count * size
        while left:
            left -= len(os.read(r, min(left, 65536)))
        os._exit(0)
    os.close(r)
    payload = b"x" * size
    t0 = time.perf_counter()
    for _ in range(count):
        os.write(w, payload)
    os.close(w)
    os.waitpid(pid, 0)
    return count / (time.perf_counter() - t0)


def main() -> list[dict]:
    rows = []
    kib = b"x" * 1024
    for duplex in (True, False):
        label = "Pipe()" if duplex else "Pipe(duplex=False)"
        rows.append(
            compare(
                f"{label} send/recv 1 KiB bytes, msgs/s",
                lambda d=duplex: throughput(corral, kib, 100_000, d),
                lambda d=duplex: throughput(multiprocessing, kib, 100_000, d),
                rounds=5,
                unit="msg/s",
                higher_is_better=True,
            )
        )
    rows.append(
        compare(
            "Pipe() send/recv 8 B objects, msgs/s",
            lambda: throughput(corral, 12345678, 100_000, True),
            lambda: throughput(multiprocessing, 12345678, 100_000, True),
            rounds=5,
            unit="msg/s",
            higher_is_better=True,
        )
    )
    rows.append(
        compare(
            "Pipe() round trip latency (1 byte)",
            lambda: latency(corral, 20_000),
            lambda: latency(multiprocessing, 20_000),
            rounds=5,
        )
    )
    rows.append(
        compare(
            "Pipe() 64 MiB send_bytes/recv_bytes, MiB/s",
            lambda: bytes_throughput(corral, 64 * 2**20, 8),
            lambda: bytes_throughput(multiprocessing, 64 * 2**20, 8),
            rounds=5,
            unit="MiB/s",
            higher_is_better=True,
        )
    )
    raw = raw_pipe(200_000, 1028)
    print(f"{'raw os.pipe 1 KiB writes (reference)':<44} {raw:,.0f} msg/s")
    rows += ndarray_rows()
    return rows


def memcpy_bandwidth(arr, rounds: int = 9) -> float:
    """MiB/s of ``arr.copy()`` (median of rounds): the memory's speed on this machine now."""
    import statistics

    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        arr.copy()
        times.append(time.perf_counter() - t0)
    return arr.nbytes / 2**20 / statistics.median(times)


def ndarray_rows() -> list[dict]:
    """A 64 MiB NumPy array through Pipe() and Pipe(duplex=False), the receiver sums it."""
    try:
        import numpy as np
    except ImportError:
        print("numpy missing: no ndarray rows")
        return []
    arr = np.ones(64 * 2**20 // 8)
    count = 8
    rows = []
    for duplex in (True, False):
        label = "Pipe()" if duplex else "Pipe(duplex=False)"
        rows.append(
            compare(
                f"{label} 64 MiB ndarray (receiver sums), MiB/s",
                lambda d=duplex: 64 * throughput(corral, arr, count, d, np.sum),
                lambda d=duplex: 64 * throughput(multiprocessing, arr, count, d, np.sum),
                rounds=5,
                unit="MiB/s",
                higher_is_better=True,
            )
        )
    memcpy = memcpy_bandwidth(arr)
    print(f"{'memcpy: arr.copy() of 64 MiB (reference)':<44} {memcpy:,.0f} MiB/s", flush=True)
    return rows


if __name__ == "__main__":
    if "--ndarray" in sys.argv:
        ndarray_rows()
    else:
        main()
