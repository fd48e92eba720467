"""chunksize="auto" against the stdlib's defaults and fixed sizes (issue 16, part 3).

Run: python benchmarks/bench_chunking.py [--quick]

One run, side by side, 2 workers (fork) per pool, pools started once per
library and kept warm (start-up not timed); the variants of each case take
turns in every round (their order rotates) and the medians are printed:

(a) map over 200 000 tiny items (``abs``): the stdlib's ``Pool.map`` with its
    default chunks, corral's default, corral ``chunksize="auto"``; ratios to
    the stdlib.
(b) 40 items of 50 ms each (``time.sleep``): parallel efficiency
    (40 * 0.05 / 2) / wall, for corral auto, chunksize=1 and the default, and
    the stdlib's default and chunksize=1 for reference; then the same on 3
    workers (sleeping workers need no core of their own), where the default's
    chunks of 4 items no longer divide evenly.
(c) ``imap`` over 100 000 tiny items: auto vs chunksize=1 (and the stdlib's
    ``imap`` chunksize=1), and ``Executor.map`` auto vs chunksize=1 (and the
    stdlib's).
"""

from __future__ import annotations

import concurrent.futures
import faulthandler
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable

import corral
from corral.futures import ProcessPoolExecutor as CorralExecutor

QUICK = "--quick" in sys.argv
ROUNDS = 3 if QUICK else 7
faulthandler.dump_traceback_later(900, exit=True)  # a benchmark must never hang

WORKERS = 2
TINY = 200_000
SLOW_ITEMS, SLOW_SECONDS = 40, 0.05
IMAP_ITEMS = 30_000 if QUICK else 100_000


def nap(x: int) -> int:
    time.sleep(SLOW_SECONDS)
    return x


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def rounds(variants: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Median wall time of each variant; every round runs all, in a rotating order."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for i in range(ROUNDS):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            times[name].append(timed(variants[name]))
    return {name: statistics.median(ts) for name, ts in times.items()}


def show(title: str, medians: dict[str, float], reference: str) -> None:
    print(f"\n{title}")
    for name, seconds in medians.items():
        ratio = medians[reference] / seconds
        print(f"  {name:<36} {seconds * 1e3:9.1f} ms   {ratio:5.2f}x vs {reference}")


def show_efficiency(title: str, medians: dict[str, float], workers: int = WORKERS) -> None:
    ideal = SLOW_ITEMS * SLOW_SECONDS / workers
    print(f"\n{title} (ideal {ideal:.2f} s)")
    for name, seconds in medians.items():
        print(f"  {name:<36} {seconds:6.3f} s   efficiency {ideal / seconds:6.1%}")


def drain(iterator: object) -> None:
    for _ in iterator:  # type: ignore[attr-defined]
        pass


def main() -> None:
    fork = multiprocessing.get_context("fork")
    tiny = list(range(-TINY // 2, TINY // 2))
    imap_items = list(range(IMAP_ITEMS))
    with (
        fork.Pool(WORKERS) as theirs,
        corral.get_context("fork").Pool(WORKERS) as ours,
        concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=fork) as their_ex,
        CorralExecutor(WORKERS, mp_context=corral.get_context("fork")) as our_ex,
    ):
        for pool in (theirs, ours):
            pool.map(abs, range(1000))  # workers up
        list(their_ex.map(abs, range(100)))
        list(our_ex.map(abs, range(100)))

        medians = rounds(
            {
                "stdlib map (default chunks)": lambda: theirs.map(abs, tiny),
                "corral map (default chunks)": lambda: ours.map(abs, tiny),
                'corral map chunksize="auto"': lambda: ours.map(abs, tiny, chunksize="auto"),
            }
        )
        show(f"(a) map(abs) over {TINY:,} items", medians, "stdlib map (default chunks)")

        slow = list(range(SLOW_ITEMS))
        medians = rounds(
            {
                'corral map chunksize="auto"': lambda: ours.map(nap, slow, chunksize="auto"),
                "corral map chunksize=1": lambda: ours.map(nap, slow, chunksize=1),
                "corral map (default chunks)": lambda: ours.map(nap, slow),
                "stdlib map (default chunks)": lambda: theirs.map(nap, slow),
                "stdlib map chunksize=1": lambda: theirs.map(nap, slow, chunksize=1),
            }
        )
        show_efficiency(f"(b) {SLOW_ITEMS} items x {SLOW_SECONDS * 1e3:.0f} ms", medians)
        with fork.Pool(3) as theirs3, corral.get_context("fork").Pool(3) as ours3:
            theirs3.map(abs, range(10))
            ours3.map(abs, range(10))
            medians = rounds(
                {
                    'corral map chunksize="auto"': lambda: ours3.map(nap, slow, chunksize="auto"),
                    "corral map (default chunks)": lambda: ours3.map(nap, slow),
                    "stdlib map (default chunks)": lambda: theirs3.map(nap, slow),
                }
            )
        best = -(-SLOW_ITEMS // 3) * SLOW_SECONDS
        show_efficiency(
            f"(b) the same on 3 workers (best possible {best:.2f} s)", medians, workers=3
        )

        medians = rounds(
            {
                "stdlib imap chunksize=1": lambda: drain(theirs.imap(abs, imap_items)),
                "corral imap chunksize=1": lambda: drain(ours.imap(abs, imap_items)),
                'corral imap chunksize="auto"': lambda: drain(
                    ours.imap(abs, imap_items, chunksize="auto")
                ),
                'corral imap_unordered "auto"': lambda: drain(
                    ours.imap_unordered(abs, imap_items, chunksize="auto")
                ),
                "stdlib Executor.map chunksize=1": lambda: drain(their_ex.map(abs, imap_items)),
                "corral Executor.map chunksize=1": lambda: drain(our_ex.map(abs, imap_items)),
                'corral Executor.map "auto"': lambda: drain(
                    our_ex.map(abs, imap_items, chunksize="auto")
                ),
            }
        )
        show(
            f"(c) imap / Executor.map(abs) over {IMAP_ITEMS:,} items",
            medians,
            "stdlib imap chunksize=1",
        )


if __name__ == "__main__":
    main()
