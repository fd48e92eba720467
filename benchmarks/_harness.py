"""Shared helpers of the benchmarks: interleaved timing of corral and the stdlib.

The machine is shared and noisy, so each benchmark alternates corral and the
stdlib in rounds and reports the median of each and their ratio.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable


def compare(
    name: str,
    corral_fn: Callable[[], float],
    stdlib_fn: Callable[[], float],
    rounds: int = 7,
    unit: str = "s",
    higher_is_better: bool = False,
    other: str = "stdlib",
) -> dict:
    """Run both functions alternately; each returns one measurement.

    ``other`` names what ``stdlib_fn`` measures when it is not the stdlib
    (a reference such as a bare pipe round trip).
    """
    ours, theirs = [], []
    for i in range(rounds):
        # Alternate who goes first so drift and warm-up hit both alike.
        if i % 2:
            theirs.append(stdlib_fn())
            ours.append(corral_fn())
        else:
            ours.append(corral_fn())
            theirs.append(stdlib_fn())
    a, b = statistics.median(ours), statistics.median(theirs)
    ratio = a / b if higher_is_better else b / a
    row = {"name": name, "corral": a, "stdlib": b, "unit": unit, "speedup": ratio}
    print(
        f"{name:<44} corral {fmt(a, unit):>12}  {other} {fmt(b, unit):>12}  "
        f"corral is {ratio:5.2f}x {'faster' if ratio >= 1 else 'slower'}",
        flush=True,
    )
    return row


def fmt(value: float, unit: str) -> str:
    if unit == "s":
        if value < 1e-3:
            return f"{value * 1e6:.1f} us"
        if value < 1:
            return f"{value * 1e3:.2f} ms"
        return f"{value:.2f} s"
    return f"{value:,.0f} {unit}"


def per_op(fn: Callable[[], None], count: int) -> float:
    t0 = time.perf_counter()
    for _ in range(count):
        fn()
    return (time.perf_counter() - t0) / count


def alternate_versions(script: str, old: str, new: str, rounds: int) -> dict[str, list[dict]]:
    """Run ``script --child`` once per round for each corral tree, alternating who goes first.

    ``old`` and ``new`` are directories holding a ``corral`` package (put first on
    ``PYTHONPATH``); each child prints one JSON object of measurements as its
    last line. Returns ``{"old": [...], "new": [...]}``, one object per round.
    """
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for i in range(rounds):
        order = [("old", old), ("new", new)] if i % 2 == 0 else [("new", new), ("old", old)]
        for label, src in order:
            out = subprocess.run(
                [sys.executable, script, "--child"],
                env=dict(os.environ, PYTHONPATH=src),
                capture_output=True,
                text=True,
                timeout=600,
                check=True,
            ).stdout
            runs[label].append(json.loads(out.splitlines()[-1]))
    return runs
