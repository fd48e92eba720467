"""corral's Pool on Dask against Dask's own client, side by side on one local cluster.

The cluster is the one ``corral.Pool(2, backend="dask")`` starts (2 single-threaded
worker processes, allowed-failures=0, worker-saturation=1.0); Dask's side uses the
pool's own client, so both run on the same scheduler and workers. Needs
``pip install 'corral[dask]'``. ``--quick`` runs fewer rounds and items.

Notes (crash isolation, not timed): on this cluster a worker killed mid-task fails
that task alone with ``WorkerLostError`` and the pool goes on
(tests/backends/test_dask_backend.py); with Dask's defaults the task is rerun on up
to 3 more workers, killing each, before ``KilledWorker``.
"""

from __future__ import annotations

import sys
import time

import corral
from _harness import compare

QUICK = "--quick" in sys.argv
CRASH = "--crash" in sys.argv  # also show what a worker killed mid-batch does (not timed)


def noop(x: int) -> int:
    return x


def corral_async(pool: corral.pool.Pool, n: int) -> float:
    t0 = time.perf_counter()
    results = [pool.apply_async(noop, (i,)) for i in range(n)]
    for result in results:
        result.get(120)
    return n / (time.perf_counter() - t0)


def dask_submit(client, n: int) -> float:
    t0 = time.perf_counter()
    futures = [client.submit(noop, i, pure=False) for i in range(n)]
    client.gather(futures)
    return n / (time.perf_counter() - t0)


def corral_round_trip(pool: corral.pool.Pool, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        pool.apply(noop, (i,))
    return (time.perf_counter() - t0) / n


def dask_round_trip(client, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        client.submit(noop, i, pure=False).result()
    return (time.perf_counter() - t0) / n


def corral_map(pool: corral.pool.Pool, n: int) -> float:
    t0 = time.perf_counter()
    assert pool.map(noop, range(n)) == list(range(n))
    return n / (time.perf_counter() - t0)


def dask_map(client, n: int) -> float:
    t0 = time.perf_counter()
    assert client.gather(client.map(noop, range(n), pure=False)) == list(range(n))
    return n / (time.perf_counter() - t0)


def corral_imap(pool: corral.pool.Pool, n: int) -> float:
    t0 = time.perf_counter()
    assert list(pool.imap(noop, range(n), chunksize=1)) == list(range(n))
    return n / (time.perf_counter() - t0)


def first(array, i: int) -> float:
    return float(array[i])


def corral_shared_array(pool: corral.pool.Pool, array) -> float:
    t0 = time.perf_counter()
    handle = pool.share(array)
    results = [pool.apply_async(first, (handle, i)) for i in range(20)]
    assert [r.get(120) for r in results] == [float(i) for i in range(20)]
    handle.release()
    return time.perf_counter() - t0


def dask_scattered_array(client, array) -> float:
    t0 = time.perf_counter()
    [future] = client.scatter([array], hash=False)
    futures = client.map(first, [future] * 20, range(20), pure=False)
    assert client.gather(futures) == [float(i) for i in range(20)]
    del future, futures
    return time.perf_counter() - t0


def corral_plain_array(pool: corral.pool.Pool, array) -> float:
    t0 = time.perf_counter()
    results = [pool.apply_async(first, (array, i)) for i in range(20)]
    assert [r.get(120) for r in results] == [float(i) for i in range(20)]
    return time.perf_counter() - t0


def dask_plain_array(client, array) -> float:
    t0 = time.perf_counter()
    futures = [client.submit(first, array, i, pure=False) for i in range(20)]
    assert client.gather(futures) == [float(i) for i in range(20)]
    return time.perf_counter() - t0


def die_or_sleep(x: int) -> int:
    import os
    import signal

    if x == 3:
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.1)
    return x


def _failures(outcomes: list) -> str:
    bad = [(i, type(e).__name__) for i, e in enumerate(outcomes) if isinstance(e, BaseException)]
    return f"{len(outcomes) - len(bad)} results, failed: {bad}"


def crash_notes() -> None:
    """A task that kills its worker, in a batch of 20: Dask's own map vs corral's."""
    import distributed

    def dask_map_on(client) -> str:
        deaths_before = len(client.scheduler_info()["workers"])
        futures = client.map(die_or_sleep, range(20), pure=False)
        client.gather(futures, errors="skip")  # waits for them all
        outcomes = [f.exception() or f.result() for f in futures]
        return f"{_failures(outcomes)} ({deaths_before} workers at the start)"

    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, dashboard_address=None,
        scheduler_kwargs={"dashboard_address": ":0"},
    )  # fmt: skip
    with cluster, distributed.Client(cluster, set_as_default=False) as client:
        print("Client.map, Dask's defaults (allowed-failures=3):", dask_map_on(client))
        log = client.get_scheduler_logs(n=200)
        print("  workers that died:", sum("Remove worker" in str(line) for line in log))
    with corral.Pool(2, backend="dask") as pool:
        results = [pool.apply_async(die_or_sleep, (i,)) for i in range(20)]
        outcomes = []
        for result in results:
            try:
                outcomes.append(result.get(120))
            except Exception as exc:
                outcomes.append(exc)
        print("corral apply_async on the cluster it starts:", _failures(outcomes))
        print("  Client.map on that same cluster:", dask_map_on(pool._engine.client))


def main() -> None:
    rounds = 3 if QUICK else 5
    n_tasks = 200 if QUICK else 1_000
    n_items = 2_000 if QUICK else 10_000
    with corral.Pool(2, backend="dask") as pool:
        client = pool._engine.client  # the same scheduler and workers
        pool.map(noop, range(10))
        compare(
            f"apply_async / submit {n_tasks} no-ops",
            lambda: corral_async(pool, n_tasks),
            lambda: dask_submit(client, n_tasks),
            rounds,
            unit="tasks/s",
            higher_is_better=True,
            other="dask",
        )
        compare(
            "apply / submit().result() round trip",
            lambda: corral_round_trip(pool, 100),
            lambda: dask_round_trip(client, 100),
            rounds,
            other="dask",
        )
        compare(
            f"imap chunksize=1 / Client.map {n_tasks} no-ops",
            lambda: corral_imap(pool, n_tasks),
            lambda: dask_map(client, n_tasks),
            rounds,
            unit="tasks/s",
            higher_is_better=True,
            other="dask",
        )
        compare(
            f"Pool.map / Client.map {n_items:,} items",
            lambda: corral_map(pool, n_items),
            lambda: dask_map(client, n_items),
            rounds,
            unit="items/s",
            higher_is_better=True,
            other="dask",
        )
        try:
            import numpy as np
        except ImportError:
            print("(the 64 MiB rows need numpy)")
            return
        array = np.arange(8 << 20, dtype=np.float64)  # 64 MiB
        compare(
            "64 MiB array to 20 tasks: share() / scatter + Client.map",
            lambda: corral_shared_array(pool, array),
            lambda: dask_scattered_array(client, array),
            rounds,
            other="dask",
        )
        compare(
            "64 MiB array to 20 tasks as a plain argument: apply_async / submit",
            lambda: corral_plain_array(pool, array),
            lambda: dask_plain_array(client, array),
            rounds,
            other="dask",
        )


if __name__ == "__main__":
    if CRASH:
        crash_notes()
    else:
        main()
