"""Process start + join, corral vs the stdlib, per start method.

Run: python benchmarks/bench_process.py [fork|spawn|forkserver ...]

Each library runs in an interpreter of its own that imports only it (as a
program using one of them would): imported side by side, each library's
import-time state (modules, at-fork hooks such as random's reseed or logging's
lock handling) would be paid by the other's children too. The two interpreters
are asked for a measurement in turn, so the machine's load hits both alike.

The workers run without PYTHONDONTWRITEBYTECODE: with it, corral (not
byte-compiled by an editable install) is compiled from source in every spawned
child, ~15-20 ms that an installed wheel (byte-compiled by pip) never pays,
while the stdlib's modules come byte-compiled either way.

This module is the main module of spawned children (re-imported as
``__mp_main__``), so it imports at the top only what both sides import anyway.
"""

from __future__ import annotations

import os
import sys
import time

METHODS = {"fork": 300, "spawn": 15, "forkserver": 100}  # start+join per round


def noop() -> None:
    pass


def start_join(ctx, count: int) -> float:
    """Seconds per Process start + join + close."""
    t0 = time.perf_counter()
    for _ in range(count):
        p = ctx.Process(target=noop)
        p.start()
        p.join()
        p.close()
    return (time.perf_counter() - t0) / count


def bare_fork(count: int) -> float:
    t0 = time.perf_counter()
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    return (time.perf_counter() - t0) / count


def serve(library: str) -> None:
    """Worker interpreter: answer "method count" lines with seconds per start+join."""
    import importlib

    mp = importlib.import_module(library)
    for line in sys.stdin:
        method, count = line.split()
        ctx = mp.get_context(method)
        print(start_join(ctx, int(count)), flush=True)


class Worker:
    """An interpreter that imports one library and times its start+join on request."""

    def __init__(self, library: str) -> None:
        import subprocess

        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve", library],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def measure(self, method: str, count: int) -> float:
        self.proc.stdin.write(f"{method} {count}\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def main() -> list[dict]:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _harness import compare

    methods = sys.argv[1:] or list(METHODS)
    ours, theirs = Worker("corral"), Worker("multiprocessing")
    rows = []
    try:
        for method in methods:
            count = METHODS[method]
            ours.measure(method, 2)  # warm up: imports, forkserver start
            theirs.measure(method, 2)
            rows.append(
                compare(
                    f"Process start+join ({method})",
                    lambda m=method, c=count: ours.measure(m, c),
                    lambda m=method, c=count: theirs.measure(m, c),
                )
            )
    finally:
        ours.close()
        theirs.close()
    bare = sorted(bare_fork(300) for _ in range(5))[2]
    print(f"{'bare os.fork + waitpid (reference)':<44} {bare * 1e6:.1f} us")
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2])
    else:
        main()
