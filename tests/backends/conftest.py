"""Backend tests (issue 15) run in a pytest invocation of their own.

A cluster engine leaves threads (Dask's event loop) and sockets behind by
design, and forking after a cluster client exists is unsupported, so these tests
do not share a process with the rest of the suite: run
``python -m pytest tests/backends`` and, for everything else,
``python -m pytest tests --ignore=tests/backends``. A run that collects both
skips the backend tests with a reason saying so.

``no_leaks`` is replaced here by a check of what matters for a cluster: no
process started by a test (scheduler, workers, nannies) outlives it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

HERE = Path(__file__).parent
OWN_RUN = "backend tests run in their own pytest invocation: python -m pytest tests/backends"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ours = [item for item in items if HERE in item.path.parents]
    if ours and len(ours) < len(items):
        for item in ours:
            item.add_marker(pytest.mark.skip(reason=OWN_RUN))


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail the test if a process it started (a Dask scheduler, nanny or worker) outlives it."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    new = [p for p in me.children(recursive=True) if p.pid not in before and not _helper(p)]
    _gone, alive = psutil.wait_procs(new, timeout=15)
    for proc in alive:
        proc.kill()
    assert not alive, f"test left processes behind: {[(p, _cmdline(p)) for p in alive]}"


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return "?"


def _helper(proc: psutil.Process) -> bool:
    """The stdlib's resource tracker, which Dask's nannies start once per process, lives on."""
    return "resource_tracker" in _cmdline(proc)
