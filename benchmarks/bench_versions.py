"""Small tasks on two versions of corral, alternating fresh interpreters: did a change cost?

Run: python benchmarks/bench_versions.py OLD_SRC [NEW_SRC] [--rounds N]

OLD_SRC and NEW_SRC are directories holding a ``corral`` package (for example
``git worktree add --detach /tmp/base <commit>`` and ``/tmp/base/src``);
NEW_SRC defaults to this checkout's ``src``. Each round runs one fresh
interpreter per version, alternately, measuring with fork and 2 workers:
executor ``submit`` + ``as_completed`` throughput (3 x 10,000 no-ops, best),
``Pool.imap(chunksize=1)`` throughput (3 x 10,000, best), and the round trips
of ``Pool.apply`` and ``submit().result()`` (7 x 500, median). Prints the
median of the rounds per version and their ratio.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _harness import alternate_versions

HERE = os.path.dirname(os.path.abspath(__file__))


def noop(x=None):
    return x


def measure() -> dict[str, float]:
    import concurrent.futures

    import corral
    from corral.futures import ProcessPoolExecutor

    ctx = corral.get_context("fork")
    result: dict[str, float] = {}
    with ProcessPoolExecutor(2, mp_context=ctx) as ex, ctx.Pool(2) as pool:
        for _ in range(300):
            ex.submit(noop, 1).result()
            pool.apply(noop, (1,))
        rates = []
        for _ in range(3):
            t0 = time.perf_counter()
            futures = [ex.submit(noop, i) for i in range(10_000)]
            for _ in concurrent.futures.as_completed(futures):
                pass
            rates.append(10_000 / (time.perf_counter() - t0))
        result["executor tasks/s"] = max(rates)
        rates = []
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in pool.imap(noop, range(10_000), chunksize=1):
                pass
            rates.append(10_000 / (time.perf_counter() - t0))
        result["imap(chunksize=1) tasks/s"] = max(rates)
        for name, call in (
            ("apply round trip us", lambda: pool.apply(noop, (1,))),
            ("submit().result() us", lambda: ex.submit(noop, 1).result()),
        ):
            times = []
            for _ in range(7):
                t0 = time.perf_counter()
                for _ in range(500):
                    call()
                times.append((time.perf_counter() - t0) / 500 * 1e6)
            result[name] = statistics.median(times)
    return result


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    rounds = 5
    if "--rounds" in sys.argv:
        rounds = int(sys.argv[sys.argv.index("--rounds") + 1])
        args.remove(str(rounds))
    old = args[0]
    new = args[1] if len(args) > 1 else os.path.join(os.path.dirname(HERE), "src")
    runs = alternate_versions(__file__, old, new, rounds)
    print(f"old: {old}\nnew: {new}\nmedians of {rounds} rounds:")
    for key in runs["old"][0]:
        olds = [r[key] for r in runs["old"]]
        news = [r[key] for r in runs["new"]]
        a, b = statistics.median(olds), statistics.median(news)
        print(
            f"  {key:<26} old {a:>10,.1f} ({min(olds):,.1f}-{max(olds):,.1f})"
            f"  new {b:>10,.1f} ({min(news):,.1f}-{max(news):,.1f})  new/old {b / a:.2f}"
        )


if __name__ == "__main__":
    if "--child" in sys.argv:
        print(json.dumps(measure()))
    else:
        main()
