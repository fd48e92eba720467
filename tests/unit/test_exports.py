"""The public surface mirrors the stdlib's, name for name, for the layers built so far.

Names that belong to layers not built yet are listed in NOT_YET; the test fails
both when a name is missing and when NOT_YET lists a name that now exists, so
the list can only shrink.
"""

from __future__ import annotations

import importlib
import inspect
import multiprocessing

import pytest

import corral

NOT_YET: dict[str, set[str]] = {}

MODULES = {
    "corral": ("multiprocessing", None),
    "corral.connection": ("multiprocessing.connection", None),
    "corral.process": ("multiprocessing.process", None),
    "corral.reduction": ("multiprocessing.reduction", None),
    "corral.util": ("multiprocessing.util", None),
    "corral.queues": ("multiprocessing.queues", None),
    "corral.synchronize": ("multiprocessing.synchronize", None),
    "corral.pool": ("multiprocessing.pool", None),
    "corral.sharedctypes": ("multiprocessing.sharedctypes", None),
    "corral.heap": ("multiprocessing.heap", None),
    "corral.shared_memory": ("multiprocessing.shared_memory", None),
    "corral.managers": ("multiprocessing.managers", None),
}


@pytest.mark.parametrize("ours", sorted(MODULES))
def test_stdlib_names_exist(ours):
    theirs = importlib.import_module(MODULES[ours][0])
    module = importlib.import_module(ours)
    wanted = set(getattr(theirs, "__all__", ()))
    missing = {name for name in wanted if not hasattr(module, name)}
    assert missing == NOT_YET.get(ours, set())


def test_every_module_has_a_tuple_all():
    for name in MODULES:
        module = importlib.import_module(name)
        assert isinstance(module.__all__, tuple), name
        for attr in module.__all__:
            assert hasattr(module, attr), f"{name}.{attr}"


@pytest.mark.parametrize(
    "name",
    [
        "Process",
        "Pipe",
        "get_context",
        "set_start_method",
        "get_start_method",
        "active_children",
        "cpu_count",
        "Value",
        "Array",
        "RawValue",
        "RawArray",
        "Barrier",
    ],
)
def test_signatures_match(name):
    ours = inspect.signature(getattr(corral, name))
    theirs = inspect.signature(getattr(multiprocessing, name))
    assert list(ours.parameters) == list(theirs.parameters)


@pytest.mark.parametrize("name", ["Listener", "Client", "wait", "Pipe"])
def test_connection_signatures_match(name):
    from multiprocessing import connection as stdlib_connection

    from corral import connection

    ours = [
        p
        for p in inspect.signature(getattr(connection, name)).parameters.values()
        if p.kind is not inspect.Parameter.KEYWORD_ONLY
    ]
    theirs = inspect.signature(getattr(stdlib_connection, name)).parameters
    assert [p.name for p in ours] == list(theirs)


def test_process_api():
    for attr in (
        "start",
        "run",
        "join",
        "is_alive",
        "terminate",
        "kill",
        "close",
        "pid",
        "ident",
        "exitcode",
        "sentinel",
        "authkey",
        "name",
        "daemon",
    ):
        assert hasattr(corral.Process, attr), attr


def test_no_stdlib_multiprocessing_imported_by_corral():
    import subprocess
    import sys

    code = (
        "import sys, corral, corral.connection, corral.reduction, corral.util; "
        "bad = [m for m in sys.modules if m == 'multiprocessing' "
        "or m.startswith('multiprocessing.') or m == 'concurrent.futures.process']; "
        "print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip()
    assert out == "[]"


def test_dir_has_no_public_name_missing_from_all():
    """As the stdlib's ``MiscTestCase.test__all__`` checks (``test.support.check__all__``)."""
    import types

    stray = set()
    for name in dir(corral):
        if name.startswith("_") or name in {"SUBDEBUG", "SUBWARNING"}:
            continue
        obj = getattr(corral, name)
        module = getattr(obj, "__module__", None)
        if module == "corral" or (module is None and not isinstance(obj, types.ModuleType)):
            stray.add(name)
    assert stray <= set(corral.__all__)
    assert {"ProcessPoolExecutor", "WorkerLostError", "BrokenProcessPool"} <= set(dir(corral))
