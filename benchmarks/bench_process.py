"""Process start + join, corral vs the stdlib, per start method.

Run: python benchmarks/bench_process.py
"""

from __future__ import annotations

import multiprocessing
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import corral
from _harness import compare, per_op


def noop() -> None:
    pass


def start_join(ctx, count: int) -> float:
    def once() -> None:
        p = ctx.Process(target=noop)
        p.start()
        p.join()
        p.close()

    return per_op(once, count)


def bare_fork(count: int) -> float:
    def once() -> None:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)

    return per_op(once, count)


def main() -> None:
    rows = []
    for method, count in (("fork", 300), ("spawn", 15), ("forkserver", 100)):
        ours, theirs = corral.get_context(method), multiprocessing.get_context(method)
        start_join(ours, 2)  # warm up: imports, forkserver start
        start_join(theirs, 2)
        rows.append(
            compare(
                f"Process start+join ({method})",
                lambda o=ours, c=count: start_join(o, c),
                lambda t=theirs, c=count: start_join(t, c),
            )
        )
    bare = sorted(bare_fork(300) for _ in range(5))[2]
    print(f"{'bare os.fork + waitpid (reference)':<44} {bare * 1e6:.1f} us")
    return rows


if __name__ == "__main__":
    main()
