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


def consume(conn, count: int, done) -> None:
    for _ in range(count):
        conn.recv()
    done.send(b"ok")


def echo(conn, count: int) -> None:
    for _ in range(count):
        conn.send_bytes(conn.recv_bytes())


def throughput(mp, payload, count: int, duplex: bool) -> float:
    r, w = mp.Pipe(duplex=duplex)
    done_r, done_w = mp.Pipe(duplex=False)
    p = mp.get_context("fork").Process(target=consume, args=(r, count, done_w))
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
    return rows


if __name__ == "__main__":
    main()
