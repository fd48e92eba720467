"""``import corral`` vs ``import multiprocessing`` in a fresh interpreter.

Every spawned child (and forkserver) pays this import.

Two measures, corral and the stdlib alternating in one run:

- wall time of ``python -c "import X"`` (the interpreter's own start included);
- the import's own time as ``python -X importtime`` reports it (the cumulative
  microseconds of the top-level module), which leaves the interpreter start out.

Both import from bytecode: the children run without PYTHONDONTWRITEBYTECODE and
corral's modules are compiled first (an installed package has its .pyc files;
the stdlib's are always there).

Run: python benchmarks/bench_import.py [runs]
"""

from __future__ import annotations

import compileall
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import corral
from _harness import compare

ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def wall_time(module: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, env=ENV)
    return time.perf_counter() - t0


def import_time(module: str) -> float:
    """The cumulative import time of ``module`` (seconds), from ``-X importtime``."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        check=True,
        capture_output=True,
        text=True,
        env=ENV,
    )
    for line in result.stderr.splitlines():
        fields = line.split("|")
        if len(fields) == 3 and fields[2].strip() == module:
            return int(fields[1]) / 1e6
    msg = f"no import time reported for {module}: {result.stderr[-500:]}"
    raise RuntimeError(msg)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 41
    compileall.compile_dir(os.path.dirname(corral.__file__), quiet=1)
    rows = [
        compare(
            "import (-X importtime, cumulative)",
            lambda: import_time("corral"),
            lambda: import_time("multiprocessing"),
            rounds=runs,
        ),
        compare(
            "python -c 'import X' (wall)",
            lambda: wall_time("corral"),
            lambda: wall_time("multiprocessing"),
            rounds=runs,
        ),
    ]
    bare = statistics.median(wall_time("sys") for _ in range(runs))
    print(f"{'python -c import sys (wall, reference)':<44} {bare * 1e3:.2f} ms")
    for row in rows:
        print(
            f"{row['name']:<44} corral - stdlib = {(row['corral'] - row['stdlib']) * 1e3:+.2f} ms"
        )


if __name__ == "__main__":
    main()
