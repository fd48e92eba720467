"""Manager proxies, corral vs the stdlib: call latency and many clients at once.

Run: python benchmarks/bench_managers.py [--quick]

- dict pair: ``d[k] = v`` then ``d[k]`` on a dict proxy, one client (the
  parent), time per pair.
- 8 clients: eight processes each do N set/get pairs on one shared dict
  proxy at the same time; total pairs per second (every value is checked).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.managers
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import corral
import corral.managers
from _harness import compare


def dict_pair(mp, count: int) -> float:
    with mp.managers.SyncManager(ctx=mp.get_context("fork")) as m:
        d = m.dict()
        d["warm"] = 0
        t0 = time.perf_counter()
        for i in range(count):
            d[i] = i
            d[i]
        return (time.perf_counter() - t0) / count


def hammer(d, worker: int, count: int, done) -> None:
    for i in range(count):
        key = (worker, i)
        d[key] = i
        if d[key] != i:
            raise AssertionError(key)
    done.send(worker)
    done.close()


def many_clients(mp, clients: int, count: int) -> float:
    ctx = mp.get_context("fork")
    with mp.managers.SyncManager(ctx=ctx) as m:
        d = m.dict()
        r, w = ctx.Pipe(duplex=False)
        procs = [ctx.Process(target=hammer, args=(d, c, count, w)) for c in range(clients)]
        t0 = time.perf_counter()
        for p in procs:
            p.start()
        finished = sorted(r.recv() for _ in procs)
        elapsed = time.perf_counter() - t0
        for p in procs:
            p.join()
            if p.exitcode != 0:
                raise AssertionError(f"client exit code {p.exitcode}")
        if finished != list(range(clients)) or len(d) != clients * count:
            raise AssertionError("lost updates")
        r.close()
        w.close()
    return clients * count / elapsed


def main() -> list[dict]:
    quick = "--quick" in sys.argv
    rounds = 3 if quick else 5
    pairs = 2_000 if quick else 10_000
    per_client = 500 if quick else 2_000
    rows = [
        compare(
            "dict proxy d[k] = v; d[k] (per pair)",
            lambda: dict_pair(corral, pairs),
            lambda: dict_pair(multiprocessing, pairs),
            rounds=rounds,
        ),
        compare(
            "8 clients x set/get pairs, pairs/s",
            lambda: many_clients(corral, 8, per_client),
            lambda: many_clients(multiprocessing, 8, per_client),
            rounds=rounds,
            unit="pairs/s",
            higher_is_better=True,
        ),
    ]
    return rows


if __name__ == "__main__":
    main()
