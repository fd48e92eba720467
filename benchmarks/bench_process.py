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


def cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (user + system)."""
    import resource

    me, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def serve(library: str) -> None:
    """Worker interpreter: answer "method count" lines with wall and CPU seconds per start+join.

    CPU time (ours and our children's: under forkserver the server's children
    are not ours, so it counts only this side) does not include waiting for a
    CPU, so it moves much less than wall time when the machine is loaded.
    """
    import importlib

    mp = importlib.import_module(library)
    for line in sys.stdin:
        method, count = line.split()
        ctx = mp.get_context(method)
        cpu = cpu_seconds()
        wall = start_join(ctx, int(count))
        print(wall, (cpu_seconds() - cpu) / int(count), flush=True)


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

        self.cpu: dict[str, list[float]] = {}

    def measure(self, method: str, count: int) -> float:
        """Wall seconds per start+join; the CPU seconds are kept in ``self.cpu``."""
        self.proc.stdin.write(f"{method} {count}\n")
        self.proc.stdin.flush()
        wall, cpu = map(float, self.proc.stdout.readline().split())
        self.cpu.setdefault(method, []).append(cpu)
        return wall

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def main() -> list[dict]:
    import statistics

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
            ours.cpu.clear()
            theirs.cpu.clear()
            rows.append(
                compare(
                    f"Process start+join ({method})",
                    lambda m=method, c=count: ours.measure(m, c),
                    lambda m=method, c=count: theirs.measure(m, c),
                )
            )
            a, b = statistics.median(ours.cpu[method]), statistics.median(theirs.cpu[method])
            scope = "this side only" if method == "forkserver" else "parent + child"
            print(
                f"{'  CPU per start+join (' + scope + ')':<44} corral {a * 1e6:9.0f} us  "
                f"stdlib {b * 1e6:9.0f} us  corral uses {a / b:5.2f}x the CPU",
                flush=True,
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
