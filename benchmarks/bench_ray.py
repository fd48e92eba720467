"""corral's Pool on the Ray engine vs ``ray.util.multiprocessing.Pool``, one Ray session.

Run: python benchmarks/bench_ray.py [--quick]   (needs ray: pip install 'corral[ray]')

One local session (2 CPUs, dashboard off, 200 MiB object store) serves both
pools, each made once and warmed up; they run alternately (``_harness.compare``,
the "stdlib" column is Ray's Pool). corral's is ``corral.Pool(2, backend="ray")``.
Reported:

* per call: sequential ``apply`` (one round trip at a time: delivery latency),
  alone and while another task runs (a result must not wait for older tasks);
* per task: ``apply_async`` of a tiny call, N at once, then every ``get``;
* per item: ``imap(chunksize=1)``;
* ``map`` over many tiny items (each pool's default chunksize);
* a 64 MiB array read by 20 tasks: the array as a plain argument of each
  ``apply_async`` in both pools, then corral ``share`` once;
* crash isolation (not timed): 8 ``apply_async`` calls of which one SIGKILLs
  its worker, then 8 more; how many results each pool returns.
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
from _harness import compare

QUICK = "--quick" in sys.argv
faulthandler.dump_traceback_later(900, exit=True)  # a benchmark must never hang
TASKS = 300 if QUICK else 1000
ITEMS = 20_000 if QUICK else 200_000
ROUNDS = 3 if QUICK else 5


def total(a):
    return float(a.sum())


def die_on_three(x):
    if x == 3:
        os.kill(os.getpid(), 9)
    time.sleep(0.05)
    return x


def results_of(pool, n, fn=die_on_three):
    """How many of n apply_async calls of fn (die_on_three: the 4th kills its worker) return."""
    pending = [pool.apply_async(fn, (i,)) for i in range(n)]
    got = 0
    for r in pending:
        try:
            got += r.get(60) is not None
        except Exception:
            pass
    return got


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
    t0 = time.perf_counter()
    ours = corral.Pool(2, backend="ray")
    ours.map(abs, range(100))
    print(f"corral Pool(2) on Ray, first map: {time.perf_counter() - t0:.2f} s", flush=True)
    t0 = time.perf_counter()
    theirs = ray.util.multiprocessing.Pool(2)
    theirs.map(abs, range(100))
    print(f"ray Pool(2), first map: {time.perf_counter() - t0:.2f} s", flush=True)
    try:
        for pool in (ours, theirs):  # warm both
            [r.get(60) for r in [pool.apply_async(abs, (-i,)) for i in range(50)]]

        def apply(pool):
            return lambda: timed(lambda: [pool.apply(abs, (-i,)) for i in range(100)]) / 100

        compare(
            "apply x100, sequential, per call",
            apply(ours),
            apply(theirs),
            rounds=ROUNDS,
            other="ray Pool",
        )

        def apply_beside_a_long_task(pool):
            def run():
                long = pool.apply_async(time.sleep, (1.0,))
                time.sleep(0.1)  # it runs
                elapsed = timed(lambda: [pool.apply(abs, (-i,)) for i in range(50)]) / 50
                long.get(60)
                return elapsed

            return run

        compare(
            "apply x50 while a 1 s task runs, per call",
            apply_beside_a_long_task(ours),
            apply_beside_a_long_task(theirs),
            rounds=3,
            other="ray Pool",
        )

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

        def plain(pool):
            return lambda: timed(
                lambda: [r.get(120) for r in [pool.apply_async(total, (array,)) for _ in range(20)]]
            )

        compare(
            "64 MiB array as an argument of 20 apply_async",
            plain(ours),
            plain(theirs),
            rounds=ROUNDS,
            other="ray Pool",
        )
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
            "64 MiB array read by 20 tasks (corral: share() once)",
            shared_ours,
            shared_theirs,
            rounds=ROUNDS,
            other="ray Pool",
        )
        print(
            "crash isolation, 8 apply_async of which one SIGKILLs its worker, then 8 more: "
            f"corral {results_of(ours, 8)}+{results_of(ours, 8, abs)} of 7+8 results, "
            f"ray Pool {results_of(theirs, 8)}+{results_of(theirs, 8, abs)}",
            flush=True,
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
