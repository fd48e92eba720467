"""Pool and executor throughput and latency, corral vs the stdlib (fork for both).

Run: python benchmarks/bench_pool.py [--quick]

Each measurement starts a fresh pool of 2 workers (setup not timed) and runs
corral and the stdlib alternately; medians and ratios are printed.
"""

from __future__ import annotations

import concurrent.futures
import faulthandler
import multiprocessing
import os
import pickle
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import corral
from _harness import compare
from corral.futures import ProcessPoolExecutor as CorralExecutor

QUICK = "--quick" in sys.argv
faulthandler.dump_traceback_later(600, exit=True)  # a benchmark must never hang


def noop(x=None):
    return x


def burn(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return seconds


def executor_submit_as_completed(executor_cls, mp, n):
    with executor_cls(2, mp_context=mp.get_context("fork")) as ex:
        ex.submit(noop).result()  # workers up
        t0 = time.perf_counter()
        futures = [ex.submit(noop, i) for i in range(n)]
        for _ in concurrent.futures.as_completed(futures):
            pass
        return n / (time.perf_counter() - t0)


def pool_imap(mp, n):
    with mp.get_context("fork").Pool(2) as pool:
        pool.apply(noop)
        t0 = time.perf_counter()
        for _ in pool.imap(noop, range(n), chunksize=1):
            pass
        return n / (time.perf_counter() - t0)


def pool_map(mp, n):
    with mp.get_context("fork").Pool(2) as pool:
        pool.apply(noop)
        data = list(range(n))
        t0 = time.perf_counter()
        pool.map(noop, data)
        return n / (time.perf_counter() - t0)


def apply_round_trip(mp, n):
    with mp.get_context("fork").Pool(2) as pool:
        for _ in range(50):
            pool.apply(noop)
        t0 = time.perf_counter()
        for _ in range(n):
            pool.apply(noop)
        return (time.perf_counter() - t0) / n


def submit_round_trip(executor_cls, mp, n):
    with executor_cls(2, mp_context=mp.get_context("fork")) as ex:
        for _ in range(50):
            ex.submit(noop).result()
        t0 = time.perf_counter()
        for _ in range(n):
            ex.submit(noop).result()
        return (time.perf_counter() - t0) / n


def bare_round_trip(n):
    """The floor: a pickled call and its pickled result over a socket pair, no pool."""
    parent, child = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the child: answer until EOF
        parent.close()
        while True:
            data = child.recv(1 << 16)
            if not data:
                os._exit(0)
            fn, args = pickle.loads(data)
            child.sendall(pickle.dumps(fn(*args)))
    child.close()
    try:
        for i in range(50 + n):
            if i == 50:
                t0 = time.perf_counter()
            parent.sendall(pickle.dumps((noop, (i,))))
            pickle.loads(parent.recv(1 << 16))
        return (time.perf_counter() - t0) / n
    finally:
        parent.close()
        os.waitpid(pid, 0)


def efficiency(mp, tasks=40, seconds=0.05):
    with mp.get_context("fork").Pool(2) as pool:
        pool.apply(noop)
        t0 = time.perf_counter()
        pool.map(burn, [seconds] * tasks, chunksize=1)
        return (tasks * seconds / 2) / (time.perf_counter() - t0)


def main():
    rounds = 3 if QUICK else 5
    n_tasks = 5_000 if QUICK else 20_000
    stdlib_executor = concurrent.futures.ProcessPoolExecutor
    compare(
        f"executor submit+as_completed {n_tasks} no-ops",
        lambda: executor_submit_as_completed(CorralExecutor, corral, n_tasks),
        lambda: executor_submit_as_completed(stdlib_executor, multiprocessing, n_tasks),
        rounds,
        unit="tasks/s",
        higher_is_better=True,
    )
    compare(
        f"pool imap chunksize=1 {n_tasks} no-ops",
        lambda: pool_imap(corral, n_tasks),
        lambda: pool_imap(multiprocessing, n_tasks),
        rounds,
        unit="tasks/s",
        higher_is_better=True,
    )
    compare(
        "pool map 200,000 items default chunks",
        lambda: pool_map(corral, 200_000),
        lambda: pool_map(multiprocessing, 200_000),
        rounds,
        unit="items/s",
        higher_is_better=True,
    )
    compare(
        "pool apply round trip",
        lambda: apply_round_trip(corral, 2_000),
        lambda: apply_round_trip(multiprocessing, 2_000),
        rounds,
    )
    compare(
        "executor submit().result() round trip",
        lambda: submit_round_trip(CorralExecutor, corral, 2_000),
        lambda: submit_round_trip(stdlib_executor, multiprocessing, 2_000),
        rounds,
    )
    compare(
        "apply round trip vs a bare pickled call",
        lambda: apply_round_trip(corral, 2_000),
        lambda: bare_round_trip(2_000),
        rounds,
        other="bare",
    )
    compare(
        "parallel efficiency 40 x 50 ms on 2 workers",
        lambda: efficiency(corral) * 100,
        lambda: efficiency(multiprocessing) * 100,
        3,
        unit="%",
        higher_is_better=True,
    )


if __name__ == "__main__":
    main()
