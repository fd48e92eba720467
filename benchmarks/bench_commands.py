"""Shell commands in parallel: corral against what one writes without it.

Run: python benchmarks/bench_commands.py [--quick]

- ``run_commands`` against a ``ThreadPoolExecutor`` calling
  ``subprocess.run(shell=True, capture_output=True)`` per command (the usual
  hand-written version; the stdlib has no ``run_commands``), for commands that
  do nothing and for commands that print 64 KiB.
- ``corral run`` (the command, interpreter start included) against
  ``xargs -P`` running the same commands through ``sh -c``.

Each pair alternates in rounds (``_harness.compare``); the ratio is the median's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(__file__))

import corral
from _harness import compare

JOBS = 4


def with_corral(commands: list[str]) -> float:
    t0 = time.perf_counter()
    results = corral.run_commands(commands, jobs=JOBS)
    elapsed = time.perf_counter() - t0
    assert all(r.returncode == 0 for r in results)
    return elapsed


def with_threads(commands: list[str]) -> float:
    def run(command: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(command, shell=True, capture_output=True, check=False)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(JOBS) as pool:
        results = list(pool.map(run, commands))
    elapsed = time.perf_counter() - t0
    assert all(r.returncode == 0 for r in results)
    return elapsed


def corral_cli(count: int) -> float:
    args = [str(n) for n in range(count)]
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "corral", "run", "-q", "-j", str(JOBS), "true", ":::", *args],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def xargs(count: int) -> float:
    data = "".join(f"{n}\n" for n in range(count)).encode()
    t0 = time.perf_counter()
    subprocess.run(
        ["xargs", "-P", str(JOBS), "-I{}", "sh", "-c", "true {}"],
        input=data,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def main() -> None:
    quick = "--quick" in sys.argv
    count = 100 if quick else 400
    rounds = 3 if quick else 7
    print(f"{count} commands, {JOBS} at a time, median of {rounds} rounds")
    nothing = ["true"] * count
    compare(
        f"run_commands: {count} x true",
        lambda: with_corral(nothing),
        lambda: with_threads(nothing),
        rounds=rounds,
        other="threads+subprocess.run",
    )
    printing = ["head -c 65536 /dev/zero"] * (count // 2)
    compare(
        f"run_commands: {count // 2} x 64 KiB of output",
        lambda: with_corral(printing),
        lambda: with_threads(printing),
        rounds=rounds,
        other="threads+subprocess.run",
    )
    compare(
        f"corral run CLI: {count} x true",
        lambda: corral_cli(count),
        lambda: xargs(count),
        rounds=rounds,
        other="xargs -P",
    )


if __name__ == "__main__":
    main()
