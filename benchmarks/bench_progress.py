"""What progress= and the always-on insight counters cost (issue 16).

Run: python benchmarks/bench_progress.py [--rounds N] [--compare OLD_SRC [--compare-only]]

1. ``Pool.map`` of 200,000 tiny items (fork, 2 workers, default chunksize),
   in one pool, alternating in each round: no progress, ``progress=`` a
   counting callable, and ``progress=`` corral's own bar drawing on a
   pseudo-terminal (read by a ``cat`` process); the stdlib's ``Pool.map`` of the same
   items as a yardstick. Each measurement is 3 maps (the cyclic GC off, as in
   timeit), in a new order each round; prints the median items/s of each and
   the median of the per-round ratios to "no progress", and the CPU time per
   item (this process and the workers; less noisy on a shared machine).
2. ``--compare OLD_SRC`` (a ``src`` directory holding a corral without the
   counters, e.g. the main branch before issue 16): the same map without
   progress, and a flood of 10,000 ``apply_async`` no-ops (the worst case for
   per-task counters), in fresh interpreters alternating OLD_SRC and this
   checkout, each next to the stdlib in the same interpreter, and the CPU
   time per no-op task (this process and the workers, ``psutil``) of
   ``imap(chunksize=1)`` and ``apply_async``; prints the medians and new/old.
"""

from __future__ import annotations

import gc
import json
import os
import random
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _harness import alternate_versions

HERE = os.path.dirname(os.path.abspath(__file__))
ITEMS = 200_000


def tiny(x):
    return x + 1


def _rate(call, n, repeat=1):
    gc.collect()
    gc.disable()  # as timeit does: a collection lands on whichever call is running
    try:
        t0 = time.perf_counter()
        for _ in range(repeat):
            call()
        return n * repeat / (time.perf_counter() - t0)
    finally:
        gc.enable()


def progress_overhead(rounds: int) -> None:
    import multiprocessing

    import corral
    from corral._progress import TextBar

    master, slave = os.openpty()
    terminal = os.fdopen(slave, "w")
    # What the bar draws is read by another process, as by a terminal emulator.
    reader = subprocess.Popen(["cat"], stdin=master, stdout=subprocess.DEVNULL)
    seen = [0]

    def count(n: int) -> None:
        seen[0] += n

    data = list(range(ITEMS))
    rates: dict[str, list[float]] = {"off": [], "callable": [], "bar": [], "stdlib": []}
    with (
        corral.get_context("fork").Pool(2) as pool,
        multiprocessing.get_context("fork").Pool(2) as std,
    ):
        pool.map(tiny, data)
        std.map(tiny, data)
        modes = {
            "off": lambda: pool.map(tiny, data),
            "callable": lambda: pool.map(tiny, data, progress=count),
            "bar": lambda: pool.map(tiny, data, progress=TextBar(ITEMS, stream=terminal)),
            "stdlib": lambda: std.map(tiny, data),
        }
        import psutil

        workers = [psutil.Process(p.pid) for p in pool._pool]
        workers += [psutil.Process(p.pid) for p in std._pool]

        def cpu() -> float:  # this process and both pools' workers
            return time.process_time() + sum(sum(w.cpu_times()[:2]) for w in workers)

        cpu_ns: dict[str, list[float]] = {name: [] for name in modes}
        order = list(modes)
        shuffle = random.Random(16).shuffle  # a new order each round, the same each run
        for _ in range(rounds):
            shuffle(order)
            for name in order:
                before = cpu()
                rates[name].append(_rate(modes[name], ITEMS, 3))
                cpu_ns[name].append((cpu() - before) / (3 * ITEMS) * 1e9)
    terminal.close()
    os.close(master)
    reader.wait(30)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"Pool.map of {ITEMS:,} tiny items, fork, 2 workers; median of {rounds} rounds")
    print("  (ratio: the median of each round's rate / the same round's rate without progress)")
    for name in ("off", "callable", "bar", "stdlib"):
        ratios = [a / b for a, b in zip(rates[name], rates["off"], strict=True)]
        print(
            f"  {name:<9} {med[name]:>12,.0f} items/s ({min(rates[name]):,.0f}-"
            f"{max(rates[name]):,.0f})  ratio {statistics.median(ratios):.3f}  "
            f"CPU {statistics.median(cpu_ns[name]):.0f} ns/item"
        )


def child_measure() -> dict[str, float]:
    import multiprocessing

    import corral

    data = list(range(ITEMS))
    out: dict[str, float] = {}
    with (
        corral.get_context("fork").Pool(2) as pool,
        multiprocessing.get_context("fork").Pool(2) as std,
    ):
        pool.map(tiny, data)
        std.map(tiny, data)
        ours = [_rate(lambda: pool.map(tiny, data), ITEMS) for _ in range(5)]
        theirs = [_rate(lambda: std.map(tiny, data), ITEMS) for _ in range(5)]
        out["map items/s"] = statistics.median(ours)
        out["map / stdlib"] = statistics.median(ours) / statistics.median(theirs)

        def flood(p):
            results = [p.apply_async(tiny, (i,)) for i in range(10_000)]
            for r in results:
                r.get()

        ours = [_rate(lambda: flood(pool), 10_000) for _ in range(3)]
        theirs = [_rate(lambda: flood(std), 10_000) for _ in range(3)]
        out["apply_async tasks/s"] = statistics.median(ours)
        out["apply_async / stdlib"] = statistics.median(ours) / statistics.median(theirs)
        out.update(_cpu_per_task(pool, flood))
    return out


def _cpu_per_task(pool, flood) -> dict[str, float]:
    """CPU µs per no-op task, this process and the workers (less noisy than rates)."""
    import psutil

    workers = [psutil.Process(p.pid) for p in pool._pool]

    def worker_cpu() -> float:
        return sum(sum(w.cpu_times()[:2]) for w in workers)

    out = {}
    for name, run in (
        ("imap(chunksize=1)", lambda: [None for _ in pool.imap(tiny, range(20_000))]),
        ("apply_async", lambda: [flood(pool) for _ in range(2)]),
    ):
        parent, children = time.process_time(), worker_cpu()
        run()
        out[f"{name} CPU us/task"] = (
            (time.process_time() - parent + worker_cpu() - children) / 20_000 * 1e6
        )
    return out


def compare_versions(old: str, rounds: int) -> None:
    new = os.path.join(os.path.dirname(HERE), "src")
    runs = alternate_versions(__file__, old, new, rounds)
    print(f"old: {old}\nnew: {new}\nmedians of {rounds} rounds (fresh interpreters):")
    for key in runs["old"][0]:
        a = statistics.median(r[key] for r in runs["old"])
        b = statistics.median(r[key] for r in runs["new"])
        print(f"  {key:<22} old {a:>12,.2f}  new {b:>12,.2f}  new/old {b / a:.3f}")


def main() -> None:
    rounds = 9
    if "--rounds" in sys.argv:
        rounds = int(sys.argv[sys.argv.index("--rounds") + 1])
    if "--compare-only" not in sys.argv:
        progress_overhead(rounds)
    if "--compare" in sys.argv:
        compare_versions(sys.argv[sys.argv.index("--compare") + 1], max(3, rounds // 2))


if __name__ == "__main__":
    if "--child" in sys.argv:
        print(json.dumps(child_measure()))
    else:
        main()
