"""The guide's recipes (docs/guide.md) run as written: each program in examples/ ends
with exit status 0 and prints what the guide says it prints.

The cluster recipe on Ray and Dask runs in tests/backends/test_examples_on_clusters.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str, *args: str, timeout: float = 100) -> str:
    """Run ``examples/<name>.py`` in a fresh interpreter; return its stdout."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=EXAMPLES.parent,
    )
    assert done.returncode == 0, f"{name} exited with {done.returncode}:\n{done.stderr}"
    return done.stdout


def test_share_arrays():
    out = run_example("share_arrays")
    assert "8 window means from one shared array; read-only in the task: True" in out
    assert "4 blocks scaled and returned: 4000000 values" in out


def test_crashes_and_timeouts():
    lines = run_example("crashes_and_timeouts").splitlines()
    assert lines == [
        "0: 0",
        "1: 1",
        "2: 4",
        "3: worker lost (WorkerLostError)",
        "4: 16",
        "5: timed out",
        "6: 36",
        "7: raised seven is not allowed",
        "8: 64",
        "9: 81",
        "after: [0, 1, 4]",
    ]


def test_asyncio_pool():
    lines = run_example("asyncio_pool").splitlines()
    assert lines == [
        "await apply_async: 49",
        "await map_async: [0, 1, 4, 9, 16]",
        "async for over imap: [0, 1, 4, 9, 16]",
        "gather executor futures: [0, 1, 4, 9, 16]",
        "run_in_executor: 81",
        "wait_for timed out; the waiting call was cancelled: True",
        "the running call finishes: 4",
    ]


def test_on_a_cluster_runs_on_this_machine_by_default():
    lines = run_example("on_a_cluster").splitlines()
    assert lines == [
        "the error came back as LinAlgError: Singular matrix",
        "400 column norms on the process backend",
    ]


def test_progress_and_insights():
    out = run_example("progress_and_insights")
    lines = out.splitlines()
    assert lines[0] == "2000 results; the callback counted 2000 items"
    assert lines[1] == "insights: 5000 items in 5000 tasks on 2 workers"
    assert lines[2].startswith("corral insights (process backend, 2 live workers, 5000 tasks")
    assert "advice:" in lines
    assert lines[-1] == "advice names a chunksize: True"


def test_commands_in_parallel():
    lines = run_example("commands_in_parallel").splitlines()
    assert lines == [
        "echo compressing a; echo warning about a >&2: printed 'compressing a', "
        "warned 'warning about a'",
        "printf '%s\\n' b c | wc -l: printed '2', warned ''",
        "exit 3: failed with status 3",
        "sleep 60 & sleep 60: timed out",
        "check=True: command 'false' exited with status 1. Every command ran to its end: "
        "see .results (all, in input order) and .failed",
    ]
