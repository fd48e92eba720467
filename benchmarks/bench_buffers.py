"""Big NumPy arrays to and from pool workers: corral (shared memory) vs the stdlib (pipes).

Run: python benchmarks/bench_buffers.py [--quick]

Both pools use fork and 2 workers, made once and warmed up; corral and the
stdlib run alternately (``_harness.compare``). Reported per 64 MiB array:

* to a worker: ``pool.apply(total, (array,))``, the worker sums it;
* from a worker: ``pool.apply(stored)`` returns an array the worker already has;
* memcpy: ``array.copy()`` in this process, in the same run (the bar: at least
  half of its bandwidth);
* share once, read by 100 tasks: ``pool.share(array)`` and 100 ``apply_async``
  calls each summing 1/100 of it, against one transfer of the whole array;
* 1 GiB to and from a worker (corral only: it must work).
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import corral
from _harness import compare
from corral import _transfer

QUICK = "--quick" in sys.argv
faulthandler.dump_traceback_later(900, exit=True)  # a benchmark must never hang

MIB = 1 << 20
SIZE = 64 * MIB
PARTS = 100
_stored = None


def store(nbytes):
    global _stored
    _stored = np.ones(nbytes // 8)


def stored():
    return _stored


def total(a):
    return float(a.sum())


def part(a, i, parts):
    step = len(a) // parts
    return float(a[i * step : (i + 1) * step].sum())


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def throughput(seconds: float) -> float:
    return SIZE / seconds / MIB  # MiB/s


def main() -> None:
    rounds = 5 if QUICK else 9
    array = np.random.default_rng(0).random(SIZE // 8)
    ours = corral.get_context("fork").Pool(2, initializer=store, initargs=(SIZE,))
    theirs = multiprocessing.get_context("fork").Pool(2, initializer=store, initargs=(SIZE,))
    try:
        for pool in (ours, theirs):  # warm up: workers started, segments made
            for _ in range(3):
                pool.apply(total, (array,))
                pool.apply(stored)
        memcpy = statistics.median(timed(array.copy) for _ in range(rounds))
        rate = throughput(memcpy)
        print(f"memcpy of 64 MiB (array.copy): {memcpy * 1e3:.2f} ms, {rate:,.0f} MiB/s")
        to = compare(
            "64 MiB array to a worker (apply, worker sums)",
            lambda: timed(lambda: ours.apply(total, (array,))),
            lambda: timed(lambda: theirs.apply(total, (array,))),
            rounds=rounds,
        )
        back = compare(
            "64 MiB array from a worker (apply returns it)",
            lambda: timed(lambda: ours.apply(stored)),
            lambda: timed(lambda: theirs.apply(stored)),
            rounds=rounds,
        )
        for row, what in ((to, "to a worker"), (back, "from a worker")):
            print(
                f"  {what}: corral {throughput(row['corral']):,.0f} MiB/s, stdlib "
                f"{throughput(row['stdlib']):,.0f} MiB/s; corral = "
                f"{memcpy / row['corral']:.0%} of memcpy bandwidth"
            )

        def shared_round(cold: bool) -> float:
            if cold:
                _transfer.outbox().clear()  # no segment with its pages made is left
            else:
                ours.apply(total, (array,))  # leaves one, as a program's transfers do
            t0 = time.perf_counter()
            handle = ours.share(array)
            results = [ours.apply_async(part, (handle, i, PARTS)) for i in range(PARTS)]
            done = sum(r.get() for r in results)
            handle.release()
            assert abs(done - array.sum()) < 1e-6 * array.sum()
            return time.perf_counter() - t0

        def one_transfer(cold: bool) -> float:
            if cold:
                _transfer.outbox().clear()
            return timed(lambda: ours.apply(total, (array,)))

        for cold in (False, True):
            one = statistics.median(one_transfer(cold) for _ in range(rounds))
            shared = statistics.median(shared_round(cold) for _ in range(rounds))
            print(
                f"64 MiB shared once + {PARTS} tasks reading 1/{PARTS} each "
                f"({'fresh memory' if cold else 'memory reused'}): {shared * 1e3:.1f} ms; "
                f"one transfer (apply, sum): {one * 1e3:.1f} ms; ratio {shared / one:.2f} "
                "(bar: <= 2)"
            )
    finally:
        for pool in (ours, theirs):
            pool.terminate()
            pool.join()
    gib = np.ones((1 << 30) // 8)
    with corral.get_context("fork").Pool(1, initializer=store, initargs=(1 << 30,)) as pool:
        pool.apply(total, (array[:10],))  # the worker is up and has its 1 GiB
        t_to = timed(lambda: pool.apply(total, (gib,)))
        t_back = timed(lambda: pool.apply(stored))
    print(f"1 GiB (corral, fresh memory): to a worker {t_to:.2f} s, back {t_back:.2f} s")


if __name__ == "__main__":
    main()
