"""Recipe: a progress bar, automatic chunks, and where the time went
(docs/guide.md, "Progress bars" and "Where the time goes").

Run: python examples/progress_and_insights.py   (the bar shows on a terminal only)
"""

from __future__ import annotations

import math

import corral


def simulate(seed: int) -> float:
    """About a millisecond of arithmetic."""
    return math.fsum(math.sin(seed * k) for k in range(2_000))


def tiny(x: int) -> int:
    return x + 1


def main() -> None:
    with corral.Pool(2) as pool:
        # progress=True: a bar on stderr, advanced per finished item (tqdm's if installed).
        results = pool.map(simulate, range(2_000), progress=True, chunksize="auto")
        # Any callable receives the counts instead: here, to check them.
        counted: list[int] = []
        pool.map(simulate, range(2_000), progress=counted.append)
        print(f"{len(results)} results; the callback counted {sum(counted)} items")

    with corral.Pool(2) as pool:
        # A mistake insights() points out: one tiny item per task.
        pool.map(tiny, range(5_000), chunksize=1)
        report = pool.insights()  # everything this pool did so far
        workers = len(report.workers)
        print(f"insights: {report.items} items in {report.tasks} tasks on {workers} workers")
        print(report, flush=True)  # a table per worker, then advice
        print("advice names a chunksize:", any("chunksize=" in line for line in report.advice()))


if __name__ == "__main__":
    main()
