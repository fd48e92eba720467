"""corral's Pool on the Ray engine vs ``ray.util.multiprocessing.Pool``, one Ray session.

Run: python benchmarks/bench_ray.py [--quick]   (needs ray: pip install 'corral[ray]')

One local session (2 CPUs, dashboard off, 200 MiB object store) serves both
pools, each made once and warmed up; they run alternately (``_harness.compare``,
the "stdlib" column is Ray's Pool). Until ``backend="ray"`` is wired into the
front ends, corral's Pool is put on the Ray engine by replacing its
``start_engine``. Reported:

* per task: ``apply_async`` of a tiny call, N at once, then every ``get``;
* per item: ``imap(chunksize=1)``;
* ``map`` over many tiny items (each pool's default chunksize);
* a 64 MiB array read by 20 tasks: corral ``share`` once vs Ray's Pool with the
  array as an argument of each task, as its users write it.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import time

import numpy as np

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no token file in $HOME
sys.path.insert(0, os.path.dirname(__file__))
import ray
import ray.util.multiprocessing

import corral
import corral.pool
from _harness import compare
from corral._engine.ray_engine import start_ray_engine

QUICK = "--quick" in sys.argv
faulthandler.dump_traceback_later(900, exit=True)  # a benchmark must never hang
TASKS = 300 if QUICK else 1000
ITEMS = 20_000 if QUICK else 200_000
ROUNDS = 3 if QUICK else 5


def total(a):
    return float(a.sum())


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    t0 = time.perf_counter()
    ray.init(
        num_cpus=2, include_dashboard=False, object_store_memory=200 << 20, log_to_driver=False
    )
    print(f"ray.init (local, 2 CPUs): {time.perf_counter() - t0:.2f} s", flush=True)
    corral.pool.start_engine = lambda spec: start_ray_engine(spec.workers)
    t0 = time.perf_counter()
    ours = corral.Pool(2)
    ours.map(abs, range(100))
    print(f"corral Pool(2) on Ray, first map: {time.perf_counter() - t0:.2f} s", flush=True)
    t0 = time.perf_counter()
    theirs = ray.util.multiprocessing.Pool(2)
    theirs.map(abs, range(100))
    print(f"ray Pool(2), first map: {time.perf_counter() - t0:.2f} s", flush=True)
    try:
        for pool in (ours, theirs):  # warm both
            [r.get(60) for r in [pool.apply_async(abs, (-i,)) for i in range(50)]]

        def apply_async(pool):
            return lambda: (
                timed(
                    lambda: [
                        r.get(60) for r in [pool.apply_async(abs, (-i,)) for i in range(TASKS)]
                    ]
                )
                / TASKS
            )

        compare(
            f"apply_async x{TASKS}, per task",
            apply_async(ours),
            apply_async(theirs),
            rounds=ROUNDS,
            other="ray Pool",
        )

        def imap(pool):
            return lambda: timed(lambda: list(pool.imap(abs, range(TASKS), chunksize=1))) / TASKS

        compare(
            f"imap(chunksize=1) x{TASKS}, per item",
            imap(ours),
            imap(theirs),
            rounds=ROUNDS,
            other="ray Pool",
        )

        def map_(pool):
            return lambda: timed(lambda: pool.map(abs, range(ITEMS)))

        compare(
            f"map over {ITEMS} tiny items",
            map_(ours),
            map_(theirs),
            rounds=ROUNDS,
            other="ray Pool",
        )

        array = np.ones((64 << 20) // 8)
        handle = ours._engine.share(array)

        def shared_ours():
            return timed(
                lambda: [
                    r.get(120) for r in [ours.apply_async(total, (handle,)) for _ in range(20)]
                ]
            )

        def shared_theirs():
            return timed(
                lambda: [
                    r.get(120) for r in [theirs.apply_async(total, (array,)) for _ in range(20)]
                ]
            )

        compare(
            "64 MiB array read by 20 tasks",
            shared_ours,
            shared_theirs,
            rounds=ROUNDS,
            other="ray Pool",
        )
    finally:
        ours.close()
        ours.join()
        theirs.terminate()
        t0 = time.perf_counter()
        ray.shutdown()
        print(f"ray.shutdown: {time.perf_counter() - t0:.2f} s", flush=True)


if __name__ == "__main__":
    main()
